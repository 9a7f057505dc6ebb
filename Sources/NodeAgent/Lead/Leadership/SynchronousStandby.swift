import Foundation

/// The lead's rule for its synchronous standby, as a pure core: fed one sample of the primary's
/// replication status a second, it answers what to do (``Directive``), in order.
///
/// - The designated standby (one node with role `standby` that has a replication slot) becomes
///   synchronous once it streams and has replayed everything (0 bytes of lag): every later
///   commit waits for it.
/// - Disconnected for longer than ``ineligibleAfter``, it is FIRST recorded ineligible (an event
///   too), THEN the lead stops waiting for it (asynchronous commits): a record that says it was
///   synchronous until then is never missing.
/// - Back and caught up again: eligible again, then synchronous again.
///
/// A directive that fails is retried at the next sample: the shell keeps the rule as it was
/// before the sample (``SynchronousStandbyRule`` is a value).
struct SynchronousStandbyRule: Sendable, Equatable {
    /// What the shell carries out, in order.
    enum Directive: Sendable, Equatable {
        /// `synchronous_standby_names` names this standby (nil: none, asynchronous commits).
        case setSynchronous(String?)
        /// Record the standby ineligible (`standby_eligibility`) with an event, committed locally.
        case markIneligible(String, reason: String)
        /// Record the standby eligible again, with an event.
        case markEligible(String)
    }

    /// One sample of the designated standby.
    struct Sample: Sendable, Equatable {
        /// The designated standby; nil when there is none.
        var standby: String?
        /// It has a WAL sender on the primary now.
        var connected: Bool
        /// It is streaming and has replayed everything the primary wrote (replay lag 0 bytes).
        var caughtUp: Bool
    }

    /// How long the designated standby may be disconnected before it is ineligible.
    let ineligibleAfter: Duration
    /// The standby the rule follows.
    private(set) var designated: String?
    /// Eligibility as recorded (a name missing: eligible).
    private(set) var eligibility: [String: Bool]
    /// The standby named in `synchronous_standby_names`, as the rule last set it.
    private(set) var synchronous: String?
    /// When the designated standby was last seen connected (or became designated).
    private var lastConnected: ContinuousClock.Instant?

    /// A rule that starts with `eligibility` as recorded and no synchronous standby (the shell
    /// sets `synchronous_standby_names` to none when it starts).
    init(ineligibleAfter: Duration, eligibility: [String: Bool] = [:]) {
        self.ineligibleAfter = ineligibleAfter
        self.eligibility = eligibility
    }

    /// Whether `name` is eligible as recorded.
    func isEligible(_ name: String) -> Bool { eligibility[name] ?? true }

    /// One sample at `now`; returns the directives to carry out, in order.
    mutating func onSample(_ sample: Sample, now: ContinuousClock.Instant) -> [Directive] {
        var directives: [Directive] = []
        guard let name = sample.standby else {
            designated = nil
            lastConnected = nil
            if synchronous != nil {
                synchronous = nil
                directives.append(.setSynchronous(nil))
            }
            return directives
        }
        if designated != name {
            designated = name
            lastConnected = now
            if synchronous != nil {
                synchronous = nil
                directives.append(.setSynchronous(nil))
            }
        }
        if sample.connected { lastConnected = now }
        if sample.connected && sample.caughtUp {
            if !isEligible(name) {
                eligibility[name] = true
                directives.append(.markEligible(name))
            }
            if synchronous != name {
                synchronous = name
                directives.append(.setSynchronous(name))
            }
            return directives
        }
        if !sample.connected, let since = lastConnected, now - since > ineligibleAfter {
            if isEligible(name) {
                eligibility[name] = false
                directives.append(
                    .markIneligible(
                        name, reason: "disconnected for more than \(ineligibleAfter.components.seconds) s"))
            }
            if synchronous != nil {
                synchronous = nil
                directives.append(.setSynchronous(nil))
            }
        }
        return directives
    }
}
