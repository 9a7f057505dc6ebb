import Logging
import Mesh

/// Why a subsystem refused a call, in the API's words but without HTTP: the kind of refusal
/// (the HTTP layer alone turns it into a status, in `HTTP/Refusal.swift`), the API's error
/// code (`name_taken`, `audit_unavailable`, …; part of the contract) and a message that names
/// what is wrong. A message never holds a secret or the store's own words.
struct Refusal: Error, Sendable {
    /// The kinds of refusal the API distinguishes.
    enum Kind: Sendable, Equatable {
        /// The request is malformed or breaks a rule (400).
        case invalid
        /// No valid credential (401).
        case unauthenticated
        /// A valid credential without the right (403).
        case forbidden
        /// The thing named does not exist, or is not the caller's to see (404).
        case notFound
        /// The request conflicts with the current state: a taken name, a running backup (409).
        case conflict
        /// The request or one of its parts is larger than allowed (413).
        case tooLarge
        /// Well-formed, but cannot be carried out as asked (422).
        case unprocessable
        /// Over a rate limit; `retryAfterSeconds` says when to retry (429).
        case tooMany
        /// Served by another agent: the lead (421).
        case notHere
        /// A part this call needs is down or starting: the store, the lead, the audit (503).
        case unavailable
        /// Another agent or server answered wrongly or not at all (502).
        case upstreamFailed
        /// Nothing answered within the time the caller gave (504).
        case timedOut
        /// A fault of this agent; the message says what, the log says more (500).
        case internalFailure
    }

    let kind: Kind
    let code: String
    let message: String
    /// For ``Kind/tooMany``: seconds until a retry may succeed.
    var retryAfterSeconds: Int? = nil

    init(_ kind: Kind, code: String, message: String, retryAfterSeconds: Int? = nil) {
        self.kind = kind
        self.code = code
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    static func unauthorized(_ message: String) -> Refusal {
        Refusal(.unauthenticated, code: "unauthorized", message: message)
    }
    static func badRequest(_ message: String) -> Refusal { Refusal(.invalid, code: "bad_request", message: message) }
    static func notFound(_ message: String) -> Refusal { Refusal(.notFound, code: "not_found", message: message) }
    /// A call only the lead serves, made to another agent.
    static func notLead(_ what: String, lead: String?) -> Refusal {
        Refusal(
            .notHere, code: "not_lead",
            message:
                "\(what) is served by the lead\(lead.map { " (\($0))" } ?? ""); send it there with the lead's operator token"
        )
    }
    /// The store failed underneath a request; the store's message names no secret.
    /// The store's own words (which may quote what was sent) go to the log, not to the caller.
    static func storeUnavailable(_ error: AgentError) -> Refusal {
        storeLogger.error("store call failed", metadata: ["nodeagent.error": "\(error.message)"])
        return Refusal(
            .unavailable, code: "store_unavailable",
            message: "the store is not available; retry in a moment (the lead's log has the details)")
    }

    private static let storeLogger = Logger(label: "nodeagent.store")
}

extension Refusal {
    /// A broken domain rule as a refusal: the one place a ``MeshError`` gets a kind.
    init(_ error: MeshError) {
        switch error.code {
        case .forbidden: self.init(.forbidden, code: "forbidden", message: error.message)
        case .nameTaken: self.init(.conflict, code: "name_taken", message: error.message)
        case .addressTaken: self.init(.conflict, code: "address_taken", message: error.message)
        case .invalidName, .invalidAddress, .invalidText, .tooMany:
            self.init(.invalid, code: "bad_request", message: error.message)
        }
    }
}
