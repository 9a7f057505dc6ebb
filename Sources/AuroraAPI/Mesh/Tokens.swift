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

/// Whether the lead places new jobs on a node, as an operator set it (`aurora-cli nodes
/// cordon|drain|uncordon`). Raw values are the API's `state`.
public enum SchedulingState: String, Codable, Sendable, CaseIterable {
    /// New jobs may be placed (the default).
    case open
    /// No new jobs; running ones go on.
    case cordoned
    /// No new jobs; running ones finish or are handed back at the deadline.
    case draining
}

/// A node's scheduling state; left out of a node's JSON while it is `open`.
public struct NodeScheduling: Codable, Sendable, Equatable {
    public var state: SchedulingState
    /// Draining: when the running jobs are handed back (ISO 8601).
    public var deadline: String?
    /// When an operator set it (ISO 8601).
    public var since: String?

    public init(state: SchedulingState, deadline: String? = nil, since: String? = nil) {
        self.state = state
        self.deadline = deadline
        self.since = since
    }
}

/// `PUT /nodes/{name}/scheduling`.
public struct NodeSchedulingUpdate: Codable, Sendable, Equatable {
    public var state: SchedulingState
    /// `draining`: seconds until running jobs are handed back (0–604800; default 3600).
    public var deadlineS: Double?

    public init(state: SchedulingState, deadlineS: Double? = nil) {
        self.state = state
        self.deadlineS = deadlineS
    }

    public static let fields: Set<String> = ["state", "deadline_s"]
    /// The longest drain deadline: a week.
    public static let maxDeadlineS: Double = 604_800
    public static let defaultDeadlineS: Double = 3600

    enum CodingKeys: String, CodingKey {
        case state
        case deadlineS = "deadline_s"
    }
}

/// `PUT /nodes/{name}/company`: the node's company, set by an operator ("" for none).
public struct NodeCompanyUpdate: Codable, Sendable, Equatable {
    public var company: String

    public init(company: String) { self.company = company }

    public static let fields: Set<String> = ["company"]
}
