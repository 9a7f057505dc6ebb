import AuroraAPI
import Hummingbird
import Mesh

extension HTTPServer {
    /// PostgreSQL replica health (docs/API.md §4.12): the local view, the mesh-wide view on the
    /// lead, and the Patroni-style checks for load balancers.
    ///
    /// Registered on every agent; the role decides only the replicas view:
    ///
    /// - `GET /api/postgres/health`: the operator token; the latest local sample; 404
    ///   `not_configured` without `postgres.monitor`, 503 `starting` before the first sample;
    /// - `GET /api/postgres/replicas`: on the lead a token of role `read` or a node's signature,
    ///   every node's server beside the primary's view (``ReplicaOverview/build(_:)``); elsewhere
    ///   the operator token, forwarded to the lead (5 s);
    /// - `GET /postgres/primary`, `/postgres/replica`, `/postgres/read-only`: no token, for load
    ///   balancers; 200 or 503 with a ``PostgresCheck`` that says why. `replica` takes a replica that
    ///   serves reads, `read-only` a primary or a replica; with `?lag=` the replica's lag must be
    ///   known and within it.
    static func addPostgresRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, role: RoleParts) {
        let maxBody = agent.maxBody, token = agent.token, state = agent.state

        router.on(API.postgresHealth) { request, _ -> Response in
            try authorize(request, token: token)
            guard state.config.postgresMonitor != nil else {
                throw Refusal(
                    .notFound, code: "not_configured",
                    message: "this agent watches no PostgreSQL server (postgres.monitor is not set)")
            }
            guard let current = state.postgres else {
                throw Refusal(
                    .unavailable, code: "starting",
                    message: "no sample of the local PostgreSQL server yet; retry in a moment")
            }
            return try json(current.health, status: .ok)
        }
        switch role {
        case .lead(let lead):
            router.on(API.postgresReplicas) { request, context -> Response in
                try await authorizeOperatorOrNode(
                    request, context: context, token: token, registry: lead.registry, maxBody: maxBody)
                return try json(ReplicaOverview.build(try await lead.registry.list().nodes), status: .ok)
            }
        case .node(let node):
            router.on(API.postgresReplicas) { request, _ -> Response in
                try await forwardToLead(
                    request, membership: node.membership, token: token, maxBody: maxBody, timeout: .seconds(5))
            }
        }

        // Load-balancer checks: no authentication, 200 or 503, always with the reason.
        router.on(API.postgresPrimary) { _, _ -> Response in
            try check(state) { health in
                health.role == .primary ? nil : "not a primary (\(health.state): \(health.reason))"
            }
        }
        router.on(API.postgresReplica) { request, _ -> Response in
            let limit = try lagLimit(request)
            return try check(state) { health in
                guard health.role == .replica else { return "not a replica (\(health.state): \(health.reason))" }
                guard let replicaState = ReplicaState(rawValue: health.state), replicaState.servesReplicaReads else {
                    return "replica is \(health.state): \(health.reason)"
                }
                return lagRefusal(limit, health)
            }
        }
        router.on(API.postgresReadOnly) { request, _ -> Response in
            let limit = try lagLimit(request)
            return try check(state) { health in
                switch health.role {
                case .primary: return nil
                case .replica: return lagRefusal(limit, health)
                case .unknown: return "server is \(health.state): \(health.reason)"
                }
            }
        }
    }

    /// `?lag=5s|500ms|16MB|4096`; 400 naming the parameter when it does not parse.
    ///
    /// nil when absent: no limit on the lag.
    private static func lagLimit(_ request: Request) throws -> LagLimit? {
        guard let text = request.uri.queryParameters.get("lag") else { return nil }
        guard let limit = LagLimit(text) else {
            throw Refusal.badRequest("lag must be a duration (5s, 500ms) or a size (16MB, 1GB, bytes); got '\(text)'")
        }
        return limit
    }

    /// Why `health`'s lag is over `limit`, or nil when it is within it or there is no limit. A lag
    /// unknown in the limit's unit (seconds or bytes) is over.
    private static func lagRefusal(_ limit: LagLimit?, _ health: ReplicaHealth) -> String? {
        guard let limit else { return nil }
        let lagBytes = health.lagBytes.map { UInt64(max(0, $0)) }
        if limit.admits(lagBytes: lagBytes, lagS: health.lagS) { return nil }
        switch limit {
        case .seconds(let seconds):
            return health.lagS.map { "lag \($0) s is over \(seconds) s" }
                ?? "lag in seconds is unknown (\(health.state))"
        case .bytes(let bytes):
            return health.lagBytes.map { "lag \($0) bytes is over \(bytes) bytes" }
                ?? "lag in bytes is unknown (\(health.state))"
        }
    }

    /// 200 when `refusal` finds nothing wrong with a fresh sample, else 503 with the reason.
    ///
    /// A sample older than three monitor intervals plus 5 s is 503 (the monitor is stuck); the state
    /// is `unmonitored` without `postgres.monitor` and `starting` before the first sample.
    private static func check(_ state: AgentState, _ refusal: (ReplicaHealth) -> String?) throws -> Response {
        guard let monitor = state.config.postgresMonitor else {
            return try json(
                PostgresCheck(
                    ok: false, role: .unknown, state: "unmonitored",
                    reason: "postgres.monitor is not set on this agent",
                    lagBytes: nil, lagS: nil), status: .serviceUnavailable)
        }
        guard let (health, age) = state.postgres else {
            return try json(
                PostgresCheck(
                    ok: false, role: .unknown, state: "starting", reason: "no sample yet", lagBytes: nil, lagS: nil),
                status: .serviceUnavailable)
        }
        let staleAfter = Duration.milliseconds(Int64((monitor.interval * 3 + 5) * 1000))
        let reason =
            age > staleAfter
            ? "the last sample is \(age.components.seconds) s old (the monitor is stuck)" : refusal(health)
        return try json(
            PostgresCheck(
                ok: reason == nil, role: health.role, state: health.state, reason: reason ?? health.reason,
                lagBytes: health.lagBytes, lagS: health.lagS),
            status: reason == nil ? .ok : .serviceUnavailable)
    }
}

extension ReplicaOverview {
    /// Each node that reports a server, beside the primary's view of it: matched by the slot the
    /// standby streams through, else by its application name being the node's name.
    ///
    /// The primary is the node whose server's state is `primary`, else one whose role is. Members
    /// are sorted by name; standbys the primary lists that no node claims are `unmatched`.
    static func build(_ nodes: [Node]) -> ReplicaOverview {
        let watched = nodes.filter { $0.postgres != nil }
        let primaryNode =
            watched.first { $0.postgres?.state == ReplicaState.primary.rawValue }
            ?? watched.first { $0.postgres?.role == .primary }
        var unclaimed = primaryNode?.postgres?.standbys ?? []
        var members: [Member] = []
        for node in watched.sorted(by: { $0.name < $1.name }) {
            var view: StandbyView?
            if node.name != primaryNode?.name, let local = node.postgres {
                let index =
                    local.receiver?.slot.flatMap { slot in unclaimed.firstIndex { $0.slot == slot } }
                    ?? unclaimed.firstIndex { $0.applicationName == node.name }
                if let index { view = unclaimed.remove(at: index) }
            }
            members.append(Member(node: node.name, nodeState: node.state, local: node.postgres, primaryView: view))
        }
        return ReplicaOverview(primary: primaryNode?.name, members: members, unmatched: unclaimed)
    }
}
