import AuroraAPI
import Foundation
import Mesh
import Secrets
import Synchronization

/// Scoped API tokens on the lead (`aurora-cli token create --kind api --role read|submit|admin
/// [--company C] [--ttl]`): stored as SHA-256 hashes in `api_tokens`, held in memory for the
/// per-request check, revocable. The token itself (`aurapi_<48 hex>`) is shown once.
final class APITokens: Sendable {
    /// What a valid token grants.
    struct Grant: Sendable, Equatable {
        var id: String
        var role: APIRole
        var company: String
        var expiresAt: Date?
        var revoked: Bool

        /// The caller name jobs record: `api:ID`, with `@COMPANY` when the token has one.
        /// An `admin` token's caller is the mesh admin itself, as for the operator token.
        var caller: String { role == .admin ? JobAccess.admin : "api:\(id)" + (company.isEmpty ? "" : "@\(company)") }
    }

    private let grants = Mutex<[String: Grant]>([:])  // hex SHA-256 of the token → grant
    private let store: Store

    init(store: Store) { self.store = store }

    /// Loads every token from the store (the lead's start).
    /// Rows that do not parse are skipped. Throws ``AgentError`` with code `store`; the registry
    /// service then retries the whole load.
    func load() async throws(AgentError) {
        let rows = try await store.query(
            "SELECT id, token_hash, role, company, \(SQL.iso("expires_at")), revoked_at IS NOT NULL FROM api_tokens"
        ).rows
        var loaded: [String: Grant] = [:]
        for row in rows {
            guard let id = row[0], let hash = row[1], let role = row[2].flatMap(APIRole.init(rawValue:)) else {
                continue
            }
            loaded[hash] = Grant(
                id: id, role: role, company: row[3] ?? "", expiresAt: row[4].flatMap(ISOTime.parse),
                revoked: row[5] == "t")
        }
        grants.withLock { $0 = loaded }
    }

    /// The grant of a presented token, when it is valid now.
    /// Checked on every request that carries a bearer token, from memory only (no store call):
    /// nil for anything that is not an `aurapi_` token, unknown, revoked or expired.
    func grant(for presented: String, now: Date = Date()) -> Grant? {
        guard presented.hasPrefix("aurapi_"), presented.utf8.count <= 128 else { return nil }
        let hash = Hex.encode(Crypto.sha256(Array(presented.utf8)))
        guard let grant = grants.withLock({ $0[hash] }), !grant.revoked, grant.expiresAt.map({ $0 > now }) ?? true
        else { return nil }
        return grant
    }

    /// `POST /api/tokens` with a role: stores the hash (and an expiry `ttl_s` seconds from now, at
    /// most 366 days) and returns the token, the only time it is shown. 400 for join-token fields
    /// or a bad company or TTL; 503 when the store fails (nothing is granted then).
    func create(_ request: TokenCreateRequest) async throws(Refusal) -> APITokenCreated {
        guard let role = request.role else {
            throw Refusal.badRequest("role: an API token needs a role: read, submit or admin")
        }
        guard request.profile == nil, request.reusable == nil, request.labels == nil else {
            throw Refusal.badRequest("profile, reusable and labels are for join tokens, not API tokens")
        }
        let company = request.company ?? ""
        do throws(MeshError) { try InputRules.identifier(company, field: "company", maxBytes: 128) } catch {
            throw Refusal.badRequest(error.message)
        }
        if let ttl = request.ttlS, !(1...(366 * 86_400)).contains(ttl) {
            throw Refusal.badRequest("ttl_s must be 1-\(366 * 86_400) seconds")
        }
        let id = "at_" + Hex.encode(Crypto.randomBytes(6))
        let token = "aurapi_" + Hex.encode(Crypto.randomBytes(24))
        let hash = Hex.encode(Crypto.sha256(Array(token.utf8)))
        let rows: [[String?]]
        do {
            rows = try await store.query(
                """
                INSERT INTO api_tokens (id, token_hash, role, company, expires_at)
                VALUES ($1, $2, $3, $4, CASE WHEN $5::integer IS NULL THEN NULL ELSE now() + make_interval(secs => $5::integer) END)
                RETURNING \(Self.columns)
                """, [id, hash, role.rawValue, company, request.ttlS.map(String.init)]
            ).rows
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        guard let row = rows.first, let info = Self.info(row) else {
            throw Refusal(.internalFailure, code: "internal", message: "the token was not stored")
        }
        grants.withLock {
            $0[hash] = Grant(
                id: id, role: role, company: company, expiresAt: info.expiresAt.flatMap(ISOTime.parse), revoked: false)
        }
        return APITokenCreated(token: token, info: info)
    }

    /// Every API token with its state (`active`, `expired`, `revoked`), oldest first; never a token.
    func list() async throws(Refusal) -> [APITokenInfo] {
        do {
            return try await store.query("SELECT \(Self.columns) FROM api_tokens ORDER BY created_at, id").rows
                .compactMap(Self.info)
        } catch {
            throw Refusal.storeUnavailable(error)
        }
    }

    /// Revokes by id (`at_...`); nil when no such token exists.
    func revoke(_ id: String) async throws(Refusal) -> APITokenInfo? {
        let rows: [[String?]]
        do {
            rows = try await store.query(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING \(Self.columns)",
                [id]
            ).rows
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        guard let info = rows.first.flatMap(Self.info) else { return nil }
        grants.withLock { grants in
            for (hash, grant) in grants where grant.id == id { grants[hash]?.revoked = true }
        }
        return info
    }

    /// The columns ``info(_:)`` reads, with the state computed by the store's clock.
    private static let columns = """
        id, role, company, \(SQL.iso("created_at")), \(SQL.iso("expires_at")),
        CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END
        """

    /// One row of ``columns``; nil when it does not parse.
    private static func info(_ row: [String?]) -> APITokenInfo? {
        guard row.count == 6, let id = row[0], let role = row[1].flatMap(APIRole.init(rawValue:)), let created = row[3],
            let state = row[5].flatMap(TokenInfo.State.init(rawValue:))
        else { return nil }
        return APITokenInfo(
            id: id, role: role, company: row[2] ?? "", state: state, createdAt: created, expiresAt: row[4])
    }
}
