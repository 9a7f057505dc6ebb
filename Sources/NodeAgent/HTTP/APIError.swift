import AuroraAPI
import Hummingbird
import Logging
import Mesh

/// An error the API answers with: a status and the JSON body `{"error": {"code", "message"}}`.
struct APIError: Error {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    /// `Retry-After` (seconds) for a 429.
    var retryAfterSeconds: Int? = nil

    static func unauthorized(_ message: String) -> APIError { APIError(status: .unauthorized, code: "unauthorized", message: message) }
    static func badRequest(_ message: String) -> APIError { APIError(status: .badRequest, code: "bad_request", message: message) }
    static func notFound(_ message: String) -> APIError { APIError(status: .notFound, code: "not_found", message: message) }
    static func notLead(_ what: String, lead: String?) -> APIError {
        APIError(status: .misdirectedRequest, code: "not_lead",
                 message: "\(what) is served by the lead\(lead.map { " (\($0))" } ?? ""); send it there with the lead's operator token")
    }
    /// The store failed underneath a request; the store's message names no secret.
    /// The store's own words (which may quote what was sent) go to the log, not to the caller.
    static func storeUnavailable(_ error: AgentError) -> APIError {
        storeLogger.error("store call failed", metadata: ["nodeagent.error": "\(error.message)"])
        return APIError(status: .serviceUnavailable, code: "store_unavailable",
                        message: "the store is not available; retry in a moment (the lead's log has the details)")
    }

    private static let storeLogger = Logger(label: "nodeagent.store")
}

// MARK: Domain errors

extension APIError {
    /// A broken domain rule as the API answers it: the one place a ``MeshError`` gets a status.
    init(_ error: MeshError) {
        switch error.code {
        case .forbidden: self.init(status: .forbidden, code: "forbidden", message: error.message)
        case .nameTaken: self.init(status: .conflict, code: "name_taken", message: error.message)
        case .addressTaken: self.init(status: .conflict, code: "address_taken", message: error.message)
        case .invalidName, .invalidAddress, .invalidText, .tooMany: self.init(status: .badRequest, code: "bad_request", message: error.message)
        }
    }
}
