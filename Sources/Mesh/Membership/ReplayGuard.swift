/// Refuses stale and replayed signed requests (a pure core; the caller passes the time).
///
/// A request is fresh when its timestamp is within `window` of the lead's clock and its
/// nonce was not seen from the same node within the window. Nonces are forgotten once no
/// timestamp that carried them could still be fresh, so memory is bounded by the request
/// rate times twice the window.
public struct ReplayGuard: Sendable {
    /// Why a request is refused.
    public enum Verdict: Sendable, Equatable {
        case fresh
        /// The timestamp is this many milliseconds away from the lead's clock (signed: negative is in the past).
        case stale(skewMilliseconds: Int64)
        case replayed
    }

    public let windowMilliseconds: Int64
    private var seen: [String: Int64] = [:]  // node + nonce → forget after (ms)
    private var expiries: [(at: Int64, key: String)] = []
    private var head = 0

    public init(windowSeconds: Int64) {
        self.windowMilliseconds = windowSeconds * 1000
    }

    /// Number of nonces remembered now.
    public var remembered: Int { seen.count }

    /// Checks without remembering: for a request whose signature has not been verified yet.
    public func check(node: String, nonce: String, timestampMilliseconds: Int64, nowMilliseconds: Int64) -> Verdict {
        let skew = timestampMilliseconds - nowMilliseconds
        if abs(skew) > windowMilliseconds { return .stale(skewMilliseconds: skew) }
        if let until = seen[node + "\u{0}" + nonce], until >= nowMilliseconds { return .replayed }
        return .fresh
    }

    /// Checks and, when fresh, remembers the nonce. Call after the signature verified, so
    /// forged requests cannot fill the memory.
    public mutating func admit(node: String, nonce: String, timestampMilliseconds: Int64, nowMilliseconds: Int64)
        -> Verdict
    {
        forget(before: nowMilliseconds)
        let verdict = check(
            node: node, nonce: nonce, timestampMilliseconds: timestampMilliseconds, nowMilliseconds: nowMilliseconds)
        guard verdict == .fresh else { return verdict }
        // The same timestamp stays fresh until timestamp + window: remember the nonce as long.
        let until = timestampMilliseconds + windowMilliseconds
        let key = node + "\u{0}" + nonce
        seen[key] = until
        expiries.append((until, key))
        return verdict
    }

    private mutating func forget(before now: Int64) {
        // Expiries are nearly in order (timestamps within the window); an out-of-order one is
        // only kept a little longer, never forgotten early: `seen` holds the real deadline.
        while head < expiries.count, expiries[head].at < now {
            let key = expiries[head].key
            if let until = seen[key], until < now { seen[key] = nil }
            head += 1
        }
        if head > 4096, head * 2 > expiries.count {
            expiries.removeFirst(head)
            head = 0
        }
    }
}
