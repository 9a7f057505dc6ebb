import AsyncHTTPClient
import AuroraAPI
import Foundation
import NIOCore
import NIOHTTP1

// One method per endpoint the operator's tools use; each builds its path from ``API`` and
// escapes its parameters and query inside. The PostgreSQL views and checks are in
// AuroraClient+Postgres.swift, a node's signed calls to its lead in AuroraClient+Mesh.swift.

// MARK: - Agent

extension AuroraClient {
    /// `GET /health`: the agent's health, also when it answers 503 (starting, degraded, stopping).
    public func health() async throws(AuroraClientError) -> HealthResponse {
        try await decode(call(API.health), accepting: { $0 == 200 || $0 == 503 })
    }

    /// `GET /metrics`: the Prometheus text exposition, as text; no token needed.
    public func metrics() async throws(AuroraClientError) -> String {
        String(decoding: try await data(call(API.metrics)), as: UTF8.self)
    }

    /// `GET /api/openapi.json`: the API's OpenAPI 3.1 document, the JSON bytes as served; no
    /// token needed.
    public func openAPIDocument() async throws(AuroraClientError) -> Data {
        try await data(call(API.openAPI))
    }

    /// `GET /api/agent`: the local agent's status (operator).
    public func agentStatus() async throws(AuroraClientError) -> AgentStatus {
        try await decode(call(API.agent), accepting: { $0 == 200 })
    }
}

// MARK: - Nodes

extension AuroraClient {
    /// `GET /nodes`: every node (stale when the lead is away).
    public func nodes() async throws(AuroraClientError) -> NodeList {
        try await decode(call(API.listNodes))
    }

    /// `GET /nodes/{name}`.
    public func node(_ name: String) async throws(AuroraClientError) -> Node {
        try await decode(call(API.getNode, name))
    }

    /// `PUT /nodes/{name}/labels`: replaces the node's trusted labels.
    public func setLabels(_ labels: [String: String], of name: String) async throws(AuroraClientError) -> Node {
        try await decode(call(API.setNodeLabels, name, body: NodeLabelsUpdate(labels: labels)))
    }

    /// `PUT /nodes/{name}/scheduling`: cordons, drains (running jobs handed back after
    /// `deadlineS`) or reopens a node for new jobs.
    public func setScheduling(_ state: SchedulingState, deadlineS: Double? = nil, of name: String)
        async throws(AuroraClientError) -> Node
    {
        try await decode(
            call(API.setNodeScheduling, name, body: NodeSchedulingUpdate(state: state, deadlineS: deadlineS)))
    }

    /// `PUT /nodes/{name}/company`: sets the node's company ("" for none).
    public func setCompany(_ company: String, of name: String) async throws(AuroraClientError) -> Node {
        try await decode(call(API.setNodeCompany, name, body: NodeCompanyUpdate(company: company)))
    }

    /// `DELETE /nodes/{name}`: removes the node's record, or (`keep`) keeps it as `left`.
    public func removeNode(_ name: String, keep: Bool = false) async throws(AuroraClientError) -> Node {
        try await decode(call(API.removeNode, name, query: keep ? [("keep", "true")] : []))
    }

    /// `GET /v1/models`: the mesh's models and the nodes that serve each (stale when the lead is away).
    public func models() async throws(AuroraClientError) -> ModelList {
        try await decode(call(API.listModels))
    }

    /// `POST /api/keys`: a gateway key, shown once.
    public func createGatewayKey(_ request: GatewayKeyCreateRequest) async throws(AuroraClientError)
        -> GatewayKeyCreated
    {
        try await decode(call(API.createKey, body: request))
    }

    /// `GET /api/keys`: every gateway key (never a key itself).
    public func gatewayKeys() async throws(AuroraClientError) -> GatewayKeyList {
        try await decode(call(API.listKeys))
    }

    /// `DELETE /api/keys/{id}`: revokes a gateway key at once.
    public func revokeGatewayKey(_ id: String) async throws(AuroraClientError) -> GatewayKeyInfo {
        try await decode(call(API.revokeKey, id))
    }

    /// `GET /api/keys/usage`: requests and tokens per key (or other caller) and model.
    public func gatewayUsage() async throws(AuroraClientError) -> GatewayUsageList {
        try await decode(call(API.keyUsage))
    }

    /// `POST /v1/chat/completions` through the mesh: the backend's answer as it is (OpenAI's shape).
    public func chatCompletion(_ body: [String: JSONValue]) async throws(AuroraClientError) -> JSONValue {
        try await decode(call(API.chatCompletions, body: body, timeout: .seconds(310)))
    }

    /// `POST /v1/completions` through the mesh.
    public func completion(_ body: [String: JSONValue]) async throws(AuroraClientError) -> JSONValue {
        try await decode(call(API.completions, body: body, timeout: .seconds(310)))
    }

    /// `POST /v1/embeddings` through the mesh.
    public func embeddings(_ body: [String: JSONValue]) async throws(AuroraClientError) -> JSONValue {
        try await decode(call(API.embeddings, body: body, timeout: .seconds(310)))
    }

    /// `GET /topology`: the nodes and the links they measured (stale when the lead is away).
    public func topology() async throws(AuroraClientError) -> Topology {
        try await decode(call(API.topology))
    }
}

// MARK: - Tokens

extension AuroraClient {
    /// `POST /api/tokens` for a join token.
    public func createJoinToken(_ request: TokenCreateRequest) async throws(AuroraClientError) -> TokenCreated {
        try await decode(call(API.createToken, body: request))
    }

    /// `POST /api/tokens` for an API token.
    public func createAPIToken(_ request: TokenCreateRequest) async throws(AuroraClientError) -> APITokenCreated {
        try await decode(call(API.createToken, body: request))
    }

    /// `GET /api/tokens`.
    public func tokens() async throws(AuroraClientError) -> TokenList {
        try await decode(call(API.listTokens))
    }

    /// `DELETE /api/tokens/{id}` of a join token (`jt_…`).
    public func revokeJoinToken(_ id: String) async throws(AuroraClientError) -> TokenInfo {
        try await decode(call(API.revokeToken, id))
    }

    /// `DELETE /api/tokens/{id}` of an API token (`at_…`).
    public func revokeAPIToken(_ id: String) async throws(AuroraClientError) -> APITokenInfo {
        try await decode(call(API.revokeToken, id))
    }
}

// MARK: - Events

/// One event of `GET /api/events`: the decoded event and its JSON as the agent sent it.
public struct ReceivedEvent: Sendable {
    public var event: MeshEvent
    public var json: String
}

/// The mesh events of an event stream, decoded; an event whose data is not a ``MeshEvent``
/// ends it with ``AuroraClientError/Code/undecodable``.
public struct MeshEventStream: AsyncSequence {
    public typealias Element = ReceivedEvent
    let events: ServerSentEvents<HTTPClientResponse.Body>

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(events: events.makeAsyncIterator()) }

    /// Decodes each event's data.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var events: ServerSentEvents<HTTPClientResponse.Body>.AsyncIterator
        let decoder = APICoding.decoder()

        /// The sequence number of the last event (or position marker) the stream sent: resume
        /// after it with `Last-Event-ID`.
        public var lastSeq: Int64? { events.lastEventID.flatMap { Int64($0) } }

        public mutating func next() async throws -> ReceivedEvent? {
            guard let event = try await events.next() else { return nil }
            guard let decoded = try? decoder.decode(MeshEvent.self, from: Data(event.data.utf8)) else {
                throw AuroraClientError(.undecodable, "event \(event.id ?? "?") of the stream is not a mesh event")
            }
            return ReceivedEvent(event: decoded, json: event.data)
        }
    }
}

extension AuroraClient {
    /// `GET /api/events`: the events after `since`, or the last `tail` ones; with `follow` the
    /// stream stays open for new events. `types` is comma-separated (`job.*` matches by prefix).
    /// `lastEventID` resumes a stream that broke (`Last-Event-ID`): it wins over `since` and `tail`.
    /// `timeout` bounds the wait for the answer's head only (AsyncHTTPClient's deadline ends
    /// there): the stream itself stays open as long as the agent sends.
    public func events(
        since: Int64? = nil, tail: Int? = nil, follow: Bool, types: String? = nil, node: String? = nil,
        lastEventID: Int64? = nil, timeout: TimeAmount = .seconds(10)
    )
        async throws(AuroraClientError) -> MeshEventStream
    {
        let since = lastEventID == nil ? since : nil
        var request = try call(
            API.events,
            query: [
                ("since", since.map(String.init)),
                ("tail", since == nil && lastEventID == nil ? tail.map(String.init) : nil),
                ("follow", String(follow)), ("type", types), ("node", node),
            ],
            accept: "text/event-stream", timeout: timeout)
        if let lastEventID { request.headers.append(("Last-Event-ID", String(lastEventID))) }
        return MeshEventStream(events: ServerSentEvents(try await stream(request)))
    }
}

// MARK: - GPU jobs

extension AuroraClient {
    /// `POST /api/gpu/jobs`.
    public func submitJob(_ submission: JobSubmission) async throws(AuroraClientError) -> Job {
        try await decode(call(API.submitJob, body: submission))
    }

    /// `POST /api/gpu/generate`: submits a `generate` job and waits up to the request's `waitS`
    /// for it to finish (the call's timeout grows by as much); the job comes back finished (200)
    /// or still open (202).
    public func generate(_ request: GenerateRequest) async throws(AuroraClientError) -> Job {
        try await decode(call(API.generate, body: request, timeout: request.waitS.map { .seconds(Int64($0) + 10) }))
    }

    /// `GET /api/gpu/jobs`: recent jobs, newest first.
    public func jobs(state: JobState? = nil, limit: Int? = nil) async throws(AuroraClientError) -> JobList {
        try await decode(call(API.listJobs, query: [("limit", limit.map(String.init)), ("state", state?.rawValue)]))
    }

    /// `GET /api/gpu/jobs/{id}`; with `wait` the agent holds the answer up to that many seconds
    /// until the job finishes (the call's timeout grows by as much).
    public func job(_ id: String, wait: Double? = nil) async throws(AuroraClientError) -> Job {
        try await decode(
            call(
                API.getJob, id, query: [("wait", wait.map { String($0) })],
                timeout: wait.map { .seconds(Int64($0) + 10) }))
    }

    /// `GET /api/gpu/jobs/{id}/logs`: the job's output tail from byte `offset`; with `wait` (0-30 s)
    /// the agent holds the answer until there is more or the job ends (the call's timeout grows by
    /// as much). Follow a job by calling again from `next_offset` until `done`.
    public func jobLogs(_ id: String, offset: Int = 0, wait: Double? = nil) async throws(AuroraClientError) -> JobLogs {
        try await decode(
            call(
                API.jobLogs, id,
                query: [("offset", offset > 0 ? String(offset) : nil), ("wait", wait.map { String($0) })],
                timeout: wait.map { .seconds(Int64($0) + 10) }))
    }

    /// `DELETE /api/gpu/jobs/{id}`.
    public func cancelJob(_ id: String) async throws(AuroraClientError) -> Job {
        try await decode(call(API.cancelJob, id))
    }

    /// `GET /api/gpu/status`.
    public func gpuStatus() async throws(AuroraClientError) -> GPUStatus {
        try await decode(call(API.gpuStatus))
    }

    /// `GET /api/gpu/queue`.
    public func queue() async throws(AuroraClientError) -> QueueView {
        try await decode(call(API.gpuQueue))
    }
}

// MARK: - Secrets

extension AuroraClient {
    /// `POST /api/secrets`: a new version.
    public func writeSecret(_ write: SecretWrite) async throws(AuroraClientError) -> SecretInfo {
        try await decode(call(API.writeSecret, body: write))
    }

    /// `GET /api/secrets/{service}/{key}`; on the lead `node` or `company` previews what resolves there.
    public func readSecret(service: String, key: String, node: String? = nil, company: String? = nil)
        async throws(AuroraClientError) -> SecretRead
    {
        try await decode(call(API.readSecret, service, key, query: [("node", node), ("company", company)]))
    }

    /// `GET /api/secrets`.
    public func secrets() async throws(AuroraClientError) -> SecretList {
        try await decode(call(API.listSecrets))
    }

    /// `GET /api/secrets/{service}/{key}/versions` at one scope.
    public func secretVersions(service: String, key: String, scope: String, scopeID: String?)
        async throws(AuroraClientError) -> SecretVersions
    {
        try await decode(call(API.secretVersions, service, key, query: [("scope", scope), ("scope_id", scopeID)]))
    }

    /// `DELETE /api/secrets/{service}/{key}` at one scope.
    public func deleteSecret(service: String, key: String, scope: String, scopeID: String?)
        async throws(AuroraClientError) -> SecretInfo
    {
        try await decode(call(API.deleteSecret, service, key, query: [("scope", scope), ("scope_id", scopeID)]))
    }

    /// `POST /api/secrets/{service}/{key}/rollback`.
    public func rollbackSecret(service: String, key: String, _ rollback: SecretRollback) async throws(AuroraClientError)
        -> SecretInfo
    {
        try await decode(call(API.rollbackSecret, service, key, body: rollback))
    }

    /// `GET /api/audit`: the newest `limit` entries; `verify` checks the whole hash chain.
    public func audit(limit: Int, verify: Bool) async throws(AuroraClientError) -> AuditLog {
        try await decode(call(API.audit, query: [("limit", String(limit)), ("verify", verify ? "true" : nil)]))
    }

    /// `POST /api/secrets/rotate-key`.
    public func rotateSecretsKey(timeout: TimeAmount = .seconds(300)) async throws(AuroraClientError) -> SecretRotation
    {
        try await decode(call(API.rotateSecretsKey, timeout: timeout))
    }
}

// MARK: - Connectivity

extension AuroraClient {
    /// `GET /api/connectivity/status`: node × service.
    public func connectivityStatus() async throws(AuroraClientError) -> ConnectivityMatrix {
        try await decode(call(API.connectivityStatus))
    }

    /// `GET /api/connectivity/health`: per service.
    public func connectivityHealth() async throws(AuroraClientError) -> ConnectivityHealth {
        try await decode(call(API.connectivityHealth))
    }
}

// MARK: - Backups

extension AuroraClient {
    /// `GET /api/backups`.
    public func backups() async throws(AuroraClientError) -> BackupList {
        try await decode(call(API.listBackups))
    }

    /// `POST /api/backups` as NDJSON: progress lines, then one line with the backup or the error.
    public func createBackup(timeout: TimeAmount = .hours(24)) async throws(AuroraClientError)
        -> NDJSONLines<HTTPClientResponse.Body, BackupStreamLine>
    {
        NDJSONLines(try await stream(call(API.createBackup, accept: MediaTypes.ndjson, timeout: timeout)))
    }

    /// `POST /api/backups/{file}/verify`.
    public func verifyBackup(_ file: String, timeout: TimeAmount = .hours(1)) async throws(AuroraClientError)
        -> BackupVerification
    {
        try await decode(call(API.verifyBackup, file, timeout: timeout))
    }

    /// `POST /api/backups/{file}/restore` into a new database.
    public func restoreBackup(_ file: String, into database: String, timeout: TimeAmount = .hours(24))
        async throws(AuroraClientError) -> BackupRestored
    {
        try await decode(call(API.restoreBackup, file, body: BackupRestoreRequest(into: database), timeout: timeout))
    }
}

// MARK: - WireGuard and operations

extension AuroraClient {
    /// `GET /api/wireguard`.
    public func wireguard() async throws(AuroraClientError) -> WireGuardStatus {
        try await decode(call(API.wireguard), accepting: { $0 == 200 })
    }

    /// `GET /api/wireguard/config`: the rendered configuration as text.
    public func wireguardConfig(showPrivate: Bool, setconf: Bool) async throws(AuroraClientError) -> String {
        let body = try await data(
            call(API.wireguardConfig, query: [("show_private", String(showPrivate)), ("setconf", String(setconf))]))
        return String(decoding: body, as: UTF8.self)
    }

    /// `GET /api/outbox`: this agent's outbox of reports for the lead (503 `starting` until it is open).
    public func outbox() async throws(AuroraClientError) -> OutboxStatus {
        try await decode(call(API.outbox))
    }

    /// `GET /api/checks`: this agent's service checks and resource alerts.
    public func checks() async throws(AuroraClientError) -> CheckReport {
        try await decode(call(API.checks))
    }

    /// `GET /api/logs`: up to `limit` lines after `since`, of one subsystem and level or more,
    /// of this agent or (through the lead) of `node`.
    public func logs(limit: Int, since: Int64, subsystem: String? = nil, node: String? = nil, level: String? = nil)
        async throws(AuroraClientError) -> LogPage
    {
        try await decode(
            call(
                API.logs,
                query: [
                    ("limit", String(limit)), ("since", String(since)), ("subsystem", subsystem),
                    ("node", node), ("level", level),
                ]))
    }

    /// `GET /api/subsystems`.
    public func subsystems() async throws(AuroraClientError) -> SubsystemList {
        try await decode(call(API.subsystems))
    }

    /// `POST /api/subsystems/{name}/restart`.
    public func restartSubsystem(_ name: String, timeout: TimeAmount = .seconds(30)) async throws(AuroraClientError)
        -> SubsystemState
    {
        try await decode(call(API.restartSubsystem, name, timeout: timeout))
    }
}
