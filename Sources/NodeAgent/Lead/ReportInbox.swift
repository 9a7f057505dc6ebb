import AuroraAPI
import Foundation
import Logging
import Metrics

/// The lead's side of the node outboxes: takes report batches in order and each report id
/// once. A report id seen before answers `duplicate` (200), so a node replaying after a lost
/// answer drains its outbox; the effect itself never happens twice:
///
/// - `event` reports become events with the report id as the event id (`ON CONFLICT DO
///   NOTHING`), so even a crash between the effect and the bookkeeping records one event;
/// - `job_result` reports are fenced by the job's attempt (a second result is refused);
/// - `connectivity` reports carry the node's latest state, which applies the same way twice.
///
/// Every taken id is kept in the `reports` table for seven days.
actor ReportInbox {
    let store: any ReportStore
    let hub: EventHub
    let jobs: JobCoordinator
    let board: ConnectivityBoard
    let logger: Logger
    private var lastPrune: ContinuousClock.Instant?
    /// How many days a taken report id is remembered.
    static let keepDays = 7
    /// The most reports one batch may hold; the node's sender sends 100.
    static let maxBatch = 500
    /// An event's data larger than this (JSON) is refused.
    static let maxEventBytes = 16 * 1024

    init(store: any ReportStore, hub: EventHub, jobs: JobCoordinator, board: ConnectivityBoard, logger: Logger) {
        self.store = store
        self.hub = hub
        self.jobs = jobs
        self.board = board
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "reports"
        self.logger = logger
    }

    /// Takes `reports` from `node`, in order, stopping at the first one the store cannot take
    /// now (the node sends it again). Throws when not even the first could be taken.
    func receive(from node: String, _ reports: [NodeReport]) async throws(Refusal) -> [ReportOutcome] {
        guard reports.count <= Self.maxBatch else {
            throw Refusal.badRequest("a batch holds at most \(Self.maxBatch) reports")
        }
        var outcomes: [ReportOutcome] = []
        for report in reports {
            do throws(Refusal) {
                outcomes.append(try await take(report, from: node))
            } catch {
                if outcomes.isEmpty { throw error }
                logger.warning(
                    "stopped taking a report batch; the node sends the rest again",
                    metadata: [
                        "nodeagent.node": "\(node)", "nodeagent.error": "\(error.message)",
                    ])
                break
            }
        }
        for outcome in outcomes {
            Counter(label: "aurora_reports_total", dimensions: [("status", outcome.status.rawValue)]).increment()
        }
        await pruneIfDue()
        return outcomes
    }

    /// One report: a refusal for good is an outcome; a passing failure (the store) throws.
    private func take(_ report: NodeReport, from node: String) async throws(Refusal) -> ReportOutcome {
        guard UUID(uuidString: report.id) != nil else {
            return ReportOutcome(
                id: report.id, status: .refused, code: "bad_request", message: "the report id must be a UUID")
        }
        let id = report.id.lowercased()
        // A gateway call's result: the job lives in memory only, and its attempt fences a replay
        // (a second result for it is refused), so its id is neither looked up nor written.
        if report.kind == .jobResult, let job = report.job, await jobs.isEphemeral(job) {
            return try await apply(report, id: id, from: node)
        }
        let seen: Bool
        do { seen = try await store.reportTaken(id) } catch { throw Refusal.storeUnavailable(error) }
        if seen { return ReportOutcome(id: report.id, status: .duplicate) }
        let outcome = try await apply(report, id: id, from: node)
        do {
            try await store.recordReport(id, node: node, kind: report.kind.rawValue, outcome: outcome)
        } catch {
            // The effect happened; a replay is recognised by its effect (event id, job attempt).
            logger.warning("cannot record a report id", metadata: ["nodeagent.error": "\(error.message)"])
        }
        return outcome
    }

    /// The report's effect: a job result through the coordinator (its 4xx answers become refused
    /// outcomes), connectivity through the board, an allowed event type (at most 16 KiB of data)
    /// into the event log under the report's id. A store failure throws, so the node sends the
    /// report again; so does any refusal of a connectivity report by the board.
    private func apply(_ report: NodeReport, id: String, from node: String) async throws(Refusal) -> ReportOutcome {
        func refused(_ code: String, _ message: String) -> ReportOutcome {
            ReportOutcome(id: report.id, status: .refused, code: code, message: message)
        }
        switch report.kind {
        case .jobResult:
            guard let job = report.job, let result = report.result else {
                return refused("bad_request", "a job_result report needs 'job' and 'result'")
            }
            do {
                _ = try await jobs.result(job, from: node, result)
                return ReportOutcome(id: report.id, status: .accepted)
            } catch {
                // A fault of the lead (not of the report) is retried by the node.
                if [.unavailable, .upstreamFailed, .internalFailure].contains(error.kind) { throw error }
                return refused(error.code, error.message)
            }
        case .connectivity:
            guard let connectivity = report.connectivity else {
                return refused("bad_request", "a connectivity report needs 'connectivity'")
            }
            try await board.report(node, connectivity.results)
            return ReportOutcome(id: report.id, status: .accepted)
        case .event:
            guard let event = report.event else { return refused("bad_request", "an event report needs 'event'") }
            guard NodeEvent.reportable.contains(event.type) else {
                return refused(
                    "event_not_allowed",
                    "nodes may report \(NodeEvent.reportable.sorted().joined(separator: ", ")), not '\(event.type)'")
            }
            guard (try? APICoding.encoder().encode(event.data).count) ?? .max <= Self.maxEventBytes else {
                return refused("payload_too_large", "event data is larger than \(Self.maxEventBytes) bytes")
            }
            let draft = EventLog.Draft(type: event.type, node: node, data: event.data)
            let inserted: MeshEvent?
            do {
                inserted = try await store.appendOnce(draft, id: id, published: { [hub] in hub.publish($0) })
            } catch {
                throw Refusal.storeUnavailable(error)
            }
            return ReportOutcome(id: report.id, status: inserted == nil ? .duplicate : .accepted)
        }
    }

    /// Forgets report ids older than a week, at most every ten minutes.
    private func pruneIfDue() async {
        if let last = lastPrune, last.duration(to: .now) < .seconds(600) { return }
        lastPrune = .now
        try? await store.pruneReports(olderThanDays: Self.keepDays)
    }
}
