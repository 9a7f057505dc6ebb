import AsyncAlgorithms
import AuroraAPI
import Logging
import Mesh
import ServiceLifecycle
import Synchronization

/// The election for the lead key on etcd (Patroni's pattern): a Service that shells the pure
/// ``LeaseElection`` state machine.
///
/// - A follower that is `eligible` campaigns every `interval`: a linearizable read first (a
///   held key costs one request), then a lease of `ttl` seconds and a transaction that creates
///   the key on it only if it does not exist. A win makes this node the lead; its epoch is the
///   key's `create_revision`, which grows with every term.
/// - The lead renews its lease every `interval` (on every endpoint at once, the first answer
///   counting; a renewal may wait until the fence's deadline). It fences itself (`onFence`, once per term)
///   `margin` before the lease can expire, timed from when it *sent* the last renewal that
///   succeeded, on the monotonic clock, or at once when a read of the key shows it is no
///   longer its own (deleted or replaced out of band); a watchdog child task checks the deadline every
///   ``watchdogInterval``, so a renewal stuck on an unreachable etcd cannot delay the fence.
/// - On graceful shutdown the lead fences and revokes its lease, so a standby takes over at
///   its next campaign instead of after the TTL.
/// - **etcd down (the failsafe, Patroni's `failsafe_mode`).** With `failsafe` set (the lead),
///   a renewal that fails is followed, every `interval` until etcd answers again, by a round in
///   which every lead-eligible peer must promise not to campaign or promote for the TTL
///   (`POST /api/lead/failsafe`). When all did, the fence moves as if the lease had been renewed
///   when the round was *sent*; one missing promise, and the lead fences at its deadline. An
///   answer from etcd always outranks the peers: a lease etcd says is gone fences at once.
/// - A won key that `onLead` declines (false: a standby bound by a failsafe promise) is given up
///   at once.
///
/// Directives run one at a time, in the order the state machine gave them, on one child task:
/// `onLead` of a term always comes before its `onFence`.
final class LeaderElection: Service, Sendable {
    let client: EtcdClient
    let key: String
    let value: String
    let ttl: Int
    let margin: Duration
    let interval: Duration
    /// How often the watchdog compares the clock with the fence's deadline.
    let watchdogInterval: Duration
    let eligible: @Sendable () async -> Bool
    /// Told the key's `create_revision` when this node won it; false declines it.
    let onLead: @Sendable (_ etcdRevision: Int64) async -> Bool
    let onFence: @Sendable () async -> Void
    /// The lead's failsafe round: whether every lead-eligible peer promised not to campaign or
    /// promote for `ttl`, within `timeout`. Nil: no failsafe (a standby).
    let failsafe: (@Sendable (_ ttl: Duration, _ timeout: Duration) async -> Bool)?
    /// Whether the lead may go on holding the key it holds; false gives it up at the next step.
    /// Nil: always.
    let keepsKey: (@Sendable () -> Bool)?
    let logger: Logger
    private let machine: Mutex<LeaseElection>
    /// The last renewal failed (etcd did not answer): the next step asks the peers beside it.
    private let renewalFailing = Mutex(false)

    /// An election for `key` whose holder writes `value` (this node's name and URL, as JSON).
    /// `ttl` is in seconds; `margin` must be shorter than it.
    /// The key the lead holds in etcd.
    static let leadKey = "/aurora/lead"

    init(
        client: EtcdClient, key: String, value: String, ttl: Int = 5, margin: Duration = .milliseconds(1500),
        interval: Duration = .seconds(1), watchdogInterval: Duration = .milliseconds(50),
        eligible: @escaping @Sendable () async -> Bool,
        onLead: @escaping @Sendable (_ etcdRevision: Int64) async -> Bool,
        onFence: @escaping @Sendable () async -> Void,
        keepsKey: (@Sendable () -> Bool)? = nil,
        failsafe: (@Sendable (_ ttl: Duration, _ timeout: Duration) async -> Bool)? = nil,
        logger: Logger = Logger(label: "nodeagent.leadership")
    ) throws(AgentError) {
        guard ttl > 0, margin > .zero, margin < .seconds(ttl) else {
            throw AgentError(.config, "the lead lease needs 0 < margin < ttl (ttl \(ttl) s, margin \(margin))")
        }
        guard interval > .zero, interval < .seconds(ttl) - margin else {
            throw AgentError(.config, "the lead lease must be renewed more often than ttl − margin")
        }
        self.client = client
        self.key = key
        self.value = value
        self.ttl = ttl
        self.margin = margin
        self.interval = interval
        self.watchdogInterval = watchdogInterval
        self.eligible = eligible
        self.onLead = onLead
        self.onFence = onFence
        self.failsafe = failsafe
        self.keepsKey = keepsKey
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "leadership"
        self.logger = logger
        machine = Mutex(LeaseElection(margin: margin))
    }

    /// Where this node stands in the election now (for `/health`).
    var current: LeadershipState { machine.withLock { $0.state } }

    /// The lead's fence: when the last successful renewal was sent, and the deadline.
    var fence: LeaseFence? { machine.withLock { $0.fence } }

    /// The holder's value as the last campaign that found the key held saw it.
    var holder: String? { machine.withLock { $0.holder } }

    /// This node's place in the election, for `GET /api/lead` and `aurora-cli status`.
    var view: LeadStatus.Election {
        machine.withLock { machine in
            switch machine.state {
            case .leading:
                let left = machine.fence.map { ContinuousClock.now.duration(to: $0.deadline) }
                return LeadStatus.Election(
                    state: machine.failsafe ? "failsafe" : "leading",
                    fenceInMs: left.map { max(0, Int64($0 / .milliseconds(1))) }, ttlS: ttl)
            case .fenced: return LeadStatus.Election(state: "fenced", ttlS: ttl)
            case .follower: return LeadStatus.Election(state: "follower", holder: machine.holder, ttlS: ttl)
            }
        }
    }

    // MARK: Service

    /// Campaigns or renews every `interval` until graceful shutdown, with the watchdog beside it
    /// and the directives carried out in order; on shutdown fences and resigns, then returns.
    func run() async throws {
        let (directives, sink) = AsyncStream<[LeaseElection.Directive]>.makeStream()
        await withDiscardingTaskGroup { group in
            group.addTask { await self.carryOut(directives, sink) }
            group.addTask { await self.watch(sink) }
            await step(sink)
            for await _ in AsyncTimerSequence(interval: interval, clock: .continuous).cancelOnGracefulShutdown() {
                await step(sink)
            }
            apply(.shutdown, sink)
            sink.finish()
        }
    }

    /// Applies `event` and queues its directives; under the lock, so batches stay in order.
    private func apply(_ event: LeaseElection.Event, _ sink: AsyncStream<[LeaseElection.Directive]>.Continuation) {
        machine.withLock { machine in
            let directives = machine.on(event)
            if !directives.isEmpty { sink.yield(directives) }
        }
    }

    // MARK: Steps

    /// One step of the loop: renew when leading, campaign when a follower and eligible.
    private func step(_ sink: AsyncStream<[LeaseElection.Directive]>.Continuation) async {
        let now = ContinuousClock.now
        apply(.tick(now: now), sink)
        switch current {
        case .leading(let epoch, let lease):
            if let keepsKey, !keepsKey() {
                logger.notice("fenced for good; giving the etcd lead key up")
                apply(.declined, sink)
                return
            }
            // The renewal may wait until the fence's deadline: an answer after it counts for nothing.
            // With a failsafe, no longer than `interval`: etcd silent for that long asks the peers.
            let left = fence.map { now.duration(to: $0.deadline) } ?? interval
            let wait = max(failsafe == nil ? left : min(left, interval), .milliseconds(100))
            // Beside it, a read of the key: a lease alone does not prove the key is still ours
            // (deleted or replaced out of band). Bounded by `interval`, so it never delays renewals.
            async let owner = readKey()
            // etcd failed the last renewal: the peers are asked beside this one, sent now.
            let failing = renewalFailing.withLock { $0 }
            async let promisedBeside = failing ? askPeers(timeout: wait) : false
            var renewed = false
            do {
                let remaining = try await client.keepAlive(lease: lease, timeout: wait)
                renewed = true
                apply(.keepaliveOK(sentAt: now, ttl: .seconds(remaining)), sink)
                if remaining == 0 { logger.warning("etcd no longer has the lead lease") }
                if failing { logger.notice("etcd answers the lead again; the failsafe ends") }
            } catch {
                logger.warning("lead lease renewal failed", metadata: ["nodeagent.error": "\(error.message)"])
                apply(.keepaliveFailed(now: .now), sink)
            }
            renewalFailing.withLock { $0 = !renewed }
            let promised = await promisedBeside
            if !renewed, failsafe != nil {
                // The round sent with this renewal counts from `now`; a first failure asks now.
                var sentAt: ContinuousClock.Instant? = promised ? now : nil
                if !promised, !failing {
                    let sent = ContinuousClock.now
                    let remaining = fence.map { sent.duration(to: $0.deadline) } ?? .zero
                    if remaining > .zero, await askPeers(timeout: remaining) { sentAt = sent }
                }
                if let sentAt {
                    let entering = !machine.withLock { $0.failsafe }
                    apply(.failsafeAcknowledged(sentAt: sentAt), sink)
                    if entering {
                        logger.warning("etcd does not answer; serving on while every standby promises not to take over")
                    }
                }
            }
            if case .some(let read) = await owner {
                if read?.createRevision != epoch || read?.lease != lease {
                    logger.warning("the lead key is no longer this node's", metadata: ["nodeagent.epoch": "\(epoch)"])
                }
                apply(.keyRead(epoch: epoch, createRevision: read?.createRevision, lease: read?.lease), sink)
            }
        case .follower:
            guard await eligible() else { return }
            await campaign(sink)
        case .fenced:
            return
        }
    }

    /// The failsafe round: whether every lead-eligible peer promised for the TTL within `timeout`.
    private func askPeers(timeout: Duration) async -> Bool {
        guard let failsafe else { return false }
        return await failsafe(.seconds(ttl), timeout)
    }

    /// The lead key as a read on every endpoint finds it within `interval`: nil when the read
    /// failed, `.some(nil)` when the key is gone.
    private func readKey() async -> EtcdClient.KeyValue?? {
        do { return .some(try await client.get(key: key, everyEndpoint: true, timeout: interval)) } catch {
            return .none
        }
    }

    /// Reads the key; when nobody holds it, grants a lease and campaigns on it.
    private func campaign(_ sink: AsyncStream<[LeaseElection.Directive]>.Continuation) async {
        do {
            if let held = try await client.get(key: key) {
                apply(.campaignLost(holder: held.value, lease: nil), sink)
                return
            }
        } catch {
            logger.debug("cannot read the lead key", metadata: ["nodeagent.error": "\(error.message)"])
            return
        }
        let sentAt = ContinuousClock.now
        let lease: (id: Int64, ttl: Int)
        do { lease = try await client.grant(ttl: ttl) } catch {
            logger.debug("cannot grant a lead lease", metadata: ["nodeagent.error": "\(error.message)"])
            return
        }
        do {
            switch try await client.campaign(key: key, value: value, lease: lease.id) {
            case .won(let revision):
                apply(
                    .campaignWon(
                        revision: revision, lease: lease.id, ttl: .seconds(lease.ttl), sentAt: sentAt,
                        now: .now), sink)
            case .held(let holder, _):
                apply(.campaignLost(holder: holder, lease: lease.id), sink)
            }
        } catch {
            logger.warning("lead campaign failed", metadata: ["nodeagent.error": "\(error.message)"])
            apply(.campaignFailed(lease: lease.id), sink)
        }
    }

    /// The watchdog: ticks the state machine every ``watchdogInterval`` until graceful shutdown,
    /// so the fence comes at its deadline whatever the renewal is waiting for.
    private func watch(_ sink: AsyncStream<[LeaseElection.Directive]>.Continuation) async {
        for await _ in AsyncTimerSequence(interval: watchdogInterval, clock: .continuous).cancelOnGracefulShutdown() {
            apply(.tick(now: .now), sink)
        }
    }

    /// Carries the directives out, one at a time, until the stream ends.
    private func carryOut(
        _ directives: AsyncStream<[LeaseElection.Directive]>,
        _ sink: AsyncStream<[LeaseElection.Directive]>.Continuation
    ) async {
        for await batch in directives {
            for directive in batch {
                switch directive {
                case .startLeading(let revision):
                    logger.notice("won the etcd lead key", metadata: ["nodeagent.etcd_revision": "\(revision)"])
                    if !(await onLead(revision)) {
                        logger.notice("declined the etcd lead key; giving it up")
                        apply(.declined, sink)
                    }
                case .fence(let revision):
                    logger.warning(
                        "gave up the etcd lead key", metadata: ["nodeagent.etcd_revision": "\(revision)"])
                    await onFence()
                case .resign(let lease):
                    do { try await client.revoke(lease: lease) } catch {
                        logger.debug("cannot revoke a lease", metadata: ["nodeagent.error": "\(error.message)"])
                    }
                }
            }
        }
    }
}
