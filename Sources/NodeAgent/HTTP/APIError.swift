import Hummingbird

/// The one mapping from a ``Refusal`` to HTTP: its status. The body is always
/// `{"error": {"code", "message"}}` (``APIErrorMiddleware``).
extension Refusal.Kind {
    /// The status this kind of refusal answers with.
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
        case .internalFailure: .internalServerError
        }
    }

    /// The kind of a refusal another agent answered with `status` (relayed as it is).
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
