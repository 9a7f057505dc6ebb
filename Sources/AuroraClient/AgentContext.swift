import AuroraTLS
import Foundation

/// A named way to reach one agent, as `aurora-cli context add` saves it: the agent's URL, the
/// pin of its TLS key (https) and a copy of the operator token. The token is copied, not
/// referenced, so a context keeps working when the file it came from is gone or readable only
/// by root; it lives only in the context's own 0600 file and is never printed.
public struct AgentContext: Sendable, Equatable {
    /// `[a-z0-9][a-z0-9._-]*`, at most ``maximumNameLength`` characters.
    public let name: String
    /// `http(s)://host[:port][/path]`, without a trailing `/`.
    public let agent: String
    /// The pin checked before the token is sent (https agents only).
    public let pin: TLSPin?
    /// The operator token.
    public let token: String

    /// The longest context name.
    public static let maximumNameLength = 32
    /// The longest agent URL.
    public static let maximumURLLength = 512
    /// The longest token.
    public static let maximumTokenLength = 1024

    /// A context made of checked values; throws naming the first value that is not valid.
    public init(name: String, agent: String, pin: String?, token: String) throws(AuroraClientError) {
        try Self.validateName(name)
        self.name = name
        self.agent = try Self.validateAgentURL(agent)
        if let pin {
            guard let parsed = TLSPin(parsing: pin) else {
                throw AuroraClientError(
                    .context, "the pin must be sha256: and 64 hex digits, got '\(Self.shown(pin))'")
            }
            self.pin = parsed
        } else {
            self.pin = nil
        }
        if self.agent.hasPrefix("https://"), self.pin == nil {
            throw AuroraClientError(
                .context,
                "\(self.agent) is https: give --pin sha256:... so the agent's key is checked before the token is sent "
                    + "(the agent logs its pin at start, and 'token create' on the lead prints it)")
        }
        if self.agent.hasPrefix("http://"), self.pin != nil {
            throw AuroraClientError(.context, "a pin is for https agents; \(self.agent) is plain http")
        }
        try Self.validateToken(token)
        self.token = token
    }

    // MARK: - Validation

    /// Refuses anything but 1-32 of `a-z 0-9 . _ -`, starting with a letter or digit.
    public static func validateName(_ name: String) throws(AuroraClientError) {
        let allowed = name.utf8.allSatisfy {
            (97...122).contains($0) || (48...57).contains($0) || $0 == 46 || $0 == 95 || $0 == 45
        }
        let startsWell = name.utf8.first.map { (97...122).contains($0) || (48...57).contains($0) } ?? false
        guard (1...maximumNameLength).contains(name.utf8.count), allowed, startsWell else {
            throw AuroraClientError(
                .context,
                "'\(shown(name))' is not a context name: 1-\(maximumNameLength) of a-z, 0-9, '.', '_' and '-', "
                    + "starting with a letter or digit")
        }
    }

    /// The URL without a trailing `/`, when it is `http(s)://host[:port][/path]` with no user,
    /// query, fragment, spaces or control characters.
    public static func validateAgentURL(_ text: String) throws(AuroraClientError) -> String {
        let refusal = AuroraClientError(
            .context, "the agent must be an http(s) URL such as https://lead.example:9999, got '\(shown(text))'")
        guard (1...maximumURLLength).contains(text.utf8.count),
            text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }),
            let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), ["http", "https"].contains(scheme),
            let host = components.host, !host.isEmpty
        else { throw refusal }
        guard components.user == nil, components.password == nil else {
            throw AuroraClientError(.context, "the agent URL must not carry a user or password (the token is enough)")
        }
        guard components.query == nil, components.fragment == nil else {
            throw AuroraClientError(.context, "the agent URL must not have a query or fragment, got '\(shown(text))'")
        }
        guard text.lowercased().hasPrefix(scheme + "://") else { throw refusal }
        let normalized = scheme + text.dropFirst(scheme.count)
        return normalized.hasSuffix("/") ? String(normalized.dropLast()) : String(normalized)
    }

    /// 1-1024 printable ASCII characters, no spaces.
    public static func validateToken(_ token: String) throws(AuroraClientError) {
        guard !token.isEmpty else { throw AuroraClientError(.context, "the token is empty") }
        guard token.utf8.count <= maximumTokenLength else {
            throw AuroraClientError(.context, "the token is longer than \(maximumTokenLength) characters")
        }
        guard token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw AuroraClientError(
                .context, "the token holds spaces, control or non-ASCII characters (is it the right file?)")
        }
    }

    /// A short, printable form of a value for an error message.
    static func shown(_ text: String) -> String {
        String(
            String.UnicodeScalarView(
                text.unicodeScalars.prefix(64).map { $0.value < 0x20 || $0.value == 0x7f ? "?" : $0 }))
    }
}

// MARK: - File format

extension AgentContext {
    /// The JSON of a context file: `{"version": 1, "name", "agent", "pin"?, "token"}`.
    struct File: Codable {
        var version: Int
        var name: String
        var agent: String
        var pin: String?
        var token: String
    }

    var file: File { File(version: 1, name: name, agent: agent, pin: pin?.description, token: token) }
}
