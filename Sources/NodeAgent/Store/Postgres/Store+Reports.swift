import AuroraAPI
import Foundation

extension Store: ReportStore {
    func reportTaken(_ id: String) async throws(AgentError) -> Bool {
        try await query("SELECT 1 FROM reports WHERE id = $1::uuid", [id]).rows.first != nil
    }

    func recordReport(_ id: String, node: String, kind: String, outcome: ReportOutcome) async throws(AgentError) {
        try await query(
            """
            INSERT INTO reports (id, node, kind, status, code, message) VALUES ($1::uuid, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING
            """,
            [id, node, kind, outcome.status.rawValue, outcome.code, outcome.message.map { String($0.prefix(300)) }])
    }

    func pruneReports(olderThanDays days: Int) async throws(AgentError) {
        try await query(
            "DELETE FROM reports WHERE received_at < now() - make_interval(days => $1::integer)", [String(days)])
    }
}
