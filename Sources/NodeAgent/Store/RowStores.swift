import AuroraAPI
import Foundation
import Mesh
import Secrets

// The lead's subsystems keep their rows through these protocols, one per subsystem. Two
// implementations exist: ``Store`` (PostgreSQL through libpq, the product) and ``MemoryStore``
// (in process, for the service tests that drive the lead's routes without a database).
//
// Every write that has events commits them in the same transaction and hands them to
// `published` right after the commit, before any later write commits: subscribers see events
// in `seq` order. A write that throws (``AgentError`` with code `store`) changed nothing and
// published nothing.

/// Called with a write's events once it committed, in commit order; it must not block.
typealias Published = @Sendable ([MeshEvent]) -> Void

/// The event log: every subsystem's writes append to it; SSE and the Redis bridge read it.
protocol EventStore: Sendable {
    /// Records `drafts` in one transaction (nothing else changes) and publishes them.
    @discardableResult
    func append(_ drafts: [EventLog.Draft], published: @escaping Published) async throws(AgentError) -> [MeshEvent]

    /// Records `draft` under `id` unless an event with that id exists (a node's replayed
    /// report); the new event, or nil when it was a replay. Publishes what it recorded.
    func appendOnce(_ draft: EventLog.Draft, id: String, published: @escaping Published) async throws(AgentError)
        -> MeshEvent?

    /// Events after `seq`, oldest first, at most `limit`; unreadable rows are skipped.
    func events(since seq: Int64, limit: Int) async throws(AgentError) -> [MeshEvent]

    /// The newest event's `seq`; 0 when there is none.
    func latestEventSeq() async throws(AgentError) -> Int64
}

/// Join tokens and scoped API tokens, stored as SHA-256 hashes; a token is never stored.
protocol TokenStore: Sendable {
    /// Stores a new join token that expires `ttlS` seconds from now; its record as listed.
    func insertJoinToken(_ token: NewJoinToken) async throws(AgentError) -> TokenInfo

    /// Every join token with its state, oldest first.
    func joinTokens() async throws(AgentError) -> [TokenInfo]

    /// Marks a join token revoked (revoking twice keeps the first time); nil for an unknown id.
    func revokeJoinToken(_ id: String) async throws(AgentError) -> TokenInfo?

    /// Stores a new API token; its record as listed.
    func insertAPIToken(_ token: NewAPIToken) async throws(AgentError) -> APITokenInfo

    /// Every API token's grant, by the hex SHA-256 of the token (the lead's start).
    func apiTokenGrants() async throws(AgentError) -> [String: APITokens.Grant]

    /// Every API token with its state, oldest first.
    func apiTokens() async throws(AgentError) -> [APITokenInfo]

    /// Marks an API token revoked; nil for an unknown id.
    func revokeAPIToken(_ id: String) async throws(AgentError) -> APITokenInfo?
}

/// A join token about to be stored.
struct NewJoinToken: Sendable {
    var id: String
    /// Hex SHA-256 of the token.
    var hash: String
    var profile: NodeRole
    var company: String
    var labels: [String: String]
    var reusable: Bool
    /// Seconds from now until it expires.
    var ttlS: Int
}

/// An API token about to be stored.
struct NewAPIToken: Sendable {
    var id: String
    /// Hex SHA-256 of the token.
    var hash: String
    var role: APIRole
    var company: String
    /// Seconds from now until it expires; nil: never.
    var ttlS: Int?
}

/// A join token as a join finds it, locked for the join's transaction.
struct JoinTokenRow: Sendable, Equatable {
    var id: String
    var profile: NodeRole
    var company: String
    var labels: [String: String]
    var reusable: Bool
    var uses: Int
    var revoked: Bool
    /// Expired by the store's clock.
    var expired: Bool
}

/// The registry's rows: one per node, written with the events of the change.
protocol NodeStore: EventStore {
    /// Every stored node, and the names of rows that could not be read (skipped).
    func nodes() async throws(AgentError) -> (entries: [Registry.Entry], unreadable: [String])

    /// Applies `changes` and records `events` in one transaction, then publishes the events.
    func write(_ changes: [NodeChange], events: [EventLog.Draft], published: @escaping Published)
        async throws(AgentError)

    /// A join, all or nothing: the token is checked and counted, the name and address decided
    /// (``JoinAttempt/decide(token:holder:others:)``), the node written and `node.joined`
    /// recorded in one transaction. Concurrent joins are decided one after the other.
    func join(_ attempt: JoinAttempt, published: @escaping Published) async throws(AgentError) -> Result<
        JoinAttempt.Joined, Refusal
    >
}

/// One change to the `nodes` rows.
enum NodeChange: Sendable {
    /// The whole record by name (a join, the lead's own record); a removed row comes back.
    case upsert(Registry.Entry, tokenID: String?)
    /// A detector transition: the state and when the node was last heard from.
    case state(name: String, state: NodeState, lastSeen: Date)
    /// When each node was last heard from (the heartbeat flush).
    case seen([NodeSeen])
    /// What a node reports about itself changed: labels, capabilities, timing, version, address, TLS port.
    case reported(Registry.Entry)
    /// An operator set the node's trusted labels.
    case labels(name: String, labels: [String: String])
    /// An operator cordoned, drained (nil: reopened) the node.
    case scheduling(name: String, NodeScheduling?)
    /// An operator removed the node: its heartbeats are refused until it joins again.
    case removed(name: String)
    /// An operator removed the node for good: it leaves every view and its name is free. A row
    /// that holds an address stays as a hidden tombstone until a join reclaims the address after
    /// `wireguard.reuse_after_s`; one without an address is deleted.
    case forgotten(name: String)
    /// An operator set the node's company (what its secrets resolve through).
    case company(name: String, company: String)
    /// An old lead came back as a standby (`POST /api/lead/rejoin`): its role, and the pin of
    /// its TLS key (nil: it serves none).
    case rejoined(name: String, tlsPin: String?)
}

/// A node and when it was last heard from.
struct NodeSeen: Sendable {
    var name: String
    var at: Date
}

/// The GPU queue's rows: jobs and their events.
protocol JobStore: EventStore {
    /// Every queued, assigned or running job with its payload, oldest first, and the ids of rows
    /// that could not be read (skipped).
    func openJobs() async throws(AgentError) -> (jobs: [(Job, [String: JSONValue])], unreadable: [String])

    /// One job by id; nil when there is none.
    func job(_ id: String) async throws(AgentError) -> Job?

    /// The job holding an idempotency key in the store's form (``JobRows/scopedKey(_:_:)``); nil when none does.
    func job(byKey scopedKey: String) async throws(AgentError) -> Job?

    /// Newest first, at most `limit`: every job `caller` may read (``JobAccess/mayRead(_:_:)``),
    /// in `state` when given.
    func jobs(state: JobState?, visibleTo caller: String, limit: Int) async throws(AgentError) -> [Job]

    /// Writes a batch (an insert and updates) and its events in one transaction. An insert whose
    /// idempotency key is held writes nothing of its own and answers ``Writes/Outcome/duplicate(_:)``.
    func commit(_ writes: Writes, published: @escaping Published) async throws(AgentError) -> Writes.Outcome
}

/// The ids of node reports the lead has taken, kept a week, so a replay is answered `duplicate`.
protocol ReportStore: EventStore {
    /// Whether a report with this id (lower-case UUID) was taken.
    func reportTaken(_ id: String) async throws(AgentError) -> Bool

    /// Records a taken report and its outcome (a second record of an id changes nothing).
    func recordReport(_ id: String, node: String, kind: String, outcome: ReportOutcome) async throws(AgentError)

    /// Forgets reports taken more than `days` days ago.
    func pruneReports(olderThanDays days: Int) async throws(AgentError)
}

/// Each alert webhook's place in the event log (``WebhookDelivery``): every event it takes up to
/// its cursor was answered with a 2xx.
protocol WebhookCursorStore: EventStore {
    /// The webhook's cursor; a webhook seen for the first time gets one at the newest event
    /// recorded before `start` (the lead's start: it takes everything from then on).
    func webhookCursor(_ name: String, startingBefore start: Date) async throws(AgentError) -> Int64

    /// Moves the webhook's cursor forward to `seq` (never back).
    func setWebhookCursor(_ name: String, to seq: Int64) async throws(AgentError)
}

/// Secret versions (sealed: the store never sees a value), their heads and the audit chain.
protocol SecretStore: EventStore {
    /// Every slot's current version (not deleted).
    func secretHeads() async throws(AgentError) -> [(SecretsManager.Slot, SecretsManager.Current)]

    /// One stored version of a slot (its `updatedAt` is when the version was written); nil when none.
    func secretVersion(_ slot: SecretsManager.Slot, _ version: Int) async throws(AgentError) -> SecretsManager.Current?

    /// The slot's highest version; 0 when it never had one.
    func latestSecretVersion(_ slot: SecretsManager.Slot) async throws(AgentError) -> Int

    /// Every version of a slot, oldest first (no values).
    func secretHistory(_ slot: SecretsManager.Slot) async throws(AgentError) -> [StoredVersion]

    /// Writes a new version and makes it the head, with its audit record and event.
    func saveSecret(
        _ version: NewSecretVersion, audit: AuditRecord, event: EventLog.Draft, published: @escaping Published
    ) async throws(AgentError)

    /// Marks the slot deleted (its versions stay), with its audit record and event.
    func deleteSecret(
        _ slot: SecretsManager.Slot, audit: AuditRecord, event: EventLog.Draft, published: @escaping Published
    ) async throws(AgentError)

    /// The highest key-encryption key version any stored version uses (1 when none).
    func highestKEKVersion() async throws(AgentError) -> Int

    /// Every version sealed under a key-encryption key older than `kekVersion`.
    func versionsSealed(below kekVersion: Int) async throws(AgentError) -> [(
        SecretsManager.Slot, SecretsManager.Current
    )]

    /// Replaces the wrapped data keys of the given versions (a rotation's batch), all or nothing.
    func rewrap(_ versions: [(SecretsManager.Slot, Int, SealedValue)], kekVersion: Int) async throws(AgentError)

    /// Appends audit records in order, all or nothing.
    func appendAudit(_ records: [AuditRecord]) async throws(AgentError)

    /// The audit log, oldest first, and how many stored records did not read.
    func auditRecords() async throws(AgentError) -> (records: [AuditRecord], unreadable: Int)

    /// The newest audit record; nil for an empty log.
    func lastAuditRecord() async throws(AgentError) -> AuditRecord?
}

/// A secret version about to be stored.
struct NewSecretVersion: Sendable {
    var slot: SecretsManager.Slot
    var version: Int
    var sealed: SealedValue
    /// Who wrote it (`operator`, `api:ID`).
    var createdBy: String
    /// The version a rollback copied.
    var restoredFrom: Int?
}

/// One version of a slot as its history lists it.
struct StoredVersion: Sendable, Equatable {
    var version: Int
    var createdAt: String
    var createdBy: String
    var restoredFrom: Int?
}

/// The lead's terms (``Leadership``) and the operator tokens every lead accepts.
protocol LeadTermStore: Sendable {
    /// The newest term, nil before the first lead began one.
    func latestTerm() async throws(AgentError) -> LeadTerm?

    /// Inserts `term` at the next epoch when the newest epoch is still `previous` (nil: none yet);
    /// returns it with its epoch and start time, or nil when another lead began a term first.
    func beginTerm(_ term: LeadTerm, after previous: Int64?) async throws(AgentError) -> LeadTerm?

    /// Records a lead's operator token hash (hex SHA-256), so every later lead accepts it.
    func recordOperatorToken(hash: String, agent: String) async throws(AgentError)

    /// Sets a node's role (a promotion makes the old lead a standby and the standby the lead).
    func setRole(of node: String, to role: NodeRole) async throws(AgentError)

    /// Whether this lead's connection holds the store's lead lock.
    func holdsLeadLock() async -> Bool

    /// Ends the sessions that hold the lead lock and takes it; whether it was taken.
    func takeOverLeadLock(timeout: Duration) async throws(AgentError) -> Bool

    /// Refuses every later write of this agent (it is fenced).
    func fenceWrites() async

    /// The server's current WAL position (`pg_current_wal_lsn()`); nil when it is a standby.
    func walPosition() async throws(AgentError) -> String?
}
