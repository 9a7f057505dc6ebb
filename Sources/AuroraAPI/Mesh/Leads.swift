/// One lead's term: who leads the mesh from which epoch on, and the keys nodes check it by.
///
/// Every promotion raises the epoch. A lead signs its term with its own signing key; nodes check
/// that signature against the key their cached registry holds for a lead-eligible member (the
/// lead itself or a standby), so they follow a new lead without any new secret, DNS or floating IP.
public struct LeadTerm: Codable, Sendable, Equatable {
    /// Grows with every promotion; never reused.
    public var epoch: Int64
    /// The leading agent's node name.
    public var lead: String
    /// Where nodes reach it (`https://HOST:PORT` with TLS, else `http://HOST:PORT`).
    public var url: String
    public var signPublicKey: String
    public var boxPublicKey: String
    /// The pin of the lead's TLS key (`sha256:…`), when it serves TLS.
    public var tlsPin: String?
    /// The lead's TLS certificate (PEM), when it serves TLS: a node checks it against `tls_pin`
    /// and against the pin its cached registry holds for the lead.
    public var certificate: String?
    /// When the term began (ISO 8601).
    public var startedAt: String

    public init(
        epoch: Int64, lead: String, url: String, signPublicKey: String, boxPublicKey: String, tlsPin: String?,
        certificate: String?, startedAt: String
    ) {
        self.epoch = epoch
        self.lead = lead
        self.url = url
        self.signPublicKey = signPublicKey
        self.boxPublicKey = boxPublicKey
        self.tlsPin = tlsPin
        self.certificate = certificate
        self.startedAt = startedAt
    }

    /// The bytes a lead signs: a domain tag and every field, one per line, in a fixed order.
    /// A field that holds a line break cannot be a valid term, so no two terms share a message.
    public var signedMessage: [UInt8] {
        let fields = [
            "aurora-lead-term-v1", String(epoch), lead, url, signPublicKey, boxPublicKey, tlsPin ?? "",
            certificate ?? "", startedAt,
        ]
        return Array(fields.joined(separator: "\n").utf8)
    }

    enum CodingKeys: String, CodingKey {
        case epoch, lead, url, certificate
        case signPublicKey = "sign_public_key"
        case boxPublicKey = "box_public_key"
        case tlsPin = "tls_pin"
        case startedAt = "started_at"
    }
}

/// `GET /api/lead/handoff`: the current lead's term, signed by it (base64 Ed25519 over
/// ``LeadTerm/signedMessage``). Public: it holds nothing secret, and nodes trust it only through
/// the signature.
public struct LeadHandoff: Codable, Sendable, Equatable {
    public var term: LeadTerm
    public var signature: String

    public init(term: LeadTerm, signature: String) {
        self.term = term
        self.signature = signature
    }
}

/// What an agent knows of the mesh's leads: `GET /api/lead` (`aurora-cli lead status`).
public struct LeadStatus: Codable, Sendable, Equatable {
    /// What this agent is: `lead`, `standby` (lead-eligible, not leading), `fenced` (a lead that
    /// saw a newer term and acknowledges no writes) or `node`.
    public enum Role: String, Codable, Sendable {
        case lead, standby, fenced, node
    }

    public struct Standby: Codable, Sendable, Equatable {
        public var name: String
        public var state: NodeState
        public var url: String?
        public var lastSeen: String
        /// The lead's view of this standby's streaming replica (a lead with
        /// `store.replication_listen` only): `streaming`, `catching_up`, `disconnected` or `none`.
        public var replication: String?
        /// Commits wait for this standby (synchronous replication).
        public var sync: Bool?
        /// The standby may be the synchronous standby (false while it is recorded ineligible).
        public var eligible: Bool?
        /// Bytes of WAL the standby has not replayed yet; nil when it is not connected.
        public var lagBytes: UInt64?

        public init(name: String, state: NodeState, url: String?, lastSeen: String) {
            self.name = name
            self.state = state
            self.url = url
            self.lastSeen = lastSeen
        }

        enum CodingKeys: String, CodingKey {
            case name, state, url, replication, sync, eligible
            case lastSeen = "last_seen"
            case lagBytes = "lag_bytes"
        }
    }

    public var role: Role
    /// This agent's node name.
    public var agent: String
    /// The highest epoch this agent has seen.
    public var epoch: Int64?
    /// The lead of that epoch, as this agent knows it.
    public var lead: String?
    public var leadURL: String?
    /// Why a fenced lead stopped (the newer term's epoch and lead).
    public var fencedReason: String?
    /// Lead-eligible members (standbys) in the registry this agent holds.
    public var standbys: [Standby]
    /// The store's mode for failover: `shared` (both leads use one external PostgreSQL) or `managed`.
    public var store: String?
    /// This agent's view of the etcd election (`election.etcd` set); nil without etcd.
    public var election: Election?

    /// Where an agent stands in the etcd election for `/aurora/lead`.
    public struct Election: Codable, Sendable, Equatable {
        /// `leading`, `failsafe` (leading while etcd does not answer, on every standby's promise),
        /// `fenced` (stopped acknowledging; waits for its old lease to run out) or `follower`.
        public var state: String
        /// The key's holder as this agent last saw it (a follower).
        public var holder: String?
        /// Milliseconds until the lead fences itself unless a renewal (or every standby's promise)
        /// comes first; leading only.
        public var fenceInMs: Int64?
        /// The lease's TTL in seconds.
        public var ttlS: Int

        public init(state: String, holder: String? = nil, fenceInMs: Int64? = nil, ttlS: Int) {
            self.state = state
            self.holder = holder
            self.fenceInMs = fenceInMs
            self.ttlS = ttlS
        }

        enum CodingKeys: String, CodingKey {
            case state, holder
            case fenceInMs = "fence_in_ms"
            case ttlS = "ttl_s"
        }
    }

    public init(
        role: Role, agent: String, epoch: Int64?, lead: String?, leadURL: String?, fencedReason: String? = nil,
        standbys: [Standby] = [], store: String? = nil, election: Election? = nil
    ) {
        self.election = election
        self.role = role
        self.agent = agent
        self.epoch = epoch
        self.lead = lead
        self.leadURL = leadURL
        self.fencedReason = fencedReason
        self.standbys = standbys
        self.store = store
    }

    enum CodingKeys: String, CodingKey {
        case role, agent, epoch, lead, standbys, store, election
        case leadURL = "lead_url"
        case fencedReason = "fenced_reason"
    }
}

/// `POST /api/lead/promote` on a standby's own agent (its operator token).
public struct PromoteRequest: Codable, Sendable, Equatable {
    /// Promote even when the standby cannot show it holds everything the old lead acknowledged.
    public var acceptDataLoss: Bool?

    public init(acceptDataLoss: Bool? = nil) { self.acceptDataLoss = acceptDataLoss }

    enum CodingKeys: String, CodingKey {
        case acceptDataLoss = "accept_data_loss"
    }
}

/// The answer to a promotion: the new term, and whether the old lead stepped down when asked
/// (false: it did not answer, and the store's lock fenced it).
public struct PromoteResponse: Codable, Sendable, Equatable {
    public var term: LeadTerm
    public var oldLeadSteppedDown: Bool
    /// The agent restarts as the lead right after answering.
    public var restarting: Bool

    public init(term: LeadTerm, oldLeadSteppedDown: Bool, restarting: Bool) {
        self.term = term
        self.oldLeadSteppedDown = oldLeadSteppedDown
        self.restarting = restarting
    }

    enum CodingKeys: String, CodingKey {
        case term, restarting
        case oldLeadSteppedDown = "old_lead_stepped_down"
    }
}

/// `POST /api/lead/step-down` from a standby about to promote (signed by it): the lead stops
/// acknowledging writes at once and answers its epoch.
public struct StepDownResponse: Codable, Sendable, Equatable {
    public var epoch: Int64
    public var fenced: Bool
    /// The lead's WAL position once fenced (a managed store): a streaming standby has everything
    /// the lead acknowledged once it replayed this far.
    public var walLSN: String?

    public init(epoch: Int64, fenced: Bool, walLSN: String? = nil) {
        self.epoch = epoch
        self.fenced = fenced
        self.walLSN = walLSN
    }

    enum CodingKeys: String, CodingKey {
        case epoch, fenced
        case walLSN = "wal_lsn"
    }
}

/// `POST /api/lead/failsafe` from the lead to a standby (signed by the lead, for that standby),
/// sent every second while etcd does not answer the lead: the standby promises not to campaign
/// or promote for `ttl_ms` after it received it, or refuses.
public struct FailsafeRequest: Codable, Sendable, Equatable {
    /// The lead's epoch: a standby that has seen a higher one refuses.
    public var epoch: Int64
    /// How long the promise lasts, in milliseconds (the lead's etcd lease TTL): 1000 to 60000.
    public var ttlMs: Int64

    public init(epoch: Int64, ttlMs: Int64) {
        self.epoch = epoch
        self.ttlMs = ttlMs
    }

    /// The longest promise a standby gives (ms).
    public static let maxTTLMs: Int64 = 60_000
    /// The shortest (ms): etcd's own minimum lease is longer.
    public static let minTTLMs: Int64 = 1_000

    enum CodingKeys: String, CodingKey {
        case epoch
        case ttlMs = "ttl_ms"
    }
}

/// A standby's answer to ``FailsafeRequest``: it promised.
public struct FailsafeAnswer: Codable, Sendable, Equatable {
    /// The standby's node name.
    public var agent: String
    /// The promise, in milliseconds from when the standby received the request.
    public var promisedMs: Int64

    public init(agent: String, promisedMs: Int64) {
        self.agent = agent
        self.promisedMs = promisedMs
    }

    enum CodingKeys: String, CodingKey {
        case agent
        case promisedMs = "promised_ms"
    }
}

/// `POST /api/lead/rejoin`, signed by an old lead that a newer term fenced: it asks the lead to
/// take it back as a standby, keeping its name, keys and address. The answer is what a standby's
/// join gets (``JoinResponse``: the master key sealed to its box key, replication credentials
/// when the lead's managed store streams).
public struct LeadRejoinRequest: Codable, Sendable, Equatable {
    /// Where the caller's agent listens (`HOST:PORT`), as a join reports it.
    public var address: String?
    /// The pin of the caller's TLS key (`sha256:…`), when it serves TLS: the lead and the nodes
    /// reach it only over TLS to that key.
    public var tlsPin: String?
    /// The caller's TLS port, when it serves TLS.
    public var tlsPort: Int?

    public init(address: String? = nil, tlsPin: String? = nil, tlsPort: Int? = nil) {
        self.address = address
        self.tlsPin = tlsPin
        self.tlsPort = tlsPort
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case address
        case tlsPin = "tls_pin"
        case tlsPort = "tls_port"
    }

    /// The field names as JSON spells them (anything else is refused).
    public static let fields = Set(CodingKeys.allCases.map(\.rawValue))
}

/// The header every lead answer carries with its epoch, and nodes send with the highest one
/// they have seen (a hint the lead checks, never trusts).
public enum LeadEpochHeader {
    public static let name = "aurora-epoch"
}
