/// The one error type of the Mesh module: a domain rule was broken.
public struct MeshError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Which rule.
    public enum Code: String, Sendable {
        case invalidName
        case invalidAddress
        case addressTaken
        /// Text with a control character, or longer than its field allows.
        case invalidText
        /// More entries than a field allows.
        case tooMany
        /// A caller asked for something its grant does not give it (a join token's company).
        case forbidden
        /// A node name another key holds.
        case nameTaken
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
