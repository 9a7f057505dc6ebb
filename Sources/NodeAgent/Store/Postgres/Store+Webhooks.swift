import Foundation

extension Store: WebhookCursorStore {
    func webhookCursor(_ name: String) async throws(AgentError) -> Int64 {
        // One statement: a new webhook's row starts at the newest event; the outer SELECT reads the
        // snapshot before the insert, so exactly one of its two parts has a row.
        let text = try await query(
            """
            WITH created AS (
                INSERT INTO webhook_cursors (name, seq) SELECT $1, coalesce(max(seq), 0) FROM events
                ON CONFLICT (name) DO NOTHING RETURNING seq
            )
            SELECT seq FROM created UNION ALL SELECT seq FROM webhook_cursors WHERE name = $1
            """, [name]
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
