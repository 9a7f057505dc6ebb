/// Route paths as strings, for the daemon's router and tests; each is read from the route table
/// (``API``), and the functions fill its parameters with percent-escaping
/// (``Endpoint/path(_:query:)``). New code uses ``API`` directly.
public enum Routes {
    public static let health = API.health.pattern
    public static let metrics = API.metrics.pattern
    public static let openAPI = API.openAPI.pattern
    public static let agent = API.agent.pattern
    public static let join = API.join.pattern
    public static func heartbeat(_ name: String) -> String { API.heartbeat.path(name) }
    public static func leave(_ name: String) -> String { API.leave.path(name) }
    public static func nodeReports(_ name: String) -> String { API.nodeReports.path(name) }
    /// `GET`: every node; `DELETE /nodes/{name}` (admin) removes one.
    public static let nodes = API.listNodes.pattern
    public static func node(_ name: String) -> String { API.getNode.path(name) }
    public static func nodeLabels(_ name: String) -> String { API.setNodeLabels.path(name) }
    public static let topology = API.topology.pattern
    /// `GET`/`POST` tokens; `DELETE /api/tokens/{id}` revokes.
    public static let tokens = API.listTokens.pattern
    public static let events = API.events.pattern

    public static let gpuJobs = API.listJobs.pattern
    public static func gpuJob(_ id: String) -> String { API.getJob.path(id) }
    public static func gpuJobResult(_ id: String) -> String { API.jobResult.path(id) }
    public static func gpuJobLogs(_ id: String) -> String { API.jobLogs.path(id) }
    public static func gpuJobOutput(_ id: String) -> String { API.jobOutput.path(id) }
    public static let gpuGenerate = API.generate.pattern
    public static let gpuStatus = API.gpuStatus.pattern
    public static let gpuQueue = API.gpuQueue.pattern
    public static let gpuAssignments = API.gpuAssignments.pattern

    public static let secrets = API.listSecrets.pattern
    public static func secret(_ service: String, _ keyName: String) -> String { API.readSecret.path(service, keyName) }
    public static func secretVersions(_ service: String, _ keyName: String) -> String {
        API.secretVersions.path(service, keyName)
    }
    public static func secretRollback(_ service: String, _ keyName: String) -> String {
        API.rollbackSecret.path(service, keyName)
    }
    public static let audit = API.audit.pattern
    public static let secretsRotateKey = API.rotateSecretsKey.pattern

    public static let connectivityStatus = API.connectivityStatus.pattern
    public static let connectivityHealth = API.connectivityHealth.pattern

    public static let backups = API.listBackups.pattern
    public static func backupVerify(_ file: String) -> String { API.verifyBackup.path(file) }
    public static func backupRestore(_ file: String) -> String { API.restoreBackup.path(file) }

    public static let postgresHealth = API.postgresHealth.pattern
    public static let postgresReplicas = API.postgresReplicas.pattern
    public static let postgresPrimary = API.postgresPrimary.pattern
    public static let postgresReplica = API.postgresReplica.pattern
    public static let postgresReadOnly = API.postgresReadOnly.pattern

    public static let wireguard = API.wireguard.pattern
    public static let wireguardConfig = API.wireguardConfig.pattern
    public static let outbox = API.outbox.pattern
    public static let checks = API.checks.pattern
    public static let logs = API.logs.pattern
    public static let subsystems = API.subsystems.pattern
    public static func restartSubsystem(_ name: String) -> String { API.restartSubsystem.path(name) }
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
