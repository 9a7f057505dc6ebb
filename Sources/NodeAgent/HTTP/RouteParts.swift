import AuroraAPI
import Foundation
import Hummingbird

/// What every agent's routes serve from, whatever its role: built by ``Agent`` before the
/// HTTP services start.
struct AgentParts: Sendable {
    /// The configuration, identity, health and latest samples (PostgreSQL, outbox, checks).
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
    /// The lead's URL as configured, else the one a joined node saved in its membership (a
    /// restart needs no `--lead`), named in `not_lead` answers (nil on the lead).
    var leadURL: String? {
        guard state.config.role != .lead else { return nil }
        return state.config.lead ?? (try? Membership.load(dataDir: state.config.dataDir))?.leadURL
    }
}

/// The lead's subsystems, every one present: the lead's routes answer from them.
struct LeadParts: Sendable {
    /// Nodes, joins, heartbeats, labels, and the verification of node signatures.
    let registry: Registry
    /// The GPU job queue and its assignments to workers.
    let jobs: JobCoordinator
    /// Secret values, their versions and audit log, and the sealing key's rotation.
    let secrets: SecretsManager
    /// The nodes' connectivity reports and their mesh-wide summary.
    let connectivity: ConnectivityBoard
    /// Join tokens (the API tokens' grants are in ``apiTokens``).
    let tokens: any TokenStore
    /// The event log, for `GET /api/events`' backlog.
    let events: any EventStore
    /// Takes the batches of node outboxes (`POST /api/nodes/{name}/reports`), each report id once.
    let inbox: ReportInbox
    /// pg_dump backups of the mesh database in `DATA/backups`.
    let backups: BackupArchive
    /// Scoped API tokens (ids `at_…`), managed through the join tokens' routes.
    let apiTokens: APITokens
    /// Keys for the OpenAI-compatible gateway (`/v1/`), their limits and usage.
    let gatewayKeys: GatewayKeys
    /// The lead's TLS listener, for pinned join tokens (nil: it serves none).
    let leadTLS: LeadTLS?
    /// The gateway's cloud fallback (`gateway.fallback`); nil: none.
    var fallback: CloudFallback? = nil
    /// Exec jobs' output tails as their workers send them (`GET /api/gpu/jobs/{id}/logs`).
    var outputs = JobOutputs()
    /// This lead's term and fence (nil in route tests over in-memory stores: no epochs there).
    var leadership: Leadership?
    /// Streaming standbys of the managed store (`store.replication_listen`); nil: none.
    var replication: StandbyReplicationService?
}

/// A compute or edge node's parts: its membership (the signed client to the lead, for
/// forwarding), its cached copy of the registry and its secret cache. Calls only the lead
/// serves answer `not_lead` here.
struct NodeParts: Sendable {
    /// The signed client to the lead (forwarded calls) and the lead's signing key once joined.
    let membership: MembershipService
    /// The node list and topology the lead last answered, served marked stale while it is away.
    let cache: RegistryCache
    /// Secrets read through the lead, kept sealed, served with their age while it is away.
    let secretCache: SecretCache
    /// On a standby lead: node and job reads answered from its own copy of the lead's store.
    var standbyReads: StandbyReads? = nil
}

/// Which role's routes an agent serves.
///
/// Every route group registers every path on every agent: answered from ``LeadParts`` on the
/// lead; forwarded, served from a cache or refused with 421 `not_lead` on the others.
enum RoleParts: Sendable {
    case lead(LeadParts)
    case node(NodeParts)
}

extension HTTPServer {
    /// Registers `endpoint` to answer `not_lead` (421) before anything else: a call only the
    /// lead serves, made to another agent.
    ///
    /// No credentials are checked: any caller gets the 421, naming this agent's configured lead URL
    /// when it has one.
    static func leadOnly(_ router: Router<AgentRequestContext>, _ endpoint: Endpoint, _ what: String, agent: AgentParts)
    {
        let leadURL = agent.leadURL
        router.on(endpoint) { _, _ -> Response in throw Refusal.notLead(what, lead: leadURL) }
    }
}

extension Router where Context == AgentRequestContext {
    /// Registers `endpoint` from the route table AuroraAPI shares with the client: its method
    /// and path are spelled once, there.
    ///
    /// A `{name}` placeholder becomes a router parameter (read it with ``Parameters/decoded(_:)``).
    /// The method is force-unwrapped: a malformed one in the route table traps at start, not per request.
    @discardableResult
    func on(_ endpoint: Endpoint, use handler: @escaping @Sendable (Request, Context) async throws -> Response) -> Self
    {
        on(RouterPath(endpoint.routerPattern), method: HTTPRequest.Method(endpoint.method)!, use: handler)
    }
}

extension Parameters {
    /// The path parameter `name`, percent-decoded (the client escapes every segment, so a name
    /// holding `/` or `?` arrives as one segment); 400 when it does not decode to text.
    ///
    /// A missing parameter (the pattern does not name it: a route-table mistake) is 400 as well.
    func decoded(_ name: String) throws(Refusal) -> String {
        guard let raw = self.get(name) else { throw Refusal.badRequest("the path has no {\(name)}") }
        guard let text = raw.removingPercentEncoding else {
            throw Refusal.badRequest("{\(name)} is not valid percent-encoded text")
        }
        return text
    }
}
