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
    /// For a standby lead only: the secrets master key (base64), sealed to the standby's box key
    /// (`crypto_box_seal`), so a promoted standby opens every stored secret.
    public var sealedMasterKey: String?
    /// For a standby lead of a lead whose managed store streams its WAL (`store.replication_listen`)
    /// only: where and as whom the standby clones and streams the lead's PostgreSQL.
    public var replication: Replication?
    /// The answering lead's epoch: the node refuses any lead of a lower one from its join on.
    public var epoch: Int64?

    public init(node: Node, mesh: Mesh, epoch: Int64? = nil) {
        self.node = node
        self.mesh = mesh
        self.epoch = epoch
    }

    enum CodingKeys: String, CodingKey {
        case node, mesh, replication, epoch
        case sealedMasterKey = "sealed_master_key"
    }
}

extension JoinResponse {
    /// A standby's replication credentials: the lead's listener (an IP literal and a port), the
    /// standby's own replication role and slot, the lead's self-signed certificate (PEM, pinned),
    /// and the role's password sealed to the standby's box key (`crypto_box_seal`, base64): it is
    /// never in the clear on the wire, in a file or a log.
    public struct Replication: Codable, Sendable, Equatable {
        public var host: String
        public var port: Int
        public var user: String
        public var slot: String
        public var certificate: String
        public var sealedPassword: String

        public init(host: String, port: Int, user: String, slot: String, certificate: String, sealedPassword: String) {
            self.host = host
            self.port = port
            self.user = user
            self.slot = slot
            self.certificate = certificate
            self.sealedPassword = sealedPassword
        }

        enum CodingKeys: String, CodingKey {
            case host, port, user, slot, certificate
            case sealedPassword = "sealed_password"
        }
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
    /// Where the node serves `/metrics` alone (`metrics.listen`), when it does.
    public var metricsAddress: String?

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
        case metricsAddress = "metrics_address"
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
    /// The answering lead's epoch: a node refuses an answer from a lower one than it has seen.
    public var epoch: Int64?

    public init(
        state: NodeState, registryVersion: Int, leadTime: String, sendFull: Bool = false, secretsVersion: Int? = nil,
        epoch: Int64? = nil
    ) {
        self.epoch = epoch
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
        case epoch
    }
}
