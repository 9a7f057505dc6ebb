// The registry's part of the public contract (shared/DESIGN.md, API shapes): nodes, join,
// heartbeats, topology. JSON keys are snake_case; fields may be added, never renamed.

// MARK: - Node

/// Where a node stands in the lead's failure detector.
public enum NodeState: String, Codable, Sendable, CaseIterable {
    /// Heartbeats arrive on time.
    case alive
    /// Three or more heartbeats missed (the profile's `heartbeat.suspect_after`).
    case suspect
    /// An edge node quiet for longer (`heartbeat.away_after`): expected to come back.
    case away
    /// Quiet past `heartbeat.dead_after`, or its agent was found not listening.
    case dead
    /// Left on purpose (`DELETE /nodes/{name}` or `--leave-on-stop`).
    case left
}

/// One GPU as a node reports it (from `nvidia-smi` or the `gpus:` inventory).
public struct GPU: Codable, Sendable, Equatable {
    public var index: Int
    public var uuid: String
    public var name: String
    public var memoryTotalMB: Int
    public var memoryUsedMB: Int
    public var utilizationPct: Int

    public init(index: Int, uuid: String, name: String, memoryTotalMB: Int, memoryUsedMB: Int, utilizationPct: Int) {
        self.index = index
        self.uuid = uuid
        self.name = name
        self.memoryTotalMB = memoryTotalMB
        self.memoryUsedMB = memoryUsedMB
        self.utilizationPct = utilizationPct
    }

    enum CodingKeys: String, CodingKey {
        case index, uuid, name
        case memoryTotalMB = "memory_total_mb"
        case memoryUsedMB = "memory_used_mb"
        case utilizationPct = "utilization_pct"
    }
}

/// What a node has to offer.
public struct Capabilities: Codable, Sendable, Equatable {
    public var cpuCores: Int
    public var memoryMB: Int
    public var os: String
    public var arch: String
    public var gpus: [GPU]
    /// The models the node's inference backend (`gpu.backend`) serves, as discovered and named
    /// by its profile (`gpu.models`); nil without a backend. Sent, like the rest, only when it changes.
    public var models: [ServedModel]?

    public init(
        cpuCores: Int, memoryMB: Int, os: String, arch: String, gpus: [GPU], models: [ServedModel]? = nil
    ) {
        self.cpuCores = cpuCores
        self.memoryMB = memoryMB
        self.os = os
        self.arch = arch
        self.gpus = gpus
        self.models = models
    }

    public static let unknown = Capabilities(cpuCores: 0, memoryMB: 0, os: "", arch: "", gpus: [])

    enum CodingKeys: String, CodingKey {
        case os, arch, gpus, models
        case cpuCores = "cpu_cores"
        case memoryMB = "memory_mb"
    }
}

/// A node's WireGuard peer data.
public struct WireGuardPeer: Codable, Sendable, Equatable {
    public var publicKey: String
    public var endpoint: String?
    public var listenPort: Int
    /// Seconds since the node's most recent handshake with any peer, as it last reported.
    public var handshakeAgeS: Double?
    /// The node is behind NAT: it and its peers keep the tunnel open (PersistentKeepalive 25).
    public var behindNAT: Bool?
    /// The relay ports it offers, as it reported them.
    public var relay: RelayOffer?

    public init(
        publicKey: String, endpoint: String? = nil, listenPort: Int, handshakeAgeS: Double? = nil,
        behindNAT: Bool? = nil, relay: RelayOffer? = nil
    ) {
        self.relay = relay
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.listenPort = listenPort
        self.handshakeAgeS = handshakeAgeS
        self.behindNAT = behindNAT
    }

    enum CodingKeys: String, CodingKey {
        case endpoint, relay
        case publicKey = "public_key"
        case listenPort = "listen_port"
        case handshakeAgeS = "handshake_age_s"
        case behindNAT = "behind_nat"
    }
}

/// The result of one local check a node runs and reports with its heartbeat.
public struct CheckResult: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case passing, warning, critical
    }

    public var name: String
    public var status: Status
    public var output: String

    public init(name: String, status: Status, output: String) {
        self.name = name
        self.status = status
        self.output = output
    }
}

/// A node's heartbeat timing, from its profile; the lead's failure detector applies it.
public struct HeartbeatTiming: Codable, Sendable, Equatable {
    public var intervalS: Double
    public var suspectAfter: Int
    /// 0: never away.
    public var awayAfter: Int
    public var deadAfter: Int

    public init(intervalS: Double, suspectAfter: Int, awayAfter: Int, deadAfter: Int) {
        self.intervalS = intervalS
        self.suspectAfter = suspectAfter
        self.awayAfter = awayAfter
        self.deadAfter = deadAfter
    }

    enum CodingKeys: String, CodingKey {
        case intervalS = "interval_s"
        case suspectAfter = "suspect_after"
        case awayAfter = "away_after"
        case deadAfter = "dead_after"
    }
}

/// A node as the registry knows it (`GET /nodes/{name}`).
public struct Node: Codable, Sendable, Equatable {
    public var name: String
    public var role: NodeRole
    public var company: String
    public var vpnIP: String
    public var state: NodeState
    /// When the lead last heard from the node (ISO 8601), or when it joined.
    public var lastSeen: String
    /// The trusted labels: from the node's join token or an operator (`aurora-cli nodes label`).
    /// Placement matches these only.
    public var labels: [String: String]
    /// What the node says of itself (its node file's `labels`): shown, never trusted.
    public var reportedLabels: [String: String]?
    public var wireguard: WireGuardPeer
    public var capabilities: Capabilities
    public var version: String
    /// The node's API address (`listen`), which peers use to measure RTT.
    public var address: String?
    public var joinedAt: String
    public var signPublicKey: String
    public var boxPublicKey: String
    public var timing: HeartbeatTiming?
    public var checks: [CheckResult]?
    /// The node's local PostgreSQL server, when it watches one (`postgres.monitor`).
    public var postgres: ReplicaHealth?
    /// The pin of the node's TLS key, from its join.
    public var tlsPin: String?
    /// The node's TLS listener port.
    public var tlsPort: Int?
    /// Where the node serves `/metrics` alone (`metrics.listen`, `HOST:PORT`), as it reports it.
    public var metricsAddress: String?
    /// Cordoned or draining by an operator; nil while open.
    public var scheduling: NodeScheduling?

    public init(
        name: String, role: NodeRole, company: String, vpnIP: String, state: NodeState, lastSeen: String,
        labels: [String: String], wireguard: WireGuardPeer, capabilities: Capabilities, version: String,
        address: String?, joinedAt: String, signPublicKey: String, boxPublicKey: String,
        timing: HeartbeatTiming? = nil, checks: [CheckResult]? = nil, postgres: ReplicaHealth? = nil
    ) {
        self.name = name
        self.role = role
        self.company = company
        self.vpnIP = vpnIP
        self.state = state
        self.lastSeen = lastSeen
        self.labels = labels
        self.wireguard = wireguard
        self.capabilities = capabilities
        self.version = version
        self.address = address
        self.joinedAt = joinedAt
        self.signPublicKey = signPublicKey
        self.boxPublicKey = boxPublicKey
        self.timing = timing
        self.checks = checks
        self.postgres = postgres
    }

    enum CodingKeys: String, CodingKey {
        case name, role, company, state, labels, wireguard, capabilities, version, address, timing, checks, postgres
        case scheduling
        case reportedLabels = "reported_labels"
        case tlsPin = "tls_pin"
        case tlsPort = "tls_port"
        case metricsAddress = "metrics_address"
        case vpnIP = "vpn_ip"
        case lastSeen = "last_seen"
        case joinedAt = "joined_at"
        case signPublicKey = "sign_public_key"
        case boxPublicKey = "box_public_key"
    }
}

/// `GET /nodes`: every node, and whether this is a cached view because the lead is away.
public struct NodeList: Codable, Sendable, Equatable {
    public var nodes: [Node]
    /// True when an agent answers from its cache because it cannot reach the lead.
    public var stale: Bool
    /// Age of the cached view in seconds, when stale.
    public var ageS: Double?
    /// The lead's name, as far as the answering agent knows.
    public var lead: String?
    /// Why the view is stale, when it is.
    public var reason: String?

    public init(nodes: [Node], stale: Bool, ageS: Double? = nil, lead: String? = nil, reason: String? = nil) {
        self.nodes = nodes
        self.stale = stale
        self.ageS = ageS
        self.lead = lead
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case nodes, stale, lead, reason
        case ageS = "age_s"
    }
}

/// `GET /topology`: nodes and the RTT each node measured to its peers.
public struct Topology: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var name: String
        public var state: NodeState
        public var vpnIP: String

        public init(name: String, state: NodeState, vpnIP: String) {
            self.name = name
            self.state = state
            self.vpnIP = vpnIP
        }

        enum CodingKeys: String, CodingKey {
            case name, state
            case vpnIP = "vpn_ip"
        }
    }

    public struct Link: Codable, Sendable, Equatable {
        public var from: String
        public var to: String
        public var rttMs: Double
        public var handshakeAgeS: Double?
        /// Seconds since `from` measured it.
        public var measuredAgeS: Double?

        public init(from: String, to: String, rttMs: Double, handshakeAgeS: Double? = nil, measuredAgeS: Double? = nil)
        {
            self.from = from
            self.to = to
            self.rttMs = rttMs
            self.handshakeAgeS = handshakeAgeS
            self.measuredAgeS = measuredAgeS
        }

        enum CodingKeys: String, CodingKey {
            case from, to
            case rttMs = "rtt_ms"
            case handshakeAgeS = "handshake_age_s"
            case measuredAgeS = "measured_age_s"
        }
    }

    public var nodes: [Member]
    public var links: [Link]
    /// How each pair of nodes behind NAT reaches each other (relayed, trying, direct).
    public var paths: [MeshPath]?
    public var stale: Bool
    public var ageS: Double?

    public init(nodes: [Member], links: [Link], paths: [MeshPath]? = nil, stale: Bool, ageS: Double? = nil) {
        self.nodes = nodes
        self.links = links
        self.paths = paths
        self.stale = stale
        self.ageS = ageS
    }

    enum CodingKeys: String, CodingKey {
        case nodes, links, stale, paths
        case ageS = "age_s"
    }
}
