/// Route paths shared by the daemon and its clients (shared/DESIGN.md, API).
public enum Routes {
    /// Liveness and readiness of any agent; no authentication.
    public static let health = "/health"
    /// Prometheus text exposition; no authentication.
    public static let metrics = "/metrics"
    /// This API's OpenAPI 3.1 document (docs/openapi.yaml) as JSON; no authentication.
    public static let openAPI = "/api/openapi.json"
    /// Local agent status for operators; needs the operator token.
    public static let agent = "/api/agent"
    /// `POST`: a node joins with a join token.
    public static let join = "/api/nodes/join"
    /// `POST /api/nodes/{name}/heartbeat`: signed.
    public static func heartbeat(_ name: String) -> String { "/api/nodes/\(name)/heartbeat" }
    /// `POST /api/nodes/{name}/leave`: signed; the node leaves the mesh on purpose.
    public static func leave(_ name: String) -> String { "/api/nodes/\(name)/leave" }
    /// `GET`: every node; `DELETE /nodes/{name}` (admin) removes one.
    public static let nodes = "/nodes"
    /// `GET /nodes/{name}`.
    public static func node(_ name: String) -> String { "/nodes/\(name)" }
    /// `PUT` (admin, lead): a node's trusted labels, `{"labels": {...}}`, replaced whole.
    public static func nodeLabels(_ name: String) -> String { "/nodes/\(name)/labels" }
    /// `GET`: nodes and measured links.
    public static let topology = "/topology"
    /// `GET`/`POST` join tokens (admin, lead); `DELETE /api/tokens/{id}` revokes.
    public static let tokens = "/api/tokens"
    /// `GET`: Server-Sent Events, resumable with `Last-Event-ID` or `?since=SEQ`.
    public static let events = "/api/events"
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
