import AuroraAPI
import Foundation
import Logging
import Mesh
import NIOPosix
import Secrets

#if canImport(Glibc)
#endif

/// The lead's backups of the mesh database: `pg_dump -Fc` files in `DATA/backups`, each with
/// a `FILE.sha256` beside it (sha256sum format), kept by ``BackupRetention`` (7 daily, 4 weekly,
/// 12 monthly). Verified with the checksum and pg_restore; restored into a new database on the
/// store's server.
///
/// The shell around the pure retention core: it runs the tools, owns the files and keeps one
/// backup at a time. A dump is written under a hidden `.partial` name and renamed into place
/// only once pg_dump succeeded and its checksum is on disk, so a crash never leaves a file that
/// looks complete. The password of the store's connection string never reaches a command line
/// or a message: the tools get it through `PGPASSWORD`.
actor BackupArchive {
    /// Where the mesh database is and which tools reach it.
    struct Source: Sendable {
        /// libpq URL or keyword string of the mesh database (may hold a password; never logged).
        var conninfo: String
        /// Where pg_dump and pg_restore are; nil: found like the managed cluster's tools.
        var binDirectory: String?
    }

    /// `DATA/backups`.
    let directory: String
    /// How many daily, weekly and monthly backups retention keeps (7, 4 and 12 by default).
    let policy: RetentionPolicy
    private let source: Source
    private let store: Store
    private let logger: Logger
    /// Seconds since the epoch, UTC; a backup's name records it.
    private let clock: @Sendable () -> Int64
    /// The backup being taken, if any.
    private var running: RunningBackup?
    /// Backups being verified or restored: retention leaves them alone until they are done.
    private var inUse: [String: Int] = [:]

    init(
        dataDir: String, store: Store, source: Source, policy: RetentionPolicy = .standard, logger: Logger,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) {
        self.directory = dataDir + "/backups"
        self.store = store
        self.source = source
        self.policy = policy
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "backup"
        self.logger = logger
        self.clock = clock
    }

    // MARK: Taking a backup

    /// Whether a backup may start now; throws `backupRunning` when one is under way.
    func checkIdle() throws(AgentError) {
        if let running { throw running.busy }
    }

    /// The one backup under way.
    private struct RunningBackup {
        var startedAt: UTCTimestamp
        var progress = BackupProgress(tablesDone: 0, tablesTotal: 0, bytes: 0)
        /// Tables pg_dump has begun (it names each as it starts on it).
        var tablesStarted = 0
        /// When progress was last reported.
        var reportedAt = ContinuousClock.now

        var busy: AgentError {
            AgentError(
                .backupRunning,
                "a backup started at \(startedAt) is still running (\(progress.tablesDone) of \(progress.tablesTotal) "
                    + "tables done); wait for it to finish")
        }
    }

    /// Dumps the mesh database into a new backup, then applies retention. `onProgress` hears
    /// how far the dump is, a few times a second. Cancelling the task stops pg_dump and leaves
    /// nothing behind.
    func create(onProgress: @escaping @Sendable (BackupProgress) -> Void = { _ in }) async throws(AgentError)
        -> BackupCreated
    {
        if let running { throw running.busy }
        running = RunningBackup(startedAt: UTCTimestamp(secondsSinceEpoch: clock()))
        defer { running = nil }
        do throws(AgentError) {
            return try await take(onProgress: onProgress)
        } catch {
            logger.warning("backup failed", metadata: ["nodeagent.error": "\(error.message)"])
            throw error
        }
    }

    /// ``create(onProgress:)`` once the slot is taken.
    private func take(onProgress: @escaping @Sendable (BackupProgress) -> Void) async throws(AgentError)
        -> BackupCreated
    {
        let started = ContinuousClock.now
        var stamp = UTCTimestamp(secondsSinceEpoch: clock())
        let pgDump = try tool("pg_dump")
        try prepareDirectory()
        removeLeftovers()
        // Names are to the second: a backup right after another waits for the next second.
        while FileManager.default.fileExists(atPath: path(BackupName.fileName(for: stamp))) {
            if Task.isCancelled { throw AgentError(.backupFailed, "the backup was stopped before it began") }
            try? await Task.sleep(for: .milliseconds(1000 - Int64(Date().timeIntervalSince1970 * 1000) % 1000))
            stamp = UTCTimestamp(secondsSinceEpoch: max(clock(), stamp.secondsSinceEpoch + 1))
        }
        let name = BackupName.fileName(for: stamp)
        let final = path(name), partial = path("." + name + ".partial")
        running?.startedAt = stamp

        let tablesTotal = (try? await store.query(Self.countTables).scalar.flatMap { Int($0) }) ?? 0
        running?.progress.tablesTotal = tablesTotal
        onProgress(BackupProgress(tablesDone: 0, tablesTotal: tablesTotal, bytes: 0))

        let fd = open(partial, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AgentError(.backupFailed, "cannot create \(partial): \(String(cString: strerror(errno)))")
        }
        fchmod(fd, 0o600)
        close(fd)

        let connection = try connection(database: nil)
        let result: ProcessResult
        do throws(AgentError) {
            result = try await ProcessRunner.watch(
                pgDump, ["--format=custom", "--verbose", "--no-password", "--file", partial] + connection.arguments,
                environment: connection.environment, every: .milliseconds(250)
            ) { lines in
                let tables = lines.compactMap(Self.tableBegun)
                let bytes = FileStatus.of(partial)?.size ?? 0
                if let progress = await self.advance(tables: tables, bytes: bytes) { onProgress(progress) }
            }
        } catch {
            unlink(partial)
            throw AgentError(.backupFailed, "the backup was not taken: \(error.message)")
        }
        guard result.status == 0 else {
            unlink(partial)
            throw AgentError(
                .backupFailed, "pg_dump failed: \(Self.scrub(Self.errorLine(result), connection.password))")
        }
        if let progress = finishProgress() { onProgress(progress) }

        // Durable first, then the checksum, then the name that says "complete".
        let digest = try await Self.offPool { () throws(AgentError) in
            let fd = open(partial, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                fsync(fd)
                close(fd)
            }
            do throws(SecretsError) { return Hex.encode(try Crypto.sha256(fileAt: partial)) } catch {
                throw AgentError(.backupFailed, error.message)
            }
        }
        do throws(AgentError) {
            try SecureFile.write("\(digest)  \(name)\n", to: final + ".sha256")
        } catch {
            unlink(partial)
            throw AgentError(.backupFailed, error.message)
        }
        guard rename(partial, final) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(partial)
            unlink(final + ".sha256")
            throw AgentError(.backupFailed, "cannot move the dump into place as \(final): \(reason)")
        }
        syncDirectory()

        let info = try describe(name)
        let deleted = applyRetention()
        let seconds = Double((ContinuousClock.now - started).milliseconds) / 1000
        logger.info(
            "backup written",
            metadata: [
                "nodeagent.file": "\(name)", "nodeagent.bytes": "\(info.sizeBytes)",
                "nodeagent.tables": "\(tablesTotal)",
                "nodeagent.ms": "\((ContinuousClock.now - started).milliseconds)",
                "nodeagent.deleted": "\(deleted.count)",
            ])
        return BackupCreated(
            backup: info, tables: tablesTotal, seconds: seconds,
            retention: BackupRetentionResult(
                daily: policy.daily, weekly: policy.weekly, monthly: policy.monthly, kept: backupNames().count,
                deleted: deleted))
    }

    /// Notes the tables pg_dump began and the bytes written; the progress to report when it
    /// changed, or unchanged once a second (a streamed answer then notices a client that went
    /// away even while pg_dump waits for a lock); nil otherwise. A table is done once pg_dump
    /// moves on to the next.
    private func advance(tables: [String], bytes: Int64) -> BackupProgress? {
        guard var backup = running else { return nil }
        let before = backup.progress
        backup.tablesStarted += tables.count
        backup.progress.tablesDone = max(0, backup.tablesStarted - 1)
        backup.progress.table = tables.last ?? backup.progress.table
        backup.progress.bytes = max(backup.progress.bytes, bytes)
        let report = backup.progress != before || backup.reportedAt.duration(to: .now) >= .seconds(1)
        if report { backup.reportedAt = .now }
        running = backup
        return report ? backup.progress : nil
    }

    /// pg_dump finished: every table it began is done.
    private func finishProgress() -> BackupProgress? {
        guard var backup = running else { return nil }
        backup.progress.tablesDone = backup.tablesStarted
        backup.progress.table = nil
        running = backup
        return backup.progress
    }

    /// The table in pg_dump's `--verbose` line `pg_dump: dumping contents of table "public.jobs"`.
    static func tableBegun(_ line: String) -> String? {
        guard let marker = line.range(of: "dumping contents of table ") else { return nil }
        let name = line[marker.upperBound...].trimmingCharacters(in: .whitespaces)
        return name.count >= 2 && name.hasPrefix("\"") && name.hasSuffix("\"")
            ? String(name.dropFirst().dropLast()) : name
    }

    /// Tables whose rows pg_dump writes (it says `dumping contents of table` once for each).
    static let countTables = """
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
        """

    // MARK: Listing

    /// Every backup, newest first.
    func list() throws(AgentError) -> BackupList {
        var backups: [BackupInfo] = []
        for name in backupNames() {
            if let info = try? describe(name) { backups.append(info) }  // deleted meanwhile: not listed
        }
        return BackupList(backups: backups, directory: directory)
    }

    /// A backup's time (from its name), size in bytes and recorded checksum; ``AgentError`` with
    /// code `backupNotFound` when there is no such file.
    private func describe(_ name: String) throws(AgentError) -> BackupInfo {
        guard let stamp = BackupName.timestamp(of: name), let info = FileStatus.of(path(name), followingLinks: false)
        else {
            throw AgentError(.backupNotFound, "no backup named \(name) in \(directory)")
        }
        return BackupInfo(file: name, createdAt: stamp.iso8601, sizeBytes: info.size, sha256: recordedChecksum(name))
    }

    /// Names of the backups in the directory (exactly `aurora-YYYYMMDDTHHMMSSZ.dump`, regular
    /// files), newest first.
    private func backupNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { name in
            return BackupName.timestamp(of: name) != nil
                && FileStatus.of(path(name), followingLinks: false)?.isRegularFile == true
        }.sorted(by: >)
    }

    /// The hex SHA-256 in `FILE.sha256`, if that file is there and starts with one.
    private func recordedChecksum(_ name: String) -> String? {
        guard let text = try? String(contentsOfFile: path(name) + ".sha256", encoding: .utf8) else { return nil }
        let digest = String(text.prefix(64)).lowercased()
        return digest.count == 64 && digest.allSatisfy(\.isHexDigit) ? digest : nil
    }

    // MARK: Verifying

    /// Checks a backup: its SHA-256 against `FILE.sha256`, its table of contents
    /// (`pg_restore --list`) and every entry's data (pg_restore reading it all). Throws
    /// `backupCorrupt` naming the first check that failed.
    func verify(_ name: String) async throws(AgentError) -> BackupVerification {
        let file = try existing(name)
        inUse[name, default: 0] += 1
        defer { release(name) }
        let pgRestore = try tool("pg_restore")
        let info = try describe(name)
        let digest = try await checkChecksum(name)

        let list = try await ProcessRunner.run(pgRestore, ["--list", file])
        guard list.status == 0 else {
            throw AgentError(.backupCorrupt, "pg_restore --list cannot read \(name): \(Self.errorLine(list))")
        }
        let entries = list.output.split(separator: "\n").filter { line in
            let text = line.trimmingCharacters(in: .whitespaces)
            return !text.isEmpty && !text.hasPrefix(";") && !text.hasPrefix("pg_restore:")
        }.count
        let data = try await ProcessRunner.watch(pgRestore, ["--file", "/dev/null", file])
        guard data.status == 0 else {
            throw AgentError(.backupCorrupt, "pg_restore cannot read the data in \(name): \(Self.errorLine(data))")
        }
        return BackupVerification(
            file: name, ok: true, sha256: digest, sizeBytes: info.sizeBytes, entries: entries,
            checks: ["checksum", "toc", "data"])
    }

    /// The file's SHA-256 when it matches `FILE.sha256`; `backupCorrupt` otherwise.
    private func checkChecksum(_ name: String) async throws(AgentError) -> String {
        guard let expected = recordedChecksum(name) else {
            throw AgentError(
                .backupCorrupt, "\(name).sha256 is missing or holds no SHA-256; the backup cannot be checked")
        }
        let file = path(name)
        let actual = try await Self.offPool { () throws(AgentError) in
            do throws(SecretsError) { return Hex.encode(try Crypto.sha256(fileAt: file)) } catch {
                throw AgentError(.backupCorrupt, error.message)
            }
        }
        guard actual == expected else {
            throw AgentError(
                .backupCorrupt,
                "checksum mismatch: \(name) has SHA-256 \(actual), but \(name).sha256 records \(expected); "
                    + "the file changed after it was written")
        }
        return actual
    }

    // MARK: Restoring

    /// Creates the database `database` on the store's server and restores the backup into it
    /// (`pg_restore --no-owner --exit-on-error`). The checksum is checked first. A database
    /// that exists is never touched; one this call created is dropped again when the restore
    /// fails.
    func restore(_ name: String, into database: String) async throws(AgentError) -> BackupRestored {
        guard Self.isDatabaseName(database) else {
            throw AgentError(
                .invalidInput,
                "'\(database.prefix(80))' is not a database name for a restore: use letters, digits and _, "
                    + "at most 63, not starting with a digit")
        }
        let file = try existing(name)
        inUse[name, default: 0] += 1
        defer { release(name) }
        let pgRestore = try tool("pg_restore")
        _ = try await checkChecksum(name)
        let started = ContinuousClock.now

        let conninfo = source.conninfo
        try await Self.offPool { () throws(AgentError) in
            let admin = try PostgresConnection(conninfo: conninfo)
            if !(try admin.execute("SELECT 1 FROM pg_database WHERE datname = $1", [database]).rows.isEmpty) {
                throw AgentError(
                    .databaseExists,
                    "database \(database) exists already; restore into a new name (a restore never overwrites)")
            }
            do throws(AgentError) {
                _ = try admin.execute("CREATE DATABASE \"\(database)\"")
            } catch {
                guard error.message.contains("already exists") else { throw error }
                throw AgentError(
                    .databaseExists,
                    "database \(database) exists already; restore into a new name (a restore never overwrites)")
            }
        }
        let connection = try connection(database: database)
        let result: ProcessResult
        do throws(AgentError) {
            result = try await ProcessRunner.watch(
                pgRestore, ["--no-owner", "--exit-on-error", "--no-password"] + connection.arguments + [file],
                environment: connection.environment)
        } catch {
            await dropAfterFailure(database)
            throw AgentError(.backupFailed, "the restore into \(database) stopped: \(error.message)")
        }
        guard result.status == 0 else {
            await dropAfterFailure(database)
            throw AgentError(
                .backupFailed,
                "pg_restore into \(database) failed (the database was dropped again): "
                    + Self.scrub(Self.errorLine(result), connection.password))
        }
        logger.info(
            "backup restored",
            metadata: [
                "nodeagent.file": "\(name)", "nodeagent.database": "\(database)",
                "nodeagent.ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        return BackupRestored(
            file: name, into: database, seconds: Double((ContinuousClock.now - started).milliseconds) / 1000)
    }

    /// Letters, digits and `_`, 1-63 of them, not starting with a digit: safe to quote and
    /// within PostgreSQL's identifier length.
    static func isDatabaseName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...63).contains(bytes.count), let first = bytes.first,
            !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first)
        else { return false }
        return bytes.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
        }
    }

    /// Drops the half-restored database so a retry can use the name again; a failure is only logged.
    private func dropAfterFailure(_ database: String) async {
        let conninfo = source.conninfo
        do throws(AgentError) {
            try await Self.offPool { () throws(AgentError) in
                _ = try PostgresConnection(conninfo: conninfo).execute("DROP DATABASE IF EXISTS \"\(database)\"")
            }
        } catch {
            logger.warning(
                "could not drop the database of a failed restore",
                metadata: [
                    "nodeagent.database": "\(database)", "nodeagent.error": "\(error.message)",
                ])
        }
    }

    // MARK: Retention

    /// Deletes what the policy does not keep (each with its `.sha256`), except backups being
    /// verified or restored. Returns the deleted names, newest first.
    private func applyRetention() -> [String] {
        let backups = backupNames().compactMap { name in
            BackupName.timestamp(of: name).map { BackupRetention.Backup(name: name, takenAt: $0) }
        }
        let plan = BackupRetention.plan(backups, policy: policy)
        var deleted: [String] = []
        for backup in plan.delete where inUse[backup.name] == nil {
            guard unlink(path(backup.name)) == 0 else {
                logger.warning(
                    "retention could not delete a backup",
                    metadata: [
                        "nodeagent.file": "\(backup.name)", "nodeagent.error": "\(String(cString: strerror(errno)))",
                    ])
                continue
            }
            unlink(path(backup.name) + ".sha256")
            deleted.append(backup.name)
            logger.info("backup deleted by retention", metadata: ["nodeagent.file": "\(backup.name)"])
        }
        if !deleted.isEmpty { syncDirectory() }
        return deleted
    }

    /// Ends one verify or restore of `name`; retention may delete it once none is left.
    private func release(_ name: String) {
        inUse[name, default: 1] -= 1
        if inUse[name] == 0 { inUse[name] = nil }
    }

    // MARK: Files

    private func path(_ name: String) -> String { directory + "/" + name }

    /// The path of an existing backup named exactly `name`: `invalidInput` for anything that is
    /// not a backup's name (a path, `..`), `backupNotFound` when there is no such file.
    private func existing(_ name: String) throws(AgentError) -> String {
        guard BackupName.timestamp(of: name) != nil else {
            throw AgentError(
                .invalidInput,
                "'\(name.prefix(80))' is not a backup's name: backups are named aurora-YYYYMMDDTHHMMSSZ.dump "
                    + "(see 'aurora-cli backup list')")
        }
        guard let info = FileStatus.of(path(name), followingLinks: false), info.isRegularFile else {
            throw AgentError(.backupNotFound, "no backup named \(name) in \(directory) (see 'aurora-cli backup list')")
        }
        return path(name)
    }

    /// `DATA/backups`, 0700.
    private func prepareDirectory() throws(AgentError) {
        try DataDirectory.createDirectory(directory, mode: 0o700, what: "backups dir")
        chmod(directory, 0o700)
    }

    /// What a crash in the middle of a backup can leave: a `.partial` dump, a checksum's
    /// temporary file, a checksum whose dump never got its name. Only one backup runs at a
    /// time and the data directory is locked, so all of them are stale.
    private func removeLeftovers() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let dumps = Set(names.filter { BackupName.timestamp(of: $0) != nil })
        for name in names {
            let stale =
                (name.hasPrefix("." + BackupName.prefix) && name.hasSuffix(".partial"))
                || (name.hasPrefix(BackupName.prefix) && name.contains(".sha256.tmp-"))
                || (name.hasSuffix(".sha256") && BackupName.timestamp(of: String(name.dropLast(7))) != nil
                    && !dumps.contains(String(name.dropLast(7))))
            if stale {
                unlink(path(name))
                logger.notice("removed what an interrupted backup left", metadata: ["nodeagent.file": "\(name)"])
            }
        }
    }

    /// fsyncs `DATA/backups`, so a rename or unlink in it survives a crash.
    private func syncDirectory() {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    // MARK: Tools

    /// `pg_dump` or `pg_restore` from the store's PostgreSQL installation.
    private func tool(_ name: String) throws(AgentError) -> String {
        let binDirectory: String
        if let configured = source.binDirectory {
            binDirectory = configured
        } else {
            binDirectory = try ManagedPostgres.findBinDirectory()
        }
        let program = binDirectory + "/" + name
        guard FileManager.default.isExecutableFile(atPath: program) else {
            throw AgentError(
                .backupFailed, "\(program) not found; install the PostgreSQL client programs or set store.pg_bin")
        }
        return program
    }

    /// The `-d` argument and environment for pg_dump or pg_restore: the store's connection
    /// string (on `database` when given) without its password, which goes in `PGPASSWORD`.
    private func connection(database: String?) throws(AgentError) -> (
        arguments: [String], environment: [String: String], password: String?
    ) {
        var conninfo = try Conninfo(parsing: source.conninfo)
        if let database { conninfo = conninfo.setting("dbname", database) }
        if conninfo.value("application_name") == nil {
            conninfo = conninfo.setting("application_name", "nodeagent-backup")
        }
        var environment = ProcessInfo.processInfo.environment
        let password = conninfo.password
        if let password {
            environment["PGPASSWORD"] = password
            conninfo = conninfo.removing("password")
        }
        return (["--dbname", conninfo.keywordString], environment, password)
    }

    /// The line of a tool's output that says what went wrong.
    static func errorLine(_ result: ProcessResult) -> String {
        let lines = result.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let line = lines.last(where: { $0.contains("error:") || $0.contains("FATAL:") }) ?? result.lastLine
        return String(line.prefix(500))
    }

    /// `text` with the password, should a tool ever echo it, replaced.
    static func scrub(_ text: String, _ password: String?) -> String {
        guard let password, !password.isEmpty else { return text }
        return text.replacingOccurrences(of: password, with: Redaction.marker)
    }

    /// Runs blocking work (hashing, libpq) on NIO's thread pool, off Swift's cooperative pool.
    private static func offPool<R: Sendable>(_ body: @escaping @Sendable () throws(AgentError) -> R)
        async throws(AgentError) -> R
    {
        do {
            return try await NIOThreadPool.singleton.runIfActive { try body() }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.backupFailed, "the agent's thread pool is not running")
        }
    }
}
