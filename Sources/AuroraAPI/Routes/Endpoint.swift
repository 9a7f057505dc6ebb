/// One operation of the API: a method and a path pattern written as docs/openapi.yaml writes it
/// (`/api/gpu/jobs/{id}`). The daemon's router registers ``routerPattern``; clients build paths
/// with ``path(_:query:)``, which percent-escapes every parameter so that no value can change
/// the path's shape. The table of every endpoint is ``API``.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    public let method: String
    /// The path with `{name}` parameters, exactly as in docs/openapi.yaml.
    public let pattern: String

    public init(_ method: String, _ pattern: String) {
        self.method = method
        self.pattern = pattern
    }

    /// `GET /api/gpu/jobs/{id}`.
    public var description: String { "\(method) \(pattern)" }

    /// The pattern's segments (without the leading `/`).
    var segments: [Substring] { pattern.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0 } }

    /// The names of the `{name}` parameters, in path order.
    public var parameterNames: [String] {
        segments.compactMap { Self.parameterName($0) }
    }

    /// The pattern in the router's form: `{id}` becomes `:id` (`/api/gpu/jobs/:id`).
    public var routerPattern: String {
        "/"
            + segments.map { segment in Self.parameterName(segment).map { ":" + $0 } ?? String(segment) }.joined(
                separator: "/")
    }

    /// The path with `parameters` filled in order, each percent-escaped as one segment, and
    /// `query` appended with its names and values escaped. Items whose value is nil are left out.
    /// The number of parameters must be ``parameterNames``' count.
    public func path(_ parameters: String..., query: [(name: String, value: String?)] = []) -> String {
        path(parameters, query: query)
    }

    /// ``path(_:query:)`` with the parameters as an array.
    public func path(_ parameters: [String], query: [(name: String, value: String?)] = []) -> String {
        precondition(
            parameters.count == parameterNames.count,
            "\(self) takes \(parameterNames.count) parameters, got \(parameters.count)")
        var values = parameters.makeIterator()
        var path =
            "/"
            + segments.map { segment in
                Self.parameterName(segment) == nil ? String(segment) : PercentEscaping.segment(values.next()!)
            }.joined(separator: "/")
        let items = query.compactMap { item in
            item.value.map { PercentEscaping.queryComponent(item.name) + "=" + PercentEscaping.queryComponent($0) }
        }
        if !items.isEmpty { path += "?" + items.joined(separator: "&") }
        return path
    }

    private static func parameterName(_ segment: Substring) -> String? {
        guard segment.count > 2, segment.first == "{", segment.last == "}" else { return nil }
        return String(segment.dropFirst().dropLast())
    }
}

/// Percent-escaping of URL parts (RFC 3986): everything but the unreserved characters
/// `A-Z a-z 0-9 - . _ ~` is escaped, as UTF-8 bytes.
public enum PercentEscaping {
    /// One path segment: `/`, `?`, `#`, `%` and spaces are escaped, and so are the dot segments
    /// `.` and `..`, which would otherwise move the path.
    public static func segment(_ value: String) -> String {
        if value == "." || value == ".." { return String(repeating: "%2E", count: value.count) }
        return escape(value)
    }

    /// A query name or value (`&`, `=`, `+` included).
    public static func queryComponent(_ value: String) -> String { escape(value) }

    private static func escape(_ value: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                bytes.append(byte)
            default:
                bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
