/// Route paths shared by the daemon and its clients (shared/DESIGN.md, API).
public enum Routes {
    /// Liveness and readiness of any agent; no authentication.
    public static let health = "/health"
    /// Prometheus text exposition; no authentication.
    public static let metrics = "/metrics"
    /// Local agent status for operators; needs the operator token.
    public static let agent = "/api/agent"
}

/// HTTP header names of the API.
public enum Headers {
    /// `Authorization: Bearer <operator token>`.
    public static let authorization = "Authorization"
}

/// Defaults every component agrees on.
public enum Defaults {
    /// Where the agent listens unless told otherwise.
    public static let listen = "127.0.0.1:9999"
    /// The agent URL `aurora-cli` talks to unless told otherwise.
    public static let agentURL = "http://127.0.0.1:9999"
    /// The data directory of an installed agent.
    public static let dataDir = "/var/lib/aurora"
    /// The file in the data directory holding the operator token in clear text (0600).
    public static let adminTokenFile = "admin.token"
}
