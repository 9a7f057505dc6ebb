import Hummingbird

/// The one mapping from a ``Refusal`` to HTTP: its status. The body is always
/// `{"error": {"code", "message"}}` (``APIErrorMiddleware``).
///
/// The kind fixes only the status; the body's `code` is the refusal's own (`not_lead`,
/// `lead_unreachable`, `backup_running`, …), so one status carries several codes (docs/API.md §2).
extension Refusal.Kind {
    /// The status this kind of refusal answers with.
    ///
    /// `notHere` is 421 Misdirected Request (`not_lead`: a lead-only call made to another agent);
    /// `upstreamFailed` is 502 (an agent this one called did not answer as it should).
    var status: HTTPResponse.Status {
        switch self {
        case .invalid: .badRequest
        case .unauthenticated: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .conflict: .conflict
        case .tooLarge: .contentTooLarge
        case .unprocessable: .unprocessableContent
        case .tooMany: .tooManyRequests
        case .notHere: .misdirectedRequest
        case .unavailable: .serviceUnavailable
        case .upstreamFailed: .badGateway
        case .timedOut: .gatewayTimeout
        case .internalFailure: .internalServerError
        }
    }

    /// The kind of a refusal another agent answered with `status` (relayed as it is).
    ///
    /// A node reading a secret through the lead rebuilds the lead's refusal from its status, so the
    /// node's operator sees the lead's status and code. A status without a kind of its own becomes
    /// `upstreamFailed` (502) when it is a 5xx and `invalid` (400) otherwise.
    init(status: Int) {
        switch status {
        case 400: self = .invalid
        case 401: self = .unauthenticated
        case 403: self = .forbidden
        case 404: self = .notFound
        case 409: self = .conflict
        case 413: self = .tooLarge
        case 421: self = .notHere
        case 422: self = .unprocessable
        case 429: self = .tooMany
        case 500: self = .internalFailure
        case 503: self = .unavailable
        default: self = status >= 500 ? .upstreamFailed : .invalid
        }
    }
}

extension Refusal {
    /// The status this refusal answers with.
    var status: HTTPResponse.Status { kind.status }
}
