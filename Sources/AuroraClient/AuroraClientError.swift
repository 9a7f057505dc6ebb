import AuroraAPI

/// Why a call of ``AuroraClient`` failed: a ``Code`` a program can switch on, the call it was
/// (method, path with query, status) and one line for a person that never contains the token.
public struct AuroraClientError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case cannotConnect, refused, undecodable, pinRequired, pinMismatch, tlsFailed, lineTooLong, invalidArgument,
                context
        }

        private let base: Base

        /// No agent answers at the URL (connection refused, timed out, reset before an answer).
        public static let cannotConnect = Code(base: .cannotConnect)
        /// The agent answered `{"error": {code, message}}` with a status; see ``apiError``.
        public static let refused = Code(base: .refused)
        /// The answer (or a stream's line) is not what the API promises.
        public static let undecodable = Code(base: .undecodable)
        /// The URL is https and the client has no pin, so the token would go to any server.
        public static let pinRequired = Code(base: .pinRequired)
        /// The server presented a key other than the pin: nothing was sent to it.
        public static let pinMismatch = Code(base: .pinMismatch)
        /// No TLS handshake could be made to read the server's key.
        public static let tlsFailed = Code(base: .tlsFailed)
        /// A stream sent a line (or an event) longer than the client accepts.
        public static let lineTooLong = Code(base: .lineTooLong)
        /// An argument cannot be put into a path (an empty name).
        public static let invalidArgument = Code(base: .invalidArgument)
        /// The operator's context store (`~/.config/aurora`) cannot be read or written, a context
        /// is invalid or missing, or no operator token can be found where the choice points.
        public static let context = Code(base: .context)

        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// One line for a person.
    public let message: String
    /// The agent's URL.
    public var baseURL: String = ""
    /// The call's method, when the failure belongs to one.
    public var method: String?
    /// The path as sent, query included.
    public var path: String?
    /// The HTTP status of the answer, when there was one.
    public var status: Int?
    /// The API's `{"error": {code, message}}`, for ``Code/refused``.
    public var apiError: ErrorResponse.Detail?
    /// For ``Code/cannotConnect``: `connection refused`, `timed out` or the transport's first line.
    public var reason: String?

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

// MARK: - Constructors for the client's failures

extension AuroraClientError {
    static func cannotConnect(_ baseURL: String, _ error: any Error) -> AuroraClientError {
        let reason = Self.reason(error)
        var failure = AuroraClientError(.cannotConnect, "cannot connect to \(baseURL): \(reason)")
        failure.baseURL = baseURL
        failure.reason = reason
        return failure
    }

    static func refused(_ detail: ErrorResponse.Detail, status: Int, method: String, path: String, baseURL: String)
        -> AuroraClientError
    {
        var failure = AuroraClientError(.refused, "\(detail.message) (\(status) \(detail.code))")
        failure.apiError = detail
        failure.status = status
        failure.method = method
        failure.path = path
        failure.baseURL = baseURL
        return failure
    }

    static func unexpected(status: Int, method: String, path: String, baseURL: String) -> AuroraClientError {
        var failure = AuroraClientError(.undecodable, "\(method) \(path): unexpected answer \(status) from \(baseURL)")
        failure.status = status
        failure.method = method
        failure.path = path
        failure.baseURL = baseURL
        return failure
    }

    /// A transport error as a few words: `timed out`, `connection refused`, or its first line.
    public static func reason(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("refused") || text.contains("ECONNREFUSED") || text.contains("errno: 111") {
            return "connection refused"
        }
        let lowered = text.lowercased()
        if lowered.contains("timeout") || lowered.contains("deadlineexceeded") { return "timed out" }
        return text.split(separator: "\n").first.map(String.init) ?? "unreachable"
    }
}
