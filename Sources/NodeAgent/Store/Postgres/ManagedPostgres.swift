import Foundation
import Logging

#if canImport(Glibc)
#endif

/// The PostgreSQL cluster a lead owns in `DATA/postgres`: initdb on first start, `pg_ctl start`
/// and `stop` with the agent, a Unix socket inside the cluster directory and no TCP listener
/// unless ``replication`` asks for one (TLS, replication connections only: see
/// `ManagedPostgres+Replication.swift`, which also makes a standby with ``cloneFromPrimary``).
///
/// PostgreSQL refuses to run as root, so when the agent is root the cluster belongs to, and
/// runs as, `store.run_as` (default `postgres`).
struct ManagedPostgres: Sendable {
    /// `DATA/postgres`.
    let directory: String
    /// Where initdb and pg_ctl are.
    let binDirectory: String
    /// The OS user that runs the server, when the agent is root.
    let runAs: String?
    let logger: Logger
    /// The TLS listener for standbys' replication connections; nil: nothing listens on TCP.
    let replication: ReplicationListener?
    /// The listener's port, else 5432. It also names the socket file (`.s.PGSQL.PORT`).
    var port: Int { replication?.port ?? 5432 }
    /// The database the agent's tables live in, and (`superuser`) the role initdb makes.
    static let databaseName = "aurora"
    static let superuser = "aurora"

    /// The libpq connection string for the agent (trust over a socket only its owner reaches).
    var conninfo: String { "host=\(directory) port=\(port) dbname=\(Self.databaseName) user=\(Self.superuser)" }

    /// Starts nothing: finds `initdb` and `pg_ctl` and checks the socket path fits in 107 bytes,
    /// throwing ``AgentError`` with code `store` otherwise (`config` for an invalid `replication`).
    /// `runAs` applies only when the agent is root.
    init(
        dataDir: String, binDirectory: String?, runAs: String, logger: Logger,
        replication: ReplicationListener? = nil
    ) throws(AgentError) {
        try replication?.validate()
        self.directory = dataDir + "/postgres"
        self.replication = replication
        if let binDirectory {
            self.binDirectory = binDirectory
        } else {
            self.binDirectory = try Self.findBinDirectory()
        }
        self.runAs = geteuid() == 0 ? runAs : nil
        self.logger = logger
        for tool in ["initdb", "pg_ctl"]
        where !FileManager.default.isExecutableFile(atPath: self.binDirectory + "/" + tool) {
            throw AgentError(.store, "\(self.binDirectory)/\(tool) not found; install postgresql or set store.pg_bin")
        }
        let socket = directory + "/.s.PGSQL.\(port)"
        guard socket.utf8.count < 108 else {
            throw AgentError(
                .store,
                "data dir path is too long for PostgreSQL's socket (\(socket.utf8.count) bytes, limit 107); use a shorter --data-dir"
            )
        }
    }

    /// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
    static func findBinDirectory() throws(AgentError) -> String {
        for pgConfig in ["/usr/bin/pg_config", "/usr/local/bin/pg_config"]
        where FileManager.default.isExecutableFile(atPath: pgConfig) {
            let pipe = Pipe()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: pgConfig)
            process.arguments = ["--bindir"]
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            if (try? process.run()) != nil {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                let directory = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if FileManager.default.isExecutableFile(atPath: directory + "/initdb") { return directory }
            }
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        if let newest = versions.compactMap(Int.init).sorted().last {
            return "/usr/lib/postgresql/\(newest)/bin"
        }
        throw AgentError(
            .store,
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql, set store.pg_bin, or use --store URL"
        )
    }

    // MARK: Lifecycle

    /// Initialises the cluster if it does not exist yet, then starts it unless a server left
    /// by a crashed agent is still running, which is reused. Returns whether it was reused.
    func start() async throws(AgentError) -> Bool {
        let owner = try runAs.map { name throws(AgentError) in try Self.account(name) }
        if !FileManager.default.fileExists(atPath: directory + "/PG_VERSION") {
            try await initialise(owner: owner)
        }
        if let owner { try checkReachable(by: owner) }
        try writeSettings(owner: owner)
        if await isRunning() {
            logger.notice(
                "reusing the managed PostgreSQL left running by an earlier agent",
                metadata: ["nodeagent.pid": "\(serverPID.map(String.init) ?? "?")"])
            return true
        }
        let result = try await pgctl([
            "start", "-D", directory, "-l", directory + "/server.log", "-w", "-t", "60", "-s",
        ])
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8))?.split(separator: "\n")
                .last.map(String.init)
            throw AgentError(.store, "managed PostgreSQL did not start: \(log ?? result.lastLine)")
        }
        logger.info("managed PostgreSQL started", metadata: ["nodeagent.pid": "\(serverPID.map(String.init) ?? "?")"])
        return false
    }

    /// Creates the database the agent uses, once.
    /// Blocking: ``StoreService`` calls it on the store thread after ``start()``, over the socket.
    func createDatabaseIfNeeded() throws(AgentError) {
        let admin = try PostgresConnection(
            conninfo: "host=\(directory) port=\(port) dbname=postgres user=\(Self.superuser)")
        if try admin.execute("SELECT 1 FROM pg_database WHERE datname = $1", [Self.databaseName]).rows.isEmpty {
            _ = try admin.execute("CREATE DATABASE \(Self.databaseName)")
        }
    }

    /// Fast shutdown (active sessions are ended, nothing committed is lost).
    /// Waits up to 30 s; a server that is not running is left alone.
    func stop() async throws(AgentError) {
        guard await isRunning() else { return }
        let result = try await pgctl(["stop", "-D", directory, "-m", "fast", "-w", "-t", "30", "-s"])
        guard result.status == 0 else {
            throw AgentError(.store, "managed PostgreSQL did not stop: \(result.lastLine)")
        }
        logger.info("managed PostgreSQL stopped")
    }

    /// `pg_ctl status`: 0 means a server runs on this directory.
    /// No `postmaster.pid` answers false without running `pg_ctl`. ``StoreService`` asks after a
    /// lost connection, to start a server that died.
    func isRunning() async -> Bool {
        guard FileManager.default.fileExists(atPath: directory + "/postmaster.pid") else { return false }
        return (try? await pgctl(["status", "-D", directory]))?.status == 0
    }

    /// The postmaster's PID from `postmaster.pid`.
    var serverPID: Int32? {
        (try? String(contentsOfFile: directory + "/postmaster.pid", encoding: .utf8))?
            .split(separator: "\n").first.flatMap { Int32($0) }
    }

    // MARK: Steps

    /// initdb into a sibling directory, renamed into place only when complete, so a crash in
    /// the middle never leaves a half-made cluster behind.
    private func initialise(owner: Account?) async throws(AgentError) {
        let staging = directory + ".initdb"
        if FileManager.default.fileExists(atPath: staging) { try? FileManager.default.removeItem(atPath: staging) }
        if FileManager.default.fileExists(atPath: directory) {
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            guard contents.isEmpty else {
                throw AgentError(
                    .store,
                    "\(directory) exists but holds no PostgreSQL cluster (no PG_VERSION); move it away to let the agent create one"
                )
            }
            try? FileManager.default.removeItem(atPath: directory)
        }
        guard mkdir(staging, 0o700) == 0 else {
            throw AgentError(.store, "cannot create \(staging): \(String(cString: strerror(errno)))")
        }
        if let owner { chown(staging, owner.uid, owner.gid) }
        let started = ContinuousClock.now
        let result = try await ProcessRunner.run(
            binDirectory + "/initdb",
            [
                "-D", staging, "-U", Self.superuser, "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-instructions",
            ], asUser: runAs)
        guard result.status == 0 else {
            try? FileManager.default.removeItem(atPath: staging)
            throw AgentError(.store, "initdb failed: \(result.lastLine)")
        }
        // Our settings live in aurora.conf, rewritten at each start.
        let conf = staging + "/postgresql.conf"
        guard let handle = FileHandle(forUpdatingAtPath: conf) else { throw AgentError(.store, "cannot open \(conf)") }
        handle.seekToEndOfFile()
        handle.write(Data("\n# Managed by nodeagent: see aurora.conf\ninclude_if_exists = 'aurora.conf'\n".utf8))
        try? handle.synchronize()
        try? handle.close()
        guard rename(staging, directory) == 0 else {
            throw AgentError(
                .store, "cannot move the new cluster into \(directory): \(String(cString: strerror(errno)))")
        }
        logger.info(
            "initialised managed PostgreSQL",
            metadata: [
                "nodeagent.dir": "\(directory)", "nodeagent.ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
    }

    /// Writes `aurora.conf` (included from `postgresql.conf`): the socket in the cluster directory,
    /// no TCP listener, 40 connections, 32 MB of shared buffers. Rewritten at every start, so a
    /// change in a newer agent reaches existing clusters.
    ///
    /// With ``replication``: listens on its address and port with TLS 1.3 only (copies of the
    /// certificate and key in ``replicationFilesDirectory``), streams WAL to standbys, and
    /// `pg_hba.conf` admits over TCP only TLS replication connections of standby roles
    /// (``writeReplicationHBA(owner:)``). Last, it includes `aurora-standby.conf`, which only a
    /// standby has (written by `cloneFromPrimary`, removed by `promote`).
    private func writeSettings(owner: Account?) throws(AgentError) {
        var settings = """
            # Written by nodeagent at every start; edit the profile, not this file.
            listen_addresses = \(Self.settingLiteral(replication?.host ?? ""))
            unix_socket_directories = \(Self.settingLiteral(directory))
            port = \(port)
            max_connections = 40
            shared_buffers = 32MB
            logging_collector = off

            """
        if let replication {
            let files = try installServerCertificate(replication, owner: owner)
            settings += """
                # The replication listener: TLS 1.3 only, pg_hba.conf admits only standby roles.
                ssl = on
                ssl_cert_file = \(Self.settingLiteral(files.certificate))
                ssl_key_file = \(Self.settingLiteral(files.key))
                ssl_min_protocol_version = 'TLSv1.3'
                wal_level = replica
                max_wal_senders = 10
                max_replication_slots = 10
                hot_standby = on

                """
            try writeReplicationHBA(owner: owner)
        }
        settings += """
            # Only on a standby: where it streams from (written when it was cloned, removed at promotion).
            include_if_exists = '\(Self.standbySettingsFile)'

            """
        let path = directory + "/aurora.conf"
        try SecureFile.write(settings, to: path)
        if let owner { chown(path, owner.uid, owner.gid) }
    }

    /// A value for a PostgreSQL configuration file: single-quoted, with `\` and `'` escaped.
    static func settingLiteral(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// Runs `pg_ctl` as the server's user.
    func pgctl(_ arguments: [String]) async throws(AgentError) -> ProcessResult {
        try await ProcessRunner.run(binDirectory + "/pg_ctl", arguments, asUser: runAs)
    }

    // MARK: The server's OS account

    /// The OS user the server runs as (`store.run_as`) and its ids, for `chown` and the checks.
    struct Account {
        let name: String
        let uid: uid_t
        let gid: gid_t
    }

    /// Looks `name` up with `getpwnam`; ``AgentError`` with code `store` when there is no such user.
    static func account(_ name: String) throws(AgentError) -> Account {
        guard let entry = getpwnam(name) else {
            throw AgentError(
                .store,
                "store.run_as user '\(name)' does not exist; create it (apt's postgresql package does) or set store.run_as"
            )
        }
        return Account(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }

    /// The server's user must be able to reach its directory through every parent.
    func checkReachable(by owner: Account) throws(AgentError) {
        var path = (directory as NSString).deletingLastPathComponent
        while !path.isEmpty {
            if let info = FileStatus.of(path) {
                let mode = info.mode
                let searchable =
                    mode & 0o001 != 0 || (info.uid == owner.uid && mode & 0o100 != 0)
                    || (info.gid == owner.gid && mode & 0o010 != 0)
                guard searchable else {
                    throw AgentError(
                        .store,
                        "the managed PostgreSQL runs as '\(owner.name)', which cannot enter \(path) (mode \(String(mode & 0o777, radix: 8))); run 'chmod o+x \(path)' or set store.run_as"
                    )
                }
            }
            if path == "/" { break }
            path = (path as NSString).deletingLastPathComponent
        }
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
    /// Whole nanoseconds (for metrics timers).
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
