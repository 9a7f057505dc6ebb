/// The route table: one ``Endpoint`` per operation of docs/openapi.yaml, shared by the daemon's
/// router (``Endpoint/routerPattern``) and the client (``Endpoint/path(_:query:)``).
/// Tests/UnitTests/RouteTableTests.swift checks that ``all`` is exactly the document's operations.
public enum API {
    // MARK: Agent

    /// Liveness and readiness of any agent; no authentication.
    public static let health = Endpoint("GET", "/health")
    /// Prometheus text exposition; no authentication.
    public static let metrics = Endpoint("GET", "/metrics")
    /// This API's OpenAPI 3.1 document as JSON; no authentication.
    public static let openAPI = Endpoint("GET", "/api/openapi.json")
    /// Local agent status for operators.
    public static let agent = Endpoint("GET", "/api/agent")

    // MARK: Nodes (signed calls of nodes, and the registry)

    /// A node joins with a join token.
    public static let join = Endpoint("POST", "/api/nodes/join")
    /// Signed heartbeat of node `{name}`.
    public static let heartbeat = Endpoint("POST", "/api/nodes/{name}/heartbeat")
    /// Signed: the node leaves the mesh on purpose.
    public static let leave = Endpoint("POST", "/api/nodes/{name}/leave")
    /// Signed: a node's queued reports (outbox).
    public static let nodeReports = Endpoint("POST", "/api/nodes/{name}/reports")
    /// Every node.
    public static let listNodes = Endpoint("GET", "/nodes")
    /// One node's record.
    public static let getNode = Endpoint("GET", "/nodes/{name}")
    /// Removes a node (admin, lead).
    public static let removeNode = Endpoint("DELETE", "/nodes/{name}")
    /// Replaces a node's trusted labels (admin, lead).
    public static let setNodeLabels = Endpoint("PUT", "/nodes/{name}/labels")
    /// Sets a node's company (admin, lead).
    public static let setNodeCompany = Endpoint("PUT", "/nodes/{name}/company")
    /// Cordons, drains or reopens a node for new jobs (admin, lead).
    public static let setNodeScheduling = Endpoint("PUT", "/nodes/{name}/scheduling")
    /// Nodes and measured links.
    public static let topology = Endpoint("GET", "/topology")

    // MARK: Tokens and events

    /// Creates a join token or an API token (admin, lead).
    public static let createToken = Endpoint("POST", "/api/tokens")
    /// Lists tokens, never their secrets.
    public static let listTokens = Endpoint("GET", "/api/tokens")
    /// Revokes a join token (`jt_…`) or an API token (`at_…`).
    public static let revokeToken = Endpoint("DELETE", "/api/tokens/{id}")
    /// Server-Sent Events, resumable with `Last-Event-ID` or `?since=SEQ`.
    public static let events = Endpoint("GET", "/api/events")

    // MARK: GPU jobs

    /// Submits a job.
    public static let submitJob = Endpoint("POST", "/api/gpu/jobs")
    /// Recent jobs, newest first.
    public static let listJobs = Endpoint("GET", "/api/gpu/jobs")
    /// Submits a generate job and waits for its answer.
    public static let generate = Endpoint("POST", "/api/gpu/generate")
    /// One job; `?wait=S` waits for it to finish.
    public static let getJob = Endpoint("GET", "/api/gpu/jobs/{id}")
    /// Cancels a job.
    public static let cancelJob = Endpoint("DELETE", "/api/gpu/jobs/{id}")
    /// Signed: a worker's result for a job.
    public static let jobResult = Endpoint("POST", "/api/gpu/jobs/{id}/result")
    /// The tail of an exec job's output; `?offset=N&wait=S` continues from a byte and waits for more.
    public static let jobLogs = Endpoint("GET", "/api/gpu/jobs/{id}/logs")
    /// Signed: new output of a job a worker runs.
    public static let jobOutput = Endpoint("POST", "/api/gpu/jobs/{id}/output")
    /// Signed: the next chunks of a streamed gateway call a worker runs.
    public static let jobStream = Endpoint("POST", "/api/gpu/jobs/{id}/stream")
    /// Placement's view: free VRAM and jobs per node.
    public static let gpuStatus = Endpoint("GET", "/api/gpu/status")
    /// Queued jobs in placement order.
    public static let gpuQueue = Endpoint("GET", "/api/gpu/queue")
    /// Signed: a worker's assignments.
    public static let gpuAssignments = Endpoint("GET", "/api/gpu/assignments")

    // MARK: Secrets

    /// Stores a new version of a secret.
    public static let writeSecret = Endpoint("POST", "/api/secrets")
    /// Names, scopes and versions; never values.
    public static let listSecrets = Endpoint("GET", "/api/secrets")
    /// Re-wraps every data key under a new key-encryption key.
    public static let rotateSecretsKey = Endpoint("POST", "/api/secrets/rotate-key")
    /// The value that resolves.
    public static let readSecret = Endpoint("GET", "/api/secrets/{service}/{key}")
    /// Deletes a secret at one scope.
    public static let deleteSecret = Endpoint("DELETE", "/api/secrets/{service}/{key}")
    /// Every version of a secret at one scope.
    public static let secretVersions = Endpoint("GET", "/api/secrets/{service}/{key}/versions")
    /// Makes an earlier version current again.
    public static let rollbackSecret = Endpoint("POST", "/api/secrets/{service}/{key}/rollback")
    /// The audit log of secret reads and writes.
    public static let audit = Endpoint("GET", "/api/audit")

    // MARK: Connectivity

    /// Signed: a node's probe results.
    public static let reportConnectivity = Endpoint("POST", "/api/connectivity/status")
    /// Node × service matrix.
    public static let connectivityStatus = Endpoint("GET", "/api/connectivity/status")
    /// Per-service health.
    public static let connectivityHealth = Endpoint("GET", "/api/connectivity/health")

    // MARK: Backups

    /// The backups on the lead.
    public static let listBackups = Endpoint("GET", "/api/backups")
    /// Takes a backup, streaming progress as NDJSON.
    public static let createBackup = Endpoint("POST", "/api/backups")
    /// Verifies one backup.
    public static let verifyBackup = Endpoint("POST", "/api/backups/{file}/verify")
    /// Restores one backup into a new database.
    public static let restoreBackup = Endpoint("POST", "/api/backups/{file}/restore")

    // MARK: PostgreSQL

    /// The local PostgreSQL server's health.
    public static let postgresHealth = Endpoint("GET", "/api/postgres/health")
    /// Replica states, on the lead.
    public static let postgresReplicas = Endpoint("GET", "/api/postgres/replicas")
    /// Load-balancer check: 200 on the primary.
    public static let postgresPrimary = Endpoint("GET", "/postgres/primary")
    /// Load-balancer check: 200 on a healthy replica.
    public static let postgresReplica = Endpoint("GET", "/postgres/replica")
    /// Load-balancer check: 200 where reads may go.
    public static let postgresReadOnly = Endpoint("GET", "/postgres/read-only")

    // MARK: WireGuard and operations

    /// The local WireGuard interface and peers.
    public static let wireguard = Endpoint("GET", "/api/wireguard")
    /// The rendered configuration, as text.
    public static let wireguardConfig = Endpoint("GET", "/api/wireguard/config")
    /// The node's outbox.
    public static let outbox = Endpoint("GET", "/api/outbox")
    /// Health checks and their results.
    public static let checks = Endpoint("GET", "/api/checks")
    /// Restartable subsystems.
    public static let subsystems = Endpoint("GET", "/api/subsystems")
    /// Restarts one subsystem in place.
    public static let restartSubsystem = Endpoint("POST", "/api/subsystems/{name}/restart")
    /// Recent structured log lines.
    public static let logs = Endpoint("GET", "/api/logs")

    /// Every agent's metrics endpoint in Prometheus's HTTP service-discovery format (read token).
    public static let prometheusTargets = Endpoint("GET", "/api/prometheus/targets")

    // MARK: Leads

    /// What this agent knows of the mesh's leads and epoch (operator).
    public static let leadStatus = Endpoint("GET", "/api/lead")
    /// The current lead's signed term; no authentication (nodes check the signature).
    public static let leadHandoff = Endpoint("GET", "/api/lead/handoff")
    /// The newest signed term this agent holds: the lead's own, or the one a node followed at a
    /// handoff; no authentication (an old lead checks the signature against its own store).
    public static let followedTerm = Endpoint("GET", "/api/lead/followed")
    /// Promotes this standby to lead (its operator token).
    public static let promoteLead = Endpoint("POST", "/api/lead/promote")
    /// Signed by a standby about to promote: the lead fences itself.
    public static let stepDown = Endpoint("POST", "/api/lead/step-down")
    /// Signed by the lead for one standby while etcd does not answer the lead: the standby
    /// promises not to campaign or promote for a TTL (the failsafe).
    public static let failsafe = Endpoint("POST", "/api/lead/failsafe")
    /// Signed by an old lead fenced by a newer term: the lead takes it back as a standby.
    public static let rejoinLead = Endpoint("POST", "/api/lead/rejoin")

    /// The mesh's models (OpenAI's list shape), with the nodes that serve each.
    public static let listModels = Endpoint("GET", "/v1/models")
    /// OpenAI-compatible calls, routed by model to a node that serves it (`"stream": true` for
    /// server-sent events).
    public static let chatCompletions = Endpoint("POST", "/v1/chat/completions")
    public static let completions = Endpoint("POST", "/v1/completions")
    public static let embeddings = Endpoint("POST", "/v1/embeddings")
    /// Gateway keys (`aurk_…`, for the `/v1/` routes only): create, list, revoke, usage.
    public static let createKey = Endpoint("POST", "/api/keys")
    public static let listKeys = Endpoint("GET", "/api/keys")
    public static let revokeKey = Endpoint("DELETE", "/api/keys/{id}")
    public static let keyUsage = Endpoint("GET", "/api/keys/usage")

    // MARK: Console

    /// The web console's page (its assets are built into the binary); no authentication.
    public static let consolePage = Endpoint("GET", "/ui")
    /// One of the console's scripts, styles or icons, by file name; no authentication.
    public static let consoleAsset = Endpoint("GET", "/ui/assets/{file}")
    /// Signs in to the console with a token: a session cookie (HttpOnly, SameSite=Strict).
    public static let consoleSignIn = Endpoint("POST", "/ui/session")
    /// The console session of the cookie: its role, caller, CSRF token and expiry.
    public static let consoleSession = Endpoint("GET", "/ui/session")
    /// Signs out: the session ends and its cookie is cleared.
    public static let consoleSignOut = Endpoint("DELETE", "/ui/session")

    /// Every endpoint, once.
    public static let all: [Endpoint] = [
        health, metrics, openAPI, agent,
        join, heartbeat, leave, nodeReports, listNodes, getNode, removeNode, setNodeLabels, setNodeScheduling,
        setNodeCompany, topology,
        createToken, listTokens, revokeToken, events,
        submitJob, listJobs, generate, getJob, cancelJob, jobResult, gpuStatus, gpuQueue, gpuAssignments,
        jobLogs, jobOutput, jobStream,
        writeSecret, listSecrets, rotateSecretsKey, readSecret, deleteSecret, secretVersions, rollbackSecret, audit,
        reportConnectivity, connectivityStatus, connectivityHealth,
        listBackups, createBackup, verifyBackup, restoreBackup,
        postgresHealth, postgresReplicas, postgresPrimary, postgresReplica, postgresReadOnly,
        wireguard, wireguardConfig, outbox, checks, subsystems, restartSubsystem, logs, prometheusTargets,
        leadStatus, leadHandoff, followedTerm, promoteLead, stepDown, failsafe, rejoinLead, listModels, chatCompletions,
        completions, embeddings, createKey, listKeys, revokeKey, keyUsage,
        consolePage, consoleAsset, consoleSignIn, consoleSession, consoleSignOut,
    ]
}

extension API {
    /// The route `path` (no query) takes with `method`, as its pattern (`/api/gpu/jobs/{id}`), or
    /// `other` for a path no endpoint has: a bounded label for metrics, whatever a client sends.
    public static func route(method: String, path: String) -> String {
        guard path.utf8.count <= 2048 else { return "other" }
        if let fixed = RouteIndex.fixed[method + " " + path] { return fixed }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        for (endpointMethod, pattern, shape) in RouteIndex.parameterized
        where endpointMethod == method && shape.count == segments.count {
            if zip(shape, segments).allSatisfy({ fixed, segment in fixed.map { $0 == segment } ?? !segment.isEmpty }) {
                return pattern
            }
        }
        return "other"
    }
}

/// ``API/route(method:path:)``'s tables, built once from ``API/all``.
private enum RouteIndex {
    static let fixed: [String: String] = Dictionary(
        API.all.filter { $0.parameterNames.isEmpty }.map { ($0.method + " " + $0.pattern, $0.pattern) },
        uniquingKeysWith: { first, _ in first })
    /// Method, pattern and its segments (nil for a parameter).
    static let parameterized: [(String, String, [Substring?])] = API.all.filter { !$0.parameterNames.isEmpty }.map {
        endpoint in
        (
            endpoint.method, endpoint.pattern,
            endpoint.segments.map { $0.first == "{" && $0.last == "}" ? nil : $0 }
        )
    }
}
