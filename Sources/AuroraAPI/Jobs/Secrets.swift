// The secrets manager's part of the public contract (shared/DESIGN.md, API shapes).

/// `POST /api/secrets` (operator): a new version of a secret at one scope.
public struct SecretWrite: Codable, Sendable, Equatable {
    public var service: String
    public var keyName: String
    public var value: String
    /// `global`, `company` or `node`.
    public var scope: String
    /// The company or node name; empty or absent for global.
    public var scopeID: String?

    public init(service: String, keyName: String, value: String, scope: String, scopeID: String? = nil) {
        self.service = service
        self.keyName = keyName
        self.value = value
        self.scope = scope
        self.scopeID = scopeID
    }

    public static let fields: Set<String> = ["service", "key_name", "value", "scope", "scope_id"]

    enum CodingKeys: String, CodingKey {
        case service, value, scope
        case keyName = "key_name"
        case scopeID = "scope_id"
    }
}

/// A secret version's identity, without its value.
public struct SecretInfo: Codable, Sendable, Equatable {
    public var service: String
    public var keyName: String
    public var scope: String
    public var scopeID: String
    public var version: Int
    public var updatedAt: String?

    public init(
        service: String, keyName: String, scope: String, scopeID: String, version: Int, updatedAt: String? = nil
    ) {
        self.service = service
        self.keyName = keyName
        self.scope = scope
        self.scopeID = scopeID
        self.version = version
        self.updatedAt = updatedAt
    }

    enum CodingKeys: String, CodingKey {
        case service, scope, version
        case keyName = "key_name"
        case scopeID = "scope_id"
        case updatedAt = "updated_at"
    }
}

/// `GET /api/secrets` (operator): names, scopes, current versions and dates, never values.
public struct SecretList: Codable, Sendable, Equatable {
    public var secrets: [SecretInfo]

    public init(secrets: [SecretInfo]) { self.secrets = secrets }
}

/// `GET /api/secrets/{service}/{key_name}`: the value that resolves for a node, which scope won
/// and which version. To a node: `sealed_value` (crypto_box_seal to its box key) and the
/// lead's `signature`; to an operator previewing (`?node=` / `?company=`) and from a node's own
/// agent: `value`.
public struct SecretRead: Codable, Sendable, Equatable {
    public var service: String
    public var keyName: String
    public var scope: String
    public var scopeID: String
    public var version: Int
    public var sealedValue: String?
    public var signature: String?
    public var value: String?
    /// From a node's cache while the lead is away: seconds since it was fetched.
    public var cachedAgeS: Double?

    public init(
        service: String, keyName: String, scope: String, scopeID: String, version: Int, sealedValue: String? = nil,
        signature: String? = nil, value: String? = nil, cachedAgeS: Double? = nil
    ) {
        self.service = service
        self.keyName = keyName
        self.scope = scope
        self.scopeID = scopeID
        self.version = version
        self.sealedValue = sealedValue
        self.signature = signature
        self.value = value
        self.cachedAgeS = cachedAgeS
    }

    /// What the lead signs for a node: every field of the answer and the sealed bytes' hash.
    public static func signedText(
        service: String, keyName: String, scope: String, scopeID: String, version: Int, node: String,
        sealedSHA256Hex: String
    ) -> String {
        "aurora-secret-v1\n\(service)\n\(keyName)\n\(scope)\n\(scopeID)\n\(version)\n\(node)\n\(sealedSHA256Hex)"
    }

    enum CodingKeys: String, CodingKey {
        case service, scope, version, signature, value
        case keyName = "key_name"
        case scopeID = "scope_id"
        case sealedValue = "sealed_value"
        case cachedAgeS = "cached_age_s"
    }
}

/// `GET /api/secrets/{service}/{key_name}/versions?scope=&scope_id=` (operator).
public struct SecretVersions: Codable, Sendable, Equatable {
    public struct Version: Codable, Sendable, Equatable {
        public var version: Int
        public var createdAt: String
        public var createdBy: String
        public var current: Bool
        /// A rollback's new version names the version it restored.
        public var restoredFrom: Int?

        public init(version: Int, createdAt: String, createdBy: String, current: Bool, restoredFrom: Int? = nil) {
            self.version = version
            self.createdAt = createdAt
            self.createdBy = createdBy
            self.current = current
            self.restoredFrom = restoredFrom
        }

        enum CodingKeys: String, CodingKey {
            case version, current
            case createdAt = "created_at"
            case createdBy = "created_by"
            case restoredFrom = "restored_from"
        }
    }

    public var service: String
    public var keyName: String
    public var scope: String
    public var scopeID: String
    public var versions: [Version]

    public init(service: String, keyName: String, scope: String, scopeID: String, versions: [Version]) {
        self.service = service
        self.keyName = keyName
        self.scope = scope
        self.scopeID = scopeID
        self.versions = versions
    }

    enum CodingKeys: String, CodingKey {
        case service, scope, versions
        case keyName = "key_name"
        case scopeID = "scope_id"
    }
}

/// `POST /api/secrets/{service}/{key_name}/rollback` (operator): a new version with the value
/// of an earlier one.
public struct SecretRollback: Codable, Sendable, Equatable {
    public var scope: String
    public var scopeID: String?
    public var version: Int

    public init(scope: String, scopeID: String? = nil, version: Int) {
        self.scope = scope
        self.scopeID = scopeID
        self.version = version
    }

    public static let fields: Set<String> = ["scope", "scope_id", "version"]

    enum CodingKeys: String, CodingKey {
        case scope, version
        case scopeID = "scope_id"
    }
}

/// One entry of the audit log, as `GET /api/audit` shows it.
public struct AuditEntry: Codable, Sendable, Equatable {
    public var seq: Int64
    public var at: String
    public var actor: String
    public var action: String
    public var service: String
    public var keyName: String
    public var node: String?
    public var scope: String?
    public var version: Int?
    public var result: String
    public var previousHash: String
    public var hash: String

    public init(
        seq: Int64, at: String, actor: String, action: String, service: String, keyName: String, node: String?,
        scope: String?,
        version: Int?, result: String, previousHash: String, hash: String
    ) {
        self.seq = seq
        self.at = at
        self.actor = actor
        self.action = action
        self.service = service
        self.keyName = keyName
        self.node = node
        self.scope = scope
        self.version = version
        self.result = result
        self.previousHash = previousHash
        self.hash = hash
    }

    enum CodingKeys: String, CodingKey {
        case seq, at, actor, action, service, node, scope, version, result, hash
        case keyName = "key_name"
        case previousHash = "previous_hash"
    }
}

/// `GET /api/audit[?verify=true]` (operator).
public struct AuditLog: Codable, Sendable, Equatable {
    public var entries: [AuditEntry]
    /// With `verify`: whether the whole chain holds, and the first problem if not.
    public var verified: Bool?
    public var problem: String?

    public init(entries: [AuditEntry], verified: Bool? = nil, problem: String? = nil) {
        self.entries = entries
        self.verified = verified
        self.problem = problem
    }
}

/// `POST /api/secrets/rotate-key` (operator): every data key re-wrapped under a new
/// key-encryption key.
public struct SecretRotation: Codable, Sendable, Equatable {
    public var fromVersion: Int
    public var toVersion: Int
    public var rewrapped: Int
    public var seconds: Double

    public init(fromVersion: Int, toVersion: Int, rewrapped: Int, seconds: Double) {
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.rewrapped = rewrapped
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey {
        case rewrapped, seconds
        case fromVersion = "from_version"
        case toVersion = "to_version"
    }
}

extension EventType {
    /// A secret changed: names, scope and version only, never the value.
    public static let secretChanged = "secret.changed"
}
