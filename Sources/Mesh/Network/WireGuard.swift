// WireGuard configuration, pure: what a node's interface and peers should be, rendered in the
// wg-quick and `wg setconf` forms, the difference between two configurations, and the parse
// of `wg show IF dump`. No I/O: the agent writes files and runs the tools.

/// One node's interface.
public struct WireGuardInterface: Sendable, Equatable {
    /// Base64 private key; nil renders a placeholder (the lead never has a node's key).
    public var privateKey: String?
    /// The node's mesh address with the mesh's prefix, e.g. `10.0.0.2/24`.
    public var address: String
    public var listenPort: Int

    public init(privateKey: String?, address: String, listenPort: Int) {
        self.privateKey = privateKey
        self.address = address
        self.listenPort = listenPort
    }
}

/// One peer of a node.
public struct WireGuardPeerConfig: Sendable, Equatable {
    /// The peer's node name (a comment in the file).
    public var name: String
    public var publicKey: String
    /// `host:port`, when known.
    public var endpoint: String?
    /// The peer's mesh address as a /32.
    public var allowedIPs: [String]
    /// Seconds, when either side is behind NAT.
    public var persistentKeepalive: Int?

    public init(name: String, publicKey: String, endpoint: String?, allowedIPs: [String], persistentKeepalive: Int?) {
        self.name = name
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.allowedIPs = allowedIPs
        self.persistentKeepalive = persistentKeepalive
    }
}

/// A node's whole WireGuard configuration.
public struct WireGuardConfig: Sendable, Equatable {
    public static let keepaliveSeconds = 25

    public var node: String
    public var interface: WireGuardInterface
    /// Sorted by name.
    public var peers: [WireGuardPeerConfig]

    public init(node: String, interface: WireGuardInterface, peers: [WireGuardPeerConfig]) {
        self.node = node
        self.interface = interface
        self.peers = peers.sorted { $0.name < $1.name }
    }

    /// A member of the mesh as the registry knows it.
    public struct Member: Sendable, Equatable {
        public var name: String
        public var publicKey: String
        public var vpnIP: String
        public var endpoint: String?
        public var behindNAT: Bool
        /// Left or removed members get no peer entry.
        public var active: Bool

        public init(
            name: String, publicKey: String, vpnIP: String, endpoint: String?, behindNAT: Bool, active: Bool = true
        ) {
            self.name = name
            self.publicKey = publicKey
            self.vpnIP = vpnIP
            self.endpoint = endpoint
            self.behindNAT = behindNAT
            self.active = active
        }
    }

    /// The configuration of `me` in a mesh of `members` on `network`: every other active member
    /// with a key and an address is a peer with AllowedIPs = its /32. Keepalive 25 s when
    /// either side is behind NAT. An endpoint that is not a plain `HOST:PORT` is left out (the
    /// peer is then reached when it connects), so what a node reports cannot add lines to the file.
    ///
    /// `paths` maps a peer's name to the endpoint the lead's path decision gives it (the relay's
    /// port for a relayed pair, the peer's outside endpoint for a direct or trying one); it wins
    /// over the endpoint the registry has.
    public static func build(
        for me: Member, privateKey: String?, listenPort: Int, network: IPv4Network, members: [Member],
        paths: [String: String] = [:]
    ) -> WireGuardConfig {
        let peers = members.filter {
            $0.name != me.name && $0.active && !$0.publicKey.isEmpty && IPv4Network.parse($0.vpnIP) != nil
        }
        .map { member in
            WireGuardPeerConfig(
                name: member.name, publicKey: member.publicKey,
                endpoint: (paths[member.name] ?? member.endpoint).flatMap(validEndpoint),
                allowedIPs: [member.vpnIP + "/32"],
                persistentKeepalive: me.behindNAT || member.behindNAT ? keepaliveSeconds : nil)
        }
        return WireGuardConfig(
            node: me.name,
            interface: WireGuardInterface(
                privateKey: privateKey, address: "\(me.vpnIP)/\(network.prefix)",
                listenPort: listenPort), peers: peers)
    }

    /// `text` when it is `HOST:PORT` or `[V6]:PORT` in printable ASCII without spaces, else nil.
    static func validEndpoint(_ text: String) -> String? {
        guard text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }), (try? HostPort(parsing: text)) != nil else {
            return nil
        }
        return text
    }

    /// The wg-quick form (`DATA/wireguard/IF.conf`): with `Address`.
    public func wgQuick() -> String { render(withAddress: true) }

    /// The `wg setconf` / `wg syncconf` form: no `Address` (wg does not take it).
    public func setconf() -> String { render(withAddress: false) }

    private func render(withAddress: Bool) -> String {
        var lines = [
            "# Written by nodeagent for \(node); rewritten when the mesh changes.", "[Interface]",
            "PrivateKey = \(interface.privateKey ?? "(filled in on the node)")",
        ]
        if withAddress { lines.append("Address = \(interface.address)") }
        lines.append("ListenPort = \(interface.listenPort)")
        for peer in peers {
            lines += ["", "# \(peer.name)", "[Peer]", "PublicKey = \(peer.publicKey)"]
            if let endpoint = peer.endpoint { lines.append("Endpoint = \(endpoint)") }
            lines.append("AllowedIPs = \(peer.allowedIPs.joined(separator: ", "))")
            if let keepalive = peer.persistentKeepalive { lines.append("PersistentKeepalive = \(keepalive)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads back what ``wgQuick()`` wrote (the last good configuration, applied at boot);
    /// nil when the text has no `[Interface]` with an address and a port.
    public init?(wgQuick text: String, node: String) {
        var interface: WireGuardInterface?
        var peers: [WireGuardPeerConfig] = []
        var comment: String?
        var section = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingSpaces()
            if line.hasPrefix("#") { comment = String(line.dropFirst()).trimmingSpaces(); continue }
            if line == "[Interface]" {
                section = "interface"; interface = WireGuardInterface(privateKey: nil, address: "", listenPort: 0);
                continue
            }
            if line == "[Peer]" {
                section = "peer"
                peers.append(
                    WireGuardPeerConfig(
                        name: comment ?? "", publicKey: "", endpoint: nil, allowedIPs: [], persistentKeepalive: nil))
                continue
            }
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<equals]).trimmingSpaces(),
                value = String(line[line.index(after: equals)...]).trimmingSpaces()
            if section == "interface" {
                switch key {
                case "PrivateKey": interface?.privateKey = value.hasPrefix("(") ? nil : value  // a placeholder
                case "Address": interface?.address = value
                case "ListenPort": interface?.listenPort = Int(value) ?? 0
                default: break
                }
            } else if section == "peer", !peers.isEmpty {
                switch key {
                case "PublicKey": peers[peers.count - 1].publicKey = value
                case "Endpoint": peers[peers.count - 1].endpoint = value
                case "AllowedIPs":
                    peers[peers.count - 1].allowedIPs = value.split(separator: ",").map { String($0).trimmingSpaces() }
                        .filter { !$0.isEmpty }
                case "PersistentKeepalive": peers[peers.count - 1].persistentKeepalive = Int(value)
                default: break
                }
            }
        }
        guard let interface, !interface.address.isEmpty, interface.listenPort > 0 else { return nil }
        self.init(node: node, interface: interface, peers: peers)
    }

    /// The same configuration with the private key replaced, for showing.
    public var redacted: WireGuardConfig {
        var copy = self
        if copy.interface.privateKey != nil { copy.interface.privateKey = "(hidden; --show-private)" }
        return copy
    }
}

/// What changed between two configurations of one node.
public struct WireGuardDiff: Sendable, Equatable {
    public var added: [String]
    public var removed: [String]
    /// Peers whose endpoint, allowed IPs or keepalive changed.
    public var changed: [String]
    /// The address changed (the interface needs `ip address replace`).
    public var addressChanged: Bool
    /// Key or listen port changed.
    public var interfaceChanged: Bool

    public var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && changed.isEmpty && !addressChanged && !interfaceChanged
    }

    /// Whether `wg syncconf` has anything to do.
    public var peersOrInterfaceChanged: Bool {
        !(added.isEmpty && removed.isEmpty && changed.isEmpty) || interfaceChanged
    }

    public init(from old: WireGuardConfig?, to new: WireGuardConfig) {
        let before = Dictionary((old?.peers ?? []).map { ($0.publicKey, $0) }, uniquingKeysWith: { $1 })
        let after = Dictionary(new.peers.map { ($0.publicKey, $0) }, uniquingKeysWith: { $1 })
        added = new.peers.filter { before[$0.publicKey] == nil }.map(\.name)
        removed = (old?.peers ?? []).filter { after[$0.publicKey] == nil }.map(\.name)
        changed = new.peers.filter { peer in before[peer.publicKey].map { $0 != peer } ?? false }.map(\.name)
        addressChanged = old?.interface.address != new.interface.address
        interfaceChanged =
            old?.interface.privateKey != new.interface.privateKey
            || old?.interface.listenPort != new.interface.listenPort
    }

    /// `+1 -0 ~2 peers`, for logs.
    public var summary: String {
        "+\(added.count) -\(removed.count) ~\(changed.count) peers" + (addressChanged ? ", address" : "")
            + (interfaceChanged ? ", interface" : "")
    }
}

/// One peer line of `wg show IF dump`.
public struct WireGuardPeerStatus: Sendable, Equatable {
    public var publicKey: String
    public var endpoint: String?
    public var allowedIPs: [String]
    /// Unix seconds of the latest handshake; nil when there has been none.
    public var latestHandshake: Int64?
    public var rxBytes: Int64
    public var txBytes: Int64
    public var persistentKeepalive: Int?

    public init(
        publicKey: String, endpoint: String?, allowedIPs: [String], latestHandshake: Int64?, rxBytes: Int64,
        txBytes: Int64,
        persistentKeepalive: Int?
    ) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.allowedIPs = allowedIPs
        self.latestHandshake = latestHandshake
        self.rxBytes = rxBytes
        self.txBytes = txBytes
        self.persistentKeepalive = persistentKeepalive
    }
}

/// `wg show IF dump`: the interface line (private key, public key, listen port, fwmark), then
/// one tab-separated line per peer (public key, preshared key, endpoint, allowed IPs, latest
/// handshake, rx, tx, keepalive).
public struct WireGuardDump: Sendable, Equatable {
    public var publicKey: String
    public var listenPort: Int
    public var peers: [WireGuardPeerStatus]

    public init(publicKey: String, listenPort: Int, peers: [WireGuardPeerStatus]) {
        self.publicKey = publicKey
        self.listenPort = listenPort
        self.peers = peers
    }

    /// Nil when the text is not a dump (the interface line is missing or malformed).
    public init?(parsing text: String) {
        let lines = text.split(separator: "\n").map {
            $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        }
        guard let first = lines.first, first.count >= 3, let port = Int(first[2]) else { return nil }
        publicKey = first[1]
        listenPort = port
        peers = lines.dropFirst().compactMap { fields in
            guard fields.count >= 8, let handshake = Int64(fields[4]), let rx = Int64(fields[5]),
                let tx = Int64(fields[6])
            else { return nil }
            return WireGuardPeerStatus(
                publicKey: fields[0], endpoint: fields[2] == "(none)" ? nil : fields[2],
                allowedIPs: fields[3].split(separator: ",").map(String.init).filter { $0 != "(none)" },
                latestHandshake: handshake == 0 ? nil : handshake, rxBytes: rx, txBytes: tx,
                persistentKeepalive: Int(fields[7]))
        }
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (Mesh does not import Foundation).
    func trimmingSpaces() -> String {
        var view = Substring(self)
        while let first = view.first, first == " " || first == "\t" || first == "\r" { view.removeFirst() }
        while let last = view.last, last == " " || last == "\t" || last == "\r" { view.removeLast() }
        return String(view)
    }
}
