import AuroraAPI
import Foundation
import Mesh
import Synchronization

/// What the agent knows about itself right now, shared by its services and read by `/health`.
public final class AgentState: Sendable {
    public let config: NodeConfig
    public let identity: NodeIdentity
    /// Wall-clock start time, for `GET /api/status`; uptime uses the monotonic clock instead.
    public let startedAt: Date
    private let started: ContinuousClock.Instant
    private let mutable: Mutex<Mutable>
    /// The profile's service checks and the resource alerts, as the services last saw them.
    /// Read by `/health` (checks and alerts) and by the inventory that goes into heartbeats.
    let checkBoard = CheckBoard()
    /// A promoted standby asks for a restart as the lead: the flag, and what ends the service group.
    private let restart = Mutex<(requested: Bool, trigger: (@Sendable () -> Void)?)>((false, nil))

    /// The lead's term (epoch) and why it is fenced, for `/health`.
    private let leadTerm = Mutex<(epoch: Int64?, fenced: String?)>((nil, nil))

    /// A standby's failsafe promise to its lead (``FailsafePromise``).
    private let failsafe = Mutex(FailsafePromise())
    /// The etcd election's view, once one runs (``LeaderElection/view``).
    private let electionView = Mutex<(@Sendable () -> LeadStatus.Election)?>(nil)

    /// Promises the lead not to campaign or promote for `ttl`; false once a promotion began.
    func promiseFailsafe(ttl: Duration) -> Bool { failsafe.withLock { $0.promise(ttl: ttl, now: .now) } }

    /// Whether a failsafe promise binds this standby now.
    var failsafePromiseBinds: Bool { failsafe.withLock { $0.binds(at: .now) } }

    /// An automatic promotion may begin (no promise binds); from now on nothing is promised.
    func beginAutomaticPromotion() -> Bool { failsafe.withLock { $0.beginPromotion(at: .now) } }

    /// An operator's promotion began: nothing more is promised.
    func beginManualPromotion() { failsafe.withLock { $0.beginManualPromotion() } }

    /// The promotion failed before this agent led: it may promise again.
    func promotionFailed() { failsafe.withLock { $0.promotionFailed() } }

    /// Where this agent stands in the etcd election; nil without one.
    var election: LeadStatus.Election? { electionView.withLock { $0 }?() }

    /// Called once the etcd election is set up.
    func setElectionView(_ view: @escaping @Sendable () -> LeadStatus.Election) { electionView.withLock { $0 = view } }

    /// Called by ``Leadership`` when its term begins and when it is fenced.
    func setLeadTerm(epoch: Int64?, fenced: String?) { leadTerm.withLock { $0 = (epoch, fenced) } }

    /// Whether the agent should start again (as the lead) once its services stopped.
    var restartRequested: Bool { restart.withLock { $0.requested } }

    /// What ``requestRestart()`` calls to stop the services (the service group's graceful shutdown).
    func setRestartTrigger(_ trigger: @escaping @Sendable () -> Void) { restart.withLock { $0.trigger = trigger } }

    /// Stops the services gracefully (answers in flight are sent), then the agent starts again.
    func requestRestart() {
        let trigger = restart.withLock { state -> (@Sendable () -> Void)? in
            state.requested = true
            return state.trigger
        }
        trigger?()
    }

    private struct Mutable {
        var store: StoreHealth
        var meshID: String?
        var leadReachable: Bool?
        /// When the lead stopped answering: wall clock for `since`, monotonic for the age.
        var leadLost: (at: Date, instant: ContinuousClock.Instant)?
        var registryReady = false
        var joined = false
        var postgres: ReplicaHealth?
        var postgresAt: ContinuousClock.Instant?
        /// When the local PostgreSQL last reported itself a streaming replica (a standby's promotion check).
        var streamingAt: ContinuousClock.Instant?
        var wireguardLinks: [WireGuardLink]?
        var redis: RedisHealth?
        var outbox: Outbox?
    }

    public init(config: NodeConfig, identity: NodeIdentity) {
        self.config = config
        self.identity = identity
        self.startedAt = Date()
        self.started = .now
        let store =
            config.role == .lead
            ? StoreHealth(state: .starting, mode: config.storeURL == nil ? .managed : .external)
            : StoreHealth(state: .none, mode: .none)
        self.mutable = Mutex(Mutable(store: store))
    }

    /// Seconds since the agent started.
    public var uptime: Double {
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// The store's health as ``StoreService`` last set it (`none` on a node that is not the lead).
    public var store: StoreHealth { mutable.withLock { $0.store } }

    /// The mesh's id: the lead reads it from its store, a node from its membership (nil until then).
    public var meshID: String? { mutable.withLock { $0.meshID } }

    /// Changes the store's health under the lock; only ``StoreService`` calls it (start, loss, reconnect).
    func updateStore(_ change: (inout StoreHealth) -> Void) {
        let ok = mutable.withLock { mutable -> Bool in
            change(&mutable.store)
            return mutable.store.state == .ok
        }
        if ok { storeAnswered.open() }
    }

    /// Opens the first time the store is `ok`: the registry loads then.
    let storeAnswered = Gate()
    /// Opens once a compute or edge node holds a membership: its GPU worker starts pulling then.
    let joinedGate = Gate()
    /// Opens once the lead's registry has loaded: the job coordinator loads then.
    let registryLoaded = Gate()

    /// Set once the store is open (lead) or the membership is loaded (compute and edge nodes).
    func setMeshID(_ id: String) { mutable.withLock { $0.meshID = id } }

    /// A compute or edge node has joined (or had joined): it can talk to the lead.
    var joined: Bool { mutable.withLock { $0.joined } }

    /// Called by the membership service once the node holds a membership (joined now or before).
    func setJoined() {
        mutable.withLock { $0.joined = true }
        joinedGate.open()
    }

    /// The lead's registry and job coordinator have loaded: joins, heartbeats and jobs are answered.
    func setRegistryReady() { mutable.withLock { $0.registryReady = true } }

    /// Whether the last call to the lead got an answer (nil: none yet).
    var leadReachable: Bool? { mutable.withLock { $0.leadReachable } }

    /// Records the outcome of a call to the lead; true when reachability changed (for logging
    /// once per change, not once per heartbeat). The first failure after an answer (or at start)
    /// stamps when the lead was lost; an answer clears it.
    func leadContact(ok: Bool) -> Bool {
        mutable.withLock { state in
            defer { state.leadReachable = ok }
            if ok {
                state.leadLost = nil
            } else if state.leadLost == nil {
                state.leadLost = (Date(), .now)
            }
            return state.leadReachable != ok
        }
    }

    /// The `lead` part of `/health` on a compute or edge node (nil on the lead).
    var leadHealth: LeadHealth? {
        guard config.role != .lead else { return nil }
        return mutable.withLock { state in
            switch (state.leadReachable, state.leadLost) {
            case (false, let lost?):
                let age = lost.instant.duration(to: .now)
                let seconds = Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18
                return LeadHealth(
                    state: .unreachable, since: ISOTime.string(lost.at),
                    unreachableS: (seconds * 1000).rounded() / 1000)
            case (true, _): return LeadHealth(state: .reachable)
            default: return LeadHealth(state: .unknown)
            }
        }
    }

    /// The replica monitor's latest view of the local PostgreSQL server (nil: no monitor or no
    /// sample yet), and how old it is.
    var postgres: (health: ReplicaHealth, age: Duration)? {
        mutable.withLock { state in
            guard let health = state.postgres, let at = state.postgresAt else { return nil }
            return (health, at.duration(to: .now))
        }
    }

    /// Whether the local replica streamed from the lead when the lead was last heard from (within
    /// `slack` of losing it); false when it never streamed in this run.
    func replicaStreamedUntilLeadLost(slack: Duration = .seconds(3)) -> Bool {
        mutable.withLock { state in
            guard let streamed = state.streamingAt else { return false }
            guard let lost = state.leadLost?.instant else { return streamed.duration(to: .now) < slack }
            return streamed >= lost - slack
        }
    }

    /// Called by ``ReplicaMonitor`` after every sample; stamps it with the monotonic clock for its age.
    func setPostgres(_ health: ReplicaHealth) {
        mutable.withLock { state in
            state.postgres = health
            state.postgresAt = .now
            if health.role == .replica, health.state == "streaming" { state.streamingAt = .now }
        }
    }

    /// What this node tells the lead about its WireGuard side: how to reach it and, when the
    /// interface is applied, its peers' handshakes.
    var wireguardReport: WireGuardReport {
        WireGuardReport(
            endpoint: config.wireguardEndpoint, listenPort: config.wireguardListenPort,
            behindNAT: config.wireguardBehindNAT,
            peers: mutable.withLock { $0.wireguardLinks }, relay: config.relayOffer)
    }

    /// Called by ``WireGuardService`` each time it reads the interface (`wg show dump`); nil when it is gone.
    func setWireGuardLinks(_ links: [WireGuardLink]?) { mutable.withLock { $0.wireguardLinks = links } }

    /// The lead's Redis fan-out (nil: not configured).
    var redis: RedisHealth? { mutable.withLock { $0.redis } }

    /// Called by ``RedisPublisher`` on every change of its connection and after each batch written.
    func setRedis(_ health: RedisHealth) { mutable.withLock { $0.redis = health } }

    /// This agent's outbox, once open.
    var outbox: Outbox? { mutable.withLock { $0.outbox } }

    /// Called once at start by ``Agent/run``, before any service runs.
    func setOutbox(_ outbox: Outbox) { mutable.withLock { $0.outbox = outbox } }

    /// `GET /health`.
    /// `ok` once the store is up (and, on the lead, the registry is loaded); `starting`,
    /// `degraded` or `stopping` from the store's state otherwise. A compute or edge node whose
    /// lead is unreachable is `degraded` (`lead.state: unreachable`, since when). Failing checks
    /// and active alerts are listed but do not change `status`: they are the node's services, not
    /// the agent.
    public var health: HealthResponse {
        let (store, registryReady, redis, outbox) = mutable.withLock {
            ($0.store, $0.registryReady, $0.redis, $0.outbox)
        }
        let status: HealthResponse.Status =
            switch store.state {
            case .ok where config.role == .lead && !registryReady: .starting
            case .ok, .none: .ok
            case .starting: .starting
            case .failed: .degraded
            case .stopping: .stopping
            }
        let lead = leadHealth
        let term = leadTerm.withLock { $0 }
        var health = HealthResponse(
            status: term.fenced != nil || (status == .ok && lead?.state == .unreachable) ? .degraded : status,
            node: config.name,
            role: config.role, version: AuroraVersion.current,
            uptimeS: (uptime * 1000).rounded() / 1000, store: store, postgres: postgres?.health)
        if !config.checks.isEmpty {
            let checks = checkBoard.results
            health.checks = checks
            health.checksStatus = checks.map(\.status).max { CheckBoard.rank($0) < CheckBoard.rank($1) } ?? .passing
        }
        let alerts = checkBoard.activeAlerts
        health.alerts = alerts.isEmpty ? nil : alerts.map(\.resource)
        health.redis = redis
        health.outboxPending = outbox?.pendingCount
        health.lead = lead
        health.epoch = term.epoch
        health.fenced = term.fenced
        return health
    }
}
