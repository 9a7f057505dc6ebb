import AuroraAPI
import Foundation

/// The `lead_terms` table (one row per epoch, only ever inserted) and `operator_tokens`.
extension Store: LeadTermStore {
    private static let termColumns = """
        epoch, lead, url, sign_public_key, box_public_key, tls_pin, certificate, \(SQL.iso("started_at"))
        """

    func latestTerm() async throws(AgentError) -> LeadTerm? {
        let rows = try await leadQuery("SELECT \(Self.termColumns) FROM lead_terms ORDER BY epoch DESC LIMIT 1").rows
        return try rows.first.map { row throws(AgentError) in
            guard let term = Self.term(row) else {
                throw AgentError(.store, "the newest lead_terms row does not parse")
            }
            return term
        }
    }

    func beginTerm(_ term: LeadTerm, after previous: Int64?) async throws(AgentError) -> LeadTerm? {
        // One statement: the insert happens only when the newest epoch is still `previous`, so two
        // promotions racing on one store cannot both win.
        let rows = try await leadQuery(
            """
            INSERT INTO lead_terms (epoch, lead, url, sign_public_key, box_public_key, tls_pin, certificate)
            SELECT coalesce(max(epoch), 0) + 1, $1, $2, $3, $4, $5, $6 FROM lead_terms
            HAVING coalesce(max(epoch), 0) = coalesce($7::bigint, 0)
            RETURNING \(Self.termColumns)
            """,
            [
                term.lead, term.url, term.signPublicKey, term.boxPublicKey, term.tlsPin, term.certificate,
                previous.map(String.init),
            ]
        ).rows
        return rows.first.flatMap(Self.term)
    }

    /// Sets `events.seq`'s sequence so that the next event follows the last committed one (a
    /// promoted replica's sequence is up to 32 ahead). Only for a server no other lead writes to.
    func continueEventSequence() async throws(AgentError) {
        try await query(
            "SELECT setval(pg_get_serial_sequence('events', 'seq'), coalesce(max(seq), 0) + 1, false) FROM events")
    }

    func walPosition() async throws(AgentError) -> String? {
        try await leadQuery("SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END")
            .scalar
    }

    func recordOperatorToken(hash: String, agent: String) async throws(AgentError) {
        try await query(
            "INSERT INTO operator_tokens (hash, agent) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING", [hash, agent])
    }

    func setRole(of node: String, to role: NodeRole) async throws(AgentError) {
        try await query("UPDATE nodes SET role = $2 WHERE name = $1", [node, role.rawValue])
    }

    private static func term(_ row: [String?]) -> LeadTerm? {
        guard row.count == 8, let epoch = row[0].flatMap({ Int64($0) }), let lead = row[1], let url = row[2],
            let sign = row[3], let box = row[4], let started = row[7]
        else { return nil }
        return LeadTerm(
            epoch: epoch, lead: lead, url: url, signPublicKey: sign, boxPublicKey: box, tlsPin: row[5],
            certificate: row[6], startedAt: started)
    }
}
