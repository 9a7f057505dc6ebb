import AuroraAPI
import Foundation
import Logging
import Mesh
import Secrets

/// A standby lead's reads from its own copy of the lead's store: its streaming replica
/// (`DATA/postgres`, a hot standby) or, with `store.url`, the store both leads share.
///
/// The node list, one node, the job list and one job are answered from the copy instead of
/// the lead: they keep answering while the lead is away, current to the last synchronous
/// commit, and the lead does not serve them. Every answer carries
/// `X-Aurora-Read-From: replica|store`; a replica that is not streaming adds
/// `X-Aurora-Replica-State` and its node list is marked `stale` with the reason.
///
/// Credentials are checked against the copy as the lead checks them: this node's own operator
/// token reads as `node:NAME` (what the lead would see from this node); the mesh admin token and
/// API tokens are looked up by hash in the copy's `operator_tokens` and `api_tokens`, so a
/// revoked or expired token is refused here as soon as the revocation reached the copy.
///
/// One connection, opened on the first read and again after a failed one; a read the copy cannot
/// answer (not cloned yet, server down) throws, and the route falls back to the lead.
actor StandbyReads {
    enum Copy: String, Sendable {
        /// The standby's own streaming replica.
        case replica
        /// The PostgreSQL both leads use (`store.url`).
        case store
    }

    let copy: Copy
    private let conninfo: String
    private let node: String
    private let state: AgentState
    private var store: Store?
    private let logger: Logger

    init(copy: Copy, conninfo: String, node: String, state: AgentState, logger: Logger) {
        self.copy = copy
        self.conninfo = conninfo
        self.node = node
        self.state = state
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "standby-reads"
        self.logger = logger
    }

    /// How fresh the copy is: nil when it is current (a shared store, or a streaming replica),
    /// else the replica's state (`catching_up`, `disconnected`, ...) and why.
    nonisolated func lagging() -> (state: String, reason: String)? {
        guard copy == .replica else { return nil }
        guard let (health, age) = state.postgres, age < .seconds(10) else {
            return ("unknown", "the replica has not been sampled in the last 10 s")
        }
        return health.state == "streaming" ? nil : (health.state, health.reason)
    }

    // MARK: Reads

    /// Every node the copy holds (removed ones included, as on the lead), sorted by name.
    func nodes(lead: String?) async throws(AgentError) -> NodeList {
        let (entries, _) = try await run { store throws(AgentError) in try await store.nodes() }
        let lagging = lagging()
        return NodeList(
            nodes: entries.map(Registry.view).sorted { $0.name < $1.name }, stale: lagging != nil, lead: lead,
            reason: lagging.map { "the standby's replica is \($0.state): \($0.reason)" })
    }

    func job(_ id: String) async throws(AgentError) -> Job? {
        try await run { store throws(AgentError) in try await store.job(id) }
    }

    func jobs(state: JobState?, visibleTo caller: String, limit: Int) async throws(AgentError) -> [Job] {
        try await run { store throws(AgentError) in try await store.jobs(state: state, visibleTo: caller, limit: limit)
        }
    }

    /// The grant of a presented token that is not this node's: the mesh admin token (any lead's
    /// operator token recorded in the copy) or a valid API token; nil when the copy knows none.
    func grant(for presented: String, now: Date = Date()) async throws(AgentError) -> APITokens.Grant? {
        guard presented.hasPrefix("aurapi_") || presented.hasPrefix("aur_"), presented.utf8.count <= 128 else {
            return nil
        }
        let hash = Hex.encode(Crypto.sha256(Array(presented.utf8)))
        let grant = try await run { store throws(AgentError) in try await store.tokenGrant(hash: hash) }
        guard let grant, !grant.revoked, grant.expiresAt.map({ $0 > now }) ?? true else { return nil }
        return grant
    }

    // MARK: The connection

    private func run<R: Sendable>(_ body: (Store) async throws(AgentError) -> R) async throws(AgentError) -> R {
        let store = try await connected()
        do throws(AgentError) {
            return try await body(store)
        } catch {
            // The next read connects again (a restarted replica, a store back from a failover).
            self.store = nil
            await store.close()
            throw error
        }
    }

    private func connected() async throws(AgentError) -> Store {
        if let store { return store }
        let store = Store(conninfo: conninfo)
        do throws(AgentError) {
            try await store.connect()
            // Nothing this connection runs may write, on a shared store least of all.
            try await store.query("SET default_transaction_read_only = on")
        } catch {
            await store.close()
            throw error
        }
        self.store = store
        logger.info("reading from the standby's own copy", metadata: ["nodeagent.copy": "\(copy.rawValue)"])
        return store
    }

    func close() async {
        await store?.close()
        store = nil
    }
}
