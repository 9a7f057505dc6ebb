// Backups of the mesh database (docs/API.md, section 4.13): the lead's `pg_dump -Fc` files in
// DATA/backups, kept 7 daily / 4 weekly / 12 monthly.

/// One backup file: `aurora-YYYYMMDDTHHMMSSZ.dump` in DATA/backups on the lead.
public struct BackupInfo: Codable, Sendable, Equatable {
    /// The file name (never a path); what `verify` and `restore` take.
    public var file: String
    /// When the dump started, UTC, ISO 8601 (`2025-03-12T10:45:00Z`); it is also in the name.
    public var createdAt: String
    public var sizeBytes: Int64
    /// Hex SHA-256 recorded beside the file (`FILE.sha256`, sha256sum format); absent when
    /// that file is missing.
    public var sha256: String?

    public init(file: String, createdAt: String, sizeBytes: Int64, sha256: String?) {
        self.file = file
        self.createdAt = createdAt
        self.sizeBytes = sizeBytes
        self.sha256 = sha256
    }

    enum CodingKeys: String, CodingKey {
        case file, sha256
        case createdAt = "created_at"
        case sizeBytes = "size_bytes"
    }
}

/// `GET /api/backups` (operator, lead): every backup, newest first.
public struct BackupList: Codable, Sendable, Equatable {
    public var backups: [BackupInfo]
    /// Where they are on the lead.
    public var directory: String

    public init(backups: [BackupInfo], directory: String) {
        self.backups = backups
        self.directory = directory
    }
}

/// How far a running dump is: tables whose rows are written, of all tables, the table being
/// written, and the bytes written so far (compressed).
public struct BackupProgress: Codable, Sendable, Equatable {
    public var tablesDone: Int
    public var tablesTotal: Int
    public var bytes: Int64
    /// The table pg_dump is writing now (`schema.table`).
    public var table: String?

    public init(tablesDone: Int, tablesTotal: Int, bytes: Int64, table: String? = nil) {
        self.tablesDone = tablesDone
        self.tablesTotal = tablesTotal
        self.bytes = bytes
        self.table = table
    }

    enum CodingKeys: String, CodingKey {
        case bytes, table
        case tablesDone = "tables_done"
        case tablesTotal = "tables_total"
    }
}

/// What retention did after a backup.
public struct BackupRetentionResult: Codable, Sendable, Equatable {
    /// The policy: newest per day, ISO week and month, for this many of each.
    public var daily: Int
    public var weekly: Int
    public var monthly: Int
    /// How many backups remain.
    public var kept: Int
    /// The files it deleted (each with its `.sha256`), newest first.
    public var deleted: [String]

    public init(daily: Int, weekly: Int, monthly: Int, kept: Int, deleted: [String]) {
        self.daily = daily
        self.weekly = weekly
        self.monthly = monthly
        self.kept = kept
        self.deleted = deleted
    }
}

/// `POST /api/backups` (operator, lead): the new backup and what retention deleted.
public struct BackupCreated: Codable, Sendable, Equatable {
    public var backup: BackupInfo
    public var tables: Int
    public var seconds: Double
    public var retention: BackupRetentionResult

    public init(backup: BackupInfo, tables: Int, seconds: Double, retention: BackupRetentionResult) {
        self.backup = backup
        self.tables = tables
        self.seconds = seconds
        self.retention = retention
    }
}

/// One line of `POST /api/backups` answered as `application/x-ndjson`: progress lines while
/// the dump runs, then exactly one line with `backup` (the ``BackupCreated``) or `error`.
public struct BackupStreamLine: Codable, Sendable, Equatable {
    public var progress: BackupProgress?
    public var backup: BackupCreated?
    public var error: ErrorResponse.Detail?

    public init(progress: BackupProgress? = nil, backup: BackupCreated? = nil, error: ErrorResponse.Detail? = nil) {
        self.progress = progress
        self.backup = backup
        self.error = error
    }
}

/// `POST /api/backups/{file}/verify` (operator, lead): 200 when every check passed; a failed
/// check is 422 `backup_corrupt` naming it.
public struct BackupVerification: Codable, Sendable, Equatable {
    public var file: String
    public var ok: Bool
    public var sha256: String
    public var sizeBytes: Int64
    /// Entries in the archive's table of contents (`pg_restore --list`).
    public var entries: Int
    /// What was checked, in order: `checksum`, `toc` (pg_restore --list), `data` (every
    /// entry read back by pg_restore).
    public var checks: [String]

    public init(file: String, ok: Bool, sha256: String, sizeBytes: Int64, entries: Int, checks: [String]) {
        self.file = file
        self.ok = ok
        self.sha256 = sha256
        self.sizeBytes = sizeBytes
        self.entries = entries
        self.checks = checks
    }

    enum CodingKeys: String, CodingKey {
        case file, ok, sha256, entries, checks
        case sizeBytes = "size_bytes"
    }
}

/// `POST /api/backups/{file}/restore` body: the database to create and restore into.
public struct BackupRestoreRequest: Codable, Sendable, Equatable {
    /// A new database on the store's server: letters, digits and `_`, at most 63, not
    /// starting with a digit.
    public var into: String

    public init(into: String) { self.into = into }

    public static let fields: Set<String> = ["into"]
}

/// `POST /api/backups/{file}/restore` (operator, lead): 201 once the database holds the backup.
public struct BackupRestored: Codable, Sendable, Equatable {
    public var file: String
    public var into: String
    public var seconds: Double

    public init(file: String, into: String, seconds: Double) {
        self.file = file
        self.into = into
        self.seconds = seconds
    }
}

/// Media types of the API beyond JSON.
public enum MediaTypes {
    /// Newline-delimited JSON: one JSON value per line (`POST /api/backups` progress).
    public static let ndjson = "application/x-ndjson"
}
