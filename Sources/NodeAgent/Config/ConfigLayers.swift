import Foundation
import Mesh
import Yams

import struct AuroraAPI.ConnectivityProbe

/// Where a resolved value came from, printed by `nodeagent config`.
public enum ConfigSource: Sendable, Equatable, CustomStringConvertible {
    /// The schema's default: no layer set the key.
    case defaultValue
    /// Derived at start, e.g. the host name.
    case computed(String)
    /// A line of the profile file, or (`nodeFile`) of the node file given with `--config`.
    case profile(file: String, line: Int)
    case nodeFile(file: String, line: Int)
    /// The environment variable named, or (`flag`) the `nodeagent run` flag named.
    case environment(String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .computed(let what): "default (\(what))"
        case .profile(let file, let line): "profile \(file):\(line)"
        case .nodeFile(let file, let line): "file \(file):\(line)"
        case .environment(let name): "env \(name)"
        case .flag(let name): "flag \(name)"
        }
    }
}

/// The keys one source sets, with where each was set.
public struct ConfigLayer: Sendable {
    /// Parsed values by dotted key path; a key the layer does not set is absent.
    public var values: [String: (value: ConfigValue, source: ConfigSource)] = [:]

    public init() {}
}

// MARK: - Parsing values

extension ConfigKind {
    /// Parses text for a key, or throws an error naming `origin` (a file and line, a variable or
    /// a flag), the key, what was expected and what was given.
    func parse(_ text: String, key: String, origin: String) throws(AgentError) -> ConfigValue {
        func bad(_ detail: String? = nil) -> AgentError {
            let shown = text.count > 60 ? String(text.prefix(60)) + "…" : text
            return AgentError(.config, "\(origin): '\(key)' must be \(detail ?? expectation), got '\(shown)'")
        }
        switch self {
        case .string:
            return .string(text)
        case .nodeName:
            do { return .string(try NodeName(text).value) } catch { throw bad(error.message) }
        case .domain:
            let labels = text.lowercased().split(separator: ".", omittingEmptySubsequences: false)
            guard !text.isEmpty, text.utf8.count <= 253,
                labels.allSatisfy({ label in
                    (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                        && label.utf8.allSatisfy {
                            (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D
                        }
                })
            else { throw bad() }
            return .string(text.lowercased())
        case .path:
            guard !text.isEmpty else { throw bad() }
            return .string(text)
        case .int(let range):
            guard let value = Int(text), range.contains(value) else { throw bad() }
            return .int(value)
        case .seconds:
            // At most a year: every duration becomes whole milliseconds somewhere, and must not trap there.
            guard let value = Double(text), value > 0, value.isFinite, value <= 31_536_000 else { throw bad() }
            return .double(value)
        case .bool:
            switch text.lowercased() {
            case "true", "yes", "on", "1": return .bool(true)
            case "false", "no", "off", "0": return .bool(false)
            default: throw bad()
            }
        case .oneOf(let choices):
            guard choices.contains(text) else { throw bad() }
            return .string(text)
        case .hostPort:
            do { _ = try HostPort(parsing: text) } catch { throw bad() }
            return .string(text)
        case .optionalHostPort:
            if text.isEmpty { return .string("") }
            do { _ = try HostPort(parsing: text) } catch { throw bad() }
            return .string(text)
        case .url(let schemes):
            if text.isEmpty { return .string("") }
            guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
                schemes.contains(scheme), components.host.map({ !$0.isEmpty }) ?? false || scheme.hasPrefix("postgres")
            else { throw bad() }
            return .string(text)
        case .ipv4:
            if text.isEmpty { return .string("") }
            guard IPv4.parse(text) != nil else { throw bad() }
            return .string(text)
        case .cidr:
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let address = IPv4.parse(String(parts[0])), let bits = Int(parts[1]),
                (8...30).contains(bits)
            else { throw bad() }
            let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
            guard address & ~mask == 0 else { throw bad("a network address (host bits zero)") }
            return .string(text)
        case .map, .gpus, .probes, .checks, .webhooks:
            throw AgentError(.config, "\(origin): '\(key)' can only be set in a YAML file")
        }
    }
}

/// Dotted-quad IPv4 parsing without sockets.
enum IPv4 {
    /// The address as a host-order integer; nil unless it is exactly four decimal octets without
    /// leading zeros (so `010.0.0.1` is refused, not read as octal or decimal).
    static func parse(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard let octet = UInt8(part), part.count <= 3, String(octet) == part else { return nil }
            value = value << 8 | UInt32(octet)
        }
        return value
    }
}

// MARK: - YAML files

/// Reads a profile or node file into a layer, rejecting unknown keys and bad values with the
/// file, line and key.
public enum ConfigFile {
    /// Which layer the file is: only the source shown by `nodeagent config` differs.
    public enum Kind: Sendable { case profile, nodeFile }

    /// Loads `path`; throws naming the file when it is missing or unreadable.
    public static func load(path: String, kind: Kind) throws(AgentError) -> ConfigLayer {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AgentError(.config, "\(path): cannot read: \(posixReason(error))")
        }
        return try parse(text, file: path, kind: kind)
    }

    /// Parses YAML text that came from `file`.
    /// An empty file sets nothing. Every error is an ``AgentError`` with code `config` naming
    /// `file` and the line: invalid YAML, a key not in ``ConfigSchema``, a value that does not parse.
    public static func parse(_ text: String, file: String, kind: Kind) throws(AgentError) -> ConfigLayer {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw AgentError(.config, "\(file): invalid YAML: \(oneLine(error))")
        } catch {
            throw AgentError(.config, "\(file): invalid YAML: \(error)")
        }
        var layer = ConfigLayer()
        guard let root else { return layer }  // an empty file sets nothing
        guard case .mapping(let mapping) = root else {
            throw AgentError(.config, "\(file):\(root.mark?.line ?? 1): the top level must be a mapping of keys")
        }
        try collect(mapping, prefix: "", file: file, kind: kind, into: &layer)
        return layer
    }

    /// Walks one mapping: a schema key is parsed into `layer`, a section name (top level only)
    /// recurses with `prefix`, anything else is an unknown key with a "did you mean" suggestion.
    private static func collect(
        _ mapping: Node.Mapping, prefix: String, file: String, kind: Kind,
        into layer: inout ConfigLayer
    ) throws(AgentError) {
        for (keyNode, valueNode) in mapping {
            let line = keyNode.mark?.line ?? 0
            guard let name = keyNode.string else {
                throw AgentError(.config, "\(file):\(line): keys must be plain names")
            }
            let path = prefix + name
            let origin = "\(file):\(line)"
            if let key = ConfigSchema.key(path) {
                let source: ConfigSource =
                    kind == .profile ? .profile(file: file, line: line) : .nodeFile(file: file, line: line)
                layer.values[path] = (try value(of: valueNode, for: key, origin: origin), source)
            } else if prefix.isEmpty, ConfigSchema.sections.contains(name) {
                guard case .mapping(let section) = valueNode else {
                    if valueNode.null != nil { continue }  // an empty section
                    throw AgentError(
                        .config,
                        "\(origin): '\(path)' is a section; give it keys such as '\(ConfigSchema.keys.first { $0.path.hasPrefix(path + ".") }!.path)'"
                    )
                }
                try collect(section, prefix: path + ".", file: file, kind: kind, into: &layer)
            } else {
                throw AgentError(.config, "\(origin): unknown key '\(path)'" + suggestion(for: path))
            }
        }
    }

    /// Turns a YAML node into the key's value: structured kinds from mappings and lists (with
    /// duplicate names refused), scalars through ``ConfigKind/parse(_:key:origin:)``.
    private static func value(of node: Node, for key: ConfigKey, origin: String) throws(AgentError) -> ConfigValue {
        switch key.kind {
        case .map:
            if node.null != nil { return .map([:]) }
            guard case .mapping(let mapping) = node else {
                throw AgentError(.config, "\(origin): '\(key.path)' must be \(key.kind.expectation)")
            }
            var result: [String: String] = [:]
            for (k, v) in mapping {
                guard let name = k.string, let text = v.string, case .scalar = v else {
                    throw AgentError(.config, "\(origin): '\(key.path)' must be \(key.kind.expectation)")
                }
                result[name] = text
            }
            return .map(result)
        case .gpus:
            if node.null != nil { return .gpus([]) }
            guard case .sequence(let sequence) = node else {
                throw AgentError(
                    .config, "\(origin): 'gpus' must be a list of GPUs ({index, name, memory_total_mb, ...})")
            }
            return .gpus(
                try sequence.enumerated().map { (offset, entry) throws(AgentError) in
                    try gpu(
                        entry, position: offset,
                        origin:
                            "\(origin.split(separator: ":").dropLast().joined(separator: ":")):\(entry.mark?.line ?? 0)"
                    )
                })
        case .probes:
            if node.null != nil { return .probes([]) }
            guard case .sequence(let sequence) = node else {
                throw AgentError(.config, "\(origin): 'connectivity' must be \(key.kind.expectation)")
            }
            let probes = try sequence.enumerated().map { (offset, entry) throws(AgentError) in
                try probe(
                    entry, position: offset,
                    origin: "\(origin.split(separator: ":").dropLast().joined(separator: ":")):\(entry.mark?.line ?? 0)"
                )
            }
            if let duplicate = Dictionary(grouping: probes, by: \.name).first(where: { $0.value.count > 1 })?.key {
                throw AgentError(.config, "\(origin): two connectivity probes are named '\(duplicate)'")
            }
            return .probes(probes)
        case .checks:
            if node.null != nil { return .checks([]) }
            guard case .sequence(let sequence) = node else {
                throw AgentError(.config, "\(origin): 'checks' must be \(key.kind.expectation)")
            }
            let checks = try sequence.enumerated().map { (offset, entry) throws(AgentError) in
                try ServiceCheckConfig.parse(
                    entry, position: offset,
                    origin: "\(origin.split(separator: ":").dropLast().joined(separator: ":")):\(entry.mark?.line ?? 0)"
                )
            }
            if let duplicate = Dictionary(grouping: checks, by: \.name).first(where: { $0.value.count > 1 })?.key {
                throw AgentError(.config, "\(origin): two checks are named '\(duplicate)'")
            }
            return .checks(checks)
        case .webhooks:
            if node.null != nil { return .webhooks([]) }
            guard case .sequence(let sequence) = node else {
                throw AgentError(.config, "\(origin): 'alerts.webhooks' must be \(key.kind.expectation)")
            }
            let webhooks = try sequence.enumerated().map { (offset, entry) throws(AgentError) in
                try WebhookConfig.parse(
                    entry, position: offset,
                    origin: "\(origin.split(separator: ":").dropLast().joined(separator: ":")):\(entry.mark?.line ?? 0)"
                )
            }
            if let duplicate = Dictionary(grouping: webhooks, by: \.name).first(where: { $0.value.count > 1 })?.key {
                throw AgentError(.config, "\(origin): two webhooks are named '\(duplicate)'")
            }
            return .webhooks(webhooks)
        default:
            guard case .scalar(let scalar) = node else {
                throw AgentError(
                    .config,
                    "\(origin): '\(key.path)' must be \(key.kind.expectation), got a \(node.mapping != nil ? "mapping" : "list")"
                )
            }
            // `~` and `null` mean "not set here": an empty string for string-like keys.
            if node.null != nil, case .string = key.defaultValue ?? .string("") {
                return try key.kind.parse("", key: key.path, origin: origin)
            }
            return try key.kind.parse(scalar.string, key: key.path, origin: origin)
        }
    }

    /// One `gpus:` entry: `index` and `memory_total_mb` (MB) are required, `memory_used_mb` may not
    /// exceed the total, `utilization_pct` is 0 to 100; a missing `uuid` becomes `GPU-static-INDEX`.
    private static func gpu(_ node: Node, position: Int, origin: String) throws(AgentError) -> GPUInventoryEntry {
        guard case .mapping(let mapping) = node else {
            throw AgentError(
                .config, "\(origin): gpus[\(position)] must be a mapping {index, name, memory_total_mb, ...}")
        }
        let allowed = ["index", "uuid", "name", "memory_total_mb", "memory_used_mb", "utilization_pct"]
        var fields: [String: String] = [:]
        for (k, v) in mapping {
            guard let name = k.string, allowed.contains(name) else {
                throw AgentError(
                    .config,
                    "\(origin): unknown key 'gpus[\(position)].\(k.string ?? "?")'; known: \(allowed.joined(separator: ", "))"
                )
            }
            fields[name] = v.string
        }
        func int(_ name: String, required: Bool, range: ClosedRange<Int>) throws(AgentError) -> Int {
            guard let text = fields[name] else {
                if required { throw AgentError(.config, "\(origin): gpus[\(position)] needs '\(name)'") }
                return 0
            }
            guard let value = Int(text), range.contains(value) else {
                throw AgentError(
                    .config,
                    "\(origin): 'gpus[\(position)].\(name)' must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'"
                )
            }
            return value
        }
        guard let name = fields["name"], !name.isEmpty else {
            throw AgentError(.config, "\(origin): gpus[\(position)] needs 'name'")
        }
        let index = try int("index", required: true, range: 0...255)
        let total = try int("memory_total_mb", required: true, range: 1...10_000_000)
        let used = try int("memory_used_mb", required: false, range: 0...total)
        let utilization = try int("utilization_pct", required: false, range: 0...100)
        return GPUInventoryEntry(
            index: index, uuid: fields["uuid"] ?? "GPU-static-\(index)", name: name,
            memoryTotalMB: total, memoryUsedMB: used, utilizationPct: utilization)
    }

    /// One `connectivity:` entry: an http(s) `url`, GET or HEAD, and defaults of status 200, every
    /// 30 s, a 5 s timeout and `degraded_ms` of half the timeout (at most 1000 ms).
    private static func probe(_ node: Node, position: Int, origin: String) throws(AgentError) -> ConnectivityProbe {
        guard case .mapping(let mapping) = node else {
            throw AgentError(.config, "\(origin): connectivity[\(position)] must be a mapping {name, url, ...}")
        }
        let allowed = ["name", "url", "method", "expect_status", "interval_s", "timeout_s", "degraded_ms"]
        var fields: [String: String] = [:]
        for (k, v) in mapping {
            guard let name = k.string, allowed.contains(name) else {
                throw AgentError(
                    .config,
                    "\(origin): unknown key 'connectivity[\(position)].\(k.string ?? "?")'; known: \(allowed.joined(separator: ", "))"
                )
            }
            fields[name] = v.string
        }
        func number(_ name: String, _ fallback: Double, _ range: ClosedRange<Double>) throws(AgentError) -> Double {
            guard let text = fields[name] else { return fallback }
            guard let value = Double(text), range.contains(value) else {
                throw AgentError(
                    .config,
                    "\(origin): 'connectivity[\(position)].\(name)' must be a number in \(range.lowerBound)...\(range.upperBound), got '\(text)'"
                )
            }
            return value
        }
        guard let name = fields["name"], !name.isEmpty else {
            throw AgentError(.config, "\(origin): connectivity[\(position)] needs 'name'")
        }
        guard let url = fields["url"], let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""),
            parsed.host != nil
        else {
            throw AgentError(.config, "\(origin): 'connectivity[\(position)].url' must be an http(s) URL")
        }
        let method = (fields["method"] ?? "GET").uppercased()
        guard ["GET", "HEAD"].contains(method) else {
            throw AgentError(.config, "\(origin): 'connectivity[\(position)].method' must be GET or HEAD")
        }
        let timeout = try number("timeout_s", 5, 0.05...120)
        return ConnectivityProbe(
            name: name, url: url, method: method, expectStatus: Int(try number("expect_status", 200, 100...599)),
            intervalS: try number("interval_s", 30, 0.1...86_400), timeoutS: timeout,
            degradedMs: try number("degraded_ms", min(1000, timeout * 500), 1...120_000))
    }

    /// "did you mean" for a near miss, by shared prefix or edit distance.
    static func suggestion(for path: String) -> String {
        let best = ConfigSchema.keys.map { ($0.path, editDistance($0.path, path)) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(2, path.count / 4) else { return "" }
        return "; did you mean '\(best.0)'?"
    }

    /// Levenshtein distance between two key paths, in characters.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }

    /// The YAML error's line, column and problem on one line, for an ``AgentError`` message.
    private static func oneLine(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            return "line \(mark.line), column \(mark.column): \(problem)"
        default:
            return String(describing: error).split(separator: "\n").first.map(String.init) ?? "unreadable"
        }
    }
}

/// The POSIX reason of a Foundation file error, e.g. "No such file or directory".
func posixReason(_ error: any Error) -> String {
    let nsError = error as NSError
    if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    if nsError.domain == NSCocoaErrorDomain {
        switch nsError.code {
        case NSFileReadNoSuchFileError, NSFileNoSuchFileError: return "No such file or directory"
        case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return "Permission denied"
        default: break
        }
    }
    return nsError.localizedDescription
}
