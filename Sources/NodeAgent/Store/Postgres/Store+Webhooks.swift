import Foundation

extension Store: WebhookCursorStore {
    func webhookCursor(_ name: String, startingBefore start: Date) async throws(AgentError) -> Int64 {
        // One statement: a new webhook's row starts at the newest event recorded before `start`
        // (read backwards along the primary key, so it stops at once); the outer SELECT reads the
        // snapshot before the insert, so exactly one of its two parts has a row.
        let text = try await query(
            """
            WITH existing AS (SELECT seq FROM webhook_cursors WHERE name = $1),
            created AS (
                INSERT INTO webhook_cursors (name, seq)
                SELECT $1, coalesce(
                    (SELECT seq FROM events WHERE at < to_timestamp($2::double precision) ORDER BY seq DESC LIMIT 1), 0)
                WHERE NOT EXISTS (SELECT 1 FROM existing)
                ON CONFLICT (name) DO NOTHING RETURNING seq
            )
            SELECT seq FROM created UNION ALL SELECT seq FROM existing
            """, [name, String(start.timeIntervalSince1970)]
        ).scalar
        guard let text, let seq = Int64(text) else {
            throw AgentError(.store, "the store has no cursor for webhook '\(name)'")
        }
        return seq
    }

    func setWebhookCursor(_ name: String, to seq: Int64) async throws(AgentError) {
        try await query(
            """
            INSERT INTO webhook_cursors (name, seq) VALUES ($1, $2::bigint)
            ON CONFLICT (name) DO UPDATE SET seq = greatest(webhook_cursors.seq, excluded.seq), updated_at = now()
            """, [name, String(seq)])
    }
}
