// MARK: Lease fence

/// When a lead that holds the lead key on an etcd lease must stop acknowledging writes.
///
/// etcd expires a lease `ttl` after the etcd leader handled its last keepalive; that happened
/// after this node *sent* it, so `sentAt + ttl` is the earliest instant the lease can be gone
/// (a standby may then hold the key). The lead fences itself `margin` before that instant:
/// at `sentAt + ttl − margin`. The time an answer *arrived* never counts: a late answer to an
/// old keepalive says nothing about how long etcd will keep the lease after the next one.
///
/// All instants are on one monotonic clock that the shell reads; this value never reads it.
public struct LeaseFence: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant

    /// The lease's TTL as etcd granted or last renewed it (etcd raises a TTL below its minimum).
    public private(set) var ttl: Duration
    /// How long before the lease's earliest expiry the lead fences.
    public let margin: Duration
    /// When the request behind the last successful grant or keepalive was sent.
    public private(set) var sentAt: Instant

    /// A fence for a lease granted (or renewed) with `ttl` by a request sent at `sentAt`.
    public init(ttl: Duration, margin: Duration, sentAt: Instant) {
        self.ttl = max(ttl, .zero)
        self.margin = max(margin, .zero)
        self.sentAt = sentAt
    }

    /// The earliest instant etcd may expire the lease: `sentAt + ttl`.
    public var earliestExpiry: Instant { sentAt + ttl }

    /// The instant the lead stops acknowledging writes: `sentAt + ttl − margin` (never before
    /// `sentAt`, whatever the margin).
    public var deadline: Instant { sentAt + max(ttl - margin, .zero) }

    /// Whether the lead must be fenced at `now`: the deadline has come.
    public func isFenced(at now: Instant) -> Bool { now >= deadline }

    /// A keepalive sent at `sentAt` was answered with `ttl`. Moves the fence forward only: an
    /// answer to a keepalive sent before the one already counted changes nothing.
    public mutating func renewed(sentAt: Instant, ttl: Duration) {
        guard sentAt >= self.sentAt else { return }
        self.sentAt = sentAt
        self.ttl = max(ttl, .zero)
    }
}

// MARK: LeaseElection

/// Where this node stands in the election for the lead key.
public enum LeadershipState: Sendable, Equatable {
    /// Not leading: another node holds the key, or nobody does yet.
    case follower
    /// Holding the key with `epoch` (the key's `create_revision`) on `lease`.
    case leading(epoch: Int64, lease: Int64)
    /// Was leading with `epoch`, and stopped acknowledging writes: the lease may already be
    /// gone. Stays fenced until the old lease's earliest expiry has passed.
    case fenced(epoch: Int64)
}

/// The decisions of one node's campaign loop for the lead key (Patroni's pattern on etcd): a
/// pure state machine, driven by the outcomes of the shell's etcd calls and by ticks of an
/// injected monotonic clock, answering directives the shell carries out in order.
///
/// A follower campaigns (grant a lease, create the key only if it does not exist); a win makes
/// it lead with the key's `create_revision` as its epoch. A lead renews its lease every second
/// and fences itself (``LeaseFence``) when no renewal came back in time, when etcd says the
/// lease is gone, when a read shows the key is no longer its own, or on graceful shutdown; each
/// term fences exactly once. A fenced node gives
/// its lease up and becomes a follower once the old lease can no longer be alive.
public struct LeaseElection: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// What happened, as the shell saw it.
    public enum Event: Sendable, Equatable {
        /// The campaign created the key: `revision` is its `create_revision`, on `lease`, which
        /// etcd granted with `ttl` for a grant request sent at `sentAt`; the answer came at `now`.
        case campaignWon(revision: Int64, lease: Int64, ttl: Duration, sentAt: Instant, now: Instant)
        /// The key exists and `holder` (its value) holds it; `lease`, when one was granted for
        /// this campaign, is not needed.
        case campaignLost(holder: String, lease: Int64?)
        /// The campaign on `lease` failed without an answer: it may have created the key, so the
        /// lease must go (or run out) before this node leads on anything.
        case campaignFailed(lease: Int64)
        /// A keepalive sent at `sentAt` was answered with the lease's remaining `ttl`; zero means
        /// etcd no longer has the lease.
        case keepaliveOK(sentAt: Instant, ttl: Duration)
        /// A read of the key made while leading `epoch` found it created at `createRevision` on
        /// `lease` (both nil: the key is gone). Any other key than the lead's own ends its term:
        /// the lease alone does not prove ownership (a key deleted or replaced out of band).
        case keyRead(epoch: Int64, createRevision: Int64?, lease: Int64?)
        /// A keepalive failed (no endpoint answered, or a bad answer) at `now`.
        case keepaliveFailed(now: Instant)
        /// etcd did not answer, and every lead-eligible peer promised, for a request sent at
        /// `sentAt`, not to campaign or promote for the lease's TTL after it received it
        /// (Patroni's failsafe): the lead may serve as if the lease had been renewed at `sentAt`.
        /// An answer from etcd always outranks it: a lease etcd says is gone fences at once.
        case failsafeAcknowledged(sentAt: Instant)
        /// The clock moved on to `now`.
        case tick(now: Instant)
        /// The service is shutting down gracefully: give the key up at once.
        case shutdown
        /// The shell would not lead on the key it just won (a standby bound by a failsafe
        /// promise): give it up at once, as on shutdown.
        case declined
    }

    /// What the shell must do, in order.
    public enum Directive: Sendable, Equatable {
        /// Start acknowledging writes as the lead of `epoch`.
        case startLeading(epoch: Int64)
        /// Stop acknowledging writes (the lead of `epoch` is fenced).
        case fence(epoch: Int64)
        /// Revoke `lease`: the key, if it is on it, goes at once. Best effort: an unreachable
        /// etcd expires it on its own.
        case resign(lease: Int64)
    }

    /// Where this node stands.
    public private(set) var state: LeadershipState = .follower
    /// The lead's fence while leading (and, once fenced, the last one, for the wait).
    public private(set) var fence: LeaseFence?
    /// The value of the key's holder as the last lost campaign saw it.
    public private(set) var holder: String?
    /// The lead serves on its peers' failsafe promises: etcd did not answer its last renewal.
    public private(set) var failsafe = false
    /// How long before the lease's earliest expiry the lead fences.
    public let margin: Duration

    public init(margin: Duration) {
        self.margin = margin
    }

    /// Whether the shell may campaign now (the node is a follower, not a fenced lead waiting
    /// for its old lease to run out).
    public var mayCampaign: Bool { state == .follower }

    /// Applies `event`; returns what the shell must do, in order.
    public mutating func on(_ event: Event) -> [Directive] {
        switch event {
        case .campaignWon(let revision, let lease, let ttl, let sentAt, let now):
            guard state == .follower else { return [.resign(lease: lease)] }
            let fence = LeaseFence(ttl: ttl, margin: margin, sentAt: sentAt)
            // A campaign so slow that the lease is already past its deadline: never lead on it.
            guard !fence.isFenced(at: now) else { return [.resign(lease: lease)] }
            self.fence = fence
            holder = nil
            state = .leading(epoch: revision, lease: lease)
            return [.startLeading(epoch: revision)]

        case .campaignLost(let holder, let lease):
            if state == .follower { self.holder = holder }
            return lease.map { [.resign(lease: $0)] } ?? []

        case .campaignFailed(let lease):
            return [.resign(lease: lease)]

        case .keepaliveOK(let sentAt, let ttl):
            guard case .leading(let epoch, let lease) = state, var fence else { return [] }
            guard ttl > .zero else { return fenceNow(epoch: epoch, lease: lease) }
            fence.renewed(sentAt: sentAt, ttl: ttl)
            self.fence = fence
            failsafe = false
            // The answer may come after the deadline of the previous renewal; the new one counts.
            return []

        case .failsafeAcknowledged(let sentAt):
            guard case .leading = state, var fence else { return [] }
            // Same TTL as the lease: a peer's promise lasts a TTL from when it received the request.
            fence.renewed(sentAt: sentAt, ttl: fence.ttl)
            self.fence = fence
            failsafe = true
            return []

        case .keyRead(let readEpoch, let createRevision, let readLease):
            // A read from an earlier term says nothing about this one.
            guard case .leading(let epoch, let lease) = state, epoch == readEpoch else { return [] }
            guard createRevision != epoch || readLease != lease else { return [] }
            return fenceNow(epoch: epoch, lease: lease)

        case .keepaliveFailed(let now), .tick(let now):
            return onTime(now)

        case .shutdown, .declined:
            guard case .leading(let epoch, let lease) = state else { return [] }
            return fenceNow(epoch: epoch, lease: lease)
        }
    }

    /// The clock moved to `now`: a lead past its deadline fences; a fenced node whose old lease
    /// cannot be alive any more becomes a follower.
    private mutating func onTime(_ now: Instant) -> [Directive] {
        switch state {
        case .leading(let epoch, let lease):
            guard let fence, fence.isFenced(at: now) else { return [] }
            return fenceNow(epoch: epoch, lease: lease)
        case .fenced:
            if let fence, now < fence.earliestExpiry { return [] }
            state = .follower
            return []
        case .follower:
            return []
        }
    }

    private mutating func fenceNow(epoch: Int64, lease: Int64) -> [Directive] {
        state = .fenced(epoch: epoch)
        failsafe = false
        return [.fence(epoch: epoch), .resign(lease: lease)]
    }
}

// MARK: FailsafePromise

/// A standby's side of the failsafe (Patroni's `failsafe_mode`): while etcd does not answer its
/// lead, the lead serves only as long as every lead-eligible peer promises, each second, not to
/// campaign or promote for a TTL after it received the request. The lead counts the TTL from
/// when it *sent* the request, which was earlier, so its serving window ends before every
/// promise does (less its margin).
///
/// A promise and a promotion exclude each other: a standby that began promoting promises
/// nothing more, and one bound by a promise does not begin an automatic promotion.
/// All instants are on one monotonic clock that the shell reads.
public struct FailsafePromise: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant

    /// Until when this standby promised not to campaign or promote; nil before any promise.
    public private(set) var until: Instant?
    /// A promotion began: no more promises.
    public private(set) var promoting = false

    public init() {}

    /// Whether a promise binds at `now`.
    public func binds(at now: Instant) -> Bool { until.map { now < $0 } ?? false }

    /// Promises not to campaign or promote until `now + ttl` (never shortening an earlier
    /// promise); false, and nothing promised, once a promotion began.
    public mutating func promise(ttl: Duration, now: Instant) -> Bool {
        guard !promoting, ttl > .zero else { return false }
        let end = now + ttl
        until = max(until ?? end, end)
        return true
    }

    /// An automatic promotion may begin at `now`: false while a promise binds. Once begun,
    /// nothing more is promised.
    public mutating func beginPromotion(at now: Instant) -> Bool {
        guard !binds(at: now) else { return false }
        promoting = true
        return true
    }

    /// An operator's promotion: it asks the old lead to step down itself, so no promise stops it;
    /// from now on nothing more is promised.
    public mutating func beginManualPromotion() { promoting = true }

    /// The promotion failed before this standby led: it may promise again.
    public mutating func promotionFailed() { promoting = false }
}
