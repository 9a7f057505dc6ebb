import AuroraAPI
import Hummingbird

/// The OpenAI-compatible gateway's routes (docs/API.md, "Inference gateway").
///
/// - `GET /v1/models` (every agent): the mesh's models in OpenAI's list shape, each with the
///   alive nodes whose backend serves it (those with it loaded first), from the nodes'
///   `capabilities.models`. On the lead: the operator token, an API token (any role) or a node's
///   signature, from the registry. On any other agent: its operator token, from the lead's node
///   list, or from its cached copy marked `"stale": true` while the lead is away.
extension HTTPServer {
    static func addInferenceRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, role: RoleParts) {
        let token = agent.token, maxBody = agent.maxBody
        switch role {
        case .lead(let lead):
            let registry = lead.registry
            router.on(API.listModels) { request, context -> Response in
                try await authorizeOperatorOrNode(
                    request, context: context, token: token, registry: registry, maxBody: maxBody)
                return try json(ModelList.mesh(try await registry.list().nodes), status: .ok)
            }
        case .node(let node):
            router.on(API.listModels) { request, _ -> Response in
                try authorize(request, token: token)
                let list = try await forwardedList(node: node)
                return try json(ModelList.mesh(list.nodes, stale: list.stale ? true : nil), status: .ok)
            }
        }
    }
}
