import Crypto
import Foundation
import Mesh

// MARK: - Status

/// A primary's view of its streaming standbys (`pg_stat_replication`) and replication slots,
/// with byte lags against its current WAL position.
struct PrimaryReplicationStatus: Sendable, Equatable {
    /// One connected standby: a row of `pg_stat_replication`.
    struct Standby: Sendable, Equatable {
        /// The `application_name` of its `primary_conninfo`: the standby's node name.
        var applicationName: String
        /// Its address, nil over a Unix socket.
        var clientAddress: String?
        /// `startup`, `catchup`, `streaming`, `backup` or `stopping`.
        var state: String
        /// `async`, `potential`, `sync` or `quorum`.
        var syncState: String
        /// WAL it has written to disk, and applied; nil until it reports them.
        var flushLSN: LSN?
        var replayLSN: LSN?
        /// Bytes between the primary's current position and `flushLSN` / `replayLSN`.
        var flushLagBytes: UInt64?
        var replayLagBytes: UInt64?
    }

    /// One physical replication slot: a slot keeps WAL for its standby, connected or not.
    struct Slot: Sendable, Equatable {
        var name: String
        /// A standby streams through it now.
        var active: Bool
        var restartLSN: LSN?
        /// WAL the slot holds back from recycling, in bytes.
        var retainedBytes: UInt64?
    }

    /// `pg_current_wal_lsn()`.
    var currentLSN: LSN
    /// By application name.
    var standbys: [Standby]
    /// By slot name.
    var slots: [Slot]

    /// The connected standby with this application name (PostgreSQL compares them case-insensitively).
    func standby(named name: String) -> Standby? {
        standbys.first { $0.applicationName.lowercased() == name.lowercased() }
    }
}

/// A standby's view of its own recovery.
struct StandbyReplicationStatus: Sendable, Equatable {
    /// `pg_is_in_recovery()`: true for a standby, false once promoted.
    var inRecovery: Bool
    /// `pg_last_wal_receive_lsn()` and `pg_last_wal_replay_lsn()`; nil when there are none.
    var receiveLSN: LSN?
    var replayLSN: LSN?
    /// `pg_stat_wal_receiver.status` (`streaming`, `waiting`, ...); nil when no WAL receiver runs
    /// (the primary is unreachable and it is between retries, or it is no standby).
    var receiverStatus: String?

    /// In recovery, with a WAL receiver streaming from the primary.
    var isStreaming: Bool { inRecovery && receiverStatus == "streaming" }
}

// MARK: - SQL

/// The replication statements a lead runs on its managed PostgreSQL. Every call blocks: the
/// store thread makes them, with a ``PostgresConnection`` as the superuser.
///
/// A standby named `name` (a node name, ``NodeName``) streams as role ``roleName(for:)``
/// (`aurora_repl_<name>`, LOGIN REPLICATION, member of `aurora_replication`, which pg_hba.conf
/// admits) through slot ``slotName(for:)`` (`aurora_<name>`), with `application_name = name`.
enum ReplicationSQL {
    /// Creates or updates the LOGIN REPLICATION role of standby `name` with `password`, and its
    /// physical slot if missing (reserving WAL at once, so nothing the clone needs is recycled).
    /// The password is hashed here (SCRAM-SHA-256, `PQencryptPasswordConn`): neither the server,
    /// its log nor an error ever sees it.
    static func ensureStandby(name: String, password: String, on connection: PostgresConnection)
        throws(AgentError)
    {
        let role = try roleName(for: name), slot = try slotName(for: name)
        guard !password.isEmpty, !password.contains("\0") else {
            throw AgentError(.invalidInput, "the replication password of standby '\(name)' is empty")
        }
        do throws(AgentError) {
            if try connection.execute("SELECT 1 FROM pg_roles WHERE rolname = $1", [group]).rows.isEmpty {
                _ = try connection.execute("CREATE ROLE \(quoted(group)) NOLOGIN")
            }
            let verifier = try connection.encryptPassword(password, user: role)
            let exists = try !connection.execute("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]).rows.isEmpty
            _ = try connection.execute(
                "\(exists ? "ALTER" : "CREATE") ROLE \(quoted(role)) WITH LOGIN REPLICATION PASSWORD \(literal(verifier))"
            )
            if try connection.execute(
                "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member WHERE g.rolname = $1 AND r.rolname = $2",
                [group, role]
            ).rows.isEmpty {
                _ = try connection.execute("GRANT \(quoted(group)) TO \(quoted(role))")
            }
            if try connection.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [slot]).rows.isEmpty {
                _ = try connection.execute("SELECT pg_create_physical_replication_slot($1, true)", [slot])
            }
        } catch {
            throw AgentError(
                .store,
                "cannot set up standby '\(name)': \(error.message.replacingOccurrences(of: password, with: "***"))")
        }
    }

    /// Drops standby `name`'s slot and role: the role first loses LOGIN, its connections (the
    /// WAL sender) are ended, then the slot and the role go. Nothing missing is an error.
    static func dropStandby(name: String, on connection: PostgresConnection) throws(AgentError) {
        let role = try roleName(for: name), slot = try slotName(for: name)
        do throws(AgentError) {
            let exists = try !connection.execute("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]).rows.isEmpty
            if exists { _ = try connection.execute("ALTER ROLE \(quoted(role)) NOLOGIN") }
            _ = try connection.execute(
                """
                SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1
                UNION ALL
                SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots
                WHERE slot_name = $2 AND active_pid IS NOT NULL
                """, [role, slot])
            _ = try connection.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [slot])
            if exists { _ = try connection.execute("DROP ROLE IF EXISTS \(quoted(role))") }
        } catch {
            throw AgentError(.store, "cannot drop standby '\(name)': \(error.message)")
        }
    }

    /// `synchronous_standby_names = 'FIRST 1 ("name")'` (commits wait until standby `name` has
    /// flushed them), or `''` for nil (no waiting), with ALTER SYSTEM and `pg_reload_conf()`.
    /// The reload is asynchronous: it applies within moments, and waiting commits are released
    /// when it does.
    static func setSynchronousStandby(_ name: String?, on connection: PostgresConnection) throws(AgentError) {
        var value = ""
        if let name {
            _ = try roleName(for: name)  // validates it: a node name cannot hold `"` or `'`
            value = "FIRST 1 (\"\(name)\")"
        }
        do throws(AgentError) {
            _ = try connection.execute("ALTER SYSTEM SET synchronous_standby_names = \(literal(value))")
            _ = try connection.execute("SELECT pg_reload_conf()")
        } catch {
            throw AgentError(.store, "cannot set the synchronous standby: \(error.message)")
        }
    }

    /// The primary's current WAL position, its connected standbys and its physical slots.
    static func primaryStatus(on connection: PostgresConnection) throws(AgentError) -> PrimaryReplicationStatus {
        do throws(AgentError) {
            guard let current = try connection.execute("SELECT pg_current_wal_lsn()::text").scalar.flatMap(LSN.init)
            else {
                throw AgentError(.store, "pg_current_wal_lsn() returned no position")
            }
            let standbys = try connection.execute(
                """
                SELECT application_name, host(client_addr), state, sync_state, flush_lsn::text, replay_lsn::text
                FROM pg_stat_replication ORDER BY application_name
                """
            ).rows.map { row in
                let flush = row[4].flatMap(LSN.init), replay = row[5].flatMap(LSN.init)
                return PrimaryReplicationStatus.Standby(
                    applicationName: row[0] ?? "", clientAddress: row[1], state: row[2] ?? "",
                    syncState: row[3] ?? "", flushLSN: flush, replayLSN: replay,
                    flushLagBytes: flush.map { current.bytes(after: $0) },
                    replayLagBytes: replay.map { current.bytes(after: $0) })
            }
            let slots = try connection.execute(
                """
                SELECT slot_name, active, restart_lsn::text FROM pg_replication_slots
                WHERE slot_type = 'physical' ORDER BY slot_name
                """
            ).rows.map { row in
                let restart = row[2].flatMap(LSN.init)
                return PrimaryReplicationStatus.Slot(
                    name: row[0] ?? "", active: row[1] == "t", restartLSN: restart,
                    retainedBytes: restart.map { current.bytes(after: $0) })
            }
            return PrimaryReplicationStatus(currentLSN: current, standbys: standbys, slots: slots)
        } catch {
            throw AgentError(.store, "cannot read the primary's replication status: \(error.message)")
        }
    }

    /// Whether the server is in recovery, what it received and replayed, and its WAL receiver's state.
    static func standbyStatus(on connection: PostgresConnection) throws(AgentError) -> StandbyReplicationStatus {
        let row: [String?]
        do throws(AgentError) {
            row =
                try connection.execute(
                    """
                    SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, r.status
                    FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true LIMIT 1
                    """
                ).rows.first ?? []
        } catch {
            throw AgentError(.store, "cannot read the standby's replication status: \(error.message)")
        }
        guard row.count == 4 else { throw AgentError(.store, "the standby's replication status has no row") }
        return StandbyReplicationStatus(
            inRecovery: row[0] == "t", receiveLSN: row[1].flatMap(LSN.init), replayLSN: row[2].flatMap(LSN.init),
            receiverStatus: row[3])
    }

    // MARK: Names

    /// The group role pg_hba.conf admits over TCP.
    static var group: String { ManagedPostgres.replicationGroup }

    /// `aurora_repl_<name>` for standby `name`: see ``identifier(_:_:)``.
    static func roleName(for name: String) throws(AgentError) -> String {
        try identifier("aurora_repl_", name)
    }

    /// `aurora_<name>`, the standby's physical replication slot: see ``identifier(_:_:)``.
    static func slotName(for name: String) throws(AgentError) -> String {
        try identifier("aurora_", name)
    }

    /// `prefix` + `name` with `-` as `_`, for a name of lower-case letters, digits and `-` that
    /// fits in PostgreSQL's 63 bytes. Any other valid node name (upper case, `_`, `.`, or too long)
    /// becomes lower case with `_`, cut to fit, plus `_` and 8 hex digits of its SHA-256, so that
    /// two node names never share a role or slot. Slot names allow only `a-z`, `0-9` and `_`.
    static func identifier(_ prefix: String, _ name: String) throws(AgentError) -> String {
        do throws(MeshError) {
            _ = try NodeName(name)
        } catch {
            throw AgentError(.invalidInput, "standby name: \(error.message)")
        }
        let simple = name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-"
        }
        let mapped = String(
            name.lowercased().unicodeScalars.map {
                ("a"..."z").contains($0) || ("0"..."9").contains($0) ? Character($0) : "_"
            })
        if simple && prefix.utf8.count + mapped.utf8.count <= 63 { return prefix + mapped }
        let digest = SHA256.hash(data: Data(name.utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
        return prefix + mapped.prefix(63 - prefix.utf8.count - 9) + "_" + digest
    }

    /// `"identifier"`, with `"` doubled.
    private static func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `'literal'`, with `'` doubled (standard_conforming_strings is on).
    private static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
}
