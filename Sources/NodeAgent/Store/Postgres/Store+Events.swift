import AuroraAPI
import Foundation

extension Store: EventStore {
    @discardableResult
    func append(_ drafts: [EventLog.Draft], published: @escaping Published) async throws(AgentError) -> [MeshEvent] {
        try await commit([], events: drafts, published: published)
    }

    func appendOnce(_ draft: EventLog.Draft, id: String, published: @escaping Published) async throws(AgentError)
        -> MeshEvent?
    {
        try await withConnection(
            { connection throws(AgentError) in try EventLog.insertOnce(draft, id: id, on: connection) },
            after: { event in if let event { published([event]) } })
    }

    func events(since seq: Int64, limit: Int) async throws(AgentError) -> [MeshEvent] {
        let rows = try await query(
            "SELECT seq, id, type, \(SQL.iso("at")), node, data::text FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            [String(seq), String(limit)]
        ).rows
        return rows.compactMap { row in
            guard let seq = row[0].flatMap({ Int64($0) }), let id = row[1], let type = row[2], let at = row[3] else {
                return nil
            }
            let data =
                row[5].flatMap { try? APICoding.decoder().decode([String: JSONValue].self, from: Data($0.utf8)) } ?? [:]
            return MeshEvent(id: id, seq: seq, type: type, at: at, node: row[4], data: data)
        }
    }

    func latestEventSeq() async throws(AgentError) -> Int64 {
        Int64(try await query("SELECT coalesce(max(seq), 0) FROM events").scalar ?? "0") ?? 0
    }

    /// Runs `statements` and records `drafts` in one transaction, then publishes the events
    /// (on the store thread, right after the commit): the write of every protocol whose
    /// changes are plain statements (nodes, secrets, events alone).
    @discardableResult
    func commit(_ statements: [(String, [String?])], events drafts: [EventLog.Draft], published: @escaping Published)
        async throws(AgentError) -> [MeshEvent]
    {
        try await inTransaction(
            { connection throws(AgentError) -> [MeshEvent] in
                for (sql, parameters) in statements { _ = try connection.execute(sql, parameters) }
                var events: [MeshEvent] = []
                for draft in drafts { events.append(try EventLog.insert(draft, on: connection)) }
                return events
            }, afterCommit: published)
    }
}

/// The `events` table's statements, run inside a caller's transaction.
extension EventLog {
    /// Inserts `draft` with the connection of an open transaction.
    /// The caller publishes the returned event after its own commit; an event published before
    /// the commit could describe a change that was rolled back.
    static func insert(_ draft: Draft, on connection: PostgresConnection) throws(AgentError) -> MeshEvent {
        let (id, data) = try prepare(draft)
        let row = try connection.execute(
            "INSERT INTO events (id, type, node, data) VALUES ($1, $2, $3, $4::jsonb) RETURNING seq, \(SQL.iso("at"))",
            [id, draft.type, draft.node, data], prepared: "event_insert"
        ).rows.first
        return try event(draft, id: id, row: row)
    }

    /// A new event id and the data as JSON text, for an insert.
    static func prepare(_ draft: Draft) throws(AgentError) -> (id: String, data: String) {
        do {
            return (
                UUID().uuidString.lowercased(),
                String(decoding: try APICoding.encoder().encode(draft.data), as: UTF8.self)
            )
        } catch {
            throw AgentError(.store, "cannot encode event data")
        }
    }

    /// Inserts an event whose id is given (a node's report id): nil when an event with that id
    /// exists already, so a replayed report is recorded once.
    static func insertOnce(_ draft: Draft, id: String, on connection: PostgresConnection) throws(AgentError)
        -> MeshEvent?
    {
        let data: String
        do { data = String(decoding: try APICoding.encoder().encode(draft.data), as: UTF8.self) } catch {
            throw AgentError(.store, "cannot encode event data")
        }
        let row = try connection.execute(
            "INSERT INTO events (id, type, node, data) VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (id) DO NOTHING RETURNING seq, \(SQL.iso("at"))",
            [id, draft.type, draft.node, data], prepared: "event_insert_once"
        ).rows.first
        guard let row else { return nil }
        return try event(draft, id: id, row: row)
    }

    /// The event an insert returned `seq, at` for.
    static func event(_ draft: Draft, id: String, row: [String?]?) throws(AgentError) -> MeshEvent {
        guard let row, let seq = row[0].flatMap({ Int64($0) }), let at = row[1] else {
            throw AgentError(.store, "the event insert returned no sequence")
        }
        return MeshEvent(id: id, seq: seq, type: draft.type, at: at, node: draft.node, data: draft.data)
    }
}

/// SQL fragments used across the store code.
enum SQL {
    /// A timestamptz column as ISO 8601 UTC with milliseconds.
    static func iso(_ column: String) -> String {
        "to_char(\(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    }

    /// `[String: String]` as JSON text for a jsonb parameter.
    static func json(_ value: some Encodable) -> String {
        (try? APICoding.encoder().encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// A jsonb column's text (or a saved JSON file) decoded as `T`; nil when absent or malformed.
    static func decode<T: Decodable>(_ type: T.Type, _ text: String?) -> T? {
        text.flatMap { try? APICoding.decoder().decode(T.self, from: Data($0.utf8)) }
    }
}
