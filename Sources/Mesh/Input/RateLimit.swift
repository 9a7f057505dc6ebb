/// Token buckets by key (a source address, an identity): a pure core; the caller passes the
/// time in milliseconds of any monotonic clock.
///
/// Each key starts with a full bucket of `burst` tokens, and tokens come back at `ratePerSecond`.
/// A request takes one token or is refused with how long until one is back (for `Retry-After`).
/// Memory is bounded: a bucket that has filled up again is the same as no bucket and is
/// forgotten, and beyond `maxKeys` the least recently refilled buckets go first.
public struct RateLimiter: Sendable {
    /// One limit: a steady rate and a burst on top.
    public struct Limit: Sendable, Equatable {
        public var ratePerSecond: Double
        public var burst: Double

        public init(ratePerSecond: Double, burst: Double) {
            self.ratePerSecond = max(0.001, ratePerSecond)
            self.burst = max(1, burst)
        }
    }

    /// The answer for one request.
    public enum Verdict: Sendable, Equatable {
        case allowed
        /// Refused; a token is back after this many milliseconds.
        case limited(retryAfterMilliseconds: Int64)
    }

    private struct Bucket: Sendable {
        var tokens: Double
        var at: Int64
    }

    public let limit: Limit
    public let maxKeys: Int
    private var buckets: [String: Bucket] = [:]

    public init(_ limit: Limit, maxKeys: Int = 100_000) {
        self.limit = limit
        self.maxKeys = max(1, maxKeys)
    }

    /// Number of keys with a bucket that is not full.
    public var tracked: Int { buckets.count }

    /// Takes `cost` tokens for `key` at `now`, or says how long to wait.
    public mutating func take(_ key: String, cost: Double = 1, now: Int64) -> Verdict {
        var bucket = refilled(key, now: now)
        if bucket.tokens >= cost {
            bucket.tokens -= cost
            store(key, bucket)
            return .allowed
        }
        store(key, bucket)
        return .limited(retryAfterMilliseconds: wait(for: cost - bucket.tokens))
    }

    /// Whether `key` has `cost` tokens now, without taking them (to refuse early, before work
    /// whose outcome decides whether it is charged).
    public func peek(_ key: String, cost: Double = 1, now: Int64) -> Verdict {
        let bucket = refilled(key, now: now)
        if bucket.tokens >= cost { return .allowed }
        return .limited(retryAfterMilliseconds: wait(for: cost - bucket.tokens))
    }

    /// Milliseconds until `missing` tokens are back (a nanosecond's slack for rounding).
    private func wait(for missing: Double) -> Int64 {
        max(1, Int64((missing / limit.ratePerSecond * 1000 - 1e-6).rounded(.up)))
    }

    private func refilled(_ key: String, now: Int64) -> Bucket {
        guard var bucket = buckets[key] else { return Bucket(tokens: limit.burst, at: now) }
        let elapsed = Double(max(0, now - bucket.at)) / 1000
        bucket.tokens = min(limit.burst, bucket.tokens + elapsed * limit.ratePerSecond)
        bucket.at = max(bucket.at, now)
        return bucket
    }

    private mutating func store(_ key: String, _ bucket: Bucket) {
        if bucket.tokens >= limit.burst {
            buckets[key] = nil
            return
        }
        if buckets[key] == nil, buckets.count >= maxKeys { evict(now: bucket.at) }
        buckets[key] = bucket
    }

    /// Forgets buckets that are full again; when none is, the oldest eighth.
    private mutating func evict(now: Int64) {
        let fillMilliseconds = Int64(limit.burst / limit.ratePerSecond * 1000)
        buckets = buckets.filter { now - $0.value.at < fillMilliseconds }
        if buckets.count >= maxKeys {
            let oldest = buckets.sorted { $0.value.at < $1.value.at }.prefix(max(1, maxKeys / 8)).map(\.key)
            for key in oldest { buckets[key] = nil }
        }
    }
}

/// A per-minute budget (a gateway key's requests or tokens per minute): a token bucket that
/// holds one minute's worth and refills continuously, so a full minute's budget may be spent at
/// once and then comes back at the steady rate. Pure: the caller passes monotonic milliseconds.
///
/// A use whose size is known only afterwards (tokens) is ``charge(_:now:)``d in full even when
/// that drives the budget below zero: the debt is paid back by time before anything more is let
/// through, so a limit cannot be beaten by asking for much at once.
public struct MinuteBudget: Sendable, Equatable {
    public let perMinute: Double
    private var level: Double
    private var at: Int64

    public init(perMinute: Int, now: Int64) {
        self.perMinute = Double(max(1, perMinute))
        self.level = self.perMinute
        self.at = now
    }

    /// What is left now (negative: a debt).
    public mutating func available(now: Int64) -> Double {
        refill(now: now)
        return level
    }

    /// Nil when one more unit fits now; else the milliseconds until it does.
    public mutating func check(now: Int64) -> Int64? {
        refill(now: now)
        guard level < 1 else { return nil }
        return max(1, Int64(((1 - level) * 60_000 / perMinute).rounded(.up)))
    }

    /// Spends `amount` (at least 0), whatever is left.
    public mutating func charge(_ amount: Double, now: Int64) {
        refill(now: now)
        level -= max(0, amount)
    }

    private mutating func refill(now: Int64) {
        guard now > at else { return }
        level = min(perMinute, level + Double(now - at) * perMinute / 60_000)
        at = now
    }
}
