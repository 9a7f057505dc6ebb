import AuroraTestKit
import Foundation
import Logging
import Mesh
import Synchronization
import Testing

@testable import NodeAgent

/// A lead's managed PostgreSQL with a TLS replication listener and a standby cloned from it
/// with pg_basebackup, both real servers (as the `postgres` user when the tests run as root):
/// streaming, synchronous commit, the listener's refusals, promotion.
@Suite("Managed PostgreSQL replication (TLS listener, pinned clone, sync commit, promotion)", .serialized)
struct ManagedReplicationTests {
    static let standbyName = "standby-1"
    /// `:`, `\` and `'` exercise the password file's and the SQL's escaping.
    static let password = "repl:pass\\word'1-\(UInt32.random(in: 0...UInt32.max))"
    static let logger = Logger(label: "test")

    // MARK: Fixture

    /// The lead's cluster, its listener's port and its certificate (what a standby pins).
    struct Lead {
        let postgres: ManagedPostgres
        let port: Int
        let certificatePEM: String
        let keys: String
    }

    /// Managed clusters a test started, stopped at its end (also when it fails).
    final class Clusters: Sendable {
        private let started = Mutex<[ManagedPostgres]>([])

        func add(_ postgres: ManagedPostgres) { started.withLock { $0.append(postgres) } }

        func stopAll() async {
            for postgres in started.withLock({ $0 }) { try? await postgres.stop() }
        }
    }

    /// Runs `body` with a scratch directory and stops every cluster it started afterwards.
    func withClusters(_ label: String, _ body: (ScratchDirectory, Clusters) async throws -> Void) async throws {
        let scratch = try ScratchDirectory(label)
        defer { scratch.remove() }
        let clusters = Clusters()
        do {
            try await body(scratch, clusters)
        } catch {
            await clusters.stopAll()
            throw error
        }
        await clusters.stopAll()
    }

    /// A data directory `scratch/name` (0755, so the server's user can pass through).
    func dataDirectory(_ scratch: ScratchDirectory, _ name: String) throws -> String {
        let path = scratch.path + "/" + name
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        return path
    }

    /// A lead with a listener on 127.0.0.1 and a certificate made by ``TLSIdentity``, started,
    /// with the `aurora` database, table `t`, and the role and slot of ``standbyName``.
    func startLead(_ scratch: ScratchDirectory, _ clusters: Clusters) async throws -> Lead {
        let keys = try dataDirectory(scratch, "lead-keys")
        _ = try TLSIdentity.loadOrCreate(in: keys, name: "lead", logger: Self.logger)
        let port = try freePort()
        let listener = ReplicationListener(
            host: "127.0.0.1", port: port, certificatePath: keys + "/tls.crt", keyPath: keys + "/tls.key")
        let postgres = try ManagedPostgres(
            dataDir: try dataDirectory(scratch, "lead"), binDirectory: nil, runAs: "postgres", logger: Self.logger,
            replication: listener)
        clusters.add(postgres)
        _ = try await postgres.start()
        try postgres.createDatabaseIfNeeded()
        let connection = try PostgresConnection(conninfo: postgres.conninfo)
        _ = try connection.execute("CREATE TABLE t (id int PRIMARY KEY)")
        _ = try connection.execute("INSERT INTO t VALUES (1)")
        try ReplicationSQL.ensureStandby(name: Self.standbyName, password: Self.password, on: connection)
        let certificate = try String(contentsOfFile: keys + "/tls.crt", encoding: .utf8)
        return Lead(postgres: postgres, port: port, certificatePEM: certificate, keys: keys)
    }

    /// A managed cluster in `scratch/name` (not made yet), like the standby lead's.
    func standbyCluster(_ scratch: ScratchDirectory, _ name: String = "standby") throws -> ManagedPostgres {
        try ManagedPostgres(
            dataDir: try dataDirectory(scratch, name), binDirectory: nil, runAs: "postgres", logger: Self.logger)
    }

    /// Clones `lead` into `standby` as ``standbyName``.
    func clone(
        _ lead: Lead, into standby: ManagedPostgres, password: String = Self.password, certificatePEM: String? = nil
    ) async throws(AgentError) {
        try await standby.cloneFromPrimary(
            host: "127.0.0.1", port: lead.port, user: try ReplicationSQL.roleName(for: Self.standbyName),
            password: password, slot: try ReplicationSQL.slotName(for: Self.standbyName),
            applicationName: Self.standbyName, certificatePEM: certificatePEM ?? lead.certificatePEM)
    }

    /// A lead and a started standby cloned from it, streaming.
    func startPair(_ scratch: ScratchDirectory, _ clusters: Clusters) async throws -> (Lead, ManagedPostgres) {
        let lead = try await startLead(scratch, clusters)
        let standby = try standbyCluster(scratch)
        try await clone(lead, into: standby)
        clusters.add(standby)
        _ = try await standby.start()
        return (lead, standby)
    }

    /// Rows of `t` on `postgres`.
    func count(_ postgres: ManagedPostgres) throws -> Int {
        Int(try PostgresConnection(conninfo: postgres.conninfo).execute("SELECT count(*) FROM t").scalar ?? "") ?? -1
    }

    // MARK: Tests

    @Test("a clone over TLS pinned to the lead's certificate streams: rows arrive, both sides report it")
    func streamsToAPinnedClone() async throws {
        try await withClusters("repl-stream") { scratch, clusters in
            let (lead, standby) = try await startPair(scratch, clusters)
            let primary = try PostgresConnection(conninfo: lead.postgres.conninfo)
            _ = try primary.execute("INSERT INTO t VALUES (2)")
            _ = try await poll(timeout: .seconds(20), "the row on the standby") { try count(standby) == 2 ? true : nil }

            let onStandby = try PostgresConnection(conninfo: standby.conninfo)
            let status = try await poll(timeout: .seconds(20), "the standby to stream") {
                let status = try ReplicationSQL.standbyStatus(on: onStandby)
                return status.isStreaming && status.replayLSN != nil ? status : nil
            }
            #expect(status.inRecovery && status.receiverStatus == "streaming")
            let view = try await poll(timeout: .seconds(20), "the lead to list the standby") {
                try ReplicationSQL.primaryStatus(on: primary).standby(named: Self.standbyName)
            }
            #expect(view.state == "streaming" && view.syncState == "async" && view.clientAddress == "127.0.0.1")
            let lead1 = try ReplicationSQL.primaryStatus(on: primary)
            let slot = try ReplicationSQL.slotName(for: Self.standbyName)
            #expect(lead1.slots.contains { $0.name == slot && $0.active })
            #expect(try #require(view.replayLSN) <= lead1.currentLSN)
            let tls = try primary.execute(
                "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)"
            ).rows.first
            #expect(tls == ["t", "TLSv1.3"])

            // The password is in no file but the 0600 password file of the server's user; the
            // lead's private key is not in the standby's cluster.
            let owner = try ManagedPostgres.account("postgres")
            let passfile = standby.replicationFilesDirectory + "/primary.pgpass"
            let info = try #require(FileStatus.of(passfile))
            #expect(info.permissions == 0o600 && (geteuid() != 0 || info.uid == owner.uid))
            for file in ["postgresql.auto.conf", "aurora-standby.conf", "aurora.conf"] {
                let text = try String(contentsOfFile: standby.directory + "/" + file, encoding: .utf8)
                #expect(!text.contains(Self.password), "\(file) holds the password")
            }
            let standbyConf = try String(
                contentsOfFile: standby.directory + "/" + ManagedPostgres.standbySettingsFile, encoding: .utf8)
            #expect(standbyConf.contains("sslmode=''verify-ca''") && standbyConf.contains("passfile="))
            let leadKey = lead.postgres.replicationFilesDirectory + "/server.key"
            let keyInfo = try #require(FileStatus.of(leadKey))
            #expect(keyInfo.permissions == 0o600 && (geteuid() != 0 || keyInfo.uid == owner.uid))
            let keyText = try String(contentsOfFile: lead.keys + "/tls.key", encoding: .utf8)
            let standbyFiles = FileManager.default.enumerator(atPath: standby.directory)?.allObjects as? [String] ?? []
            for file in standbyFiles where !file.hasPrefix("base/") && !file.hasPrefix("pg_") {
                let text = (try? String(contentsOfFile: standby.directory + "/" + file, encoding: .utf8)) ?? ""
                #expect(
                    !text.contains(keyText.trimmingCharacters(in: .whitespacesAndNewlines)),
                    "\(file) holds the lead's key")
            }

            // A restart keeps streaming (aurora-standby.conf survives writeSettings).
            try await standby.stop()
            _ = try await standby.start()
            _ = try primary.execute("INSERT INTO t VALUES (3)")
            _ = try await poll(timeout: .seconds(20), "the row after a restart") {
                try count(standby) == 3 ? true : nil
            }

            // Dropping the standby while it streams ends its WAL sender, then removes slot and role.
            try ReplicationSQL.dropStandby(name: Self.standbyName, on: primary)
            let after = try ReplicationSQL.primaryStatus(on: primary)
            #expect(!after.slots.contains { $0.name == slot })
            let role = try ReplicationSQL.roleName(for: Self.standbyName)
            #expect(try primary.execute("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]).rows.isEmpty)
            try ReplicationSQL.dropStandby(name: Self.standbyName, on: primary)  // nothing left: no error
        }
    }

    @Test(
        "synchronous: a commit waits while the standby is down and returns when it is back; off again, it does not wait"
    )
    func synchronousCommitWaitsForTheStandby() async throws {
        try await withClusters("repl-sync") { scratch, clusters in
            let (lead, standby) = try await startPair(scratch, clusters)
            let primary = try PostgresConnection(conninfo: lead.postgres.conninfo)
            try ReplicationSQL.setSynchronousStandby(Self.standbyName, on: primary)
            _ = try await poll(timeout: .seconds(20), "the standby to be synchronous") {
                try ReplicationSQL.primaryStatus(on: primary).standby(named: Self.standbyName)?.syncState == "sync"
                    ? true : nil
            }
            try await standby.stop()

            let waiting = BlockingCall(lead.postgres.conninfo, "INSERT INTO t VALUES (10)")
            // The commit is flushed locally and waits for the standby: assert on the wait.
            _ = try await poll(timeout: .seconds(20), "the INSERT to wait for the standby") {
                try primary.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'").rows.isEmpty
                    ? nil : true
            }
            #expect(waiting.result == nil, "the INSERT returned with no synchronous standby")

            _ = try await standby.start()
            let result = try await poll(timeout: .seconds(30), "the INSERT to return") { waiting.result }
            #expect(throws: Never.self) { try result.get() }
            _ = try await poll(timeout: .seconds(20), "the row on the standby") { try count(standby) == 2 ? true : nil }

            try ReplicationSQL.setSynchronousStandby(nil, on: primary)
            try await standby.stop()
            let free = BlockingCall(lead.postgres.conninfo, "INSERT INTO t VALUES (11)")
            let freeResult = try await poll(timeout: .seconds(20), "the INSERT without a synchronous standby") {
                free.result
            }
            #expect(throws: Never.self) { try freeResult.get() }
        }
    }

    @Test(
        "the listener refuses another certificate, plain and TLS 1.2 connections, other roles, and a wrong password (never echoed)"
    )
    func refusals() async throws {
        try await withClusters("repl-refuse") { scratch, clusters in
            let lead = try await startLead(scratch, clusters)

            // An impostor certificate with the lead's very name: pinned to it, the clone must fail.
            let impostorKeys = try dataDirectory(scratch, "impostor-keys")
            _ = try TLSIdentity.loadOrCreate(in: impostorKeys, name: "lead", logger: Self.logger)
            let impostor = try String(contentsOfFile: impostorKeys + "/tls.crt", encoding: .utf8)
            let standby = try standbyCluster(scratch)
            let wrongCertificate = await #expect(throws: AgentError.self) {
                try await clone(lead, into: standby, certificatePEM: impostor)
            }
            #expect(wrongCertificate?.code == .store)
            #expect(wrongCertificate?.message.contains("certificate verify failed") == true, "\(wrongCertificate!)")
            #expect(!FileManager.default.fileExists(atPath: standby.directory + "/PG_VERSION"))
            #expect(!FileManager.default.fileExists(atPath: standby.directory + ".clone"))

            let wrongPassword = "not-the-password-\(UInt32.random(in: 0...UInt32.max))"
            let badPassword = await #expect(throws: AgentError.self) {
                try await clone(lead, into: standby, password: wrongPassword)
            }
            let message = badPassword?.message ?? ""
            #expect(message.contains("password authentication failed"), "\(message)")
            #expect(!message.contains(wrongPassword) && !message.contains(Self.password))
            let log = try String(contentsOfFile: lead.postgres.directory + "/server.log", encoding: .utf8)
            #expect(!log.contains(wrongPassword) && !log.contains(Self.password))

            let role = try ReplicationSQL.roleName(for: Self.standbyName)
            let root = lead.keys + "/tls.crt"
            let base =
                "host=127.0.0.1 port=\(lead.port) connect_timeout=5 password='\(Self.password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'"))'"
            let good = "\(base) user=\(role) dbname=replication replication=true sslmode=verify-ca sslrootcert=\(root)"
            #expect(throws: Never.self) { _ = try PostgresConnection(conninfo: good) }
            for (what, conninfo, reason) in [
                ("plain", "\(base) user=\(role) dbname=replication replication=true sslmode=disable", "no encryption"),
                ("TLS 1.2", good + " ssl_max_protocol_version=TLSv1.2", "protocol version"),
                (
                    "a non-replication connection", "\(base) user=\(role) dbname=aurora sslmode=require",
                    "no pg_hba.conf entry"
                ),
                ("the superuser", "\(base) user=aurora dbname=aurora sslmode=require", "no pg_hba.conf entry"),
            ] {
                let refused = #expect(throws: AgentError.self, "\(what)") { try PostgresConnection(conninfo: conninfo) }
                #expect(refused?.message.contains(reason) == true, "\(what): \(refused.map { "\($0)" } ?? "")")
                #expect(refused?.message.contains(Self.password) == false)
            }

            // The listener still serves the right clone after all that.
            try await clone(lead, into: standby)
            #expect(FileManager.default.fileExists(atPath: standby.directory + "/standby.signal"))
        }
    }

    @Test(
        "promote(): the standby leaves recovery and takes writes; the lead's synchronous setting did not come with it")
    func promotedStandbyTakesWrites() async throws {
        try await withClusters("repl-promote") { scratch, clusters in
            let lead = try await startLead(scratch, clusters)
            // Synchronous before the clone: the copy of postgresql.auto.conf holds it, and a
            // promoted standby that kept it would wait forever for a standby it does not have.
            try ReplicationSQL.setSynchronousStandby(
                Self.standbyName, on: try PostgresConnection(conninfo: lead.postgres.conninfo))
            let standby = try standbyCluster(scratch)
            try await clone(lead, into: standby)
            clusters.add(standby)
            _ = try await standby.start()
            let primaryWrite = BlockingCall(lead.postgres.conninfo, "INSERT INTO t VALUES (2)")
            let primaryResult = try await poll(timeout: .seconds(20), "the synchronous INSERT") { primaryWrite.result }
            #expect(throws: Never.self) { try primaryResult.get() }
            _ = try await poll(timeout: .seconds(20), "the row on the standby") { try count(standby) == 2 ? true : nil }

            try await standby.promote()
            let status = try ReplicationSQL.standbyStatus(on: try PostgresConnection(conninfo: standby.conninfo))
            #expect(!status.inRecovery)
            let write = BlockingCall(standby.conninfo, "INSERT INTO t VALUES (100)")
            let result = try await poll(timeout: .seconds(20), "a write on the promoted standby") { write.result }
            #expect(throws: Never.self) { try result.get() }
            #expect(
                !FileManager.default.fileExists(atPath: standby.directory + "/" + ManagedPostgres.standbySettingsFile))

            // Still a primary after a restart.
            try await standby.stop()
            _ = try await standby.start()
            _ = try PostgresConnection(conninfo: standby.conninfo).execute("INSERT INTO t VALUES (101)")
            #expect(try count(standby) == 4)
        }
    }

    @Test("standby role and slot names: node names map to distinct valid identifiers of at most 63 bytes")
    func identifiers() throws {
        #expect(try ReplicationSQL.roleName(for: "standby-1") == "aurora_repl_standby_1")
        #expect(try ReplicationSQL.slotName(for: "standby-1") == "aurora_standby_1")
        let long = String(repeating: "a", count: 60) + "-b"
        let names = [long, long.replacingOccurrences(of: "-", with: "_"), "Standby-1", "standby_1", "standby.1"]
        var seen = Set<String>()
        for name in names {
            let role = try ReplicationSQL.roleName(for: name), slot = try ReplicationSQL.slotName(for: name)
            #expect(role.utf8.count <= 63 && slot.utf8.count <= 63)
            #expect(slot.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" })
            #expect(seen.insert(role).inserted && seen.insert(slot).inserted)
        }
        #expect(!seen.contains("aurora_repl_standby_1"))
        for bad in ["", "-x", "a b", "x'y", "a\"b", String(repeating: "a", count: 64)] {
            #expect(throws: AgentError.self) { try ReplicationSQL.roleName(for: bad) }
        }
    }
}

/// One blocking statement on its own thread and connection (a synchronous commit may wait for
/// long; a cooperative thread must not), with its outcome once it returned.
final class BlockingCall: Sendable {
    private let outcome = Mutex<Result<Void, AgentError>?>(nil)

    init(_ conninfo: String, _ sql: String) {
        Thread.detachNewThread { [self] in
            let result: Result<Void, AgentError>
            do throws(AgentError) {
                _ = try PostgresConnection(conninfo: conninfo).execute(sql)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
        }
    }

    /// nil while the statement runs.
    var result: Result<Void, AgentError>? { outcome.withLock { $0 } }
}
