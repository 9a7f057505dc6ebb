import AuroraAPI
import Foundation
import Hummingbird
import NIOHTTP1
import Secrets

extension HTTPServer {
    /// Secrets routes (docs/API.md, section 4.10). Writes, lists, history, rollback and the
    /// audit are operator calls on the lead. A value read is a node's signed call on the lead
    /// (sealed to the node's box key), an operator's preview there (`?node=` / `?company=`), or,
    /// on any other agent, its operator asking for what resolves for that node.
    ///
    /// - `POST /api/secrets`, `GET /api/secrets`, `DELETE /api/secrets/{service}/{key}` and
    ///   `GET …/versions` (`?scope=`, `?scope_id=`), `POST …/rollback`, `POST /api/secrets/rotate-key`:
    ///   the operator token; changes are audited with the actor `operator`;
    /// - `GET /api/secrets/{service}/{key}`: with a token, the operator's preview, which needs
    ///   `?node=` or `?company=` (400 otherwise; 404 for an unknown node). Without one, a node's
    ///   signature: what resolves for that node and its company, sealed to its box key. Asking for
    ///   another node or company is 403 `forbidden_scope`, audited;
    /// - `POST /api/connectivity/status`: a node's signature; its report, answered with `accepted`;
    /// - `GET /api/connectivity/status`, `…/health`: a token of role `read`, or a node's signature;
    /// - `GET /api/audit` (`?verify=`: check the chain; `?limit=` 1-100000, default 1000): the
    ///   operator token.
    static func addSecretRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, token = agent.token
        let secrets = lead.secrets, registry = lead.registry, board = lead.connectivity

        router.on(API.writeSecret) { request, _ -> Response in
            try authorize(request, token: token)
            let write = try await decode(SecretWrite.self, request, maxBody: maxBody, allowed: SecretWrite.fields)
            return try json(try await secrets.write(write, actor: "operator"), status: .created)
        }
        router.on(API.listSecrets) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(try await secrets.list(), status: .ok)
        }
        router.on(API.readSecret) { request, context -> Response in
            let service = try context.parameters.decoded("service"), keyName = try context.parameters.decoded("key")
            let node = request.uri.queryParameters.get("node"), company = request.uri.queryParameters.get("company")
            if request.headers[.authorization] != nil {
                try authorize(request, token: token)
                guard node != nil || company != nil else {
                    throw Refusal.badRequest("an operator previews a resolution: add ?node=NAME or ?company=NAME")
                }
                var resolvedCompany = company ?? ""
                if let node, company == nil {
                    guard let identity = await registry.secretIdentity(node) else {
                        throw Refusal.notFound("no node named '\(node)'")
                    }
                    resolvedCompany = identity.company
                }
                return try json(
                    try await secrets.preview(service: service, keyName: keyName, node: node, company: resolvedCompany),
                    status: .ok)
            }
            let (name, _) = try await authenticateNode(request, context: context, registry: registry, maxBody: maxBody)
            guard let identity = await registry.secretIdentity(name),
                let boxKey = try? PublicKey(base64: identity.boxKey)
            else {
                throw Refusal.unauthorized("unknown node '\(name)'")
            }
            if let node, node != name {
                throw await secrets.refuse(service: service, keyName: keyName, node: name, asked: "node:\(node)")
            }
            if let company, company != identity.company {
                throw await secrets.refuse(service: service, keyName: keyName, node: name, asked: "company:\(company)")
            }
            return try json(
                try await secrets.read(
                    service: service, keyName: keyName, node: name, company: identity.company, boxKey: boxKey),
                status: .ok)
        }
        router.on(API.deleteSecret) { request, context -> Response in
            try authorize(request, token: token)
            let scope = try SecretsManager.scope(
                request.uri.queryParameters.get("scope") ?? "", request.uri.queryParameters.get("scope_id"))
            return try json(
                try await secrets.delete(
                    service: try context.parameters.decoded("service"), keyName: try context.parameters.decoded("key"),
                    scope: scope, actor: "operator"), status: .ok)
        }
        router.on(API.secretVersions) { request, context -> Response in
            try authorize(request, token: token)
            let scope = try SecretsManager.scope(
                request.uri.queryParameters.get("scope") ?? "", request.uri.queryParameters.get("scope_id"))
            return try json(
                try await secrets.versions(
                    service: try context.parameters.decoded("service"),
                    keyName: try context.parameters.decoded("key"), scope: scope), status: .ok)
        }
        router.on(API.rollbackSecret) { request, context -> Response in
            try authorize(request, token: token)
            let rollback = try await decode(
                SecretRollback.self, request, maxBody: maxBody, allowed: SecretRollback.fields)
            return try json(
                try await secrets.rollback(
                    service: try context.parameters.decoded("service"),
                    keyName: try context.parameters.decoded("key"), rollback, actor: "operator"),
                status: .created)
        }
        router.on(API.rotateSecretsKey) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(try await secrets.rotateKey(actor: "operator"), status: .ok)
        }
        // MARK: Connectivity
        router.on(API.reportConnectivity) { request, context -> Response in
            let (node, body) = try await authenticateNode(
                request, context: context, registry: registry, maxBody: maxBody)
            let report = try decode(ConnectivityReport.self, body, allowed: ConnectivityReport.fields)
            try await board.report(node, report.results)
            return try json(["accepted": report.results.count], status: .ok)
        }
        router.on(API.connectivityStatus) { request, context -> Response in
            _ = try await client(request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(await board.status(), status: .ok)
        }
        router.on(API.connectivityHealth) { request, context -> Response in
            _ = try await client(request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(ConnectivityHealth.summarize(await board.status()), status: .ok)
        }
        router.on(API.audit) { request, _ -> Response in
            try authorize(request, token: token)
            let verify = request.uri.queryParameters.get("verify").map { $0 != "false" && $0 != "0" } ?? false
            let limit =
                try request.uri.queryParameters.get("limit").map { text throws(Refusal) -> Int in
                    guard let value = Int(text), (1...100_000).contains(value) else {
                        throw Refusal.badRequest("limit must be 1-100000")
                    }
                    return value
                } ?? 1000
            return try json(try await secrets.auditLog(verify: verify, limit: limit), status: .ok)
        }
    }

    /// The same routes on a compute or edge node: its operator reads what resolves for this
    /// node (through the lead, or from the cache while the lead is away); connectivity views are
    /// forwarded; the rest is the lead's.
    ///
    /// - `GET /api/secrets/{service}/{key}`: the local operator token; read through the lead and the
    ///   cache (``readThroughLead(service:keyName:state:node:)``). `?node=` and `?company=` are not
    ///   used: a node reads only what resolves for itself;
    /// - `GET /api/connectivity/status`, `…/health`: the local operator token, forwarded (5 s);
    /// - writes, the list, deletes, versions, rollbacks, key rotation, connectivity reports and the
    ///   audit: 421 `not_lead`.
    static func addSecretRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, node: NodeParts) {
        let maxBody = agent.maxBody, token = agent.token, state = agent.state
        leadOnly(router, API.writeSecret, "writing secrets", agent: agent)
        leadOnly(router, API.listSecrets, "the secrets list", agent: agent)
        router.on(API.readSecret) { request, context -> Response in
            let service = try context.parameters.decoded("service"), keyName = try context.parameters.decoded("key")
            try authorize(request, token: token)
            return try json(
                try await readThroughLead(service: service, keyName: keyName, state: state, node: node), status: .ok)
        }
        leadOnly(router, API.deleteSecret, "deleting secrets", agent: agent)
        leadOnly(router, API.secretVersions, "secret versions", agent: agent)
        leadOnly(router, API.rollbackSecret, "rolling back secrets", agent: agent)
        leadOnly(router, API.rotateSecretsKey, "key rotation", agent: agent)
        leadOnly(router, API.reportConnectivity, "connectivity reports", agent: agent)
        router.on(API.connectivityStatus) { request, _ -> Response in
            try await forwardToLead(
                request, membership: node.membership, token: token, maxBody: maxBody, timeout: .seconds(5))
        }
        router.on(API.connectivityHealth) { request, _ -> Response in
            try await forwardToLead(
                request, membership: node.membership, token: token, maxBody: maxBody, timeout: .seconds(5))
        }
        leadOnly(router, API.audit, "the audit log", agent: agent)
    }

    /// On a compute or edge node: what resolves for this node, fetched from the lead with its
    /// signed identity and opened with its box key after checking the lead's signature; kept in
    /// the node's cache, which answers (with `cached_age_s`) while the lead is away.
    ///
    /// When the last heartbeat found the lead away the cache answers at once. A lead that does not
    /// answer falls back to the cache (503 `lead_unreachable` when this secret is not cached there);
    /// any refusal of the lead's is passed on.
    static func readThroughLead(service: String, keyName: String, state: AgentState, node: NodeParts)
        async throws(Refusal) -> SecretRead
    {
        let membership = node.membership, cache = node.secretCache
        // The last heartbeat found the lead away: answer from the cache at once rather than wait
        // for a connection that will not come.
        if state.leadReachable == false, let cached = cache.answer(service, keyName) { return cached }
        switch await fetchFromLead(
            service: service, keyName: keyName, state: state, membership: membership, cache: cache)
        {
        case .success(let read):
            return read
        case .failure(let error) where error.code == "lead_unreachable":
            guard let cached = cache.answer(service, keyName) else {
                throw Refusal(
                    .unavailable, code: "lead_unreachable",
                    message: "\(error.message), and this secret is not cached here")
            }
            return cached
        case .failure(let error):
            throw error
        }
    }

    /// One fetch from the lead, stored in the cache when it succeeds and forgotten when the
    /// lead says it no longer resolves.
    ///
    /// 503 `starting` before this node has joined (no lead key). The lead's refusal keeps its status
    /// and code, and a 403 or 404 also drops the cached copy; no answer at all is
    /// `lead_unreachable`. A seal or signature that does not check out is refused as
    /// `SecretCache.open` refuses it. The answer holds the clear value, never the sealed one.
    static func fetchFromLead(
        service: String, keyName: String, state: AgentState, membership: MembershipService,
        cache: SecretCache
    ) async -> Result<SecretRead, Refusal> {
        guard let leadKey = membership.leadSignKey else {
            return .failure(Refusal(.unavailable, code: "starting", message: "this node has not joined the mesh yet"))
        }
        let sealedRead: SecretRead
        do throws(LeadCallError) {
            sealedRead = try await membership.leadClient.call(
                API.readSecret, service, keyName, as: SecretRead.self, timeout: .seconds(3))
        } catch {
            if case .refused(let status, let answer) = error {
                if status == 404 || status == 403 { cache.forget(service, keyName) }
                return .failure(
                    Refusal(Refusal.Kind(status: status), code: answer.error.code, message: answer.error.message))
            }
            return .failure(Refusal(.unavailable, code: "lead_unreachable", message: error.message))
        }
        do throws(Refusal) {
            let value = try SecretCache.open(
                sealedRead, node: state.config.name, box: state.identity.box, leadKey: leadKey)
            cache.store(sealedRead, value: value)
            var read = sealedRead
            read.sealedValue = nil
            read.signature = nil
            read.value = value.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            return .success(read)
        } catch {
            return .failure(error)
        }
    }
}
