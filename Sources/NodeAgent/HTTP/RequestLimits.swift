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
    struct Settings: Sendable, Equatable {
        var requests: RateLimiter.Limit
        var joins: RateLimiter.Limit
        var authFailures: RateLimiter.Limit
    }

    private struct Buckets: Sendable {
        var requests: RateLimiter
        var joins: RateLimiter
        var failures: RateLimiter
    }

    private let buckets: Mutex<Buckets>
    private let origin = ContinuousClock.now

    init(_ settings: Settings) {
        buckets = Mutex(
            Buckets(
                requests: RateLimiter(settings.requests), joins: RateLimiter(settings.joins),
                failures: RateLimiter(settings.authFailures)))
    }

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

    private var now: Int64 {
        let elapsed = origin.duration(to: .now)
        return elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
    }

    /// Checks a request before it is handled; a refusal names the limit.
    func admit(source: String, identity: String, isJoin: Bool, needsAuthentication: Bool) throws(Refusal) {
        let now = self.now
        let refusal: (String, Int64)? = buckets.withLock { buckets in
            if needsAuthentication, case .limited(let wait) = buckets.failures.peek(source, now: now) {
                return ("failed authentications from \(source)", wait)
            }
            if isJoin, case .limited(let wait) = buckets.joins.take(source, now: now) {
                return ("join attempts from \(source)", wait)
            }
            if case .limited(let wait) = buckets.requests.take(source + "|" + identity, now: now) {
                return ("requests from \(source) as \(identity.hasPrefix("token") ? "this token" : identity)", wait)
            }
            return nil
        }
        if let (what, wait) = refusal { throw Self.limited(what, retryAfterMilliseconds: wait) }
    }

    /// Charges a failed authentication to its source.
    func failed(source: String) {
        let now = self.now
        buckets.withLock { _ = $0.failures.take(source, now: now) }
    }

    static func limited(_ what: String, retryAfterMilliseconds: Int64) -> Refusal {
        let seconds = max(1, (retryAfterMilliseconds + 999) / 1000)
        return Refusal(
            .tooMany, code: "rate_limited", message: "too many \(what); retry in \(seconds) s",
            retryAfterSeconds: Int(seconds))
    }
}

/// Applies ``RequestLimits`` to every request, before the route and after it (a 401 is a
/// failed authentication).
struct RequestLimitMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext
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
        try limits.admit(source: source, identity: identity, isJoin: isJoin, needsAuthentication: needsAuthentication)
        do {
            let response = try await next(request, context)
            if response.status == .unauthorized { limits.failed(source: source) }
            return response
        } catch let error as Refusal where error.status == .unauthorized {
            limits.failed(source: source)
            throw error
        }
    }
}
