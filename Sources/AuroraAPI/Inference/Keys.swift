/// `POST /api/keys`: a key for the OpenAI-compatible gateway (`aurk_…`), good for the `/v1/`
/// routes only, never for the rest of the API.
public struct GatewayKeyCreateRequest: Codable, Sendable, Equatable {
    /// Who uses it (a program's name): 1-128 bytes of `[A-Za-z0-9._-]`.
    public var app: String
    /// The company it is counted under (same rules; none by default).
    public var company: String?
    /// The models it may call (mesh names); nil: every model.
    public var models: [String]?
    /// Requests per minute (1-1000000); nil: no limit.
    public var rpm: Int?
    /// Tokens per minute, prompt and completion together (1-1000000000); nil: no limit.
    public var tpm: Int?
    /// Lifetime in seconds (1 s to 366 days); nil: until revoked.
    public var ttlS: Int?

    public init(
        app: String, company: String? = nil, models: [String]? = nil, rpm: Int? = nil, tpm: Int? = nil,
        ttlS: Int? = nil
    ) {
        self.app = app
        self.company = company
        self.models = models
        self.rpm = rpm
        self.tpm = tpm
        self.ttlS = ttlS
    }

    public static let fields: Set<String> = ["app", "company", "models", "rpm", "tpm", "ttl_s"]
    public static let maxModels = 64

    enum CodingKeys: String, CodingKey {
        case app, company, models, rpm, tpm
        case ttlS = "ttl_s"
    }
}

/// A gateway key as listed: never the key itself.
public struct GatewayKeyInfo: Codable, Sendable, Equatable {
    public var id: String
    public var app: String
    public var company: String
    public var models: [String]?
    public var rpm: Int?
    public var tpm: Int?
    public var state: TokenInfo.State
    public var createdAt: String
    public var expiresAt: String?

    public init(
        id: String, app: String, company: String, models: [String]?, rpm: Int?, tpm: Int?, state: TokenInfo.State,
        createdAt: String, expiresAt: String?
    ) {
        self.id = id
        self.app = app
        self.company = company
        self.models = models
        self.rpm = rpm
        self.tpm = tpm
        self.state = state
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case id, app, company, models, rpm, tpm, state
        case createdAt = "created_at"
        case expiresAt = "expires_at"
    }
}

/// The answer to `POST /api/keys`: the only time the key is shown.
public struct GatewayKeyCreated: Codable, Sendable, Equatable {
    public var key: String
    public var info: GatewayKeyInfo

    public init(key: String, info: GatewayKeyInfo) {
        self.key = key
        self.info = info
    }
}

/// `GET /api/keys`.
public struct GatewayKeyList: Codable, Sendable, Equatable {
    public var keys: [GatewayKeyInfo]

    public init(keys: [GatewayKeyInfo]) { self.keys = keys }
}

/// What the gateway served one caller for one model: requests, and tokens as the backends
/// reported them (`usage`), or as counted from a stream that reported none.
public struct GatewayUsage: Codable, Sendable, Equatable {
    /// A key's id (`gk_…`), or the caller for other credentials (`operator`, `api:ID`, `node:NAME`).
    public var key: String
    public var app: String?
    public var model: String
    public var requests: Int64
    public var promptTokens: Int64
    public var completionTokens: Int64

    public var totalTokens: Int64 { promptTokens + completionTokens }

    public init(
        key: String, app: String? = nil, model: String, requests: Int64, promptTokens: Int64, completionTokens: Int64
    ) {
        self.key = key
        self.app = app
        self.model = model
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }

    enum CodingKeys: String, CodingKey {
        case key, app, model, requests
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case totalTokens = "total_tokens"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        key = try container.decode(String.self, forKey: .key)
        app = try container.decodeIfPresent(String.self, forKey: .app)
        model = try container.decode(String.self, forKey: .model)
        requests = try container.decode(Int64.self, forKey: .requests)
        promptTokens = try container.decode(Int64.self, forKey: .promptTokens)
        completionTokens = try container.decode(Int64.self, forKey: .completionTokens)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(key, forKey: .key)
        try container.encodeIfPresent(app, forKey: .app)
        try container.encode(model, forKey: .model)
        try container.encode(requests, forKey: .requests)
        try container.encode(promptTokens, forKey: .promptTokens)
        try container.encode(completionTokens, forKey: .completionTokens)
        try container.encode(totalTokens, forKey: .totalTokens)
    }
}

/// `GET /api/keys/usage`.
public struct GatewayUsageList: Codable, Sendable, Equatable {
    public var usage: [GatewayUsage]

    public init(usage: [GatewayUsage]) { self.usage = usage }
}
