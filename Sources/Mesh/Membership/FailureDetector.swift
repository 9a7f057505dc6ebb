/// A member's liveness as the failure detector sees it. Raw values are the API's `state`.
public enum MemberState: String, Sendable, CaseIterable, Comparable {
    case alive, suspect, away, dead, left

    /// How bad the state is, for "only ever get worse by timing".
    var severity: Int {
        switch self {
        case .alive: 0
        case .suspect: 1
        case .away: 2
        case .dead: 3
        case .left: 4
        }
    }

    public static func < (lhs: MemberState, rhs: MemberState) -> Bool { lhs.severity < rhs.severity }
}

/// The failure detector: a pure core, driven by events and an injected clock.
///
/// Timing (per member, from its profile): `suspect` once more than `suspectAfter` intervals
/// passed without a heartbeat, `away` (edge nodes, `awayAfter` > 0) past `awayAfter`, `dead`
/// past `deadAfter`. A heartbeat makes any member `alive` again. A graceful leave gives `left`.
///
/// Evidence shortens the wait: once a member is 1.5 intervals late the detector asks its
/// shell to probe the member's agent (``Directive/probe(_:)``). A refused connection from the
/// member's own address proves nothing listens there, so the member is `dead` at once (or
/// `away` for members that go away before dead). A probe that times out proves nothing and
/// timing goes on.
///
/// Flapping is damped: every transition adds a penalty that halves every `halfLife`; while
/// the penalty is above `suppressAt` transitions still happen but are not reported, and once
/// it decays below `reuseAt` one settling transition reports the net change.
public struct FailureDetector: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// A member's heartbeat timing.
    public struct Policy: Sendable, Equatable {
        public var interval: Duration
        public var suspectAfter: Int
        /// 0: never away.
        public var awayAfter: Int
        public var deadAfter: Int

        public init(interval: Duration, suspectAfter: Int, awayAfter: Int, deadAfter: Int) {
            self.interval = interval
            self.suspectAfter = suspectAfter
            self.awayAfter = awayAfter
            self.deadAfter = deadAfter
        }

        /// Whether this member goes `away` before `dead`.
        public var goesAway: Bool { awayAfter > 0 }
    }

    /// Flap damping parameters.
    public struct Damping: Sendable, Equatable {
        public var halfLife: Duration
        public var suppressAt: Double
        public var reuseAt: Double

        public init(halfLife: Duration = .seconds(30), suppressAt: Double = 4, reuseAt: Double = 2) {
            self.halfLife = halfLife
            self.suppressAt = suppressAt
            self.reuseAt = reuseAt
        }
    }

    /// Why a member changed state.
    public enum Reason: String, Sendable, Equatable {
        /// A heartbeat arrived.
        case heartbeat
        /// Too many heartbeats were missed.
        case missedHeartbeats = "missed_heartbeats"
        /// A probe of the member's agent was refused: nothing listens there.
        case notListening = "not_listening"
        /// The member left on purpose.
        case left
        /// Damping ended; this reports the net change of the damped period.
        case settled
    }

    /// One state change.
    public struct Transition: Sendable, Equatable {
        public var name: String
        public var from: MemberState
        public var to: MemberState
        public var reason: Reason
        public var at: Instant
        /// False while the member is damped: the state changed but no event should be sent.
        public var reported: Bool
        /// True on the reported transition after which the member's changes are damped.
        public var dampingStarted: Bool
        /// For a `settled` transition: how many changes were folded into it.
        public var folded: Int
    }

    /// What the shell should do.
    public enum Directive: Sendable, Equatable {
        case transition(Transition)
        /// Connect to the member's agent and report with ``onProbe(_:refused:sentAt:at:)``.
        case probe(String)
    }

    struct Member: Sendable {
        var policy: Policy
        var state: MemberState
        var lastHeard: Instant
        var lastProbe: Instant?
        var penalty: Double = 0
        var penaltyAt: Instant
        var damped = false
        var reportedState: MemberState
        var folded = 0
    }

    public let damping: Damping
    /// Probe a member once it is this many intervals late.
    public let probeAfterIntervals: Double
    private var members: [String: Member] = [:]

    public init(damping: Damping = Damping(), probeAfterIntervals: Double = 1.5) {
        self.damping = damping
        self.probeAfterIntervals = probeAfterIntervals
    }

    // MARK: Queries

    public func state(of name: String) -> MemberState? { members[name]?.state }

    public func isDamped(_ name: String) -> Bool { members[name]?.damped ?? false }

    // MARK: Events

    /// Starts watching a member (a join, or the lead's restart) as if heard from at `at`.
    public mutating func add(_ name: String, policy: Policy, state: MemberState = .alive, at: Instant) {
        members[name] = Member(policy: policy, state: state, lastHeard: at, penaltyAt: at, reportedState: state)
    }

    /// Stops watching a member (removed by an operator).
    public mutating func remove(_ name: String) {
        members[name] = nil
    }

    /// A heartbeat from `name` at `at`, with the member's current policy.
    public mutating func onHeartbeat(_ name: String, policy: Policy? = nil, at: Instant) -> [Directive] {
        guard var member = members[name] else { return [] }
        if let policy { member.policy = policy }
        member.lastHeard = max(member.lastHeard, at)
        var directives: [Directive] = []
        if member.state != .alive {
            directives.append(.transition(change(&member, name, to: .alive, reason: .heartbeat, at: at)))
        }
        members[name] = member
        return directives
    }

    /// The member left on purpose.
    public mutating func onLeave(_ name: String, at: Instant) -> [Directive] {
        guard var member = members[name], member.state != .left else { return [] }
        let transition = change(&member, name, to: .left, reason: .left, at: at)
        members[name] = member
        return [.transition(transition)]
    }

    /// The result of a probe sent at `sentAt`. Only a refusal is evidence, and only if the
    /// member has not been heard from since the probe was sent.
    public mutating func onProbe(_ name: String, refused: Bool, sentAt: Instant, at: Instant) -> [Directive] {
        guard refused, var member = members[name], member.lastHeard < sentAt else { return [] }
        let target: MemberState = member.policy.goesAway ? .away : .dead
        guard member.state < target, member.state != .left else { return [] }
        let transition = change(&member, name, to: target, reason: .notListening, at: at)
        members[name] = member
        return [.transition(transition)]
    }

    /// Time passed: applies timing, asks for probes of late members, and ends damping.
    public mutating func onTick(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        for name in members.keys.sorted() {
            guard var member = members[name] else { continue }
            if member.state != .left {
                let late = member.lastHeard.duration(to: now)
                let intervals = late / member.policy.interval
                let target = timedState(intervals: intervals, policy: member.policy)
                if member.state < target {
                    directives.append(
                        .transition(change(&member, name, to: target, reason: .missedHeartbeats, at: now)))
                }
                if member.state < .dead, !(member.state == .away), intervals >= probeAfterIntervals,
                    member.lastProbe.map({ $0 < member.lastHeard || $0.duration(to: now) >= member.policy.interval })
                        ?? true
                {
                    member.lastProbe = now
                    directives.append(.probe(name))
                }
            }
            if member.damped {
                decay(&member, to: now)
                if member.penalty < damping.reuseAt {
                    member.damped = false
                    if member.state != member.reportedState {
                        directives.append(
                            .transition(
                                Transition(
                                    name: name, from: member.reportedState, to: member.state, reason: .settled, at: now,
                                    reported: true, dampingStarted: false, folded: member.folded)))
                        member.reportedState = member.state
                    }
                    member.folded = 0
                }
            }
            members[name] = member
        }
        return directives
    }

    // MARK: Internals

    private func timedState(intervals: Double, policy: Policy) -> MemberState {
        if intervals > Double(policy.deadAfter) { return .dead }
        if policy.goesAway, intervals > Double(policy.awayAfter) { return .away }
        if intervals > Double(policy.suspectAfter) { return .suspect }
        return .alive
    }

    private func decay(_ member: inout Member, to now: Instant) {
        let elapsed = member.penaltyAt.duration(to: now) / damping.halfLife
        if elapsed > 0 {
            member.penalty *= halving(elapsed)
            member.penaltyAt = now
        }
    }

    private func change(_ member: inout Member, _ name: String, to state: MemberState, reason: Reason, at: Instant)
        -> Transition
    {
        decay(&member, to: at)
        member.penalty += 1
        let from = member.state
        member.state = state
        if member.damped {
            member.folded += 1
            return Transition(
                name: name, from: from, to: state, reason: reason, at: at, reported: false, dampingStarted: false,
                folded: 0)
        }
        member.reportedState = state
        let starts = member.penalty >= damping.suppressAt
        if starts {
            member.damped = true
            member.folded = 0
        }
        return Transition(
            name: name, from: from, to: state, reason: reason, at: at, reported: true, dampingStarted: starts, folded: 0
        )
    }
}

/// 0.5^x for x >= 0, without Foundation: whole halvings, then exp(-f ln 2) by its series.
private func halving(_ x: Double) -> Double {
    guard x < 1024 else { return 0 }
    let whole = x.rounded(.down)
    var result = 1.0
    for _ in 0..<Int(whole) { result *= 0.5 }
    let y = -(x - whole) * 0.6931471805599453
    var term = 1.0, sum = 1.0
    for k in 1...16 {
        term *= y / Double(k)
        sum += term
    }
    return result * sum
}
