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
    static func create(_ request: TokenCreateRequest, store: any TokenStore, lead: LeadTLS? = nil) async throws(Refusal)
        -> TokenCreated
    {
        guard let profile = request.profile else {
            throw Refusal.badRequest(
                "profile: a join token needs the joining node's profile (compute, edge or standby)")
        }
        guard profile != .lead else {
            throw Refusal.badRequest("profile: join tokens are for compute, edge or standby nodes")
        }
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
        let info: TokenInfo
        do {
            info = try await store.insertJoinToken(
                NewJoinToken(
                    id: id, hash: hash, profile: profile, company: request.company ?? "", labels: request.labels ?? [:],
                    reusable: request.reusable ?? false, ttlS: ttl))
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        guard let lead else { return TokenCreated(token: token, info: info) }
        let printed = JoinTokenText(secret: token, pin: lead.pin).description
        return TokenCreated(
            token: printed, info: info, leadPin: lead.pin.description, leadURL: lead.url,
            joinCommand: info.profile == .standby
                ? "nodeagent --profile lead --standby --lead \(lead.url) --join-token-file FILE"
                : "nodeagent --profile \(info.profile.rawValue) --lead \(lead.url) --join-token-file FILE")
    }

    /// The secret part of a token as a node or a person may send it (a pinned token's
    /// `:sha256:...` suffix is the node's business, not the lead's).
    static func secret(_ token: String) -> String {
        token.range(of: ":sha256:").map { String(token[..<$0.lowerBound]) } ?? token
    }

    /// Every join token with its state (`active`, `used`, `expired`, `revoked`), oldest first;
    /// never a token. 503 when the store fails.
    static func list(store: any TokenStore) async throws(Refusal) -> TokenList {
        do { return TokenList(tokens: try await store.joinTokens()) } catch { throw Refusal.storeUnavailable(error) }
    }

    /// Revokes by id (`jt_...`); revoking twice is fine, an unknown id is 404.
    static func revoke(_ id: String, store: any TokenStore) async throws(Refusal) -> TokenInfo {
        let info: TokenInfo?
        do { info = try await store.revokeJoinToken(id) } catch { throw Refusal.storeUnavailable(error) }
        guard let info else { throw Refusal.notFound("no join token with id '\(InputRules.printable(id))'") }
        return info
    }

    /// What a join token, as the join's transaction found it, grants a node of `role`; the
    /// refusal when it grants nothing (unknown, revoked, expired, used up, for another profile).
    static func grant(_ row: JoinTokenRow?, for role: NodeRole) -> Result<TokenGrant, Refusal> {
        guard let row else { return .failure(.unauthorized("join token is not valid")) }
        if row.revoked { return .failure(.unauthorized("join token \(row.id) was revoked")) }
        if row.expired { return .failure(.unauthorized("join token \(row.id) has expired")) }
        if !row.reusable, row.uses > 0 {
            return .failure(
                .unauthorized(
                    "join token \(row.id) was already used (it is single-use; create a --reusable one for many nodes)"))
        }
        guard row.profile == role else {
            return .failure(
                Refusal(
                    .forbidden, code: "wrong_profile",
                    message:
                        "join token \(row.id) is for \(row.profile.rawValue) nodes; this node's profile is \(role.rawValue)"
                ))
        }
        return .success(TokenGrant(id: row.id, profile: row.profile, company: row.company, labels: row.labels))
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
