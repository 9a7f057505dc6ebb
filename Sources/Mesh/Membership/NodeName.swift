/// A node's name in the mesh: what the registry, events and the `status` table call it.
///
/// 1 to 63 characters of letters, digits, `-`, `_` and `.`, starting with a letter or digit, so
/// that it is safe in URLs, file names, SQL identifiers and WireGuard comments alike.
public struct NodeName: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The validated name.
    public let value: String

    /// Validates `value`, or says what is wrong with it.
    public init(_ value: String) throws(MeshError) {
        guard !value.isEmpty else { throw MeshError(.invalidName, "a node name cannot be empty") }
        guard value.utf8.count <= 63 else {
            throw MeshError(.invalidName, "node name '\(value.prefix(20))…' is longer than 63 characters")
        }
        guard let first = value.unicodeScalars.first, first.isASCIIAlphanumeric else {
            throw MeshError(.invalidName, "node name '\(value)' must start with a letter or a digit")
        }
        for scalar in value.unicodeScalars where !(scalar.isASCIIAlphanumeric || "-_.".unicodeScalars.contains(scalar))
        {
            throw MeshError(
                .invalidName, "node name '\(value)' contains '\(scalar)'; use letters, digits, '-', '_' or '.'")
        }
        self.value = value
    }

    /// A valid name derived from a host name: its first label, lower-cased, with other
    /// characters replaced by `-`. Returns nil when nothing usable is left.
    public static func fromHostName(_ host: String) -> NodeName? {
        let label = host.split(separator: ".").first.map(String.init) ?? host
        let cleaned = String(
            label.lowercased().unicodeScalars.map {
                $0.isASCIIAlphanumeric || $0 == "-" || $0 == "_" ? Character($0) : "-"
            })
        let trimmed = String(cleaned.drop(while: { $0 == "-" || $0 == "_" }).prefix(63))
        return try? NodeName(trimmed)
    }

    public var description: String { value }
}

extension Unicode.Scalar {
    var isASCIIAlphanumeric: Bool {
        ("a"..."z").contains(self) || ("A"..."Z").contains(self) || ("0"..."9").contains(self)
    }
}
