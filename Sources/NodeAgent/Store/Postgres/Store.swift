import Foundation
import Logging
import Metrics
import NIOPosix

/// The lead's store: PostgreSQL through libpq, every blocking call on the store's own thread.
///
/// A single connection serves the lead; calls queue on one thread in arrival order.
public actor Store {
    private let conninfo: String
    private let thread: NIOThreadPool
    private var connection: PostgresConnection?

    /// A store that will connect to `conninfo` (a URL or libpq keyword string; never logged).
    public init(conninfo: String) {
        self.conninfo = conninfo
        self.thread = NIOThreadPool(numberOfThreads: 1)
        self.thread.start()
    }

    /// Connects, replacing a broken connection; a lead's store then tries to take the lead lock.
    public func connect() async throws(AgentError) {
        let conninfo = self.conninfo
        let held = holdsLeadLockNow
        holdsLeadLockNow = false
        connection = try await onStoreThread { () throws(AgentError) in try PostgresConnection(conninfo: conninfo) }
        if wantsLeadLock {
            holdsLeadLockNow =
                try await leadQuery("SELECT pg_try_advisory_lock($1::bigint)", [Self.leadLockKey]).scalar == "t"
            // The lock went with the old session (a promotion ended it): nothing more is written
            // until the leadership has checked the store's terms again.
            if held && !holdsLeadLockNow { writesFenced = true }
        }
    }

    // MARK: The lead lock

    /// The session-level advisory lock a lead holds on its one connection while it leads. A
    /// promotion ends the session that holds it (`pg_terminate_backend`), so an old lead's next
    /// write fails, and its reconnect finds the newer term and fences it.
    static let leadLockKey = "742017002"
    private var wantsLeadLock = false
    private var holdsLeadLockNow = false
    /// Set when this lead is fenced, or lost the lead lock: every statement but the leadership's
    /// own is refused, so a superseded lead writes nothing into a store another lead serves.
    private var writesFenced = false

    /// Refuses every later statement but the leadership's own (``leadQuery(_:_:)``).
    func fenceWrites() { writesFenced = true }

    private func refuseWhenFenced() throws(AgentError) {
        if writesFenced {
            throw AgentError(.store, "this agent no longer leads the mesh; its store refuses its writes")
        }
    }

    /// Makes every later ``connect()`` try to take the lead lock (a lead's store).
    func wantLeadLock() { wantsLeadLock = true }

    /// Whether this connection holds the lead lock.
    func holdsLeadLock() -> Bool { holdsLeadLockNow }

    /// Ends every other session that holds the lead lock and takes it, trying for up to `timeout`;
    /// whether it was taken. Needs the right to signal those sessions (the same role, or
    /// `pg_signal_backend`).
    func takeOverLeadLock(timeout: Duration = .seconds(10)) async throws(AgentError) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            try await leadQuery(
                """
                SELECT pg_terminate_backend(pid) FROM pg_locks
                WHERE locktype = 'advisory' AND classid = 0 AND objid = $1::bigint AND objsubid = 1 AND granted
                  AND pid <> pg_backend_pid()
                """, [Self.leadLockKey])
            if try await leadQuery("SELECT pg_try_advisory_lock($1::bigint)", [Self.leadLockKey]).scalar == "t" {
                holdsLeadLockNow = true
                writesFenced = false
                return true
            }
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(50))  // the ended session lets go within milliseconds
        }
    }

    /// Runs one statement with text parameters.
    /// Each call commits on its own. Throws ``AgentError`` with code `store` when not connected or
    /// when the statement fails; the connection is not replaced here (``StoreService`` does that).
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) async throws(AgentError) -> QueryResult {
        try refuseWhenFenced()
        return try await leadQuery(sql, parameters)
    }

    /// ``query(_:_:)`` without the fence check: the leadership's own reads and the lock.
    @discardableResult
    func leadQuery(_ sql: String, _ parameters: [String?] = []) async throws(AgentError) -> QueryResult {
        guard let connection else { throw AgentError(.store, "the store is not connected") }
        return try await onStoreThread { () throws(AgentError) in try connection.execute(sql, parameters) }
    }

    /// Runs `statements` in one transaction on the store thread, rolling back on error.
    public func transaction(_ statements: [(String, [String?])]) async throws(AgentError) {
        try refuseWhenFenced()
        guard let connection else { throw AgentError(.store, "the store is not connected") }
        try await onStoreThread { () throws(AgentError) in
            _ = try connection.execute("BEGIN")
            do throws(AgentError) {
                for (sql, parameters) in statements { _ = try connection.execute(sql, parameters) }
                _ = try connection.execute("COMMIT")
            } catch {
                _ = try? connection.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Runs `body` with the connection inside one transaction on the store thread: committed
    /// when it returns, rolled back when it throws. Work that must be all-or-nothing (a join:
    /// the token use, the node and its event) goes here.
    ///
    /// `afterCommit` runs on the store thread right after the commit, before any later
    /// transaction: publishing events there keeps them in commit order.
    func inTransaction<R: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws(AgentError) -> R,
        afterCommit: @escaping @Sendable (R) -> Void = { _ in }
    ) async throws(AgentError) -> R {
        try refuseWhenFenced()
        guard let connection else { throw AgentError(.store, "the store is not connected") }
        return try await onStoreThread { () throws(AgentError) -> R in
            _ = try connection.execute("BEGIN")
            do throws(AgentError) {
                let result = try body(connection)
                _ = try connection.execute("COMMIT")
                afterCommit(result)
                return result
            } catch {
                _ = try? connection.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Runs `body` with the connection outside a transaction (each statement commits on its
    /// own), then `after` on the store thread before any later call: for one-statement writes.
    func withConnection<R: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws(AgentError) -> R,
        after: @escaping @Sendable (R) -> Void = { _ in }
    ) async throws(AgentError) -> R {
        try refuseWhenFenced()
        guard let connection else { throw AgentError(.store, "the store is not connected") }
        return try await onStoreThread { () throws(AgentError) -> R in
            let result = try body(connection)
            after(result)
            return result
        }
    }

    /// Whether a trivial query answers now.
    public func ping() async -> Bool {
        guard let connection else { return false }
        return (try? await onStoreThread { () throws(AgentError) in try connection.execute("SELECT 1") }) != nil
    }

    /// Closes the connection (after calls already queued) and stops the store thread.
    public func close() async {
        connection = nil
        try? await thread.shutdownGracefully()
    }

    /// Runs other blocking libpq work on the store thread.
    /// `aurora_store_query_duration_seconds`: every call on the store's thread (a query, a
    /// transaction), including the wait for the thread.
    static let queryTimer = Timer(label: "aurora_store_query_duration_seconds")

    func onStoreThread<R: Sendable>(_ body: @escaping @Sendable () throws(AgentError) -> R) async throws(AgentError)
        -> R
    {
        let started = ContinuousClock.now
        defer { Self.queryTimer.recordNanoseconds((ContinuousClock.now - started).nanoseconds) }
        do {
            return try await thread.runIfActive { try body() }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.store, "the store thread is not running")
        }
    }
}

// MARK: - Migrations

/// One versioned schema change. Versions only grow; a released migration never changes.
public struct Migration: Sendable {
    /// Applied in ascending order; recorded in `schema_migrations` once it committed.
    public let version: Int
    /// A short word for logs and `schema_migrations` (`registry`, `jobs`, ...).
    public let name: String
    /// One or more statements, run without parameters in one transaction with the version's row.
    public let sql: String
}

/// The schema, in order. Later subsystems append their migrations here.
public enum Migrations {
    public static let all: [Migration] = [
        Migration(
            version: 1, name: "mesh",
            sql: """
                CREATE TABLE mesh (
                    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                    mesh_id    uuid NOT NULL,
                    lead_name  text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """),
        Migration(
            version: 2, name: "registry",
            sql: """
                CREATE TABLE join_tokens (
                    id          text PRIMARY KEY,
                    token_hash  text NOT NULL UNIQUE,
                    profile     text NOT NULL,
                    company     text NOT NULL DEFAULT '',
                    labels      jsonb NOT NULL DEFAULT '{}',
                    reusable    boolean NOT NULL DEFAULT false,
                    uses        integer NOT NULL DEFAULT 0,
                    created_at  timestamptz NOT NULL DEFAULT now(),
                    expires_at  timestamptz NOT NULL,
                    revoked_at  timestamptz
                );
                CREATE TABLE nodes (
                    name            text PRIMARY KEY,
                    role            text NOT NULL,
                    company         text NOT NULL DEFAULT '',
                    vpn_ip          text NOT NULL UNIQUE,
                    sign_public_key text NOT NULL,
                    box_public_key  text NOT NULL,
                    wg_public_key   text NOT NULL,
                    wg_endpoint     text,
                    wg_listen_port  integer NOT NULL,
                    labels          jsonb NOT NULL DEFAULT '{}',
                    capabilities    jsonb NOT NULL,
                    timing          jsonb,
                    version         text NOT NULL DEFAULT '',
                    address         text,
                    state           text NOT NULL,
                    removed         boolean NOT NULL DEFAULT false,
                    last_seen       timestamptz NOT NULL,
                    joined_at       timestamptz NOT NULL DEFAULT now(),
                    token_id        text
                );
                CREATE TABLE events (
                    seq   bigserial PRIMARY KEY,
                    id    uuid NOT NULL UNIQUE,
                    type  text NOT NULL,
                    at    timestamptz NOT NULL DEFAULT now(),
                    node  text,
                    data  jsonb NOT NULL DEFAULT '{}'
                );
                CREATE INDEX events_node ON events (node, seq)
                """),
        Migration(
            version: 3, name: "jobs",
            sql: """
                CREATE TABLE jobs (
                    seq             bigserial PRIMARY KEY,
                    id              text NOT NULL UNIQUE,
                    idempotency_key text UNIQUE,
                    kind            text NOT NULL,
                    priority        integer NOT NULL,
                    requirements    jsonb NOT NULL,
                    payload         jsonb NOT NULL,
                    state           text NOT NULL,
                    attempt         integer NOT NULL,
                    max_attempts    integer NOT NULL,
                    node            text,
                    gpus            jsonb,
                    lease_deadline  timestamptz,
                    submitted_at    timestamptz NOT NULL,
                    started_at      timestamptz,
                    finished_at     timestamptz,
                    result          jsonb,
                    error           text,
                    submitted_by    text
                );
                CREATE INDEX jobs_open ON jobs (seq) WHERE state IN ('queued', 'assigned', 'running');
                CREATE INDEX jobs_state ON jobs (state, seq)
                """),
        Migration(
            version: 4, name: "secrets",
            sql: """
                CREATE TABLE secrets (
                    service       text NOT NULL,
                    key_name      text NOT NULL,
                    scope         text NOT NULL,
                    scope_id      text NOT NULL,
                    version       integer NOT NULL,
                    ciphertext    text NOT NULL,
                    nonce         text NOT NULL,
                    wrapped_key   text NOT NULL,
                    wrap_nonce    text NOT NULL,
                    kek_version   integer NOT NULL,
                    created_at    timestamptz NOT NULL DEFAULT now(),
                    created_by    text NOT NULL,
                    restored_from integer,
                    PRIMARY KEY (service, key_name, scope, scope_id, version)
                );
                CREATE TABLE secret_heads (
                    service    text NOT NULL,
                    key_name   text NOT NULL,
                    scope      text NOT NULL,
                    scope_id   text NOT NULL,
                    version    integer NOT NULL,
                    deleted    boolean NOT NULL DEFAULT false,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (service, key_name, scope, scope_id)
                );
                CREATE TABLE secret_audit (
                    seq           bigint PRIMARY KEY,
                    at            text NOT NULL,
                    actor         text NOT NULL,
                    action        text NOT NULL,
                    service       text NOT NULL,
                    key_name      text NOT NULL,
                    node          text,
                    scope         text,
                    version       integer,
                    result        text NOT NULL,
                    previous_hash text NOT NULL,
                    hash          text NOT NULL
                )
                """),
        Migration(
            version: 5, name: "wireguard",
            sql: """
                ALTER TABLE nodes ADD COLUMN removed_at timestamptz;
                ALTER TABLE nodes ADD COLUMN wg_behind_nat boolean NOT NULL DEFAULT false
                """),
        Migration(
            version: 6, name: "reports",
            sql: """
                CREATE TABLE reports (
                    id          uuid PRIMARY KEY,
                    node        text NOT NULL,
                    kind        text NOT NULL,
                    status      text NOT NULL,
                    code        text,
                    message     text,
                    received_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE INDEX reports_received ON reports (received_at)
                """),
        Migration(
            version: 7, name: "api_tokens",
            sql: """
                CREATE TABLE api_tokens (
                    id          text PRIMARY KEY,
                    token_hash  text NOT NULL UNIQUE,
                    role        text NOT NULL,
                    company     text NOT NULL DEFAULT '',
                    created_at  timestamptz NOT NULL DEFAULT now(),
                    expires_at  timestamptz,
                    revoked_at  timestamptz
                );
                ALTER TABLE nodes ADD COLUMN tls_pin text, ADD COLUMN tls_port integer
                """),
        Migration(
            version: 8, name: "scheduling",
            sql: """
                ALTER TABLE nodes ADD COLUMN scheduling text NOT NULL DEFAULT 'open',
                    ADD COLUMN drain_deadline timestamptz, ADD COLUMN scheduling_since timestamptz
                """),
        Migration(
            version: 9, name: "node_tombstones",
            sql: """
                ALTER TABLE nodes ADD COLUMN forgotten boolean NOT NULL DEFAULT false
                """),
        Migration(
            version: 10, name: "webhooks",
            sql: """
                CREATE TABLE webhook_cursors (
                    name       text PRIMARY KEY,
                    seq        bigint NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """),
        Migration(
            version: 11, name: "leads",
            sql: """
                CREATE TABLE lead_terms (
                    epoch           bigint PRIMARY KEY CHECK (epoch > 0),
                    lead            text NOT NULL,
                    url             text NOT NULL,
                    sign_public_key text NOT NULL,
                    box_public_key  text NOT NULL,
                    tls_pin         text,
                    certificate     text,
                    started_at      timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE operator_tokens (
                    hash       text PRIMARY KEY,
                    agent      text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """),
        Migration(
            version: 12, name: "standby_eligibility",
            sql: """
                CREATE TABLE standby_eligibility (
                    name     text PRIMARY KEY,
                    eligible boolean NOT NULL,
                    since    timestamptz NOT NULL DEFAULT now(),
                    reason   text NOT NULL DEFAULT ''
                )
                """),
        Migration(
            version: 13, name: "gateway_keys",
            sql: """
                CREATE TABLE gateway_keys (
                    id          text PRIMARY KEY,
                    key_hash    text NOT NULL UNIQUE,
                    app         text NOT NULL,
                    company     text NOT NULL DEFAULT '',
                    models      jsonb,
                    rpm         integer,
                    tpm         integer,
                    created_at  timestamptz NOT NULL DEFAULT now(),
                    expires_at  timestamptz,
                    revoked_at  timestamptz
                );
                CREATE TABLE gateway_usage (
                    key_id            text NOT NULL,
                    model             text NOT NULL,
                    app               text,
                    requests          bigint NOT NULL DEFAULT 0,
                    prompt_tokens     bigint NOT NULL DEFAULT 0,
                    completion_tokens bigint NOT NULL DEFAULT 0,
                    updated_at        timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (key_id, model)
                )
                """),
        Migration(
            version: 14, name: "metrics_address",
            sql: """
                ALTER TABLE nodes ADD COLUMN metrics_address text
                """),
    ]

    /// An arbitrary constant for `pg_advisory_lock`: two agents on one external store migrate
    /// one after the other.
    static let lockKey = "7420170001"

    /// Applies what is missing, each migration in its own transaction; returns the schema version.
    /// Called by ``StoreService`` at every start, before anything reads the store. A store whose
    /// schema is newer than this binary knows is refused (``AgentError`` with code `store`): an
    /// older agent must not write into a newer schema. A migration that fails is rolled back and
    /// stops the start; the ones before it stay applied.
    @discardableResult
    public static func run(on store: Store, logger: Logger) async throws(AgentError) -> Int {
        try await store.query("SELECT pg_advisory_lock($1)", [lockKey])
        do throws(AgentError) {
            try await store.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let applied = Set(
                try await store.query("SELECT version FROM schema_migrations").rows.compactMap {
                    $0[0].flatMap(Int.init)
                })
            let known = all.map(\.version).max() ?? 0
            if let newest = applied.max(), newest > known {
                throw AgentError(
                    .store,
                    "the store's schema version \(newest) is newer than this nodeagent knows (\(known)); upgrade nodeagent"
                )
            }
            for migration in all where !applied.contains(migration.version) {
                try await store.transaction([
                    (migration.sql, []),
                    (
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        [String(migration.version), migration.name]
                    ),
                ])
                logger.info(
                    "applied schema migration",
                    metadata: ["nodeagent.migration": "\(migration.version) \(migration.name)"])
            }
            _ = try? await store.query("SELECT pg_advisory_unlock($1)", [lockKey])
            return known
        } catch {
            _ = try? await store.query("SELECT pg_advisory_unlock($1)", [lockKey])
            throw error
        }
    }
}
