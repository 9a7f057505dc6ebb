/// A listen or endpoint address: `HOST:PORT`, with IPv6 hosts in brackets (`[::1]:9999`).
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// The host name or address, without brackets.
    public let host: String
    /// 0...65535; 0 asks the system for a free port.
    public let port: Int

    public init(host: String, port: Int) throws(MeshError) {
        guard !host.isEmpty else { throw MeshError(.invalidAddress, "the host is empty") }
        guard InputRules.host(host) else {
            throw MeshError(.invalidAddress, "'\(InputRules.printable(host))' is not a host name or an IP address")
        }
        guard (0...65535).contains(port) else { throw MeshError(.invalidAddress, "port \(port) is outside 0-65535") }
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT` or `[V6]:PORT`.
    public init(parsing text: String) throws(MeshError) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":"),
                !text[text.index(after: text.startIndex)..<close].contains("[")
            else {
                throw MeshError(.invalidAddress, "'\(text)' is not [IPv6]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw MeshError(.invalidAddress, "'\(text)' is not HOST:PORT")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard portText.utf8.count <= 5, portText.allSatisfy(\.isASCIIDigitCharacter), let port = Int(portText) else {
            throw MeshError(.invalidAddress, "'\(text)' has no numeric port")
        }
        try self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

private extension Character {
    var isASCIIDigitCharacter: Bool { ("0"..."9").contains(self) }
}
