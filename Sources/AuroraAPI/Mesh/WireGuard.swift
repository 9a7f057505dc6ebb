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
    /// The relay ports this node offers (`relay.enabled`); the lead uses them only for a node
    /// whose trusted labels hold `relay=true`, or itself.
    public var relay: RelayOffer?

    public init(
        endpoint: String?, listenPort: Int, behindNAT: Bool, peers: [WireGuardLink]?, relay: RelayOffer? = nil
    ) {
        self.endpoint = endpoint
        self.listenPort = listenPort
        self.behindNAT = behindNAT
        self.peers = peers
        self.relay = relay
    }

    enum CodingKeys: String, CodingKey {
        case endpoint, peers, relay
        case listenPort = "listen_port"
        case behindNAT = "behind_nat"
    }
}

/// The UDP ports a relay offers: pair `i` of its table uses `port_base + 2i` (the lower-named
/// node sends there) and `port_base + 2i + 1` (the other sends there).
public struct RelayOffer: Codable, Sendable, Equatable {
    public static let maxPairs = 4096

    public var portBase: Int
    public var pairs: Int

    public init(portBase: Int, pairs: Int) {
        self.portBase = portBase
        self.pairs = pairs
    }

    /// Whether every port of the table is a real UDP port (1024...65535) and the table is 1...4096 pairs.
    public var isValid: Bool {
        (1...Self.maxPairs).contains(pairs) && portBase >= 1024 && portBase + 2 * pairs - 1 <= 65535
    }

    enum CodingKeys: String, CodingKey {
        case pairs
        case portBase = "port_base"
    }
}

/// How two nodes that are both behind NAT reach each other, as the lead decided
/// (`GET /api/topology`, `paths`). Pairs where either side is reachable are direct and not listed.
public struct MeshPath: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable {
        /// WireGuard to WireGuard: a hole-punched handshake succeeded.
        case direct
        /// Through `relay`: each side's peer entry points at the relay's port for the other.
        case relayed
        /// Both sides send to each other's outside endpoint (hole punching); relayed again
        /// unless both see the other's traffic arrive directly within the trial.
        case trying
    }

    /// The pair, `a` < `b` by name.
    public var a: String
    public var b: String
    public var mode: Mode
    /// The relay's node name, when one carries (or would carry) the pair.
    public var relay: String?
    /// `HOST:PORT` on the relay where `a` sends (and from where `a` receives `b`'s datagrams).
    public var relayA: String?
    /// `HOST:PORT` on the relay where `b` sends.
    public var relayB: String?
    /// `a`'s WireGuard endpoint as seen from outside (by the lead), for hole punching.
    public var directA: String?
    public var directB: String?
    /// The public host each side's traffic comes from: the relay moves a side's latched address
    /// only to a source on it.
    public var hostA: String?
    public var hostB: String?
    /// Each side's NAT as observed (`endpoint-independent`, `symmetric`), when two observers saw it.
    public var natA: String?
    public var natB: String?
    /// Why the pair is in this mode, for people.
    public var reason: String

    public init(
        a: String, b: String, mode: Mode, relay: String? = nil, relayA: String? = nil, relayB: String? = nil,
        directA: String? = nil, directB: String? = nil, hostA: String? = nil, hostB: String? = nil,
        natA: String? = nil, natB: String? = nil, reason: String
    ) {
        self.hostA = hostA
        self.hostB = hostB
        self.natA = natA
        self.natB = natB
        self.a = a
        self.b = b
        self.mode = mode
        self.relay = relay
        self.relayA = relayA
        self.relayB = relayB
        self.directA = directA
        self.directB = directB
        self.reason = reason
    }

    /// The endpoint `node` should give its peer entry for the other side; nil when `node` is not in the pair.
    public func endpoint(for node: String) -> String? {
        guard node == a || node == b else { return nil }
        switch mode {
        case .relayed: return node == a ? relayA : relayB
        case .direct, .trying: return node == a ? directB : directA
        }
    }

    /// The other side of the pair for `node`.
    public func other(than node: String) -> String { node == a ? b : a }

    enum CodingKeys: String, CodingKey {
        case a, b, mode, relay, reason
        case relayA = "relay_a"
        case relayB = "relay_b"
        case directA = "direct_a"
        case directB = "direct_b"
        case hostA = "host_a"
        case hostB = "host_b"
        case natA = "nat_a"
        case natB = "nat_b"
    }
}

/// One pair a relay carries (`GET /api/wireguard`, `relay`): its ports, each side's latched
/// address and what it forwarded each way and dropped.
public struct RelayPairStatus: Codable, Sendable, Equatable {
    public var a: String
    public var b: String
    public var portA: Int
    public var portB: Int
    public var latchedA: String?
    public var latchedB: String?
    public var forwardedAToB: Int64
    public var forwardedBToA: Int64
    public var bytesAToB: Int64
    public var bytesBToA: Int64
    /// Datagrams not forwarded: not WireGuard, from a stranger's host, or for a side not seen yet.
    public var dropped: Int64

    public init(
        a: String, b: String, portA: Int, portB: Int, latchedA: String?, latchedB: String?, forwardedAToB: Int64,
        forwardedBToA: Int64, bytesAToB: Int64, bytesBToA: Int64, dropped: Int64
    ) {
        self.a = a
        self.b = b
        self.portA = portA
        self.portB = portB
        self.latchedA = latchedA
        self.latchedB = latchedB
        self.forwardedAToB = forwardedAToB
        self.forwardedBToA = forwardedBToA
        self.bytesAToB = bytesAToB
        self.bytesBToA = bytesBToA
        self.dropped = dropped
    }

    enum CodingKeys: String, CodingKey {
        case a, b, dropped
        case portA = "port_a"
        case portB = "port_b"
        case latchedA = "latched_a"
        case latchedB = "latched_b"
        case forwardedAToB = "forwarded_a_to_b"
        case forwardedBToA = "forwarded_b_to_a"
        case bytesAToB = "bytes_a_to_b"
        case bytesBToA = "bytes_b_to_a"
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
    /// The pairs this agent relays (`relay.enabled`); nil when it is no relay.
    public var relay: [RelayPairStatus]?
    /// The paths of this node's pairs behind NAT (relayed, trying, direct), from the lead.
    public var paths: [MeshPath]?

    public init(
        mode: String, interface: String, up: Bool, address: String?, publicKey: String, listenPort: Int,
        configPath: String,
        appliedAt: String?, lastError: String?, peers: [WireGuardLink], relay: [RelayPairStatus]? = nil,
        paths: [MeshPath]? = nil
    ) {
        self.relay = relay
        self.paths = paths
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
        case mode, interface, up, address, peers, relay, paths
        case publicKey = "public_key"
        case listenPort = "listen_port"
        case configPath = "config_path"
        case appliedAt = "applied_at"
        case lastError = "last_error"
    }
}
