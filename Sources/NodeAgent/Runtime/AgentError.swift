/// The one error type of the NodeAgent module. `description` is a single line that names the
/// cause (a file and key, a port, a path) and never contains a secret.
public struct AgentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure, for code and tests that must tell cases apart.
    public enum Code: String, Sendable {
        /// A configuration value (profile, file, flag, environment) is missing, malformed or unsafe.
        case config
        /// The profile file named by `--profile` (or the default one) does not exist.
        case profileNotFound
        /// The data directory or a file in it cannot be created, read or written.
        case dataDir
        /// Another agent holds the data directory's `agent.lock`.
        case dataDirLocked
        /// A key, token hash, certificate or the secrets master key cannot be loaded or does not match.
        case identity
        /// A listen address cannot be bound (taken, or below 1024 without root).
        case portInUse
        /// The store (managed or external PostgreSQL) cannot be started, reached or queried.
        case store
        /// A child process (a helper tool or a job's command) cannot be started or waited for.
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
        /// No etcd endpoint answered in time (refused, unreachable, timed out, or 5xx from each).
        case etcdUnreachable
        /// etcd answered with an error of its own (a 4xx with its message).
        case etcdRefused
        /// etcd's answer is not what its API promises (not JSON, too large, a field missing or of
        /// the wrong type): the backend is broken or hostile.
        case etcdInvalidAnswer
    }

    /// What kind of failure, for code that must react to one kind (tests, the API's status mapping).
    public let code: Code
    /// The one-line, secret-free explanation an operator reads; also the `description`.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
