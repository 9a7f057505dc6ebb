// Alert webhooks: which events a webhook takes, where its delivery stands in the event log and
// how long it waits after a failed attempt. Pure: the shell (NodeAgent's `WebhookDelivery`)
// reads the log, sends the requests and stores the cursor.

/// Bounded exponential backoff between attempts at one event: `initial` after the first
/// failure, doubling, never more than `maximum`.
public struct WebhookBackoff: Sendable, Equatable {
    /// The wait after the first failed attempt.
    public let initial: Duration
    /// The longest wait, however many attempts failed.
    public let maximum: Duration

    /// 500 ms doubling to 60 s by default: a receiver back after an outage gets the event within a
    /// minute, and a receiver that is down for hours gets one attempt a minute.
    public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(60)) {
        self.initial = max(initial, .milliseconds(1))
        self.maximum = max(maximum, self.initial)
    }

    /// The wait after `failures` consecutive failed attempts (1 or more): `initial · 2^(failures − 1)`,
    /// at most `maximum`. Never overflows, however large `failures` is.
    public func delay(afterFailures failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        var delay = initial
        var doublings = failures - 1
        while doublings > 0, delay < maximum {
            delay = delay * 2
            doublings -= 1
        }
        return min(delay, maximum)
    }
}

/// Where one webhook's delivery stands in the event log.
///
/// The `cursor` is the sequence up to which the webhook is done: every event it takes up to
/// there was answered with a 2xx, and every other event up to there was passed over. It only
/// moves forward, one event at a time: an event that keeps failing holds it (events are never
/// skipped), so the shell retries with ``WebhookBackoff`` until the receiver takes it.
///
/// Passing over events the webhook does not take moves the cursor in memory only; the shell
/// stores it after every delivery, and for passed-over events once it has caught up
/// (``unstored``). A restart before that only passes over the same events again.
public struct WebhookProgress: Sendable, Equatable {
    /// What the shell does with the next event of the log.
    public enum Step: Sendable, Equatable {
        /// Send it; then report ``WebhookProgress/onDelivered(_:)`` or ``WebhookProgress/onFailed(_:)``.
        case deliver
        /// Not for this webhook (another type, or at or before the cursor): go on with the next.
        case pass
    }

    /// The event types the webhook takes (`alert.raised`, ...).
    public let types: Set<String>
    /// How long to wait after failed attempts.
    public let backoff: WebhookBackoff
    /// Consecutive failures after which the webhook counts as failing (logged, shown in metrics).
    public let failingAfter: Int
    /// Every event up to here is done (delivered or passed over).
    public private(set) var cursor: Int64
    /// The cursor as the store has it.
    public private(set) var stored: Int64
    /// Failed attempts at the event after the cursor since its last success.
    public private(set) var failures = 0

    /// Starts at `cursor`, the stored position.
    public init(types: Set<String>, cursor: Int64, backoff: WebhookBackoff = WebhookBackoff(), failingAfter: Int = 3) {
        self.types = types
        self.backoff = backoff
        self.failingAfter = max(1, failingAfter)
        self.cursor = cursor
        self.stored = cursor
    }

    /// Whether the webhook takes events of `type`.
    public func takes(_ type: String) -> Bool { types.contains(type) }

    /// The next event of the log, read after the cursor: `.deliver` when the webhook takes it,
    /// else `.pass` (and the cursor moves past it).
    public mutating func onEvent(seq: Int64, type: String) -> Step {
        guard seq > cursor else { return .pass }
        guard takes(type) else {
            cursor = seq
            return .pass
        }
        return .deliver
    }

    /// The receiver answered 2xx for event `seq`: the cursor moves to it and the failures reset.
    /// The shell stores the cursor next.
    public mutating func onDelivered(_ seq: Int64) {
        cursor = max(cursor, seq)
        failures = 0
    }

    /// An attempt at the event after the cursor failed (no answer, a timeout, not 2xx); returns
    /// how long to wait before the next attempt. The cursor stays.
    public mutating func onFailed(_ seq: Int64) -> Duration {
        failures += 1
        return backoff.delay(afterFailures: failures)
    }

    /// The store now has `seq` as the cursor.
    public mutating func onStored(_ seq: Int64) { stored = max(stored, seq) }

    /// The cursor moved past events since it was last stored.
    public var unstored: Bool { cursor > stored }

    /// Whether the webhook has failed `failingAfter` times in a row (it stays failing until a delivery).
    public var failing: Bool { failures >= failingAfter }

    /// Whether the last ``onFailed(_:)`` made the webhook failing (so the shell says so once).
    public var justStartedFailing: Bool { failures == failingAfter }
}
