// WireGuard: what a node reports of its interface, and the local view `aurora-cli wg` shows.

/// One peer of a node's interface as `wg show IF dump` reports it.
public struct WireGuardLink: Codable, Sendable, Equatable {
    public var publicKey: String
    /// The peer's node name, when the node knows it.
    public var name: String?
    public var endpoint: String?
    public var allowedIPs: [String]?
    /// Seconds since the latest handshake; nil when there has been none.
    public var handshakeAgeS: Double?
    public var rxBytes: Int64
    public var txBytes: Int64

    public init(
        publicKey: String, name: String?, endpoint: String?, allowedIPs: [String]?, handshakeAgeS: Double?,
        rxBytes: Int64, txBytes: Int64
    ) {
        self.publicKey = publicKey
        self.name = name
        self.endpoint = endpoint
        self.allowedIPs = allowedIPs
        self.handshakeAgeS = handshakeAgeS
        self.rxBytes = rxBytes
        self.txBytes = txBytes
    }

    enum CodingKeys: String, CodingKey {
        case name, endpoint
        case publicKey = "public_key"
        case allowedIPs = "allowed_ips"
        case handshakeAgeS = "handshake_age_s"
        case rxBytes = "rx_bytes"
        case txBytes = "tx_bytes"
    }
}

/// A node's WireGuard state in its heartbeat: how peers reach it, and its peers' handshakes.
public struct WireGuardReport: Codable, Sendable, Equatable {
    /// The configured endpoint (`wireguard.endpoint`); nil: the lead uses the heartbeat's source.
    public var endpoint: String?
    public var listenPort: Int
    public var behindNAT: Bool
    /// The peers of the interface, when it is up (`wireguard.mode: apply`).
    public var peers: [WireGuardLink]?

    public init(endpoint: String?, listenPort: Int, behindNAT: Bool, peers: [WireGuardLink]?) {
        self.endpoint = endpoint
        self.listenPort = listenPort
        self.behindNAT = behindNAT
        self.peers = peers
    }

    enum CodingKeys: String, CodingKey {
        case endpoint, peers
        case listenPort = "listen_port"
        case behindNAT = "behind_nat"
    }
}

/// `GET /api/wireguard` (operator, any agent): the local interface and its peers.
public struct WireGuardStatus: Codable, Sendable, Equatable {
    /// off | render | apply
    public var mode: String
    public var interface: String
    /// The interface exists and answers `wg show`.
    public var up: Bool
    public var address: String?
    public var publicKey: String
    public var listenPort: Int
    /// `DATA/wireguard/IF.conf`.
    public var configPath: String
    /// When the rendered configuration last changed and was applied (ISO 8601).
    public var appliedAt: String?
    /// Why the last apply failed, if it did.
    public var lastError: String?
    public var peers: [WireGuardLink]

    public init(
        mode: String, interface: String, up: Bool, address: String?, publicKey: String, listenPort: Int,
        configPath: String,
        appliedAt: String?, lastError: String?, peers: [WireGuardLink]
    ) {
        self.mode = mode
        self.interface = interface
        self.up = up
        self.address = address
        self.publicKey = publicKey
        self.listenPort = listenPort
        self.configPath = configPath
        self.appliedAt = appliedAt
        self.lastError = lastError
        self.peers = peers
    }

    enum CodingKeys: String, CodingKey {
        case mode, interface, up, address, peers
        case publicKey = "public_key"
        case listenPort = "listen_port"
        case configPath = "config_path"
        case appliedAt = "applied_at"
        case lastError = "last_error"
    }
}
