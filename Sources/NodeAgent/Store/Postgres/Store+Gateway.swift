import AuroraAPI
import Foundation

extension Store: GatewayKeyStore {
    /// The columns ``keyInfo(_:)`` reads (after the hash), with the state by the store's clock.
    static let keyColumns = """
        key_hash, id, app, company, models::text, rpm, tpm, \(SQL.iso("created_at")), \(SQL.iso("expires_at")),
        CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END
        """

    static func keyInfo(_ row: [String?]) -> (hash: String, info: GatewayKeyInfo)? {
        guard row.count == 10, let hash = row[0], let id = row[1], let app = row[2], let created = row[7],
            let state = row[9].flatMap(TokenInfo.State.init(rawValue:))
        else { return nil }
        return (
            hash,
            GatewayKeyInfo(
                id: id, app: app, company: row[3] ?? "", models: SQL.decode([String].self, row[4]),
                rpm: row[5].flatMap { Int($0) }, tpm: row[6].flatMap { Int($0) }, state: state, createdAt: created,
                expiresAt: row[8])
        )
    }

    func insertGatewayKey(_ key: NewGatewayKey) async throws(AgentError) -> GatewayKeyInfo {
        let row = try await query(
            """
            INSERT INTO gateway_keys (id, key_hash, app, company, models, rpm, tpm, expires_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::integer, $7::integer,
                    CASE WHEN $8::integer IS NULL THEN NULL ELSE now() + make_interval(secs => $8::integer) END)
            RETURNING \(Self.keyColumns)
            """,
            [
                key.id, key.hash, key.app, key.company, key.models.map { SQL.json($0) }, key.rpm.map(String.init),
                key.tpm.map(String.init), key.ttlS.map(String.init),
            ]
        ).rows.first
        guard let info = row.flatMap(Self.keyInfo)?.info else { throw AgentError(.store, "the key was not stored") }
        return info
    }

    func gatewayKeys() async throws(AgentError) -> [(hash: String, info: GatewayKeyInfo)] {
        try await query("SELECT \(Self.keyColumns) FROM gateway_keys ORDER BY created_at, id").rows.compactMap(
            Self.keyInfo)
    }

    func revokeGatewayKey(_ id: String) async throws(AgentError) -> GatewayKeyInfo? {
        try await query(
            "UPDATE gateway_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING \(Self.keyColumns)",
            [id]
        ).rows.first.flatMap(Self.keyInfo)?.info
    }

    func addGatewayUsage(_ usage: [GatewayUsage]) async throws(AgentError) {
        try await transaction(
            usage.map { row in
                (
                    """
                    INSERT INTO gateway_usage (key_id, model, app, requests, prompt_tokens, completion_tokens)
                    VALUES ($1, $2, $3, $4::bigint, $5::bigint, $6::bigint)
                    ON CONFLICT (key_id, model) DO UPDATE SET
                        requests = gateway_usage.requests + EXCLUDED.requests,
                        prompt_tokens = gateway_usage.prompt_tokens + EXCLUDED.prompt_tokens,
                        completion_tokens = gateway_usage.completion_tokens + EXCLUDED.completion_tokens,
                        app = coalesce(EXCLUDED.app, gateway_usage.app), updated_at = now()
                    """,
                    [
                        row.key, row.model, row.app, String(row.requests), String(row.promptTokens),
                        String(row.completionTokens),
                    ]
                )
            })
    }

    func gatewayUsage() async throws(AgentError) -> [GatewayUsage] {
        try await query(
            "SELECT key_id, model, app, requests, prompt_tokens, completion_tokens FROM gateway_usage ORDER BY key_id, model"
        ).rows.compactMap { row in
            guard row.count == 6, let key = row[0], let model = row[1], let requests = row[3].flatMap({ Int64($0) }),
                let prompt = row[4].flatMap({ Int64($0) }), let completion = row[5].flatMap({ Int64($0) })
            else { return nil }
            return GatewayUsage(
                key: key, app: row[2], model: model, requests: requests, promptTokens: prompt,
                completionTokens: completion)
        }
    }
}
