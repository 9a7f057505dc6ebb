import AuroraAPI
import Hummingbird

/// What every agent's routes serve from, whatever its role: built by ``Agent`` before the
/// HTTP services start.
struct AgentParts: Sendable {
    let state: AgentState
    /// The operator token and the scoped API tokens' roles.
    let token: AdminToken
    /// The event hub (the lead's stream; on other agents only local subscribers).
    let hub: EventHub
    /// Restartable subsystems by name (`POST /api/subsystems/{name}/restart`).
    let subsystems: Subsystems
    /// This agent's WireGuard interface (its mode may be `off`).
    let wireguard: WireGuardService

    /// The largest request body a route reads (`http.max_body_bytes`).
    var maxBody: Int { state.config.maxBodyBytes }
    /// The lead's URL as configured, named in `not_lead` answers (nil on the lead).
    var leadURL: String? { state.config.lead }
}

/// The lead's subsystems, every one present: the lead's routes answer from them.
struct LeadParts: Sendable {
    let registry: Registry
    let jobs: JobCoordinator
    let secrets: SecretsManager
    let connectivity: ConnectivityBoard
    let store: Store
    let inbox: ReportInbox
    let backups: BackupArchive
    let apiTokens: APITokens
    /// The lead's TLS listener, for pinned join tokens (nil: it serves none).
    let leadTLS: LeadTLS?
}

/// A compute or edge node's parts: its membership (the signed client to the lead, for
/// forwarding), its cached copy of the registry and its secret cache. Calls only the lead
/// serves answer `not_lead` here.
struct NodeParts: Sendable {
    let membership: MembershipService
    let cache: RegistryCache
    let secretCache: SecretCache
}

/// Which role's routes an agent serves.
enum RoleParts: Sendable {
    case lead(LeadParts)
    case node(NodeParts)
}

extension HTTPServer {
    /// Registers `method path` to answer `not_lead` (421) before anything else: a call only
    /// the lead serves, made to another agent.
    static func leadOnly(_ router: Router<AgentRequestContext>, _ method: HTTPRequest.Method, _ path: RouterPath, _ what: String,
                         agent: AgentParts) {
        let leadURL = agent.leadURL
        router.on(path, method: method) { _, _ -> Response in throw Refusal.notLead(what, lead: leadURL) }
    }
}
