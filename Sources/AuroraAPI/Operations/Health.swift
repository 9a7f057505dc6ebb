/// The role a node plays in the mesh, selected by `--profile` (shared/DESIGN.md, Roles).
public enum NodeRole: String, Codable, Sendable, CaseIterable {
    /// Runs everything, plus the registry, IP allocation, GPU coordinator, secrets and the store.
    case lead
    /// A GPU box or VM: heartbeat, WireGuard peer, GPU worker, replica monitor, secrets cache.
    case compute
    /// A laptop behind NAT: lenient heartbeats, keepalive, secrets cache, no jobs by default.
    case edge
    /// A standby lead: a node that is lead-eligible (its keys are in every node's cache) and can
    /// be promoted (`aurora-cli lead promote`).
    case standby
}

/// What the agent's store is doing right now.
public enum StoreState: String, Codable, Sendable {
    /// This node keeps no store (only the lead does).
    case none
    /// The managed cluster is being initialised or started, or the connection is being made.
    case starting
    /// Connected, migrations applied.
    case ok
    /// Connection lost or startup failed; `message` in ``StoreHealth`` says why.
    case failed
    /// Stopping during a graceful shutdown.
    case stopping
}

/// Whether the store is a PostgreSQL cluster the agent owns or one it was pointed at.
public enum StoreMode: String, Codable, Sendable {
    /// `DATA/postgres`, started and stopped by the agent.
    case managed
    /// A server named by `--store URL`.
    case external
    /// No store on this node.
    case none
}

/// The store part of ``HealthResponse``.
public struct StoreHealth: Codable, Sendable, Equatable {
    public var state: StoreState
    public var mode: StoreMode
    /// The highest schema migration applied, once connected.
    public var schemaVersion: Int?
    /// Why the store is not `ok`, when it is not.
    public var message: String?

    public init(state: StoreState, mode: StoreMode, schemaVersion: Int? = nil, message: String? = nil) {
        self.state = state
        self.mode = mode
        self.schemaVersion = schemaVersion
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case state, mode, message
        case schemaVersion = "schema_version"
    }
}

/// The lead as a compute or edge node sees it: the `lead` part of ``HealthResponse`` (absent on
/// the lead itself).
public struct LeadHealth: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// The last call to the lead (a heartbeat, or the join) got an answer.
        case reachable
        /// The last call to the lead got none: the node serves its cached views.
        case unreachable
        /// No call to the lead has finished yet (the agent just started).
        case unknown
    }

    public var state: State
    /// When the lead stopped answering (ISO 8601, UTC), while it is `unreachable`.
    public var since: String?
    /// Seconds since then, while it is `unreachable`.
    public var unreachableS: Double?

    public init(state: State, since: String? = nil, unreachableS: Double? = nil) {
        self.state = state
        self.since = since
        self.unreachableS = unreachableS
    }

    enum CodingKeys: String, CodingKey {
        case state, since
        case unreachableS = "unreachable_s"
    }
}

/// `GET /health?strict=`: whether a `degraded` agent that still serves (its lead is away) answers
/// 503 instead of 200.
public enum HealthStrictness {
    /// `strict`'s value: absent, `0` or `false` → false; empty (`?strict`), `1` or `true` → true;
    /// anything else → nil (the agent refuses it with 400).
    public static func parse(_ text: String?) -> Bool? {
        switch text?.lowercased() {
        case nil, "0", "false": false
        case "", "1", "true": true
        default: nil
        }
    }
}

/// `GET /health`: the answer of every agent, with no authentication.
///
/// `status` is `ok` when everything this node runs is working, `starting` while it comes up,
/// `degraded` when a part has failed or, on a compute or edge node, while its lead is
/// unreachable (`lead.state`). The HTTP status is 200 for `ok` and for a `degraded` node that
/// still serves (``servesWithoutLead``), 503 otherwise; with `?strict=1`, 503 for anything but `ok`.
public struct HealthResponse: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case ok, starting, degraded, stopping
    }

    public var status: Status
    public var node: String
    public var role: NodeRole
    public var version: String
    public var uptimeS: Double
    public var store: StoreHealth
    /// The local PostgreSQL server, when the agent watches one (`postgres.monitor`).
    public var postgres: ReplicaHealth?
    /// The profile's service checks (`checks`), when it has any. They do not change `status`:
    /// the agent works whatever the services it watches do.
    public var checks: [CheckResult]?
    /// The worst status among `checks`.
    public var checksStatus: CheckResult.Status?
    /// Resource alerts raised and not cleared (`cpu`, `memory`, `disk`).
    public var alerts: [String]?
    /// The lead's Redis fan-out, when `events.redis` is set; Redis being down does not change `status`.
    public var redis: RedisHealth?
    /// Reports waiting in this node's outbox for the lead.
    public var outboxPending: Int?
    /// Whether this node reaches its lead (compute and edge nodes only).
    public var lead: LeadHealth?
    /// On a lead: its term's epoch.
    public var epoch: Int64?
    /// On a lead that saw a newer term: why it acknowledges nothing (`status` is `degraded`).
    public var fenced: String?

    /// `degraded` only because the lead is unreachable: the agent itself works and serves its
    /// cached views, so liveness checks still pass (200) unless they ask `?strict=1`.
    public var servesWithoutLead: Bool {
        status == .degraded && lead?.state == .unreachable && store.state != .failed
    }

    public init(
        status: Status, node: String, role: NodeRole, version: String, uptimeS: Double, store: StoreHealth,
        postgres: ReplicaHealth? = nil
    ) {
        self.status = status
        self.node = node
        self.role = role
        self.version = version
        self.uptimeS = uptimeS
        self.store = store
        self.postgres = postgres
    }

    enum CodingKeys: String, CodingKey {
        case status, node, role, version, store, postgres, checks, alerts, redis, lead, epoch, fenced
        case uptimeS = "uptime_s"
        case checksStatus = "checks_status"
        case outboxPending = "outbox_pending"
    }
}

/// `GET /api/agent` (operator token): what `aurora-cli status` shows about the local agent.
public struct AgentStatus: Codable, Sendable, Equatable {
    /// The node's public identity. Never any private key.
    public struct Identity: Codable, Sendable, Equatable {
        public var wireguardPublicKey: String
        public var signPublicKey: String
        public var boxPublicKey: String

        public init(wireguardPublicKey: String, signPublicKey: String, boxPublicKey: String) {
            self.wireguardPublicKey = wireguardPublicKey
            self.signPublicKey = signPublicKey
            self.boxPublicKey = boxPublicKey
        }

        enum CodingKeys: String, CodingKey {
            case wireguardPublicKey = "wireguard_public_key"
            case signPublicKey = "sign_public_key"
            case boxPublicKey = "box_public_key"
        }
    }

    public var health: HealthResponse
    public var pid: Int32
    public var dataDir: String
    public var listen: String
    public var startedAt: String
    public var identity: Identity
    /// The mesh this lead's store belongs to (lead only, once the store is ready).
    public var meshID: String?

    public init(
        health: HealthResponse, pid: Int32, dataDir: String, listen: String, startedAt: String, identity: Identity,
        meshID: String? = nil
    ) {
        self.meshID = meshID
        self.health = health
        self.pid = pid
        self.dataDir = dataDir
        self.listen = listen
        self.startedAt = startedAt
        self.identity = identity
    }

    enum CodingKeys: String, CodingKey {
        case health, pid, listen, identity
        case dataDir = "data_dir"
        case startedAt = "started_at"
        case meshID = "mesh_id"
    }
}
