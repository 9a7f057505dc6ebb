import AuroraAPI
import AuroraTLS
import Foundation
import Mesh
import Secrets

/// What a valid join token grants.
struct TokenGrant: Sendable {
    /// The token's id (`jt_...`), recorded with the node it admitted.
    var id: String
    /// The only role a node may join with on this token.
    var profile: NodeRole
    /// The company and the trusted labels the node is given: the token's, never what the node claims.
    var company: String
    var labels: [String: String]
}

/// Join tokens on the lead: stored as SHA-256 hashes, single use unless reusable, expiring.
/// The token itself is shown once, when it is created.
enum JoinTokens {
    /// Seconds a token lives when the request gives no `ttl_s` (an hour), and (`maxTTL`) at most (30 days).
    static let defaultTTL = 3600
    static let maxTTL = 30 * 86_400

    /// Creates a token; returns it with its record.
    /// `POST /api/tokens` for a join token. With a TLS listener (`lead`), the printed token carries
    /// the pin of the lead's key and the answer the URL and command a node joins with. 400 for a
    /// lead profile, an API-token field, a bad TTL, company or labels; 503 when the store fails.
    static func create(_ request: TokenCreateRequest, store: Store, lead: LeadTLS? = nil) async throws(Refusal)
        -> TokenCreated
    {
        guard let profile = request.profile else {
            throw Refusal.badRequest("profile: a join token needs the joining node's profile (compute or edge)")
        }
        guard profile != .lead else { throw Refusal.badRequest("profile: join tokens are for compute or edge nodes") }
        guard request.role == nil else {
            throw Refusal.badRequest("role is for API tokens (kind: api), not join tokens")
        }
        let ttl = request.ttlS ?? defaultTTL
        guard (1...maxTTL).contains(ttl) else { throw Refusal.badRequest("ttl_s must be 1-\(maxTTL) seconds") }
        do throws(MeshError) {
            try InputRules.labels(request.labels ?? [:], field: "labels")
            try InputRules.identifier(request.company ?? "", field: "company", maxBytes: 128)
        } catch {
            throw Refusal.badRequest(error.message)
        }
        // The store cannot hold U+0000: libpq would cut the company short, jsonb refuses the labels.
        let texts = [request.company ?? ""] + (request.labels ?? [:]).flatMap { [$0.key, $0.value] }
        if texts.contains(where: { $0.unicodeScalars.contains("\u{0}") }) {
            throw Refusal.badRequest("company and labels must not contain U+0000")
        }
        let id = "jt_" + Hex.encode(Crypto.randomBytes(6))
        let token = "aurjoin_" + Hex.encode(Crypto.randomBytes(24))
        let hash = Hex.encode(Crypto.sha256(Array(token.utf8)))
        let rows: [[String?]]
        do {
            rows = try await store.query(
                """
                INSERT INTO join_tokens (id, token_hash, profile, company, labels, reusable, expires_at)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6, now() + make_interval(secs => $7::integer))
                RETURNING \(columns)
                """,
                [
                    id, hash, profile.rawValue, request.company ?? "", SQL.json(request.labels ?? [:]),
                    (request.reusable ?? false) ? "true" : "false", String(ttl),
                ]
            ).rows
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        guard let row = rows.first, let info = info(row) else {
            throw Refusal(.internalFailure, code: "internal", message: "the token was not stored")
        }
        guard let lead else { return TokenCreated(token: token, info: info) }
        let printed = JoinTokenText(secret: token, pin: lead.pin).description
        return TokenCreated(
            token: printed, info: info, leadPin: lead.pin.description, leadURL: lead.url,
            joinCommand: "nodeagent --profile \(info.profile.rawValue) --lead \(lead.url) --join-token-file FILE")
    }

    /// The secret part of a token as a node or a person may send it (a pinned token's
    /// `:sha256:...` suffix is the node's business, not the lead's).
    static func secret(_ token: String) -> String {
        token.range(of: ":sha256:").map { String(token[..<$0.lowerBound]) } ?? token
    }

    /// Every join token with its state (`active`, `used`, `expired`, `revoked`), oldest first;
    /// never a token. 503 when the store fails.
    static func list(store: Store) async throws(Refusal) -> TokenList {
        do {
            let rows = try await store.query("SELECT \(columns) FROM join_tokens ORDER BY created_at, id").rows
            return TokenList(tokens: rows.compactMap(info))
        } catch {
            throw Refusal.storeUnavailable(error)
        }
    }

    /// Revokes by id (`jt_...`); revoking twice is fine, an unknown id is 404.
    static func revoke(_ id: String, store: Store) async throws(Refusal) -> TokenInfo {
        do {
            let rows = try await store.query(
                "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING \(columns)",
                [id]
            ).rows
            guard let row = rows.first, let info = info(row) else {
                throw Refusal.notFound("no join token with id '\(id)'")
            }
            return info
        } catch let error as AgentError {
            throw Refusal.storeUnavailable(error)
        } catch let error as Refusal {
            throw error
        } catch {
            throw Refusal(.internalFailure, code: "internal", message: "internal error")
        }
    }

    /// Checks a token inside the join's transaction and locks its row; ``use(_:on:)`` counts
    /// it once the join is certain. The token is checked before anything else about the join,
    /// so a caller without a valid token learns nothing (not whether a name or address is taken).
    static func check(hash: String, for role: NodeRole, on connection: PostgresConnection) throws(AgentError) -> Result<
        TokenGrant, Refusal
    > {
        let rows = try connection.execute(
            """
            SELECT id, profile, company, labels::text, reusable, uses, revoked_at IS NOT NULL, expires_at <= now()
            FROM join_tokens WHERE token_hash = $1 FOR UPDATE
            """, [hash]
        ).rows
        guard let row = rows.first, let id = row[0], let profile = row[1].flatMap(NodeRole.init(rawValue:)) else {
            return .failure(.unauthorized("join token is not valid"))
        }
        if row[6] == "t" { return .failure(.unauthorized("join token \(id) was revoked")) }
        if row[7] == "t" { return .failure(.unauthorized("join token \(id) has expired")) }
        if row[4] != "t", (row[5].flatMap { Int($0) } ?? 0) > 0 {
            return .failure(
                .unauthorized(
                    "join token \(id) was already used (it is single-use; create a --reusable one for many nodes)"))
        }
        guard profile == role else {
            return .failure(
                Refusal(
                    .forbidden, code: "wrong_profile",
                    message:
                        "join token \(id) is for \(profile.rawValue) nodes; this node's profile is \(role.rawValue)"))
        }
        return .success(
            TokenGrant(
                id: id, profile: profile, company: row[2] ?? "",
                labels: SQL.decode([String: String].self, row[3]) ?? [:]))
    }

    /// Counts one use of a checked token (in the same transaction).
    static func use(_ id: String, on connection: PostgresConnection) throws(AgentError) {
        _ = try connection.execute("UPDATE join_tokens SET uses = uses + 1 WHERE id = $1", [id])
    }

    /// The columns ``info(_:)`` reads, with the state computed by the store's clock.
    private static let columns = """
        id, profile, company, labels::text, reusable, uses, \(SQL.iso("created_at")), \(SQL.iso("expires_at")),
        CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'
             WHEN NOT reusable AND uses > 0 THEN 'used' ELSE 'active' END
        """

    /// One row of ``columns``; nil when it does not parse.
    private static func info(_ row: [String?]) -> TokenInfo? {
        guard row.count == 9, let id = row[0], let profile = row[1].flatMap(NodeRole.init(rawValue:)),
            let created = row[6],
            let expires = row[7], let state = row[8].flatMap(TokenInfo.State.init(rawValue:))
        else { return nil }
        return TokenInfo(
            id: id, profile: profile, company: row[2] ?? "", labels: SQL.decode([String: String].self, row[3]) ?? [:],
            reusable: row[4] == "t", uses: row[5].flatMap { Int($0) } ?? 0, state: state, createdAt: created,
            expiresAt: expires)
    }
}

/// What a join token says of the lead's TLS listener: its pin and the URL nodes use.
struct LeadTLS: Sendable {
    /// The pin of the lead's TLS key, which a joining node checks before it sends the token.
    let pin: TLSPin
    /// `tls.advertise`, else `https://HOST:PORT` from `tls.listen` (the host name for a wildcard
    /// address); empty without a TLS listener.
    let url: String

    init(identity: TLSIdentity, config: NodeConfig) {
        pin = identity.pin
        if let advertised = config.tlsAdvertise {
            url = advertised
        } else if let listen = config.tlsListen {
            let unspecified = listen.host == "0.0.0.0" || listen.host == "::"
            let host =
                unspecified
                ? (ProcessInfo.processInfo.hostName.isEmpty ? "LEAD-HOST" : ProcessInfo.processInfo.hostName)
                : listen.host
            url = "https://" + (host.contains(":") ? "[\(host)]" : host) + ":\(listen.port)"
        } else {
            url = ""
        }
    }
}
