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

    public init(cpuCores: Int, memoryMB: Int, os: String, arch: String, gpus: [GPU]) {
        self.cpuCores = cpuCores
        self.memoryMB = memoryMB
        self.os = os
        self.arch = arch
        self.gpus = gpus
    }

    public static let unknown = Capabilities(cpuCores: 0, memoryMB: 0, os: "", arch: "", gpus: [])

    enum CodingKeys: String, CodingKey {
        case os, arch, gpus
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

    public init(
        publicKey: String, endpoint: String? = nil, listenPort: Int, handshakeAgeS: Double? = nil,
        behindNAT: Bool? = nil
    ) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.listenPort = listenPort
        self.handshakeAgeS = handshakeAgeS
        self.behindNAT = behindNAT
    }

    enum CodingKeys: String, CodingKey {
        case endpoint
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
        case reportedLabels = "reported_labels"
        case tlsPin = "tls_pin"
        case tlsPort = "tls_port"
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
    public var stale: Bool
    public var ageS: Double?

    public init(nodes: [Member], links: [Link], stale: Bool, ageS: Double? = nil) {
        self.nodes = nodes
        self.links = links
        self.stale = stale
        self.ageS = ageS
    }

    enum CodingKeys: String, CodingKey {
        case nodes, links, stale
        case ageS = "age_s"
    }
}

// MARK: - Join

/// `POST /api/nodes/join`.
public struct JoinRequest: Codable, Sendable, Equatable {
    public struct WireGuard: Codable, Sendable, Equatable {
        public var publicKey: String
        public var endpoint: String?
        public var listenPort: Int
        public var behindNAT: Bool?

        public init(publicKey: String, endpoint: String?, listenPort: Int, behindNAT: Bool? = nil) {
            self.publicKey = publicKey
            self.endpoint = endpoint
            self.listenPort = listenPort
            self.behindNAT = behindNAT
        }

        enum CodingKeys: String, CodingKey {
            case endpoint
            case publicKey = "public_key"
            case listenPort = "listen_port"
            case behindNAT = "behind_nat"
        }
    }

    public var token: String
    public var name: String
    public var profile: NodeRole
    public var company: String?
    public var labels: [String: String]?
    public var wireguard: WireGuard
    public var signPublicKey: String
    public var boxPublicKey: String
    public var vpnIP: String?
    public var capabilities: Capabilities
    public var address: String?
    public var version: String?
    public var timing: HeartbeatTiming?
    /// The pin of the node's TLS key (`sha256:…`): the lead calls the node only over TLS to that key.
    public var tlsPin: String?
    /// The node's TLS listener port (`tls.listen`), when it has one.
    public var tlsPort: Int?

    public init(
        token: String, name: String, profile: NodeRole, company: String?, labels: [String: String]?,
        wireguard: WireGuard, signPublicKey: String, boxPublicKey: String, vpnIP: String?,
        capabilities: Capabilities, address: String?, version: String?, timing: HeartbeatTiming?
    ) {
        self.token = token
        self.name = name
        self.profile = profile
        self.company = company
        self.labels = labels
        self.wireguard = wireguard
        self.signPublicKey = signPublicKey
        self.boxPublicKey = boxPublicKey
        self.vpnIP = vpnIP
        self.capabilities = capabilities
        self.address = address
        self.version = version
        self.timing = timing
    }

    /// The top-level fields a join may carry; anything else is refused.
    public static let fields = Set(CodingKeys.allCases.map(\.rawValue))

    enum CodingKeys: String, CodingKey, CaseIterable {
        case token, name, profile, company, labels, wireguard, capabilities, address, version, timing
        case tlsPin = "tls_pin"
        case tlsPort = "tls_port"
        case signPublicKey = "sign_public_key"
        case boxPublicKey = "box_public_key"
        case vpnIP = "vpn_ip"
    }
}

/// The answer to a join: the node's record and what it needs to know about the mesh.
public struct JoinResponse: Codable, Sendable, Equatable {
    public struct Mesh: Codable, Sendable, Equatable {
        public struct Lead: Codable, Sendable, Equatable {
            public var name: String
            public var url: String
            public var signPublicKey: String
            public var boxPublicKey: String

            public init(name: String, url: String, signPublicKey: String, boxPublicKey: String) {
                self.name = name
                self.url = url
                self.signPublicKey = signPublicKey
                self.boxPublicKey = boxPublicKey
            }

            enum CodingKeys: String, CodingKey {
                case name, url
                case signPublicKey = "sign_public_key"
                case boxPublicKey = "box_public_key"
            }
        }

        public var cidr: String
        public var lead: Lead
        public var meshID: String?

        public init(cidr: String, lead: Lead, meshID: String?) {
            self.cidr = cidr
            self.lead = lead
            self.meshID = meshID
        }

        enum CodingKeys: String, CodingKey {
            case cidr, lead
            case meshID = "mesh_id"
        }
    }

    public var node: Node
    public var mesh: Mesh

    public init(node: Node, mesh: Mesh) {
        self.node = node
        self.mesh = mesh
    }
}

// MARK: - Heartbeat

/// The RTT a node measured to one peer.
public struct PeerRTT: Codable, Sendable, Equatable {
    public var name: String
    public var rttMs: Double

    public init(name: String, rttMs: Double) {
        self.name = name
        self.rttMs = rttMs
    }

    enum CodingKeys: String, CodingKey {
        case name
        case rttMs = "rtt_ms"
    }
}

/// `POST /api/nodes/{name}/heartbeat` (signed).
///
/// `capabilities` and `labels` may be left out when they did not change since the node last
/// sent them; the lead keeps what it has (a node sends them in full at least every 30 s, and
/// whenever the lead's answer says `send_full`).
public struct HeartbeatRequest: Codable, Sendable, Equatable {
    public var capabilities: Capabilities?
    public var version: String
    public var labels: [String: String]?
    public var checks: [CheckResult]
    public var peers: [PeerRTT]
    public var address: String?
    public var timing: HeartbeatTiming
    /// The GPU worker: whether it takes jobs, and the jobs it runs (their leases are extended).
    public var worker: WorkerReport?
    /// The node's local PostgreSQL server, when it watches one.
    public var postgres: ReplicaHealth?
    /// How peers reach the node, and its interface's handshakes.
    public var wireguard: WireGuardReport?
    /// The node's TLS listener port, when it has one.
    public var tlsPort: Int?

    public init(
        capabilities: Capabilities?, version: String, labels: [String: String]?, checks: [CheckResult],
        peers: [PeerRTT], address: String?, timing: HeartbeatTiming, worker: WorkerReport? = nil,
        postgres: ReplicaHealth? = nil,
        wireguard: WireGuardReport? = nil
    ) {
        self.capabilities = capabilities
        self.version = version
        self.labels = labels
        self.checks = checks
        self.peers = peers
        self.address = address
        self.timing = timing
        self.worker = worker
        self.postgres = postgres
        self.wireguard = wireguard
    }

    /// The top-level fields a heartbeat may carry.
    public static let fields = Set(CodingKeys.allCases.map(\.rawValue))

    enum CodingKeys: String, CodingKey, CaseIterable {
        case capabilities, version, labels, checks, peers, address, timing, worker, postgres, wireguard
        case tlsPort = "tls_port"
    }
}

/// The lead's answer to a heartbeat.
public struct HeartbeatResponse: Codable, Sendable, Equatable {
    /// The node's state after this heartbeat.
    public var state: NodeState
    /// Grows whenever membership changes (join, leave, state, address); nodes refresh their
    /// cached registry when it moves.
    public var registryVersion: Int
    public var leadTime: String
    /// The lead wants capabilities and labels in full with the next heartbeat.
    public var sendFull: Bool
    /// Grows whenever a secret changes (`secret.changed`); nodes refresh their secrets cache
    /// when it moves.
    public var secretsVersion: Int?

    public init(
        state: NodeState, registryVersion: Int, leadTime: String, sendFull: Bool = false, secretsVersion: Int? = nil
    ) {
        self.state = state
        self.registryVersion = registryVersion
        self.leadTime = leadTime
        self.sendFull = sendFull
        self.secretsVersion = secretsVersion
    }

    enum CodingKeys: String, CodingKey {
        case state
        case registryVersion = "registry_version"
        case leadTime = "lead_time"
        case sendFull = "send_full"
        case secretsVersion = "secrets_version"
    }
}

// MARK: - Join tokens

/// `POST /api/tokens` (admin).
public struct TokenCreateRequest: Codable, Sendable, Equatable {
    /// `join` (the default): a node joins with it. `api`: a program calls the API with it.
    public var kind: TokenKind?
    /// The joining node's profile (join tokens; required there).
    public var profile: NodeRole?
    /// API tokens: what the program may do.
    public var role: APIRole?
    public var company: String?
    /// Lifetime in seconds (join tokens: default one hour; API tokens: default none).
    public var ttlS: Int?
    public var reusable: Bool?
    public var labels: [String: String]?

    public init(
        profile: NodeRole, company: String? = nil, ttlS: Int? = nil, reusable: Bool? = nil,
        labels: [String: String]? = nil
    ) {
        self.profile = profile
        self.company = company
        self.ttlS = ttlS
        self.reusable = reusable
        self.labels = labels
    }

    /// An API token request.
    public init(apiRole role: APIRole, company: String? = nil, ttlS: Int? = nil) {
        self.kind = .api
        self.role = role
        self.company = company
        self.ttlS = ttlS
    }

    /// The fields a token request may carry.
    public static let fields = Set(CodingKeys.allCases.map(\.rawValue))

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, profile, role, company, reusable, labels
        case ttlS = "ttl_s"
    }
}

/// What a token is for.
public enum TokenKind: String, Codable, Sendable, CaseIterable {
    case join, api
}

/// What a scoped API token may do (docs/API.md, section 3a).
public enum APIRole: String, Codable, Sendable, CaseIterable, Comparable {
    /// Reads: nodes, topology, jobs, queue, GPU status, connectivity, replicas, events.
    case read
    /// Reads, and generate jobs: submit, wait on and cancel its own.
    case submit
    /// Everything the mesh admin token may do.
    case admin

    public static func < (lhs: APIRole, rhs: APIRole) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// A scoped API token as listed: never the token itself.
public struct APITokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var role: APIRole
    public var company: String
    public var state: TokenInfo.State
    public var createdAt: String
    public var expiresAt: String?

    public init(
        id: String, role: APIRole, company: String, state: TokenInfo.State, createdAt: String, expiresAt: String?
    ) {
        self.id = id
        self.role = role
        self.company = company
        self.state = state
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case id, role, company, state
        case createdAt = "created_at"
        case expiresAt = "expires_at"
    }
}

/// A join token as listed: never the token itself.
public struct TokenInfo: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case active, used, expired, revoked
    }

    public var id: String
    public var profile: NodeRole
    public var company: String
    public var labels: [String: String]
    public var reusable: Bool
    public var uses: Int
    public var state: State
    public var createdAt: String
    public var expiresAt: String

    public init(
        id: String, profile: NodeRole, company: String, labels: [String: String], reusable: Bool, uses: Int,
        state: State, createdAt: String, expiresAt: String
    ) {
        self.id = id
        self.profile = profile
        self.company = company
        self.labels = labels
        self.reusable = reusable
        self.uses = uses
        self.state = state
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case id, profile, company, labels, reusable, uses, state
        case createdAt = "created_at"
        case expiresAt = "expires_at"
    }
}

/// The answer to `POST /api/tokens`: the only time the token is shown.
public struct TokenCreated: Codable, Sendable, Equatable {
    /// The token as a node takes it: `aurjoin_<secret>` and, when the lead serves TLS,
    /// `:sha256:<pin of the lead's key>` (the node checks the lead against it before it sends
    /// the secret).
    public var token: String
    public var info: TokenInfo
    /// The pin of the lead's TLS key, when it serves TLS.
    public var leadPin: String?
    /// The lead's URL for nodes (`tls.advertise`, or from `tls.listen`).
    public var leadURL: String?
    /// The command that joins a machine (the token read from a file, never argv).
    public var joinCommand: String?

    public init(
        token: String, info: TokenInfo, leadPin: String? = nil, leadURL: String? = nil, joinCommand: String? = nil
    ) {
        self.token = token
        self.info = info
        self.leadPin = leadPin
        self.leadURL = leadURL
        self.joinCommand = joinCommand
    }

    enum CodingKeys: String, CodingKey {
        case token, info
        case leadPin = "lead_pin"
        case leadURL = "lead_url"
        case joinCommand = "join_command"
    }
}

/// `GET /api/tokens`.
public struct TokenList: Codable, Sendable, Equatable {
    public var tokens: [TokenInfo]
    /// Scoped API tokens (`token create --kind api`).
    public var apiTokens: [APITokenInfo]?

    public init(tokens: [TokenInfo], apiTokens: [APITokenInfo]? = nil) {
        self.tokens = tokens
        self.apiTokens = apiTokens
    }

    enum CodingKeys: String, CodingKey {
        case tokens
        case apiTokens = "api_tokens"
    }
}

/// `POST /api/tokens` with `"kind": "api"`: the token, shown once, and its record.
public struct APITokenCreated: Codable, Sendable, Equatable {
    public var token: String
    public var info: APITokenInfo

    public init(token: String, info: APITokenInfo) {
        self.token = token
        self.info = info
    }
}

/// `PUT /nodes/{name}/labels`: the node's trusted labels, replaced whole (mesh admin).
public struct NodeLabelsUpdate: Codable, Sendable, Equatable {
    public var labels: [String: String]

    public init(labels: [String: String]) { self.labels = labels }

    public static let fields: Set<String> = ["labels"]
}
