import AuroraAPI
import Foundation
import Mesh
import Synchronization

@testable import NodeAgent

/// The lead's row stores in process: the same protocols as ``Store`` (PostgreSQL), holding
/// the rows in memory, for service tests that drive the lead's routes without a database.
///
/// Writes happen under one lock, one at a time, so a batch is all or nothing and events are
/// published in `seq` order, as the PostgreSQL store does with its one connection.
/// ``failing`` makes every call throw, as a store that is down does.
final class MemoryStore: Sendable {
    struct JoinToken {
        var id: String
        var hash: String
        var profile: NodeRole
        var company: String
        var labels: [String: String]
        var reusable: Bool
        var uses = 0
        var createdAt: Date
        var expiresAt: Date
        var revokedAt: Date?
    }

    struct APIToken {
        var id: String
        var hash: String
        var role: APIRole
        var company: String
        var createdAt: Date
        var expiresAt: Date?
        var revokedAt: Date?
    }

    struct NodeRow {
        var entry: Registry.Entry
        var tokenID: String?
        var removedAt: Date?
        /// Removed for good: in no view, kept only while it holds an address.
        var forgotten = false
    }

    struct JobRow {
        var seq: Int64
        var job: Job
        var payload: [String: JSONValue]
        /// The submitter-scoped idempotency key (``JobRows/scopedKey(_:)``).
        var key: String?
    }

    struct GatewayKey {
        var hash: String
        var info: GatewayKeyInfo
        var expiresAt: Date?
    }

    struct Tables {
        var gatewayKeys: [GatewayKey] = []
        var gatewayUsage: [String: GatewayUsage] = [:]
        var events: [MeshEvent] = []
        var joinTokens: [JoinToken] = []
        var apiTokens: [APIToken] = []
        var nodes: [String: NodeRow] = [:]
        var jobs: [JobRow] = []
        var reports: [String: Date] = [:]
        var secrets = SecretTables()
    }

    let tables = Mutex(Tables())
    private let failure = Mutex<AgentError?>(nil)

    /// The store's clock (the wall clock, as PostgreSQL's `now()`).
    var now: Date { Date() }

    /// When set, every call throws it (code `store`) and changes nothing.
    var failing: AgentError? {
        get { failure.withLock { $0 } }
        set { failure.withLock { $0 = newValue } }
    }

    /// Runs `body` on the tables under the lock, unless the store is failing.
    func locked<R: Sendable>(_ body: (inout Tables, Date) throws(AgentError) -> R) throws(AgentError) -> R {
        if let failing { throw failing }
        let now = self.now
        return try tables.withLock { (tables: inout Tables) throws(AgentError) -> R in try body(&tables, now) }
    }

    /// Runs `body` on the secret tables and the rest (for events) under the one lock.
    func lockedSecrets<R: Sendable>(_ body: (inout SecretTables, inout Tables) throws(AgentError) -> R)
        throws(AgentError) -> R
    {
        try locked { (tables, _) throws(AgentError) -> R in
            var secrets = tables.secrets
            let result = try body(&secrets, &tables)
            tables.secrets = secrets
            return result
        }
    }

    /// Appends `drafts` to the log (inside the caller's lock) and returns them as recorded.
    static func record(_ drafts: [EventLog.Draft], in tables: inout Tables, at now: Date, ids: [String]? = nil)
        -> [MeshEvent]
    {
        drafts.enumerated().map { index, draft in
            let event = MeshEvent(
                id: ids?[index] ?? UUID().uuidString.lowercased(), seq: (tables.events.last?.seq ?? 0) + 1,
                type: draft.type, at: ISOTime.string(now), node: draft.node, data: draft.data)
            tables.events.append(event)
            return event
        }
    }
}

// MARK: - Events and reports

extension MemoryStore: EventStore, ReportStore {
    func append(_ drafts: [EventLog.Draft], published: @escaping Published) async throws(AgentError) -> [MeshEvent] {
        try locked { tables, now in
            let events = Self.record(drafts, in: &tables, at: now)
            published(events)
            return events
        }
    }

    func appendOnce(_ draft: EventLog.Draft, id: String, published: @escaping Published) async throws(AgentError)
        -> MeshEvent?
    {
        try locked { tables, now in
            guard !tables.events.contains(where: { $0.id == id }) else { return nil }
            let events = Self.record([draft], in: &tables, at: now, ids: [id])
            published(events)
            return events.first
        }
    }

    func events(since seq: Int64, limit: Int) async throws(AgentError) -> [MeshEvent] {
        try locked { tables, _ in Array(tables.events.filter { $0.seq > seq }.prefix(max(0, limit))) }
    }

    func latestEventSeq() async throws(AgentError) -> Int64 {
        try locked { tables, _ in tables.events.last?.seq ?? 0 }
    }

    func reportTaken(_ id: String) async throws(AgentError) -> Bool {
        try locked { tables, _ in tables.reports[id] != nil }
    }

    func recordReport(_ id: String, node: String, kind: String, outcome: ReportOutcome) async throws(AgentError) {
        try locked { tables, now in
            if tables.reports[id] == nil { tables.reports[id] = now }
        }
    }

    func pruneReports(olderThanDays days: Int) async throws(AgentError) {
        try locked { tables, now in
            tables.reports = tables.reports.filter { now.timeIntervalSince($0.value) < Double(days) * 86_400 }
        }
    }
}

// MARK: - Tokens

extension MemoryStore: TokenStore {
    static func info(_ token: JoinToken, now: Date) -> TokenInfo {
        let state: TokenInfo.State =
            token.revokedAt != nil
            ? .revoked : token.expiresAt <= now ? .expired : (!token.reusable && token.uses > 0) ? .used : .active
        return TokenInfo(
            id: token.id, profile: token.profile, company: token.company, labels: token.labels,
            reusable: token.reusable, uses: token.uses, state: state, createdAt: ISOTime.string(token.createdAt),
            expiresAt: ISOTime.string(token.expiresAt))
    }

    static func info(_ token: APIToken, now: Date) -> APITokenInfo {
        let state: TokenInfo.State =
            token.revokedAt != nil ? .revoked : (token.expiresAt.map { $0 <= now } ?? false) ? .expired : .active
        return APITokenInfo(
            id: token.id, role: token.role, company: token.company, state: state,
            createdAt: ISOTime.string(token.createdAt), expiresAt: token.expiresAt.map(ISOTime.string))
    }

    func insertJoinToken(_ token: NewJoinToken) async throws(AgentError) -> TokenInfo {
        try locked { (tables, now) throws(AgentError) in
            guard !tables.joinTokens.contains(where: { $0.id == token.id || $0.hash == token.hash }) else {
                throw AgentError(.store, "duplicate key value violates unique constraint")
            }
            let row = JoinToken(
                id: token.id, hash: token.hash, profile: token.profile, company: token.company, labels: token.labels,
                reusable: token.reusable, createdAt: now, expiresAt: now + Double(token.ttlS))
            tables.joinTokens.append(row)
            return Self.info(row, now: now)
        }
    }

    func joinTokens() async throws(AgentError) -> [TokenInfo] {
        try locked { tables, now in tables.joinTokens.map { Self.info($0, now: now) } }
    }

    func revokeJoinToken(_ id: String) async throws(AgentError) -> TokenInfo? {
        try locked { tables, now in
            guard let index = tables.joinTokens.firstIndex(where: { $0.id == id }) else { return nil }
            tables.joinTokens[index].revokedAt = tables.joinTokens[index].revokedAt ?? now
            return Self.info(tables.joinTokens[index], now: now)
        }
    }

    func insertAPIToken(_ token: NewAPIToken) async throws(AgentError) -> APITokenInfo {
        try locked { tables, now in
            let row = APIToken(
                id: token.id, hash: token.hash, role: token.role, company: token.company, createdAt: now,
                expiresAt: token.ttlS.map { now + Double($0) })
            tables.apiTokens.append(row)
            return Self.info(row, now: now)
        }
    }

    func apiTokenGrants() async throws(AgentError) -> [String: APITokens.Grant] {
        try locked { tables, _ in
            Dictionary(
                tables.apiTokens.map {
                    (
                        $0.hash,
                        APITokens.Grant(
                            id: $0.id, role: $0.role, company: $0.company, expiresAt: $0.expiresAt,
                            revoked: $0.revokedAt != nil)
                    )
                }, uniquingKeysWith: { $1 })
        }
    }

    func apiTokens() async throws(AgentError) -> [APITokenInfo] {
        try locked { tables, now in tables.apiTokens.map { Self.info($0, now: now) } }
    }

    func revokeAPIToken(_ id: String) async throws(AgentError) -> APITokenInfo? {
        try locked { tables, now in
            guard let index = tables.apiTokens.firstIndex(where: { $0.id == id }) else { return nil }
            tables.apiTokens[index].revokedAt = tables.apiTokens[index].revokedAt ?? now
            return Self.info(tables.apiTokens[index], now: now)
        }
    }
}

// MARK: - Gateway keys

extension MemoryStore: GatewayKeyStore {
    private static func current(_ key: GatewayKey, now: Date) -> GatewayKeyInfo {
        var info = key.info
        if info.state == .active, let expires = key.expiresAt, expires <= now { info.state = .expired }
        return info
    }

    func insertGatewayKey(_ key: NewGatewayKey) async throws(AgentError) -> GatewayKeyInfo {
        try locked { tables, now in
            let info = GatewayKeyInfo(
                id: key.id, app: key.app, company: key.company, models: key.models, rpm: key.rpm, tpm: key.tpm,
                state: .active, createdAt: ISOTime.string(now),
                expiresAt: key.ttlS.map { ISOTime.string(now + Double($0)) })
            tables.gatewayKeys.append(
                GatewayKey(hash: key.hash, info: info, expiresAt: key.ttlS.map { now + Double($0) }))
            return info
        }
    }

    func gatewayKeys() async throws(AgentError) -> [(hash: String, info: GatewayKeyInfo)] {
        try locked { tables, now in tables.gatewayKeys.map { ($0.hash, Self.current($0, now: now)) } }
    }

    func revokeGatewayKey(_ id: String) async throws(AgentError) -> GatewayKeyInfo? {
        try locked { tables, now in
            guard let index = tables.gatewayKeys.firstIndex(where: { $0.info.id == id }) else { return nil }
            tables.gatewayKeys[index].info.state = .revoked
            return tables.gatewayKeys[index].info
        }
    }

    func addGatewayUsage(_ usage: [GatewayUsage]) async throws(AgentError) {
        try locked { tables, _ in
            for row in usage {
                let id = row.key + "\u{0}" + row.model
                var total =
                    tables.gatewayUsage[id]
                    ?? GatewayUsage(
                        key: row.key, app: row.app, model: row.model, requests: 0, promptTokens: 0, completionTokens: 0)
                total.requests += row.requests
                total.promptTokens += row.promptTokens
                total.completionTokens += row.completionTokens
                tables.gatewayUsage[id] = total
            }
        }
    }

    func gatewayUsage() async throws(AgentError) -> [GatewayUsage] {
        try locked { tables, _ in Array(tables.gatewayUsage.values) }
    }
}
