/// `POST /ui/session`: the token a console signs in with (an agent's operator token, or on the
/// lead an API token). It is checked once; the session keeps its hash, never the token.
public struct ConsoleSignIn: Codable, Sendable, Equatable {
    public var token: String

    public init(token: String) { self.token = token }
}

/// A console session, as `POST /ui/session` and `GET /ui/session` answer it. The session's id
/// travels only in its HttpOnly cookie; `csrf` goes back in `X-Aurora-CSRF` with every call that
/// changes something.
public struct ConsoleSessionInfo: Codable, Sendable, Equatable {
    /// The role of the token it signed in with (`admin` for an operator token).
    public var role: APIRole
    /// Who its calls are recorded as: `operator`, or `api:ID[@COMPANY]`.
    public var caller: String
    /// Sent back as `X-Aurora-CSRF` on every `POST`, `PUT` and `DELETE` the cookie authenticates.
    public var csrf: String
    /// ISO 8601: the session ends then, or after `idle_s` without a call, whichever comes first.
    public var expiresAt: String
    public var idleS: Int
    /// The agent's node name and role (`lead`, `compute`, `edge`).
    public var agent: String
    public var agentRole: String

    public init(
        role: APIRole, caller: String, csrf: String, expiresAt: String, idleS: Int, agent: String, agentRole: String
    ) {
        self.role = role
        self.caller = caller
        self.csrf = csrf
        self.expiresAt = expiresAt
        self.idleS = idleS
        self.agent = agent
        self.agentRole = agentRole
    }

    enum CodingKeys: String, CodingKey {
        case role, caller, csrf, agent
        case expiresAt = "expires_at"
        case idleS = "idle_s"
        case agentRole = "agent_role"
    }
}

/// The console's names on the wire.
public enum ConsoleWire {
    /// The session cookie's name; its value is the session id (`aurses_` and 64 hex digits).
    public static let cookie = "aurora_session"
    /// The header that carries a session's CSRF token on calls that change something.
    public static let csrfHeader = "X-Aurora-CSRF"
    /// The prefix of a session id.
    public static let sessionPrefix = "aurses_"
}
