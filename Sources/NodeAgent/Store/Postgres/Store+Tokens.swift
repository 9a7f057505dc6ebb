import AuroraAPI
import Foundation

extension Store: TokenStore {
    func insertJoinToken(_ token: NewJoinToken) async throws(AgentError) -> TokenInfo {
        let row = try await query(
            """
            INSERT INTO join_tokens (id, token_hash, profile, company, labels, reusable, expires_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6, now() + make_interval(secs => $7::integer))
            RETURNING \(TokenRows.joinColumns)
            """,
            [
                token.id, token.hash, token.profile.rawValue, token.company, SQL.json(token.labels),
                token.reusable ? "true" : "false", String(token.ttlS),
            ]
        ).rows.first
        guard let info = row.flatMap(TokenRows.joinInfo) else { throw AgentError(.store, "the token was not stored") }
        return info
    }

    func joinTokens() async throws(AgentError) -> [TokenInfo] {
        try await query("SELECT \(TokenRows.joinColumns) FROM join_tokens ORDER BY created_at, id").rows.compactMap(
            TokenRows.joinInfo)
    }

    func revokeJoinToken(_ id: String) async throws(AgentError) -> TokenInfo? {
        try await query(
            "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING \(TokenRows.joinColumns)",
            [id]
        ).rows.first.flatMap(TokenRows.joinInfo)
    }

    func insertAPIToken(_ token: NewAPIToken) async throws(AgentError) -> APITokenInfo {
        let row = try await query(
            """
            INSERT INTO api_tokens (id, token_hash, role, company, expires_at)
            VALUES ($1, $2, $3, $4, CASE WHEN $5::integer IS NULL THEN NULL ELSE now() + make_interval(secs => $5::integer) END)
            RETURNING \(TokenRows.apiColumns)
            """, [token.id, token.hash, token.role.rawValue, token.company, token.ttlS.map(String.init)]
        ).rows.first
        guard let info = row.flatMap(TokenRows.apiInfo) else { throw AgentError(.store, "the token was not stored") }
        return info
    }

    func apiTokenGrants() async throws(AgentError) -> [String: APITokens.Grant] {
        let rows = try await query(
            "SELECT id, token_hash, role, company, \(SQL.iso("expires_at")), revoked_at IS NOT NULL FROM api_tokens"
        ).rows
        var grants: [String: APITokens.Grant] = [:]
        for row in rows {
            guard let id = row[0], let hash = row[1], let role = row[2].flatMap(APIRole.init(rawValue:)) else {
                continue
            }
            grants[hash] = APITokens.Grant(
                id: id, role: role, company: row[3] ?? "", expiresAt: row[4].flatMap(ISOTime.parse),
                revoked: row[5] == "t")
        }
        // Every lead's operator token (the mesh admin's), so it keeps working on a promoted standby.
        for row in try await query("SELECT hash FROM operator_tokens").rows {
            guard let hash = row[0], hash.utf8.count == 64 else { continue }
            grants[hash] = APITokens.Grant(id: "operator", role: .admin, company: "", expiresAt: nil, revoked: false)
        }
        return grants
    }

    /// One token's grant by its hex SHA-256: an API token, or a lead's operator token (the mesh
    /// admin's); nil for an unknown hash. A standby checks presented tokens against its copy with it.
    func tokenGrant(hash: String) async throws(AgentError) -> APITokens.Grant? {
        let row = try await query(
            "SELECT id, role, company, \(SQL.iso("expires_at")), revoked_at IS NOT NULL FROM api_tokens WHERE token_hash = $1",
            [hash]
        ).rows.first
        if let row, let id = row[0], let role = row[1].flatMap(APIRole.init(rawValue:)) {
            return APITokens.Grant(
                id: id, role: role, company: row[2] ?? "", expiresAt: row[3].flatMap(ISOTime.parse),
                revoked: row[4] == "t")
        }
        guard try await query("SELECT 1 FROM operator_tokens WHERE hash = $1", [hash]).rows.first != nil else {
            return nil
        }
        return APITokens.Grant(id: "operator", role: .admin, company: "", expiresAt: nil, revoked: false)
    }

    func apiTokens() async throws(AgentError) -> [APITokenInfo] {
        try await query("SELECT \(TokenRows.apiColumns) FROM api_tokens ORDER BY created_at, id").rows.compactMap(
            TokenRows.apiInfo)
    }

    func revokeAPIToken(_ id: String) async throws(AgentError) -> APITokenInfo? {
        try await query(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING \(TokenRows.apiColumns)",
            [id]
        ).rows.first.flatMap(TokenRows.apiInfo)
    }
}

/// The token tables' columns and rows.
enum TokenRows {
    /// The columns ``joinInfo(_:)`` reads, with the state computed by the store's clock.
    static let joinColumns = """
        id, profile, company, labels::text, reusable, uses, \(SQL.iso("created_at")), \(SQL.iso("expires_at")),
        CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'
             WHEN NOT reusable AND uses > 0 THEN 'used' ELSE 'active' END
        """

    /// One row of ``joinColumns``; nil when it does not parse.
    static func joinInfo(_ row: [String?]) -> TokenInfo? {
        guard row.count == 9, let id = row[0], let profile = row[1].flatMap(NodeRole.init(rawValue:)),
            let created = row[6],
            let expires = row[7], let state = row[8].flatMap(TokenInfo.State.init(rawValue:))
        else { return nil }
        return TokenInfo(
            id: id, profile: profile, company: row[2] ?? "", labels: SQL.decode([String: String].self, row[3]) ?? [:],
            reusable: row[4] == "t", uses: row[5].flatMap { Int($0) } ?? 0, state: state, createdAt: created,
            expiresAt: expires)
    }

    /// The columns ``apiInfo(_:)`` reads, with the state computed by the store's clock.
    static let apiColumns = """
        id, role, company, \(SQL.iso("created_at")), \(SQL.iso("expires_at")),
        CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END
        """

    /// One row of ``apiColumns``; nil when it does not parse.
    static func apiInfo(_ row: [String?]) -> APITokenInfo? {
        guard row.count == 6, let id = row[0], let role = row[1].flatMap(APIRole.init(rawValue:)), let created = row[3],
            let state = row[5].flatMap(TokenInfo.State.init(rawValue:))
        else { return nil }
        return APITokenInfo(
            id: id, role: role, company: row[2] ?? "", state: state, createdAt: created, expiresAt: row[4])
    }

    /// A join token row as the join's transaction reads and locks it.
    static func joinRow(hash: String, on connection: PostgresConnection) throws(AgentError) -> JoinTokenRow? {
        let rows = try connection.execute(
            """
            SELECT id, profile, company, labels::text, reusable, uses, revoked_at IS NOT NULL, expires_at <= now()
            FROM join_tokens WHERE token_hash = $1 FOR UPDATE
            """, [hash]
        ).rows
        guard let row = rows.first, let id = row[0], let profile = row[1].flatMap(NodeRole.init(rawValue:)) else {
            return nil
        }
        return JoinTokenRow(
            id: id, profile: profile, company: row[2] ?? "", labels: SQL.decode([String: String].self, row[3]) ?? [:],
            reusable: row[4] == "t", uses: row[5].flatMap { Int($0) } ?? 0, revoked: row[6] == "t",
            expired: row[7] == "t")
    }
}
