import Foundation

/// Ids as people type them: the tables print the first 8 characters of a job id, and any unique
/// prefix (4 or more characters) names its job.
public enum IDPrefix {
    /// What a typed id or prefix names among `ids`.
    public enum Match: Sendable, Equatable {
        /// Exactly one id starts with it (or it is a whole id that is there).
        case one(String)
        /// No id starts with it.
        case none
        /// Several ids start with it, in the order given.
        case several([String])
        /// Not an id or a prefix of one: fewer than 4 characters, or something other than hex
        /// digits and `-`.
        case invalid
    }

    /// The shortest prefix accepted.
    public static let minimumLength = 4

    /// Whether `text` can be an id or a prefix of one: 4 to 36 hex digits and `-`.
    public static func isPrefix(_ text: String) -> Bool {
        (minimumLength...36).contains(text.count) && text.allSatisfy { $0.isHexDigit || $0 == "-" }
    }

    /// Matches `text` (case-insensitive) against `ids` (lower-case UUIDs).
    public static func match(_ text: String, among ids: [String]) -> Match {
        let prefix = text.lowercased()
        guard isPrefix(prefix) else { return .invalid }
        let found = ids.filter { $0.hasPrefix(prefix) }
        switch found.count {
        case 0: return .none
        case 1: return .one(found[0])
        default: return found.contains(prefix) ? .one(prefix) : .several(found)
        }
    }

    /// Whether `text` is a whole job id (a UUID), which needs no lookup.
    public static func isWholeID(_ text: String) -> Bool {
        text.count == 36 && UUID(uuidString: text) != nil
    }
}
