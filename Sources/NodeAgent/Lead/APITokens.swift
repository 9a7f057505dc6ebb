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
    private let store: any TokenStore

    init(store: any TokenStore) { self.store = store }

    /// Loads every token from the store (the lead's start).
    /// Rows that do not parse are skipped. Throws ``AgentError`` with code `store`; the registry
    /// service then retries the whole load.
    func load() async throws(AgentError) {
        let loaded = try await store.apiTokenGrants()
        grants.withLock { $0 = loaded }
    }

    /// The grant of a presented token, when it is valid now.
    /// Checked on every request that carries a bearer token, from memory only (no store call):
    /// nil for anything that is not an `aurapi_` token, unknown, revoked or expired.
    func grant(for presented: String, now: Date = Date()) -> Grant? {
        // `aur_`: a lead's operator token recorded in the store (another lead's, after a promotion).
        guard presented.hasPrefix("aurapi_") || presented.hasPrefix("aur_"), presented.utf8.count <= 128 else {
            return nil
        }
        return grant(hash: Hex.encode(Crypto.sha256(Array(presented.utf8))), now: now)
    }

    /// The grant of the token whose hex SHA-256 is `hash`, when it is valid now (a console
    /// session checks the token it signed in with this way, holding only its hash).
    func grant(hash: String, now: Date = Date()) -> Grant? {
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
        let info: APITokenInfo
        do {
            info = try await store.insertAPIToken(
                NewAPIToken(id: id, hash: hash, role: role, company: company, ttlS: request.ttlS))
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        grants.withLock {
            $0[hash] = Grant(
                id: id, role: role, company: company, expiresAt: info.expiresAt.flatMap(ISOTime.parse), revoked: false)
        }
        return APITokenCreated(token: token, info: info)
    }

    /// Every API token with its state (`active`, `expired`, `revoked`), oldest first; never a token.
    func list() async throws(Refusal) -> [APITokenInfo] {
        do { return try await store.apiTokens() } catch { throw Refusal.storeUnavailable(error) }
    }

    /// Revokes by id (`at_...`); nil when no such token exists.
    func revoke(_ id: String) async throws(Refusal) -> APITokenInfo? {
        let revoked: APITokenInfo?
        do { revoked = try await store.revokeAPIToken(id) } catch { throw Refusal.storeUnavailable(error) }
        guard let info = revoked else { return nil }
        grants.withLock { grants in
            for (hash, grant) in grants where grant.id == id { grants[hash]?.revoked = true }
        }
        return info
    }
}
