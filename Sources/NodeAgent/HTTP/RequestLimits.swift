import AuroraAPI
import Foundation
import Hummingbird
import Mesh
import Synchronization

/// The agent's request limits (token buckets from ``RateLimiter``), in one place for every route:
///
/// - **joins** per source address: a join token cannot be guessed at speed;
/// - **failed authentications** per source address: once a source has used up its failures,
///   everything it sends that needs authentication is refused until the bucket refills;
/// - **requests** per source address and claimed identity (node name, operator token, or none)
///   on every route. The identity is as claimed, not yet verified: keyed together with the
///   address, a stranger cannot use up a real node's budget from elsewhere.
///
/// Settings: `limits.*` in the profile (ConfigSchema). A refusal is `429 rate_limited` with
/// `Retry-After` in whole seconds.
final class RequestLimits: Sendable {
    /// What a worker's call (``RequestLimitMiddleware/isWorkerCall(method:path:signed:)``) takes
    /// from its node's per-identity bucket.
    static let workerCallCost = 0.1

    /// The three limits, each a steady rate per second with a burst on top (``RateLimiter/Limit``).
    struct Settings: Sendable, Equatable {
        /// Per source address and claimed identity: `limits.requests_per_s`, bursts of `limits.burst`.
        var requests: RateLimiter.Limit
        /// Join attempts per source address: `limits.joins_per_min`.
        var joins: RateLimiter.Limit
        /// Failed authentications (any 401) per source address: `limits.auth_failures_per_min`.
        var authFailures: RateLimiter.Limit
    }

    /// The limiters' state, behind one lock, so a request's checks happen in one step.
    private struct Buckets: Sendable {
        var requests: RateLimiter
        var joins: RateLimiter
        var failures: RateLimiter
    }

    private let buckets: Mutex<Buckets>
    /// The zero of ``now``: a monotonic clock, so a step of the wall clock refills no bucket.
    private let origin = ContinuousClock.now

    /// Limits with `settings`; every bucket starts full.
    init(_ settings: Settings) {
        buckets = Mutex(
            Buckets(
                requests: RateLimiter(settings.requests), joins: RateLimiter(settings.joins),
                failures: RateLimiter(settings.authFailures)))
    }

    /// The profile's `limits.*`. Per-minute figures become rates per second, with bursts of a
    /// quarter of the per-minute figure (at least 1).
    convenience init(config: NodeConfig) {
        self.init(
            Settings(
                requests: .init(ratePerSecond: Double(config.limitRequestsPerS), burst: Double(config.limitBurst)),
                joins: .init(
                    ratePerSecond: Double(config.limitJoinsPerMin) / 60,
                    burst: Double(max(1, config.limitJoinsPerMin / 4))),
                authFailures: .init(
                    ratePerSecond: Double(config.limitAuthFailuresPerMin) / 60,
                    burst: Double(max(1, config.limitAuthFailuresPerMin / 4)))))
    }

    /// Milliseconds since ``origin``, the unit ``RateLimiter`` counts in.
    private var now: Int64 {
        let elapsed = origin.duration(to: .now)
        return elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
    }

    /// Checks a request before it is handled; a refusal names the limit.
    ///
    /// In order: a request that needs authentication is refused while its source has no failure
    /// left (peeked, not taken: only a 401 charges it, ``failed(source:)``); a join takes one from its
    /// source's join bucket; every request takes one from `source|identity`. A join refused by that
    /// last bucket has still used a join. The refusal is 429 `rate_limited`; its message says
    /// `this token`, never the token's hash. Gateway traffic (`ownBudget`) skips that last
    /// bucket: a gateway key's call to a `/v1/` route (the key's own `rpm` and `tpm` limit it, and
    /// a forwarding agent carries every client of a key from one address) and a worker's stream
    /// push (one in flight per streamed call the lead gave it). A worker's other calls, whose
    /// number grows with the jobs the lead gives it (`cost`: ``workerCallCost``), take a tenth each.
    func admit(
        source: String, identity: String, isJoin: Bool, needsAuthentication: Bool, ownBudget: Bool = false,
        cost: Double = 1
    ) throws(Refusal) {
        let now = self.now
        let refusal: (String, Int64)? = buckets.withLock { buckets in
            if needsAuthentication, case .limited(let wait) = buckets.failures.peek(source, now: now) {
                return ("failed authentications from \(source)", wait)
            }
            if isJoin, case .limited(let wait) = buckets.joins.take(source, now: now) {
                return ("join attempts from \(source)", wait)
            }
            if !ownBudget,
                case .limited(let wait) = buckets.requests.take(source + "|" + identity, cost: cost, now: now)
            {
                return ("requests from \(source) as \(identity.hasPrefix("token") ? "this token" : identity)", wait)
            }
            return nil
        }
        if let (what, wait) = refusal { throw Self.limited(what, retryAfterMilliseconds: wait) }
    }

    /// Charges a failed authentication to its source.
    /// Called by ``RequestLimitMiddleware`` for every 401, returned or thrown, on any route.
    func failed(source: String) {
        let now = self.now
        buckets.withLock { _ = $0.failures.take(source, now: now) }
    }

    /// The 429 answer, `rate_limited`: the wait rounded up to whole seconds (at least 1), in the
    /// message and in `Retry-After`.
    static func limited(_ what: String, retryAfterMilliseconds: Int64) -> Refusal {
        let seconds = max(1, (retryAfterMilliseconds + 999) / 1000)
        return Refusal(
            .tooMany, code: "rate_limited", message: "too many \(what); retry in \(seconds) s",
            retryAfterSeconds: Int(seconds))
    }
}

/// Applies ``RequestLimits`` to every request, before the route and after it (a 401 is a
/// failed authentication).
///
/// The identity is what the request claims, not yet verified: `node 'NAME'` from the signing
/// header (its first 64 characters, control characters escaped), else a hash of the
/// `Authorization` header (seeded per process, kept in memory only), else `anonymous`. The source
/// is the peer address (`unknown` without one). A request needs authentication when it is a join
/// or carries either header: only those are refused for their source's failed authentications.
struct RequestLimitMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext
    /// Shared by every request of the router: one set of buckets per agent.
    let limits: RequestLimits

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let source = context.remoteHost ?? "unknown"
        let identity: String
        let node = request.headers[.init(RequestSigning.nodeHeader)!]
        if let node {
            identity = "node '" + InputRules.printable(String(node.prefix(64))) + "'"
        } else if let authorization = request.headers[.authorization] {
            identity = "token:\(authorization.hashValue)"  // in memory only; Hasher is seeded per process
        } else {
            identity = "anonymous"
        }
        let path = request.uri.path
        let isJoin = request.method == .post && path == Routes.join
        let needsAuthentication = isJoin || request.headers[.authorization] != nil || node != nil
        let ownBudget = Self.hasOwnBudget(
            method: request.method.rawValue, path: path, authorization: request.headers[.authorization],
            signed: node != nil)
        try limits.admit(
            source: source, identity: identity, isJoin: isJoin, needsAuthentication: needsAuthentication,
            ownBudget: ownBudget,
            cost: Self.isWorkerCall(method: request.method.rawValue, path: path, signed: node != nil)
                ? RequestLimits.workerCallCost : 1)
        do {
            let response = try await next(request, context)
            if response.status == .unauthorized { limits.failed(source: source) }
            return response
        } catch let error as Refusal where error.status == .unauthorized {
            limits.failed(source: source)
            throw error
        }
    }

    /// Gateway traffic has budgets of its own: a gateway key's call to a `/v1/` route (the key's
    /// rpm and tpm) and a worker's signed stream push (one in flight per call the lead gave it).
    /// A forged claim fails its check and is charged to its source's failures.
    static func hasOwnBudget(method: String, path: String, authorization: String?, signed: Bool) -> Bool {
        if path.hasPrefix("/v1/"), let authorization, authorization.lowercased().hasPrefix("bearer aurk_") {
            return true
        }
        return signed && method == "POST" && path.hasPrefix("/api/gpu/jobs/") && path.hasSuffix("/stream")
    }

    /// A worker's signed call whose number grows with the work the lead gives it: its assignment
    /// polls, its job results and its report batches. A GPU node serving a hundred gateway calls a
    /// second makes two hundred of them; the per-identity bucket counts each as a tenth.
    static func isWorkerCall(method: String, path: String, signed: Bool) -> Bool {
        guard signed else { return false }
        if method == "GET" { return path == Routes.gpuAssignments }
        guard method == "POST" else { return false }
        return (path.hasPrefix("/api/gpu/jobs/") && path.hasSuffix("/result"))
            || (path.hasPrefix("/api/nodes/") && path.hasSuffix("/reports"))
    }
}
