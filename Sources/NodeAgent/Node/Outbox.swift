import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
    import NIOHTTP1
#endif

/// The node's durable outbox, `DATA/outbox/reports.log` (0600): every report for the lead (job
/// results, connectivity changes, check and alert events) is appended here, fsync'd, before it
/// counts as made, and is delivered in order by ``OutboxSender`` until the lead takes it.
///
/// The record format and the bookkeeping are the pure ``OutboxRecord``/``OutboxLedger`` core.
/// Opening the file drops a torn tail (a write a crash cut short) and skips damaged records,
/// so a crash at any moment leaves an outbox that opens. All file I/O runs on the outbox's own
/// thread, never on Swift's cooperative pool.
final class Outbox: Sendable {
    /// One report waiting for the lead.
    struct Pending: Sendable {
        /// The record's position in the outbox: acknowledgements name it, and it only grows.
        var sequence: UInt64
        /// nil when the record's payload did not decode (it is dropped on the next delivery).
        var report: NodeReport?
        /// The payload's size in bytes.
        var bytes: Int
    }

    /// The open file and what it holds, changed only on the outbox thread under the lock.
    /// `fileBytes` is the file's length in bytes; `delivered`, `failing` and `lastError` feed
    /// ``status``; once `closed` every write is refused.
    private struct State {
        var descriptor: Int32
        var ledger: OutboxLedger
        var reports: [UInt64: NodeReport]
        var fileBytes: Int
        var delivered = 0
        var failing = false
        var lastError: String?
        var closed = false
    }

    /// The file refuses new reports beyond this size (the lead has been away a long time).
    static let maxBytes = 64 << 20
    /// A file with more delivered than pending bytes is rewritten beyond this size.
    static let compactThreshold = 1 << 20

    let path: String
    private let directory: String
    private let state: Mutex<State>
    private let io = NIOThreadPool(numberOfThreads: 1)
    /// The thread starts with the first write, so an agent that stops in preflight leaves none behind.
    private let lifecycle = Mutex<(started: Bool, closed: Bool)>((false, false))
    private let logger: Logger
    /// Wakes the sender: a report was appended.
    private let wake = Mutex<AsyncStream<Void>.Continuation?>(nil)
    /// Whether opening cut off a torn last record, and how many damaged regions it skipped: both
    /// shown by `GET /api/outbox` (a sign of a crash or a damaged disk).
    let tornTailRepaired: Bool
    let corruptRegionsSkipped: Int
    /// Reports made (`aurora_outbox_appended_total`) and reports waiting (`aurora_outbox_pending`).
    private let appended = Counter(label: "aurora_outbox_appended_total")
    private let pendingGauge = Gauge(label: "aurora_outbox_pending")

    /// Opens (or creates) the outbox in `dataDir/outbox`, repairing a torn tail.
    init(dataDir: String, logger: Logger) throws(AgentError) {
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "outbox"
        self.logger = logger
        directory = dataDir + "/outbox"
        path = directory + "/reports.log"
        try DataDirectory.createDirectory(directory, mode: 0o700, what: "outbox directory")
        let descriptor = open(path, O_CREAT | O_RDWR | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AgentError(.dataDir, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        fchmod(descriptor, 0o600)
        let bytes: [UInt8]
        do { bytes = try Self.readAll(descriptor, path: path) } catch {
            Glibc.close(descriptor)
            throw error
        }
        let scan = OutboxScan.scan(bytes)
        if scan.tornTail {
            // Cut the torn tail so new records follow the last whole one.
            guard ftruncate(descriptor, off_t(scan.validLength)) == 0, fsync(descriptor) == 0 else {
                let reason = String(cString: strerror(errno))
                Glibc.close(descriptor)
                throw AgentError(.dataDir, "cannot repair \(path): \(reason)")
            }
            logger.warning(
                "outbox had a torn record at its end (a crash while writing); cut it off",
                metadata: ["nodeagent.bytes": "\(bytes.count - scan.validLength)"])
        }
        if scan.corruptRegions > 0 {
            logger.error(
                "outbox had damaged records; skipped them", metadata: ["nodeagent.regions": "\(scan.corruptRegions)"])
        }
        let ledger = OutboxLedger(scan.records)
        var reports: [UInt64: NodeReport] = [:]
        for record in ledger.pending {
            if let report = try? APICoding.decoder().decode(NodeReport.self, from: Data(record.payload)) {
                reports[record.sequence] = report
            }
        }
        tornTailRepaired = scan.tornTail
        corruptRegionsSkipped = scan.corruptRegions
        state = Mutex(State(descriptor: descriptor, ledger: ledger, reports: reports, fileBytes: scan.validLength))
        if !ledger.pending.isEmpty {
            logger.info("outbox has reports to replay", metadata: ["nodeagent.pending": "\(ledger.pending.count)"])
        }
        pendingGauge.record(ledger.pending.count)
    }

    deinit {
        state.withLock { if !$0.closed { Glibc.close($0.descriptor) } }
    }

    // MARK: Writing

    /// Appends `report` durably (written and fsync'd when this returns) and wakes the sender.
    /// Called by the GPU worker (job results), the connectivity service (changes) and the check and
    /// alert services (events). Throws ``AgentError`` with code `dataDir` when the outbox is closed,
    /// the write or fsync fails (the file is cut back, so nothing half-written stays), or the file
    /// would pass ``maxBytes`` (64 MiB). Then the worker posts the result directly, the
    /// connectivity service retries on its next tick, and the check and alert services log the loss.
    func append(_ report: NodeReport) async throws(AgentError) {
        let payload: [UInt8]
        do { payload = Array(try APICoding.encoder().encode(report)) } catch {
            throw AgentError(.dataDir, "cannot encode a report")
        }
        try await onIOThread { () throws(AgentError) in
            try self.state.withLock { state throws(AgentError) in
                guard !state.closed else { throw AgentError(.dataDir, "the outbox is closed") }
                let record = state.ledger.record(for: payload)
                let bytes = record.encoded()
                guard state.fileBytes + bytes.count <= Self.maxBytes else {
                    throw AgentError(
                        .dataDir,
                        "the outbox is full (\(Self.maxBytes >> 20) MiB of reports the lead has not taken); report dropped"
                    )
                }
                try Self.write(bytes, to: state.descriptor, path: self.path, restoring: state.fileBytes)
                state.fileBytes += bytes.count
                state.ledger.appended(record)
                state.reports[record.sequence] = report
            }
        }
        appended.increment()
        pendingGauge.record(pendingCount)
        wake.withLock { $0 }?.yield()
    }

    /// A stream that yields whenever a report is appended (and once at once): the sender's
    /// wake-ups. A new call replaces the previous stream (the sender restarted).
    func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.yield()
        let previous = wake.withLock { wake in
            defer { wake = continuation }
            return wake
        }
        previous?.finish()
        return stream
    }

    /// Every report up to `sequence` was delivered: records that durably, then compacts the
    /// file when it holds nothing more to deliver (or mostly delivered reports). False when the
    /// record could not be written (the reports stay pending).
    @discardableResult
    func acknowledge(through sequence: UInt64, delivered count: Int) async -> Bool {
        do {
            try await onIOThread { () throws(AgentError) in
                try self.state.withLock { state throws(AgentError) in
                    state.delivered += count
                    state.failing = false
                    state.lastError = nil
                    guard !state.closed, let record = state.ledger.acknowledgement(through: sequence) else { return }
                    let bytes = record.encoded()
                    try Self.write(bytes, to: state.descriptor, path: self.path, restoring: state.fileBytes)
                    state.fileBytes += bytes.count
                    for pending in state.ledger.pending where pending.sequence <= sequence {
                        state.reports[pending.sequence] = nil
                    }
                    state.ledger.acknowledged(record)
                    if state.ledger.shouldCompact(threshold: Self.compactThreshold) { try self.compact(&state) }
                }
            }
        } catch {
            // The reports stay pending: delivered again later, and the lead takes each id once.
            logger.error("cannot record a delivery in the outbox", metadata: ["nodeagent.error": "\(error.message)"])
            pendingGauge.record(pendingCount)
            return false
        }
        pendingGauge.record(pendingCount)
        return true
    }

    /// Rewrites the file with only the pending reports (or truncates it when there are none).
    /// A crash in the middle leaves either the old file or the new one.
    private func compact(_ state: inout State) throws(AgentError) {
        if state.ledger.pending.isEmpty {
            guard ftruncate(state.descriptor, 0) == 0, fsync(state.descriptor) == 0 else {
                throw AgentError(.dataDir, "cannot compact \(path): \(String(cString: strerror(errno)))")
            }
            state.fileBytes = 0
            state.ledger.compacted()
            return
        }
        let temporary = path + ".compact"
        let descriptor = open(temporary, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AgentError(.dataDir, "cannot compact \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = state.ledger.pending.flatMap { $0.encoded() }
        do {
            try Self.write(bytes, to: descriptor, path: temporary, restoring: 0)
        } catch {
            Glibc.close(descriptor)
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(descriptor)
            unlink(temporary)
            throw AgentError(.dataDir, "cannot compact \(path): \(reason)")
        }
        Self.syncDirectory(directory)
        Glibc.close(state.descriptor)
        state.descriptor = descriptor
        state.fileBytes = bytes.count
        state.ledger.compacted()
    }

    // MARK: Reading

    /// Up to `limit` reports, oldest first.
    func peek(limit: Int) -> [Pending] {
        state.withLock { state in
            state.ledger.pending.prefix(limit).map {
                Pending(sequence: $0.sequence, report: state.reports[$0.sequence], bytes: $0.payload.count)
            }
        }
    }

    /// Reports not yet acknowledged by the lead; `/health` shows it as `outbox_pending`.
    var pendingCount: Int { state.withLock { $0.ledger.pending.count } }

    /// No report waits; the connectivity service then may send a refresh directly.
    var isEmpty: Bool { pendingCount == 0 }

    /// Jobs whose results wait here: the worker keeps naming them in heartbeats, so their
    /// leases hold until the lead has the results.
    var pendingJobLeases: [JobLease] {
        state.withLock { state in
            state.ledger.pending.compactMap { record in
                guard let report = state.reports[record.sequence], report.kind == .jobResult, let job = report.job,
                    let result = report.result
                else { return nil }
                return JobLease(id: job, attempt: result.attempt)
            }
        }
    }

    /// A delivery attempt failed (the lead is away or refused the batch).
    func noteFailure(_ message: String) {
        state.withLock { state in
            state.failing = true
            state.lastError = message
        }
    }

    /// `GET /api/outbox`: what waits (count, bytes, age of the oldest in s), how many were
    /// delivered since start, whether delivery is failing and why, and what opening repaired.
    var status: OutboxStatus {
        state.withLock { state in
            let oldest = state.ledger.pending.first.flatMap { state.reports[$0.sequence] }.flatMap {
                ISOTime.parse($0.at)
            }
            return OutboxStatus(
                pending: state.ledger.pending.count, pendingBytes: state.ledger.liveBytes,
                oldestAgeS: oldest.map { max(0, Date().timeIntervalSince($0)).rounded(toPlaces: 3) },
                delivered: state.delivered,
                failing: state.failing, lastError: state.lastError, tornTailRepaired: tornTailRepaired,
                corruptRegionsSkipped: corruptRegionsSkipped, path: path)
        }
    }

    /// Stops taking reports, closes the file and stops the outbox thread.
    func close() async {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            Glibc.close(state.descriptor)
        }
        wake.withLock { $0 }?.finish()
        let started = lifecycle.withLock { lifecycle -> Bool in
            defer { lifecycle.closed = true }
            return lifecycle.started && !lifecycle.closed
        }
        if started { try? await io.shutdownGracefully() }
    }

    // MARK: File helpers

    /// Runs file work on the outbox's own thread, starting it on first use; throws ``AgentError``
    /// (`the outbox is closed`) after ``close()``.
    private func onIOThread<R: Sendable>(_ body: @escaping @Sendable () throws(AgentError) -> R)
        async throws(AgentError) -> R
    {
        let open = lifecycle.withLock { lifecycle -> Bool in
            if !lifecycle.started, !lifecycle.closed {
                io.start()
                lifecycle.started = true
            }
            return !lifecycle.closed
        }
        guard open else { throw AgentError(.dataDir, "the outbox is closed") }
        do {
            return try await io.runIfActive { try body() }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.dataDir, "the outbox is closed")
        }
    }

    /// Writes all of `bytes` and fsyncs; on failure cuts the file back to `restoring` bytes so
    /// no partial record stays behind, and throws.
    private static func write(_ bytes: [UInt8], to descriptor: Int32, path: String, restoring length: Int)
        throws(AgentError)
    {
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                _ = ftruncate(descriptor, off_t(length))
                throw AgentError(.dataDir, "cannot write \(path): \(reason)")
            }
            written += n
        }
        guard fdatasync(descriptor) == 0 else {
            let reason = String(cString: strerror(errno))
            _ = ftruncate(descriptor, off_t(length))
            throw AgentError(.dataDir, "cannot sync \(path): \(reason)")
        }
    }

    /// The whole file, for the scan at open; a file over twice ``maxBytes`` is refused rather than
    /// read into memory.
    private static func readAll(_ descriptor: Int32, path: String) throws(AgentError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress!, $0.count, offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AgentError(.dataDir, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
            offset += off_t(n)
            if bytes.count > maxBytes * 2 {
                throw AgentError(.dataDir, "\(path) is larger than \(maxBytes * 2 >> 20) MiB; move it away to start")
            }
        }
        return bytes
    }

    /// fsyncs the directory so a rename in it survives a crash.
    private static func syncDirectory(_ path: String) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if descriptor >= 0 {
            fsync(descriptor)
            Glibc.close(descriptor)
        }
    }
}

// MARK: - Sender

/// Delivers the outbox to the lead in order, in batches, and records each delivery: at once
/// after an append, and with backoff (250 ms doubling to 2 s) while the lead is away. On the
/// lead itself the batches go straight to its ``ReportInbox``.
final class OutboxSender: Service {
    let outbox: Outbox
    let logger: Logger
    /// Sends a batch; returns one outcome per report taken, in order (fewer when the lead
    /// stopped early). Throws when nothing was taken.
    let deliver: @Sendable ([NodeReport]) async throws -> [ReportOutcome]
    private let failures = Counter(label: "aurora_outbox_delivery_failures_total")
    /// Reports per delivery.
    static let batchSize = 100

    init(outbox: Outbox, logger: Logger, deliver: @escaping @Sendable ([NodeReport]) async throws -> [ReportOutcome]) {
        self.outbox = outbox
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "outbox"
        self.logger = logger
        self.deliver = deliver
    }

    /// The sender's loop: wakes on every append (and once at start), delivers batches until the
    /// outbox is empty, and between failed batches waits 250 ms doubling to 2 s. Ends on graceful
    /// shutdown; what was not delivered stays in the file for the next start.
    func run() async throws {
        var delay = Duration.milliseconds(250)
        for await _ in outbox.changes().cancelOnGracefulShutdown() {
            while !outbox.isEmpty, !Task.isShuttingDownGracefully, !Task.isCancelled {
                if await deliverBatch() {
                    delay = .milliseconds(250)
                    continue
                }
                let wait = delay
                do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) } } catch { break }
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// One batch; true when the lead took at least one report.
    private func deliverBatch() async -> Bool {
        let batch = outbox.peek(limit: Self.batchSize)
        guard let last = batch.last else { return true }
        // Records that no longer decode cannot be sent: they are acknowledged unsent.
        let sendable = batch.compactMap(\.report)
        if sendable.isEmpty {
            logger.error("dropping unreadable outbox records", metadata: ["nodeagent.count": "\(batch.count)"])
            return await outbox.acknowledge(through: last.sequence, delivered: 0)
        }
        let outcomes: [ReportOutcome]
        do {
            outcomes = try await deliver(sendable)
        } catch {
            failures.increment()
            let message = (error as? LeadCallError)?.message ?? (error as? Refusal)?.message ?? "\(error)"
            if !outbox.status.failing {
                logger.warning(
                    "cannot deliver reports; keeping them in the outbox",
                    metadata: [
                        "nodeagent.pending": "\(outbox.pendingCount)", "nodeagent.error": "\(message)",
                    ])
            }
            outbox.noteFailure(message)
            return false
        }
        guard !outcomes.isEmpty else {
            outbox.noteFailure("the lead took none of \(sendable.count) reports")
            return false
        }
        // The lead answers in order; everything up to the last answered report is done.
        let answered = Set(outcomes.map(\.id))
        var through: UInt64?
        for pending in batch {
            guard let report = pending.report else { through = pending.sequence; continue }
            guard answered.contains(report.id) else { break }
            through = pending.sequence
        }
        guard let through else {
            outbox.noteFailure("the lead's answer does not match the reports sent")
            return false
        }
        for outcome in outcomes where outcome.status == .refused {
            logger.notice(
                "the lead refused a report",
                metadata: [
                    "nodeagent.report": "\(outcome.id)", "nodeagent.code": "\(outcome.code ?? "")",
                    "nodeagent.reason": "\(outcome.message ?? "")",
                ])
        }
        logger.debug("reports delivered", metadata: ["nodeagent.count": "\(outcomes.count)"])
        return await outbox.acknowledge(through: through, delivered: outcomes.count)
    }
}

extension OutboxSender {
    /// Delivers a batch to the lead (`POST /api/nodes/{name}/reports`). A lead that does not
    /// know that route (404: an older version, during a rolling upgrade) gets job results and
    /// connectivity reports one by one on its older routes; events it cannot take are dropped.
    static func toLead(_ reports: [NodeReport], node: String, lead: LeadClient) async throws -> [ReportOutcome] {
        let answer: Result<ReportAnswer, LeadCallError>
        do throws(LeadCallError) {
            answer = .success(
                try await lead.call(
                    API.nodeReports, node, body: ReportBatch(reports: reports), as: ReportAnswer.self,
                    timeout: .seconds(10)))
        } catch {
            answer = .failure(error)
        }
        switch answer {
        case .success(let batch):
            return batch.results
        case .failure(.refused(let status, _)) where status == 404:
            return try await oneByOne(reports, lead: lead)
        case .failure(let error):
            throw error
        }
    }

    /// Stops at the first report the lead does not answer (returning what was answered before it);
    /// a 4xx refuses that report only. Throws when not even the first was answered.
    private static func oneByOne(_ reports: [NodeReport], lead: LeadClient) async throws -> [ReportOutcome] {
        var outcomes: [ReportOutcome] = []
        for report in reports {
            let sent: Result<Void, LeadCallError>
            do throws(LeadCallError) {
                switch report.kind {
                case .jobResult:
                    if let job = report.job, let result = report.result {
                        _ = try await lead.send(API.jobResult, job, body: result, timeout: .seconds(5))
                    }
                case .connectivity:
                    _ = try await lead.send(
                        API.reportConnectivity, body: report.connectivity ?? ConnectivityReport(results: []),
                        timeout: .seconds(5))
                case .event:
                    throw LeadCallError.refused(
                        status: 404, ErrorResponse(code: "not_supported", message: "this lead takes no node events"))
                }
                sent = .success(())
            } catch {
                sent = .failure(error)
            }
            switch sent {
            case .success:
                outcomes.append(ReportOutcome(id: report.id, status: .accepted))
            case .failure(.refused(let status, let error)) where status < 500:
                outcomes.append(
                    ReportOutcome(id: report.id, status: .refused, code: error.error.code, message: error.error.message)
                )
            case .failure(let error):
                if outcomes.isEmpty { throw error }
                return outcomes
            }
        }
        return outcomes
    }
}

extension NodeReport {
    /// A new report made now.
    /// The id is a fresh UUID: the lead records each id once, so a report delivered twice (an
    /// acknowledgement lost in a crash) counts once.
    static func make(
        _ kind: Kind, job: String? = nil, result: JobResult? = nil, connectivity: ConnectivityReport? = nil,
        event: NodeEvent? = nil
    ) -> NodeReport {
        NodeReport(
            id: UUID().uuidString.lowercased(), kind: kind, at: ISOTime.string(Date()), job: job, result: result,
            connectivity: connectivity, event: event)
    }
}
