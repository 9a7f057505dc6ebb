// PostgreSQL replica health (shared/DESIGN.md, ReplicaHealth): what an agent sees of its local
// server, carried in heartbeats, served by `/api/postgres/*` and the load-balancer checks.

/// One standby as the primary sees it (`pg_stat_replication`, with its slot).
public struct StandbyView: Codable, Sendable, Equatable {
    public var applicationName: String
    public var clientAddr: String?
    /// `pg_stat_replication.state`: startup, catchup, streaming, backup, stopping.
    public var state: String
    public var sentLSN: String?
    public var writeLSN: String?
    public var flushLSN: String?
    public var replayLSN: String?
    /// The primary's current WAL position minus the standby's replay position.
    public var lagBytes: Int64?
    public var writeLagS: Double?
    public var flushLagS: Double?
    public var replayLagS: Double?
    /// The replication slot the standby streams through, when it uses one.
    public var slot: String?

    public init(
        applicationName: String, clientAddr: String?, state: String, sentLSN: String?, writeLSN: String?,
        flushLSN: String?,
        replayLSN: String?, lagBytes: Int64?, writeLagS: Double?, flushLagS: Double?, replayLagS: Double?, slot: String?
    ) {
        self.applicationName = applicationName
        self.clientAddr = clientAddr
        self.state = state
        self.sentLSN = sentLSN
        self.writeLSN = writeLSN
        self.flushLSN = flushLSN
        self.replayLSN = replayLSN
        self.lagBytes = lagBytes
        self.writeLagS = writeLagS
        self.flushLagS = flushLagS
        self.replayLagS = replayLagS
        self.slot = slot
    }

    enum CodingKeys: String, CodingKey {
        case state, slot
        case applicationName = "application_name"
        case clientAddr = "client_addr"
        case sentLSN = "sent_lsn"
        case writeLSN = "write_lsn"
        case flushLSN = "flush_lsn"
        case replayLSN = "replay_lsn"
        case lagBytes = "lag_bytes"
        case writeLagS = "write_lag_s"
        case flushLagS = "flush_lag_s"
        case replayLagS = "replay_lag_s"
    }
}

/// A replication slot on a primary.
public struct SlotView: Codable, Sendable, Equatable {
    public var name: String
    public var active: Bool
    /// WAL the slot keeps on the primary's disk.
    public var retainedBytes: Int64?

    public init(name: String, active: Bool, retainedBytes: Int64?) {
        self.name = name
        self.active = active
        self.retainedBytes = retainedBytes
    }

    enum CodingKeys: String, CodingKey {
        case name, active
        case retainedBytes = "retained_bytes"
    }
}

/// A standby's WAL receiver (`pg_stat_wal_receiver`).
public struct ReceiverView: Codable, Sendable, Equatable {
    public var status: String
    /// `host:port` of the server it streams from.
    public var sender: String?
    public var lastMsgAgeS: Double?
    public var slot: String?

    public init(status: String, sender: String?, lastMsgAgeS: Double?, slot: String?) {
        self.status = status
        self.sender = sender
        self.lastMsgAgeS = lastMsgAgeS
        self.slot = slot
    }

    enum CodingKeys: String, CodingKey {
        case status, sender, slot
        case lastMsgAgeS = "last_msg_age_s"
    }
}

/// What an agent knows of its local PostgreSQL server.
public struct ReplicaHealth: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable {
        case primary, replica, unknown
    }

    public var role: Role
    /// streaming | catching_up | stalled | disconnected | not_a_replica | down | primary
    public var state: String
    /// Why the state is what it is, in a few words.
    public var reason: String
    /// True when the lag is over the profile's limits or the state is worse than catching up.
    public var degraded: Bool
    public var lagBytes: Int64?
    public var lagS: Double?
    public var receiveLSN: String?
    public var replayLSN: String?
    public var receiver: ReceiverView?
    /// On a primary: each connected standby.
    public var standbys: [StandbyView]?
    /// On a primary: every replication slot.
    public var slots: [SlotView]?
    /// On a primary: slots with no active standby that retain more WAL than `postgres.slot_max_retained_bytes`.
    public var inactiveSlots: [SlotView]?
    /// When the sample was taken (ISO 8601).
    public var sampledAt: String
    /// The limits the state was judged by.
    public var maxLagS: Double?
    public var maxLagBytes: Int64?

    public init(
        role: Role, state: String, reason: String, degraded: Bool, lagBytes: Int64? = nil, lagS: Double? = nil,
        receiveLSN: String? = nil, replayLSN: String? = nil, receiver: ReceiverView? = nil,
        standbys: [StandbyView]? = nil,
        slots: [SlotView]? = nil, inactiveSlots: [SlotView]? = nil, sampledAt: String, maxLagS: Double? = nil,
        maxLagBytes: Int64? = nil
    ) {
        self.role = role
        self.state = state
        self.reason = reason
        self.degraded = degraded
        self.lagBytes = lagBytes
        self.lagS = lagS
        self.receiveLSN = receiveLSN
        self.replayLSN = replayLSN
        self.receiver = receiver
        self.standbys = standbys
        self.slots = slots
        self.inactiveSlots = inactiveSlots
        self.sampledAt = sampledAt
        self.maxLagS = maxLagS
        self.maxLagBytes = maxLagBytes
    }

    enum CodingKeys: String, CodingKey {
        case role, state, reason, degraded, receiver, standbys, slots
        case lagBytes = "lag_bytes"
        case lagS = "lag_s"
        case receiveLSN = "receive_lsn"
        case replayLSN = "replay_lsn"
        case inactiveSlots = "inactive_slots"
        case sampledAt = "sampled_at"
        case maxLagS = "max_lag_s"
        case maxLagBytes = "max_lag_bytes"
    }
}

/// `GET /api/postgres/replicas` (lead): each node's own view of its server beside what the
/// primary sees of it.
public struct ReplicaOverview: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var node: String
        /// The node's registry state (alive, dead, ...): a dead node's view is old.
        public var nodeState: NodeState
        /// What the node's agent last reported; nil when it has no monitor.
        public var local: ReplicaHealth?
        /// What the primary reports of this standby, matched by slot name or application name.
        public var primaryView: StandbyView?

        public init(node: String, nodeState: NodeState, local: ReplicaHealth?, primaryView: StandbyView?) {
            self.node = node
            self.nodeState = nodeState
            self.local = local
            self.primaryView = primaryView
        }

        enum CodingKeys: String, CodingKey {
            case node, local
            case nodeState = "node_state"
            case primaryView = "primary_view"
        }
    }

    /// The node whose server is the primary, when one reports being it.
    public var primary: String?
    public var members: [Member]
    /// Standbys the primary reports that no node claims (a replica without an agent).
    public var unmatched: [StandbyView]

    public init(primary: String?, members: [Member], unmatched: [StandbyView]) {
        self.primary = primary
        self.members = members
        self.unmatched = unmatched
    }
}

/// The answer of the load-balancer checks (`/postgres/primary`, `/postgres/replica`,
/// `/postgres/read-only`): 200 or 503, with the reason.
public struct PostgresCheck: Codable, Sendable, Equatable {
    public var ok: Bool
    public var role: ReplicaHealth.Role
    public var state: String
    public var reason: String
    public var lagBytes: Int64?
    public var lagS: Double?

    public init(ok: Bool, role: ReplicaHealth.Role, state: String, reason: String, lagBytes: Int64?, lagS: Double?) {
        self.ok = ok
        self.role = role
        self.state = state
        self.reason = reason
        self.lagBytes = lagBytes
        self.lagS = lagS
    }

    enum CodingKeys: String, CodingKey {
        case ok, role, state, reason
        case lagBytes = "lag_bytes"
        case lagS = "lag_s"
    }
}

extension EventType {
    /// A node's replica state changed: `{"from","to","lag_bytes"?,"lag_s"?,"reason"}`.
    public static let replicaStateChanged = "replica.state_changed"
    /// A primary's slot retains WAL for no one: `{"slot","retained_bytes"}`.
    public static let replicaSlotInactive = "replica.slot_inactive"
}
