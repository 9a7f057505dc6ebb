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
        return match(prefix: prefix, among: ids)
    }

    /// The ids among `ids` whose `key` (the id itself unless given) starts with `prefix`; a
    /// key equal to `prefix` wins over longer ones. The caller checks the prefix's form (its
    /// length and characters) first: ids that are not UUIDs (token ids `jt_…`, backup names)
    /// have their own.
    public static func match(prefix: String, among ids: [String], key: (String) -> String = { $0 }) -> Match {
        let found = ids.filter { key($0).hasPrefix(prefix) }
        switch found.count {
        case 0: return .none
        case 1: return .one(found[0])
        default: return found.first { key($0) == prefix }.map { .one($0) } ?? .several(found)
        }
    }

    // MARK: - Token ids and backup names

    /// What a typed token id names among `ids` (`jt_` or `at_` and 12 hex digits): the whole
    /// id, its kind and 4 or more of its digits (`jt_3f2a`), or 4 or more digits alone, which
    /// match either kind. Case-insensitive.
    public static func matchToken(_ text: String, among ids: [String]) -> Match {
        let lowered = text.lowercased()
        let kind = ["jt_", "at_"].first { lowered.hasPrefix($0) }
        let digits = kind.map { String(lowered.dropFirst($0.count)) } ?? lowered
        guard (minimumLength...12).contains(digits.count), digits.allSatisfy(\.isHexDigit) else { return .invalid }
        if kind != nil { return match(prefix: lowered, among: ids) }
        return match(prefix: digits, among: ids) { id in
            id.firstIndex(of: "_").map { String(id[id.index(after: $0)...]) } ?? id
        }
    }

    /// Whether `text` is a whole token id, which needs no lookup.
    public static func isWholeTokenID(_ text: String) -> Bool {
        (text.hasPrefix("jt_") || text.hasPrefix("at_")) && text.count == 15
            && text.dropFirst(3).allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    /// What a typed backup name names among `names` (`aurora-YYYYMMDDTHHMMSSZ.dump`): a
    /// prefix of 4 or more characters, with or without `aurora-` (`20250312T10`). Case-insensitive.
    public static func matchBackup(_ text: String, among names: [String]) -> Match {
        let lowered = text.lowercased()
        let body = lowered.hasPrefix("aurora-") ? String(lowered.dropFirst(7)) : lowered
        guard (minimumLength...32).contains(body.count),
            body.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == ".") })
        else { return .invalid }
        return match(prefix: body, among: names) { name in
            let lowered = name.lowercased()
            return lowered.hasPrefix("aurora-") ? String(lowered.dropFirst(7)) : lowered
        }
    }

    /// Whether `text` is a whole job id (a UUID), which needs no lookup.
    public static func isWholeID(_ text: String) -> Bool {
        text.count == 36 && UUID(uuidString: text) != nil
    }
}
