/// The one error type of the NodeAgent module. `description` is a single line that names the
/// cause (a file and key, a port, a path) and never contains a secret.
public struct AgentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure, for code and tests that must tell cases apart.
    public enum Code: String, Sendable {
        case config
        case profileNotFound
        case dataDir
        case dataDirLocked
        case identity
        case portInUse
        case store
        case process
        /// A backup is already being taken.
        case backupRunning
        /// No backup by that name.
        case backupNotFound
        /// A backup failed a check (checksum, archive).
        case backupCorrupt
        /// Taking or restoring a backup failed.
        case backupFailed
        /// A database to restore into exists already.
        case databaseExists
        /// A name or value in a request is not acceptable.
        case invalidInput
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
