/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
public struct ErrorResponse: Codable, Sendable, Equatable, Error {
    /// The error itself.
    public struct Detail: Codable, Sendable, Equatable {
        /// A stable, machine-readable code such as `not_found` or `payload_too_large`.
        public var code: String
        /// A sentence for a person. Never contains a secret.
        public var message: String
        /// OpenAI's error type (`invalid_request_error`, `authentication_error`, …): only on the
        /// OpenAI-compatible routes (`/v1/…`), whose clients read it.
        public var type: String?

        public init(code: String, message: String, type: String? = nil) {
            self.code = code
            self.message = message
            self.type = type
        }
    }

    public var error: Detail

    public init(code: String, message: String, type: String? = nil) {
        self.error = Detail(code: code, message: message, type: type)
    }
}
