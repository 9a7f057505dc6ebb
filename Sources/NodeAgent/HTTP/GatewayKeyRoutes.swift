import AuroraAPI
import Foundation
import Hummingbird
import Mesh

/// Gateway keys (docs/API.md, "Gateway keys"), the lead's: the operator token or an `admin` API
/// token. Other agents answer 421 `not_lead`.
///
/// - `POST /api/keys` (``GatewayKeyCreateRequest``): 201 with the key, shown once; 400 for a bad field.
/// - `GET /api/keys`: every key with its state, never a key.
/// - `DELETE /api/keys/{id}`: revoked at once; 404 for an unknown id.
/// - `GET /api/keys/usage`: requests and tokens per key (or other caller) and model.
extension HTTPServer {
    static func addGatewayKeyRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, role: RoleParts) {
        let token = agent.token, maxBody = agent.maxBody
        guard case .lead(let lead) = role else {
            for endpoint in [API.createKey, API.listKeys, API.revokeKey, API.keyUsage] {
                leadOnly(router, endpoint, "gateway keys", agent: agent)
            }
            return
        }
        let keys = lead.gatewayKeys
        router.on(API.createKey) { request, _ -> Response in
            try authorize(request, token: token)
            let create = try await decode(
                GatewayKeyCreateRequest.self, request, maxBody: maxBody, allowed: GatewayKeyCreateRequest.fields)
            return try json(try await keys.create(create), status: .created)
        }
        router.on(API.listKeys) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(GatewayKeyList(keys: try await keys.list()), status: .ok)
        }
        router.on(API.revokeKey) { request, context -> Response in
            try authorize(request, token: token)
            let id = try context.parameters.decoded("id")
            guard id.utf8.count <= 64, let info = try await keys.revoke(id) else {
                throw Refusal.notFound("no gateway key with id '\(InputRules.printable(String(id.prefix(64))))'")
            }
            return try json(info, status: .ok)
        }
        router.on(API.keyUsage) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(GatewayUsageList(usage: try await keys.usage()), status: .ok)
        }
    }
}
