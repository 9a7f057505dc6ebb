import AuroraAPI
import Foundation
import Mesh

/// The `jobs` table: its columns, row decoding and the store's form of an idempotency key.
enum JobRows {
    /// The store's form of an idempotency key: the submitter, a newline (never in a key), the key.
    static func scopedKey(_ submitter: String?, _ key: String) -> String { (submitter ?? JobAccess.admin) + "\n" + key }

    static func scopedKey(_ job: Job) -> String? { job.idempotencyKey.map { scopedKey(job.submittedBy, $0) } }

    /// The key as its submitter gave it.
    static func unscopedKey(_ stored: String) -> String {
        stored.firstIndex(of: "\n").map { String(stored[stored.index(after: $0)...]) } ?? stored
    }

    /// The columns ``job(_:)`` reads, times as ISO text.
    static let columns = """
        id, kind, priority, state, attempt, max_attempts, requirements::text, idempotency_key, node, gpus::text, \
        \(SQL.iso("submitted_at")), \(SQL.iso("started_at")), \(SQL.iso("finished_at")), \(SQL.iso("lease_deadline")), \
        result::text, error, submitted_by, payload::text
        """

    /// A row of ``columns`` as a job and its payload; nil when unreadable.
    static func job(_ row: [String?]) -> (Job, [String: JSONValue])? {
        guard row.count == 18, let id = row[0], let kind = row[1].flatMap(JobKind.init(rawValue:)),
            let priority = row[2].flatMap({ Int($0) }),
            let state = row[3].flatMap(JobState.init(rawValue:)), let attempt = row[4].flatMap({ Int($0) }),
            let maxAttempts = row[5].flatMap({ Int($0) }), let requirements = SQL.decode(JobRequirements.self, row[6]),
            let submittedAt = row[10]
        else { return nil }
        let job = Job(
            id: id, kind: kind, priority: priority, state: state, attempt: attempt, maxAttempts: maxAttempts,
            requirements: requirements, idempotencyKey: row[7].map(unscopedKey), node: row[8],
            gpus: SQL.decode([Int].self, row[9]),
            submittedAt: submittedAt, startedAt: row[11], finishedAt: row[12], leaseDeadline: row[13],
            result: SQL.decode(JSONValue.self, row[14]), error: row[15], submittedBy: row[16])
        return (job, SQL.decode([String: JSONValue].self, row[17]) ?? [:])
    }
}

extension Writes {
    /// One job row and its one event: written as one statement (a data-modifying CTE), which
    /// commits on its own — one round trip instead of BEGIN, two statements and COMMIT.
    var isSingle: Bool {
        events.count == 1
            && ((insertJob != nil && updates.allSatisfy { $0.id == insertJob?.0.id })
                || (insertJob == nil && updates.count == 1))
    }

    /// The batch as one statement, its parameters and event prepared (encoded) up front so the
    /// store thread only executes it; only when ``isSingle``.
    struct Single: Sendable {
        var sql: String
        /// The prepared statement's name.
        var name: String
        var parameters: [String?]
        var eventID: String
        var draft: EventLog.Draft
        var inserted: Job?
    }

    func single() throws(AgentError) -> Single {
        let draft = events[0]
        let (eventID, data) = try EventLog.prepare(draft)
        if let (job, payload) = insertJob {
            return Single(
                sql: Self.insertWithEventSQL, name: "job_insert_event",
                parameters: Self.insertParameters(job, payload) + [eventID, draft.type, draft.node, data],
                eventID: eventID, draft: draft, inserted: job)
        }
        return Single(
            sql: Self.updateWithEventSQL, name: "job_update_event",
            parameters: Self.updateParameters(updates[0]) + [eventID, draft.type, draft.node, data],
            eventID: eventID, draft: draft, inserted: nil)
    }

    static func apply(_ single: Single, on connection: PostgresConnection) throws(AgentError) -> Outcome {
        let rows = try connection.execute(single.sql, single.parameters, prepared: single.name).rows
        if rows.isEmpty {
            // The insert hit an idempotency key; an update found no row (nothing to announce).
            return try single.inserted.map { job throws(AgentError) in try duplicate(of: job, on: connection) }
                ?? .committed([])
        }
        return .committed([try EventLog.event(single.draft, id: single.eventID, row: rows.first)])
    }

    static let insertWithEventSQL =
        "WITH job AS (\(insertSQL)) "
        + "INSERT INTO events (id, type, node, data) SELECT $15, $16, $17, $18::jsonb FROM job RETURNING seq, \(SQL.iso("at"))"
    static let updateWithEventSQL =
        "WITH job AS (\(updateSQL) RETURNING id) "
        + "INSERT INTO events (id, type, node, data) SELECT $12, $13, $14, $15::jsonb FROM job RETURNING seq, \(SQL.iso("at"))"

    /// The job that holds `job`'s idempotency key (the insert did nothing).
    private static func duplicate(of job: Job, on connection: PostgresConnection) throws(AgentError) -> Outcome {
        guard let key = JobRows.scopedKey(job),
            let row = try connection.execute("SELECT \(JobRows.columns) FROM jobs WHERE idempotency_key = $1", [key])
                .rows.first,
            let existing = JobRows.job(row)?.0
        else {
            throw AgentError(.store, "the job insert wrote nothing and no job holds its key")
        }
        return .duplicate(existing)
    }

    static let insertSQL = """
        INSERT INTO jobs (id, idempotency_key, kind, priority, requirements, payload, state, attempt, max_attempts, node, gpus,
                          lease_deadline, submitted_at, submitted_by)
        VALUES ($1, $2, $3, $4::integer, $5::jsonb, $6::jsonb, $7, $8::integer, $9::integer, $10, $11::jsonb, $12::timestamptz,
                $13::timestamptz, $14)
        ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq
        """

    static func insertParameters(_ job: Job, _ payload: [String: JSONValue]) -> [String?] {
        [
            job.id, JobRows.scopedKey(job), job.kind.rawValue, String(job.priority), SQL.json(job.requirements),
            SQL.json(payload),
            job.state.rawValue, String(job.attempt), String(job.maxAttempts), job.node, job.gpus.map { SQL.json($0) },
            job.leaseDeadline, job.submittedAt, job.submittedBy,
        ]
    }

    static let updateSQL = """
        UPDATE jobs SET state = $2, attempt = $3::integer, node = $4, gpus = $5::jsonb, lease_deadline = $6::timestamptz,
            started_at = $7::timestamptz, finished_at = $8::timestamptz, result = $9::jsonb, error = $10,
            max_attempts = $11::integer
        WHERE id = $1
        """

    static func updateParameters(_ job: Job) -> [String?] {
        [
            job.id, job.state.rawValue, String(job.attempt), job.node, job.gpus.map { SQL.json($0) }, job.leaseDeadline,
            job.startedAt, job.finishedAt, job.result.map { SQL.json($0) }, job.error, String(job.maxAttempts),
        ]
    }

    func apply(on connection: PostgresConnection) throws(AgentError) -> Outcome {
        if let (job, payload) = insertJob {
            let inserted = try connection.execute(
                Self.insertSQL, Self.insertParameters(job, payload), prepared: "job_insert"
            ).rows
            if inserted.isEmpty {
                // Still write the other placements of this round.
                for update in updates where update.id != job.id { try Self.write(update, on: connection) }
                return try Self.duplicate(of: job, on: connection)
            }
        }
        for job in updates where job.id != insertJob?.0.id { try Self.write(job, on: connection) }
        var published: [MeshEvent] = []
        for draft in events { published.append(try EventLog.insert(draft, on: connection)) }
        return .committed(published)
    }

    private static func write(_ job: Job, on connection: PostgresConnection) throws(AgentError) {
        _ = try connection.execute(updateSQL, updateParameters(job), prepared: "job_update")
    }
}

extension Store: JobStore {
    func openJobs() async throws(AgentError) -> (jobs: [(Job, [String: JSONValue])], unreadable: [String]) {
        let rows = try await query(
            "SELECT \(JobRows.columns) FROM jobs WHERE state IN ('queued', 'assigned', 'running') ORDER BY seq"
        ).rows
        var jobs: [(Job, [String: JSONValue])] = []
        var unreadable: [String] = []
        for row in rows {
            if let job = JobRows.job(row) {
                jobs.append(job)
            } else {
                unreadable.append(row.first.flatMap { $0 } ?? "?")
            }
        }
        return (jobs, unreadable)
    }

    func job(_ id: String) async throws(AgentError) -> Job? {
        try await query("SELECT \(JobRows.columns) FROM jobs WHERE id = $1", [id]).rows.first.flatMap {
            JobRows.job($0)?.0
        }
    }

    func job(byKey scopedKey: String) async throws(AgentError) -> Job? {
        try await query("SELECT \(JobRows.columns) FROM jobs WHERE idempotency_key = $1", [scopedKey]).rows.first
            .flatMap { JobRows.job($0)?.0 }
    }

    func jobs(state: JobState?, visibleTo caller: String, limit: Int) async throws(AgentError) -> [Job] {
        var sql = "SELECT \(JobRows.columns) FROM jobs"
        var conditions: [String] = []
        var parameters: [String?] = []
        if let state {
            parameters.append(state.rawValue)
            conditions.append("state = $\(parameters.count)")
        }
        if let filter = JobAccess.listFilter(caller) {
            parameters.append(filter.exact)
            var condition = "submitted_by = $\(parameters.count)"
            if let suffix = filter.companySuffix {
                parameters.append(
                    "%"
                        + suffix.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                        .replacingOccurrences(of: "_", with: "\\_"))
                condition = "(\(condition) OR (submitted_by LIKE 'api:%' AND submitted_by LIKE $\(parameters.count)))"
            }
            conditions.append(condition)
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY seq DESC LIMIT \(max(1, limit))"
        return try await query(sql, parameters).rows.compactMap { JobRows.job($0)?.0 }
    }

    func commit(_ writes: Writes, published: @escaping Published) async throws(AgentError) -> Writes.Outcome {
        let publish: @Sendable (Writes.Outcome) -> Void = { outcome in
            if case .committed(let events) = outcome { published(events) }
        }
        if writes.isSingle {
            let single = try writes.single()
            return try await withConnection(
                { connection throws(AgentError) in try Writes.apply(single, on: connection) }, after: publish)
        }
        return try await inTransaction(
            { connection throws(AgentError) in try writes.apply(on: connection) }, afterCommit: publish)
    }
}
