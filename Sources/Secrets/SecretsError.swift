/// The one error type of the Secrets module. Its message never contains secret material.
public struct SecretsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, for code that must tell cases apart.
    public enum Code: String, Sendable {
        /// Key material has the wrong length or encoding.
        case invalidKey
        /// A sealed box or ciphertext did not open.
        case cannotOpen
        /// A secret scope that does not exist, or lacks its id.
        case invalidScope
        /// A file to hash could not be read.
        case unreadable
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
