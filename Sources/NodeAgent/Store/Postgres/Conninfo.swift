import Foundation

/// A libpq connection string taken apart: `postgres://user:pass@host:port/db?k=v` URLs and
/// `key=value` strings both become an ordered list of keywords, which can be changed (another
/// database, no password) and written back as a `key='value'` string.
///
/// Tools the agent runs (pg_dump, pg_restore) get the result on their command line, so the
/// password never goes there: it is taken out here and handed over through `PGPASSWORD`.
struct Conninfo: Sendable, Equatable {
    /// One keyword and its value.
    struct Parameter: Sendable, Equatable {
        var key: String
        var value: String
    }

    /// In the order given; a key may repeat, and (as in libpq) the last one counts.
    private(set) var parameters: [Parameter]

    init(_ parameters: [Parameter]) {
        self.parameters = parameters
    }

    /// Parses a URL (`postgres://` or `postgresql://`) or a keyword string. The message of the
    /// error names the problem, never the text (it may hold a password).
    init(parsing text: String) throws(AgentError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("postgres://") || trimmed.hasPrefix("postgresql://") {
            parameters = try Self.parseURL(trimmed)
        } else {
            parameters = try Self.parseKeywords(trimmed)
        }
    }

    /// The last value given for `key` (libpq: a later keyword wins).
    func value(_ key: String) -> String? {
        parameters.last(where: { $0.key == key })?.value
    }

    /// The password, when the string holds one.
    var password: String? { value("password") }

    /// The same string with `key` set to `value` (every earlier `key` removed).
    func setting(_ key: String, _ value: String) -> Conninfo {
        Conninfo(parameters.filter { $0.key != key } + [Parameter(key: key, value: value)])
    }

    /// The same string without `key`.
    func removing(_ key: String) -> Conninfo {
        Conninfo(parameters.filter { $0.key != key })
    }

    /// `key='value' ...`, quoted as libpq reads it.
    var keywordString: String {
        parameters.map { parameter in
            let escaped = parameter.value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
                of: "'", with: "\\'")
            return "\(parameter.key)='\(escaped)'"
        }.joined(separator: " ")
    }

    // MARK: Keyword strings

    /// `key = value` pairs separated by spaces; values may be single-quoted with `\'` and `\\`.
    private static func parseKeywords(_ text: String) throws(AgentError) -> [Parameter] {
        var result: [Parameter] = []
        var characters = Array(text)[...]
        func skipSpaces() { while let first = characters.first, first.isWhitespace { characters.removeFirst() } }
        while true {
            skipSpaces()
            guard !characters.isEmpty else { break }
            var key = ""
            while let first = characters.first, first != "=", !first.isWhitespace {
                key.append(characters.removeFirst())
            }
            skipSpaces()
            guard characters.first == "=", !key.isEmpty else {
                throw AgentError(
                    .config, "the store connection string is neither a postgres:// URL nor key=value pairs")
            }
            characters.removeFirst()
            skipSpaces()
            var value = ""
            if characters.first == "'" {
                characters.removeFirst()
                var closed = false
                while let next = characters.first {
                    characters.removeFirst()
                    if next == "\\", let escaped = characters.first {
                        characters.removeFirst()
                        value.append(escaped)
                    } else if next == "'" {
                        closed = true
                        break
                    } else {
                        value.append(next)
                    }
                }
                guard closed else {
                    throw AgentError(
                        .config, "the store connection string has an unterminated quoted value for '\(key)'")
                }
            } else {
                while let next = characters.first, !next.isWhitespace {
                    characters.removeFirst()
                    if next == "\\", let escaped = characters.first {
                        characters.removeFirst()
                        value.append(escaped)
                    } else {
                        value.append(next)
                    }
                }
            }
            result.append(Parameter(key: key, value: value))
        }
        return result
    }

    // MARK: URLs

    /// `postgres://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`.
    private static func parseURL(_ text: String) throws(AgentError) -> [Parameter] {
        var rest = Substring(text[text.range(of: "://")!.upperBound...])
        var result: [Parameter] = []
        var query: Substring?
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path: Substring?
        // The user information may itself hold '/' (a percent-encoded one would not), so the
        // authority ends at the first '/' after the last '@'.
        let authorityStart = rest.lastIndex(of: "@").map { rest.index(after: $0) } ?? rest.startIndex
        if let slash = rest[authorityStart...].firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var hostList = rest
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            hostList = rest[rest.index(after: at)...]
            let parts = userinfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let user = try decode(parts[0], "user name")
            if !user.isEmpty { result.append(Parameter(key: "user", value: user)) }
            if parts.count == 2 { result.append(Parameter(key: "password", value: try decode(parts[1], "password"))) }
        }
        if !hostList.isEmpty {
            var hosts: [String] = [], ports: [String] = []
            for entry in hostList.split(separator: ",", omittingEmptySubsequences: false) {
                var host = entry, port: Substring = ""
                if entry.hasPrefix("["), let close = entry.firstIndex(of: "]") {
                    host = entry[entry.index(after: entry.startIndex)..<close]
                    let after = entry[entry.index(after: close)...]
                    if after.hasPrefix(":") { port = after.dropFirst() }
                } else if let colon = entry.lastIndex(of: ":") {
                    host = entry[..<colon]
                    port = entry[entry.index(after: colon)...]
                }
                hosts.append(try decode(host, "host"))
                ports.append(try decode(port, "port"))
            }
            if hosts.contains(where: { !$0.isEmpty }) {
                result.append(Parameter(key: "host", value: hosts.joined(separator: ",")))
            }
            if ports.contains(where: { !$0.isEmpty }) {
                result.append(Parameter(key: "port", value: ports.joined(separator: ",")))
            }
        }
        if let path, !path.isEmpty { result.append(Parameter(key: "dbname", value: try decode(path, "database name"))) }
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw AgentError(.config, "the store URL has a query parameter without a value")
            }
            var key = try decode(parts[0], "parameter name"), value = try decode(parts[1], "parameter value")
            if key == "ssl", value == "true" { (key, value) = ("sslmode", "require") }  // libpq's JDBC-style alias
            result.append(Parameter(key: key, value: value))
        }
        return result
    }

    /// Undoes percent-encoding; the error names `what` (the part of the URL), never its text.
    private static func decode(_ text: Substring, _ what: String) throws(AgentError) -> String {
        guard let decoded = String(text).removingPercentEncoding else {
            throw AgentError(.config, "the store URL's \(what) has a bad percent-encoding")
        }
        return decoded
    }
}
