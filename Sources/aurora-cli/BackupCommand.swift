import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

#if canImport(Glibc)
    import Glibc
    import NIOCore
#endif

/// `aurora-cli backup`: backups of the mesh database, taken and kept by the lead.
struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Back up the mesh database (pg_dump) and list, verify or restore backups.",
        discussion: """
            The lead writes backups into DATA/backups as
            aurora-YYYYMMDDTHHMMSSZ.dump (UTC, pg_dump -Fc) with FILE.sha256
            beside each. After every backup, retention keeps the newest backup
            of each of the 7 most recent days, 4 ISO weeks and 12 months that
            have backups (and always the newest) and deletes the rest.

            Examples:
              aurora-cli backup          take a backup now (= backup create)
              aurora-cli backup list
              aurora-cli backup verify aurora-20250312T104500Z.dump
              aurora-cli backup restore aurora-20250312T104500Z.dump --into copy1

            These calls go to the lead, with its operator token.
            """,
        subcommands: [Create.self, List.self, Verify.self, Restore.self], defaultSubcommand: Create.self)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a backup now, then apply retention.",
            discussion: """
                Progress (tables dumped, bytes written) shows on stderr when it
                is a terminal. Prints the new file, its size and checksum, and
                what retention deleted; with --json only the result as JSON.
                Only one backup runs at a time: a second is refused
                (backup_running). Interrupting the command stops the dump and
                leaves no file behind.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Backup
        @Flag(help: "Print only the result as JSON (no progress).") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let progress = ProgressLine(enabled: !json && isatty(STDERR_FILENO) == 1)
            var created: BackupCreated?
            var failure: ErrorResponse.Detail?
            for try await line in try await client.createBackup() {
                if let update = line.progress { progress.show(update) }
                if let backup = line.backup { created = backup }
                if let error = line.error { failure = error }
            }
            progress.clear()
            if let failure { throw CLIError("\(failure.message) (\(failure.code))") }
            guard let created else { throw CLIError("the agent ended the backup without a result; see its log") }
            if json { return print(try encodePretty(created)) }
            let backup = created.backup
            print(
                "\(backup.file)  \(ByteCount.format(backup.sizeBytes))  \(created.tables) tables  "
                    + String(format: "%.1f s", created.seconds)
                    + "  sha256 \(backup.sha256.map { String($0.prefix(16)) } ?? "-")")
            let retention = created.retention
            print(
                "retention (\(retention.daily) daily, \(retention.weekly) weekly, \(retention.monthly) monthly): \(retention.kept) kept"
                    + (retention.deleted.isEmpty
                        ? ", none deleted" : ", deleted \(retention.deleted.joined(separator: ", "))"))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The backups on the lead, newest first.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Backup
        @Flag(help: "Print {backups: [...], directory} as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let list = try await options.client().backups()
            if json { return print(try encodePretty(list)) }
            print(
                JobTable.table(
                    ["FILE", "CREATED", "AGE", "SIZE", "SHA-256"],
                    list.backups.map { backup in
                        [
                            backup.file, backup.createdAt, MeshTable.lastSeen(backup.createdAt),
                            ByteCount.format(backup.sizeBytes),
                            backup.sha256.map { String($0.prefix(16)) } ?? "missing",
                        ]
                    }))
            print("\(list.backups.count) backup\(list.backups.count == 1 ? "" : "s") in \(list.directory)")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a backup: its SHA-256 against FILE.sha256, then pg_restore reads its contents and data.",
            discussion: """
                Exit status 0 when every check passes; 1 otherwise, with the
                failed check named (backup_corrupt).
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Backup
        @Argument(help: "The backup's file name, as 'backup list' shows it, or a unique prefix (20250312T10).")
        var file: String
        @Flag(help: "Print the verification as JSON.") var json = false

        func validate() throws { try Backup.validateName(file) }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let result = try await client.verifyBackup(try await BackupName.resolve(file, with: client))
            print(
                json
                    ? try encodePretty(result)
                    : "\(result.file): ok (\(result.checks.joined(separator: ", "))); \(result.entries) archive entries, "
                        + "\(ByteCount.format(result.sizeBytes)), sha256 \(result.sha256)")
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restore a backup into a new database on the store's server.",
            discussion: """
                Creates DB and runs pg_restore --no-owner --exit-on-error into
                it, after checking the backup's checksum. DB must not exist: a
                restore never overwrites (and never touches the live mesh
                database). If pg_restore fails, DB is dropped again.

                Example:
                  aurora-cli backup restore aurora-20250312T104500Z.dump --into copy1
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Backup
        @Argument(help: "The backup's file name, as 'backup list' shows it, or a unique prefix (20250312T10).")
        var file: String
        @Option(help: "The new database: letters, digits and _, at most 63, not starting with a digit.") var into:
            String
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws {
            try Backup.validateName(file)
            let valid =
                (1...63).contains(into.utf8.count) && into.first.map { !$0.isNumber } == true
                && into.unicodeScalars.allSatisfy {
                    $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_")
                }
            guard valid else {
                throw ValidationError(
                    "--into must be a new database name: letters, digits and _, at most 63, not starting with a digit (got '\(into)')"
                )
            }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let restored = try await client.restoreBackup(try await BackupName.resolve(file, with: client), into: into)
            print(
                json
                    ? try encodePretty(restored)
                    : "restored \(restored.file) into database \(restored.into) in "
                        + String(format: "%.1f s", restored.seconds))
        }
    }

    /// A backup is named by its file name, never a path.
    static func validateName(_ file: String) throws {
        if file.contains("/") {
            throw ValidationError(
                "FILE is a backup's name as 'aurora-cli backup list' shows it (aurora-YYYYMMDDTHHMMSSZ.dump), not a path"
            )
        }
    }
}

/// One self-overwriting line of progress on stderr, for a terminal.
private final class ProgressLine {
    let enabled: Bool
    private var shown = false

    init(enabled: Bool) { self.enabled = enabled }

    func show(_ progress: BackupProgress) {
        guard enabled else { return }
        let tables =
            progress.tablesTotal > 0
            ? "\(min(progress.tablesDone, progress.tablesTotal))/\(progress.tablesTotal)" : "\(progress.tablesDone)"
        let table = progress.table.map { " (\($0))" } ?? ""
        FileHandle.standardError.write(
            Data("\r\u{1B}[Kbacking up: \(tables) tables\(table), \(ByteCount.format(progress.bytes)) written".utf8))
        shown = true
    }

    func clear() {
        guard shown else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        shown = false
    }
}

/// Sizes for people: `812 B`, `3.4 KB`, `1.2 MB`.
enum ByteCount {
    static func format(_ bytes: Int64) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
    }
}
