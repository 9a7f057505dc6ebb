import AuroraAPI
import Foundation
import HTTPTypes
import Logging
import Mesh
import Metrics

/// The lead's GPU job coordinator: the durable queue, placement (``Scheduler``), leases,
/// delivery to workers, results, cancellation and failover.
///
/// Open jobs (queued, assigned, running) live in memory and in the `jobs` table; finished jobs
/// only in the table. Every change is applied in memory and written, with its event, in one
/// transaction before it is acknowledged. If a write fails, memory may be ahead of the store:
/// the coordinator then answers 503 and reloads from the store, which is the truth.
actor JobCoordinator {
    /// An open job.
    struct Record: Sendable {
        var job: Job
        var payload: [String: JSONValue]
        var order: Int64
        var submittedEpoch: Double
        /// When the lease runs out without a heartbeat naming the job: requeued.
        var lease: ContinuousClock.Instant?
        /// Handed to its worker (state running).
        var delivered: Bool
    }

    /// What the registry tells the coordinator about a node.
    struct NodeUpdate: Sendable, Equatable {
        var name: String
        var state: NodeState
        var labels: [String: String]
        var gpus: [GPU]
        var worker: WorkerReport?
        var rttMs: Double?
    }

    /// Limits of what a submission may ask for.
    enum Limits {
        static let maxPayloadBytes = 256 * 1024
        static let maxAttempts = 1...10
        static let defaultMaxAttempts = 3
        static let gpuCount = 1...16
        static let maxWait = 300.0
    }

    /// How long a worker may stay silent about a job it holds before the job is requeued.
    static let leaseDuration = Duration.seconds(10)

    let store: Store
    let hub: EventHub
    let logger: Logger
    let leadName: String

    private var open: [String: Record] = [:]
    private var byKey: [String: String] = [:]
    private var scheduler: Scheduler
    private var nodes: [String: NodeUpdate] = [:]
    private var nextOrder: Int64 = 1
    /// Jobs a node's worker must stop (cancelled, or requeued elsewhere).
    private var stops: [String: [JobLease]] = [:]
    /// Jobs placed on each node and not yet handed over, in placement order (ids may have gone
    /// stale through a cancel or requeue; they are checked when taken).
    private var undelivered: [String: [String]] = [:]
    private var nodeWaiters = WaitList()
    private var jobWaiters = WaitList()
    private var keyWaiters = WaitList()
    private var keysInFlight = Set<String>()
    /// Recent run times (s), for ETAs.
    private var runTimes: [Double] = []
    private(set) var loaded = false
    private var reloading = false
    /// Graceful shutdown: long-polls answer at once so the HTTP server can drain.
    private var closing = false

    private let submitted = Counter(label: "aurora_jobs_submitted_total")
    private let finished = Counter(label: "aurora_jobs_finished_total")
    private let requeued = Counter(label: "aurora_jobs_requeued_total")
    private let queuedGauge = Gauge(label: "aurora_jobs_queued")
    private let placedGauge = Gauge(label: "aurora_jobs_placed")

    init(store: Store, hub: EventHub, leadName: String, policy: Scheduler.Policy = .binpack, logger: Logger) {
        self.store = store
        self.hub = hub
        self.leadName = leadName
        self.scheduler = Scheduler(policy: policy, agingSeconds: 30)
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "jobs"
        self.logger = logger
    }

    // MARK: Loading

    /// Loads the open jobs and the nodes. Jobs that were placed keep their node, with a fresh
    /// lease: their workers re-attach with their next heartbeat.
    func load(nodes snapshot: [NodeUpdate]) async throws(AgentError) {
        // Updates that arrived while loading are newer than the snapshot.
        var merged = Dictionary(snapshot.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        for (name, update) in nodes { merged[name] = update }
        let updates = merged.values.sorted { $0.name < $1.name }
        open = [:]
        byKey = [:]
        undelivered = [:]
        scheduler = Scheduler(policy: scheduler.policy, agingSeconds: scheduler.agingSeconds)
        nodes = [:]
        for update in updates { applyNode(update) }
        let rows = try await store.query("SELECT \(Self.columns) FROM jobs WHERE state IN ('queued', 'assigned', 'running') ORDER BY seq").rows
        let now = ContinuousClock.now
        for row in rows {
            guard let (job, payload) = Self.job(row) else {
                logger.error("skipping an unreadable job row", metadata: ["nodeagent.job": "\(row[0] ?? "?")"])
                continue
            }
            let epoch = ISOTime.parse(job.submittedAt)?.timeIntervalSince1970 ?? Date().timeIntervalSince1970
            var record = Record(job: job, payload: payload, order: nextOrder, submittedEpoch: epoch, lease: nil, delivered: job.state == .running)
            nextOrder += 1
            if job.state == .queued {
                scheduler.enqueue(schedulerJob(record))
            } else if let node = job.node {
                record.lease = now + Self.leaseDuration
                scheduler.restore(Scheduler.Placement(jobID: job.id, node: node, gpus: job.gpus ?? [], reservedMB: job.requirements.minVramMB))
                if job.state == .assigned { undelivered[node, default: []].append(job.id) }
            }
            open[job.id] = record
            if let key = Self.scopedKey(job) { byKey[key] = job.id }
        }
        loaded = true
        reloading = false
        logger.info("jobs loaded", metadata: ["nodeagent.open": "\(open.count)"])
        // Jobs on nodes that died while the lead was away go elsewhere.
        for update in updates where update.state == .dead || update.state == .left {
            try? await requeueAll(on: update.name, reason: update.state == .dead ? "node_dead" : "node_left")
        }
        try? await dispatch()
    }

    // MARK: Submitting

    /// Queues a job, or returns the job already submitted with the same idempotency key
    /// (`created` false).
    func submit(_ submission: JobSubmission, by submitter: String) async throws(APIError) -> (job: Job, created: Bool) {
        try requireLoaded()
        let valid = try Self.validate(submission)
        if valid.kind == .exec, !JobAccess.mayRunExec(submitter) {
            throw APIError(status: .forbidden, code: "exec_not_allowed",
                           message: "exec jobs run only when the mesh admin submits them (\(submitter) may submit generate jobs); "
                               + "submit on the lead with its operator token")
        }
        // Idempotency keys belong to their submitter: another caller's key is another key.
        let scopedKey = valid.idempotencyKey.map { Self.scopedKey(submitter, $0) }
        if valid.kind == .exec {
            let labels = valid.requirements.labels ?? [:]
            let allowed = nodes.values.contains { node in
                node.worker?.allowExec == true && node.state != .dead && node.state != .left
                    && labels.allSatisfy { node.labels[$0.key] == $0.value }
            }
            guard allowed else {
                throw APIError(status: .forbidden, code: "exec_not_allowed",
                               message: "kind: exec jobs are not allowed on any \(labels.isEmpty ? "" : "matching ")node (set gpu.allow_exec: true in a worker's profile)")
            }
        }
        // Duplicates of a key wait for the first submission's outcome, then find its job.
        if let key = scopedKey {
            while keysInFlight.contains(key) {
                await waitOn(.key, key, timeout: .seconds(30))
            }
            if let id = byKey[key], let record = open[id] { return (view(record), false) }
            keysInFlight.insert(key)
        }
        defer {
            if let key = scopedKey {
                keysInFlight.remove(key)
                keyWaiters.wakeAll(key)
            }
        }

        let now = Date()
        let id = UUID().uuidString.lowercased()
        let job = Job(id: id, kind: valid.kind, priority: valid.priority, state: .queued, attempt: 1, maxAttempts: valid.maxAttempts,
                      requirements: valid.requirements, idempotencyKey: valid.idempotencyKey, submittedAt: ISOTime.string(now),
                      submittedBy: submitter)
        let record = Record(job: job, payload: valid.payload, order: nextOrder, submittedEpoch: now.timeIntervalSince1970, lease: nil, delivered: false)
        nextOrder += 1
        open[id] = record
        if let key = scopedKey { byKey[key] = id }
        scheduler.enqueue(schedulerJob(record))
        let placed = place()

        var writes = Writes()
        writes.insert(open[id]!.job, payload: valid.payload)
        writes.event(EventType.jobQueued, open[id]!.job, ["kind": .string(valid.kind.rawValue), "priority": .number(Double(valid.priority)),
                                                          "min_vram_mb": .number(Double(valid.requirements.minVramMB))])
        for placement in placed where placement.jobID != id { writes.update(open[placement.jobID]!.job) }
        let outcome: Writes.Outcome
        do { outcome = try await commit(writes) } catch { throw APIError.storeUnavailable(error) }
        if case .duplicate(let existing) = outcome {
            // The key belongs to a job that already finished: that job is the answer.
            open[id] = nil
            if let key = scopedKey { byKey[key] = nil }
            scheduler.dequeue(id)
            scheduler.release(id)
            try? await dispatch()
            return (existing, false)
        }
        submitted.increment()
        wakeNodes(placed)
        return (view(open[id] ?? record), true)
    }

    /// A submission checked and normalised.
    struct Valid: Sendable {
        var kind: JobKind
        var priority: Int
        var requirements: JobRequirements
        var payload: [String: JSONValue]
        var idempotencyKey: String?
        var maxAttempts: Int
    }

    /// Checks a submission; every refusal names the field.
    static func validate(_ submission: JobSubmission) throws(APIError) -> Valid {
        var requirements = submission.requirements ?? JobRequirements()
        guard requirements.minVramMB >= 0 else { throw APIError.badRequest("requirements.min_vram_mb must be 0 or more (MB)") }
        guard requirements.minVramMB <= 16 << 20 else { throw APIError.badRequest("requirements.min_vram_mb is larger than any GPU") }
        let count = requirements.gpuCount ?? 1
        guard Limits.gpuCount.contains(count) else { throw APIError.badRequest("requirements.gpu_count must be 1-16") }
        requirements.gpuCount = count
        if let model = requirements.gpuModel, model.isEmpty || model.count > 128 {
            throw APIError.badRequest("requirements.gpu_model must be 1-128 characters")
        }
        let maxAttempts = submission.maxAttempts ?? Limits.defaultMaxAttempts
        guard Limits.maxAttempts.contains(maxAttempts) else { throw APIError.badRequest("max_attempts must be 1-10") }
        if let key = submission.idempotencyKey, key.isEmpty || key.utf8.count > 200 {
            throw APIError.badRequest("idempotency_key must be 1-200 bytes")
        }
        let size = (try? APICoding.encoder().encode(submission.payload).count) ?? Int.max
        guard size <= Limits.maxPayloadBytes else {
            throw APIError(status: .contentTooLarge, code: "payload_too_large",
                           message: "payload is \(size) bytes; the limit is \(Limits.maxPayloadBytes)")
        }
        let payload = submission.payload
        switch submission.kind {
        case .generate:
            guard case .string(let model)? = payload["model"], !model.isEmpty else { throw APIError.badRequest("payload.model must be a non-empty string") }
            switch (payload["prompt"], payload["messages"]) {
            case (.string?, nil), (nil, .array?): break
            case (nil, nil): throw APIError.badRequest("payload needs 'prompt' (a string) or 'messages' (a list)")
            case (.some, .some): throw APIError.badRequest("payload takes 'prompt' or 'messages', not both")
            case (.some, nil): throw APIError.badRequest("payload.prompt must be a string")
            case (nil, .some): throw APIError.badRequest("payload.messages must be a list")
            }
            if let options = payload["options"], case .object = options {} else if payload["options"] != nil {
                throw APIError.badRequest("payload.options must be an object")
            }
            if let unknown = payload.keys.sorted().first(where: { !["model", "prompt", "messages", "options", "timeout_s"].contains($0) }) {
                throw APIError.badRequest("unknown field 'payload.\(unknown)'")
            }
        case .exec:
            guard case .array(let argv)? = payload["argv"], !argv.isEmpty else {
                throw APIError.badRequest("payload.argv must be a non-empty list of strings")
            }
            guard argv.allSatisfy({ $0.string != nil }) else { throw APIError.badRequest("payload.argv must be a list of strings") }
            if let unknown = payload.keys.sorted().first(where: { !["argv", "timeout_s", "max_output_bytes"].contains($0) }) {
                throw APIError.badRequest("unknown field 'payload.\(unknown)'")
            }
            if let value = payload["max_output_bytes"] {
                guard case .number(let n) = value, n >= 0, n <= 262_144 else { throw APIError.badRequest("payload.max_output_bytes must be 0-262144") }
            }
        }
        if let value = payload["timeout_s"] {
            guard case .number(let n) = value, n > 0, n <= 7 * 86_400 else { throw APIError.badRequest("payload.timeout_s must be a number of seconds (up to 604800)") }
        }
        // The store's text and jsonb cannot hold U+0000: refused here, not as a store failure.
        if let field = Self.fieldHoldingNUL(submission) { throw APIError.badRequest("\(field) must not contain U+0000") }
        return Valid(kind: submission.kind, priority: submission.priority?.value ?? JobPriority.normal, requirements: requirements,
                     payload: payload, idempotencyKey: submission.idempotencyKey, maxAttempts: maxAttempts)
    }

    /// The first field of a submission whose text (a key or a string, at any depth) holds U+0000.
    static func fieldHoldingNUL(_ submission: JobSubmission) -> String? {
        func holds(_ value: JSONValue) -> Bool {
            switch value {
            case .string(let text): text.unicodeScalars.contains("\u{0}")
            case .array(let items): items.contains(where: holds)
            case .object(let members): members.contains { $0.key.unicodeScalars.contains("\u{0}") || holds($0.value) }
            case .number, .bool, .null: false
            }
        }
        let requirements = submission.requirements
        if holds(.object(submission.payload)) { return "payload" }
        if let key = submission.idempotencyKey, holds(.string(key)) { return "idempotency_key" }
        if let model = requirements?.gpuModel, holds(.string(model)) { return "requirements.gpu_model" }
        if let labels = requirements?.labels, holds(.object(labels.mapValues(JSONValue.string))) { return "requirements.labels" }
        return nil
    }

    // MARK: Workers

    /// New jobs for `node`'s worker and the jobs it must stop; waits up to `wait` for either.
    /// Handing a job over marks it running (written before the answer).
    func assignments(for node: String, wait: Duration) async throws(APIError) -> AssignmentBatch {
        let deadline = ContinuousClock.now + wait
        while true {
            try requireLoaded()
            let ready = (undelivered.removeValue(forKey: node) ?? []).compactMap { open[$0] }
                .filter { $0.job.node == node && $0.job.state == .assigned && !$0.delivered }
            let stopping = stops.removeValue(forKey: node) ?? []
            if !ready.isEmpty || !stopping.isEmpty || ContinuousClock.now >= deadline || closing {
                var writes = Writes()
                let now = Date(), instant = ContinuousClock.now
                var handed: [Assignment] = []
                for record in ready {
                    guard var current = open[record.job.id] else { continue }
                    current.job.state = .running
                    current.job.startedAt = ISOTime.string(now)
                    current.delivered = true
                    current.lease = instant + Self.leaseDuration
                    current.job.leaseDeadline = ISOTime.string(now.addingTimeInterval(Self.leaseDuration.seconds))
                    open[record.job.id] = current
                    writes.update(current.job)
                    writes.event(EventType.jobStarted, current.job, ["gpus": .array((current.job.gpus ?? []).map { .number(Double($0)) })])
                    handed.append(Assignment(id: current.job.id, attempt: current.job.attempt, kind: current.job.kind,
                                             payload: current.payload, gpus: current.job.gpus ?? [], submittedBy: current.job.submittedBy))
                }
                if !writes.isEmpty {
                    do { _ = try await commit(writes) } catch {
                        stops[node, default: []].append(contentsOf: stopping)
                        throw APIError.storeUnavailable(error)
                    }
                }
                return AssignmentBatch(assignments: handed, cancel: stopping)
            }
            await waitOn(.node, node, timeout: deadline - ContinuousClock.now)
        }
    }

    /// A worker's heartbeat names the jobs it holds: their leases are extended; jobs it should
    /// not hold (cancelled, requeued elsewhere, unknown) are added to its stop list.
    func renew(_ node: String, _ leases: [JobLease]) {
        guard loaded else { return }
        let now = ContinuousClock.now
        var stopping: [JobLease] = []
        for lease in leases {
            if var record = open[lease.id], record.job.node == node, record.job.attempt == lease.attempt, record.delivered {
                record.lease = now + Self.leaseDuration
                open[lease.id] = record
            } else if !(open[lease.id].map { $0.job.node == node && $0.job.attempt == lease.attempt } ?? false) {
                stopping.append(lease)
            }
        }
        if !stopping.isEmpty {
            var list = stops[node, default: []]
            for lease in stopping where !list.contains(lease) { list.append(lease) }
            stops[node] = list
            nodeWaiters.wakeAll(node)
        }
    }

    /// A worker reports how a job ended. The attempt is a fencing token: a stale one is
    /// refused with 409 and changes nothing.
    func result(_ id: String, from node: String, _ report: JobResult) async throws(APIError) -> Job {
        try requireLoaded()
        guard let record = open[id] else {
            let stored = try await fetch(id, for: JobAccess.admin)
            guard stored.node == node else {
                throw APIError(status: .conflict, code: "not_assigned", message: "job \(id) is not assigned to node '\(node)'")
            }
            throw APIError(status: .conflict, code: "already_finished",
                           message: "job \(id) is already \(stored.state.rawValue); this result changes nothing")
        }
        guard record.job.node == node else {
            throw APIError(status: .conflict, code: "not_assigned", message: "job \(id) is not assigned to node '\(node)' (any more)")
        }
        guard record.job.attempt == report.attempt else {
            throw APIError(status: .conflict, code: "stale_attempt",
                           message: "job \(id) is at attempt \(record.job.attempt); the result of attempt \(report.attempt) is refused")
        }
        if report.outcome == .failed, report.retry == true {
            try await requeue([id], reason: "worker: \(report.error ?? "failed")")
            try? await dispatch()
            return view(open[id] ?? record)
        }
        var job = record.job
        job.state = report.outcome == .succeeded ? .succeeded : .failed
        job.result = report.result
        job.error = report.outcome == .failed ? (report.error ?? "failed") : nil
        let now = Date()
        job.finishedAt = ISOTime.string(now)
        job.leaseDeadline = nil
        if let started = job.startedAt.flatMap(ISOTime.parse) { noteRunTime(now.timeIntervalSince(started)) }
        var writes = Writes()
        writes.update(job)
        var data: [String: JSONValue] = ["attempt": .number(Double(job.attempt))]
        if let error = job.error { data["error"] = .string(String(error.prefix(200))) }
        writes.event(job.state == .succeeded ? EventType.jobSucceeded : EventType.jobFailed, job, data)
        finish(job)
        do { _ = try await commit(writes) } catch { throw APIError.storeUnavailable(error) }
        finished.increment()
        try? await dispatch()
        return job
    }

    // MARK: Clients

    /// Cancels a job: a queued one at once, a placed one also on its worker.
    func cancel(_ id: String, by caller: String) async throws(APIError) -> Job {
        try requireLoaded()
        guard let record = open[id] else {
            let stored = try await fetch(id, for: caller)
            throw APIError(status: .conflict, code: "already_finished", message: "job \(id) is already \(stored.state.rawValue)")
        }
        guard JobAccess.mayRead(record.job, caller) else { throw Self.notFound(id) }
        var job = record.job
        if let node = job.node, job.state == .assigned || job.state == .running {
            stops[node, default: []].append(JobLease(id: id, attempt: job.attempt))
        }
        let from = job.state
        job.state = .cancelled
        job.finishedAt = ISOTime.string(Date())
        job.leaseDeadline = nil
        var writes = Writes()
        writes.update(job)
        writes.event(EventType.jobCancelled, job, ["from": .string(from.rawValue)])
        finish(job)
        if let node = job.node { nodeWaiters.wakeAll(node) }
        do { _ = try await commit(writes) } catch { throw APIError.storeUnavailable(error) }
        try? await dispatch()
        return job
    }

    /// A job by id; with `wait`, waits up to that long for it to finish.
    func job(_ id: String, wait: Duration? = nil, for caller: String) async throws(APIError) -> Job {
        try requireLoaded()
        let deadline = ContinuousClock.now + (wait ?? .zero)
        while let record = open[id] {
            guard JobAccess.mayRead(record.job, caller) else { throw Self.notFound(id) }
            guard wait != nil, ContinuousClock.now < deadline, !closing else { return view(record) }
            await waitOn(.job, id, timeout: deadline - ContinuousClock.now)
        }
        return try await fetch(id, for: caller)
    }

    /// Jobs, newest first, optionally in one state: every job for the mesh admin, the
    /// caller's own for anyone else.
    func list(state: JobState?, limit: Int, for caller: String) async throws(APIError) -> JobList {
        try requireLoaded()
        var sql = "SELECT \(Self.columns) FROM jobs"
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
                parameters.append("%" + suffix.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                                      .replacingOccurrences(of: "_", with: "\\_"))
                condition = "(\(condition) OR (submitted_by LIKE 'api:%' AND submitted_by LIKE $\(parameters.count)))"
            }
            conditions.append(condition)
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY seq DESC LIMIT \(max(1, min(limit, 10_000)))"
        let rows: [[String?]]
        do { rows = try await store.query(sql, parameters).rows } catch { throw APIError.storeUnavailable(error) }
        let positions = queuePositions()
        return JobList(jobs: rows.compactMap { row in
            guard var job = Self.job(row)?.0 else { return nil }
            if let record = open[job.id] { job = view(record, positions: positions) }
            return job
        })
    }

    func queue() throws(APIError) -> QueueView {
        try requireLoaded()
        let now = Date().timeIntervalSince1970
        let order = scheduler.order(now: now)
        let mean = meanRunTime()
        let slots = max(1, scheduler.placedCount)
        var byPriority: [String: Int] = [:]
        let entries = order.enumerated().compactMap { index, id -> QueueView.Entry? in
            guard let record = open[id] else { return nil }
            byPriority[String(record.job.priority), default: 0] += 1
            return QueueView.Entry(id: id, kind: record.job.kind, priority: record.job.priority, position: index + 1,
                                   etaS: Self.eta(position: index + 1, slots: slots, mean: mean), submittedAt: record.job.submittedAt,
                                   minVramMB: record.job.requirements.minVramMB)
        }
        return QueueView(queued: entries, byPriority: byPriority, meanRunS: mean.map { $0.rounded(toPlaces: 3) })
    }

    func status() throws(APIError) -> GPUStatus {
        try requireLoaded()
        let views = nodes.values.sorted { $0.name < $1.name }.compactMap { node -> GPUStatus.NodeView? in
            guard let worker = scheduler.worker(node.name), node.worker != nil || !node.gpus.isEmpty else { return nil }
            let gpus = node.gpus.map { gpu in
                let slot = worker.gpus.first { $0.index == gpu.index }
                return GPUStatus.GPUView(gpu: gpu, reservedMB: slot?.reservedMB ?? 0, freeVramMB: slot?.freeMB ?? 0)
            }
            return GPUStatus.NodeView(name: node.name, state: node.state, accepting: node.worker?.accepting ?? false,
                                      allowExec: node.worker?.allowExec ?? false, gpus: gpus, running: worker.placed)
        }
        return GPUStatus(nodes: views, queued: scheduler.queuedCount, policy: scheduler.policy.rawValue)
    }

    // MARK: Nodes and time

    /// A node's record changed (heartbeat, state): placement follows; a dead or departed node's
    /// jobs are requeued.
    func nodeChanged(_ update: NodeUpdate) async {
        let before = nodes[update.name]
        applyNode(update)
        guard loaded else { return }
        if update.state == .dead || update.state == .left, before?.state != update.state {
            try? await requeueAll(on: update.name, reason: update.state == .dead ? "node_dead" : "node_left")
        }
        try? await dispatch()
    }

    /// Requeues jobs whose lease ran out, places what fits, and reloads after a store failure.
    func tick() async {
        if !loaded {
            guard reloading else { return }
            do { try await load(nodes: []) } catch {
                logger.warning("cannot reload jobs; retrying", metadata: ["nodeagent.error": "\(error.message)"])
            }
            return
        }
        let now = ContinuousClock.now
        let expired = open.values.filter { ($0.job.state == .assigned || $0.job.state == .running) && ($0.lease.map { $0 < now } ?? false) }
            .map(\.job.id)
        if !expired.isEmpty { try? await requeue(expired, reason: "lease_expired") }
        try? await dispatch()
        queuedGauge.record(scheduler.queuedCount)
        placedGauge.record(scheduler.placedCount)
    }

    /// Graceful shutdown: every long-poll answers now, and later ones do not wait.
    func close() {
        closing = true
        for key in nodeWaiters.keys { nodeWaiters.wakeAll(key) }
        for key in jobWaiters.keys { jobWaiters.wakeAll(key) }
    }

    // MARK: Internals

    private func requireLoaded() throws(APIError) {
        guard loaded else { throw APIError(status: .serviceUnavailable, code: "starting", message: "the job coordinator is starting; retry in a moment") }
    }

    private func applyNode(_ update: NodeUpdate) {
        nodes[update.name] = update
        let eligible = update.state == .alive && (update.worker?.accepting ?? false)
        scheduler.upsert(Scheduler.Worker(
            name: update.name, eligible: eligible, allowExec: update.worker?.allowExec ?? false, canGenerate: update.worker?.generate ?? false,
            labels: update.labels,
            gpus: update.gpus.map { Scheduler.GPUSlot(index: $0.index, model: $0.name, totalMB: $0.memoryTotalMB, usedByOthersMB: $0.memoryUsedMB) },
            rttMs: update.rttMs ?? .infinity))
    }

    private func schedulerJob(_ record: Record) -> Scheduler.Job {
        let requirements = record.job.requirements
        return Scheduler.Job(id: record.job.id, priority: record.job.priority, submittedAt: record.submittedEpoch, order: record.order,
                             requirements: Scheduler.Requirements(minVramMB: requirements.minVramMB, gpuModel: requirements.gpuModel,
                                                                  gpuCount: requirements.gpuCount ?? 1, labels: requirements.labels ?? [:],
                                                                  exec: record.job.kind == .exec))
    }

    /// Runs the scheduler and applies its placements in memory (state assigned, with a lease).
    private func place() -> [Scheduler.Placement] {
        let placed = scheduler.place(now: Date().timeIntervalSince1970)
        let now = Date(), instant = ContinuousClock.now
        for placement in placed {
            guard var record = open[placement.jobID] else { continue }
            record.job.state = .assigned
            record.job.node = placement.node
            record.job.gpus = placement.gpus
            record.lease = instant + Self.leaseDuration
            record.job.leaseDeadline = ISOTime.string(now.addingTimeInterval(Self.leaseDuration.seconds))
            record.delivered = false
            open[placement.jobID] = record
            undelivered[placement.node, default: []].append(placement.jobID)
        }
        return placed
    }

    /// Places what fits and writes the placements.
    private func dispatch() async throws(AgentError) {
        let placed = place()
        guard !placed.isEmpty else { return }
        var writes = Writes()
        for placement in placed { if let record = open[placement.jobID] { writes.update(record.job) } }
        _ = try await commit(writes)
        wakeNodes(placed)
    }

    private func wakeNodes(_ placed: [Scheduler.Placement]) {
        for node in Set(placed.map(\.node)) { nodeWaiters.wakeAll(node) }
    }

    private func requeueAll(on node: String, reason: String) async throws(AgentError) {
        let ids = open.values.filter { $0.job.node == node && ($0.job.state == .assigned || $0.job.state == .running) }.map(\.job.id)
        guard !ids.isEmpty else { return }
        do { try await requeue(ids, reason: reason) } catch { throw AgentError(.store, error.message) }
    }

    /// Puts placed jobs back in the queue with attempt + 1, or fails them when their attempts
    /// are spent. Their old worker is told to stop.
    private func requeue(_ ids: [String], reason: String) async throws(APIError) {
        var writes = Writes()
        for id in ids {
            guard var record = open[id] else { continue }
            let from = record.job.node
            scheduler.release(id)
            if let from { stops[from, default: []].append(JobLease(id: id, attempt: record.job.attempt)) }
            if record.job.attempt >= record.job.maxAttempts {
                var job = record.job
                job.state = .failed
                job.error = "\(reason) on \(from ?? "?"); all \(job.maxAttempts) attempts used"
                job.finishedAt = ISOTime.string(Date())
                job.leaseDeadline = nil
                writes.update(job)
                writes.event(EventType.jobFailed, job, ["attempt": .number(Double(job.attempt)), "error": .string(job.error!)])
                finish(job)
                continue
            }
            record.job.attempt += 1
            record.job.state = .queued
            record.job.node = nil
            record.job.gpus = nil
            record.job.startedAt = nil
            record.job.leaseDeadline = nil
            record.lease = nil
            record.delivered = false
            open[id] = record
            scheduler.enqueue(schedulerJob(record))
            writes.update(record.job)
            writes.event(EventType.jobRequeued, record.job, ["from_node": from.map(JSONValue.string) ?? .null,
                                                             "attempt": .number(Double(record.job.attempt)), "reason": .string(reason)])
            requeued.increment()
            logger.notice("job requeued", metadata: ["nodeagent.job": "\(id)", "nodeagent.from": "\(from ?? "?")", "nodeagent.reason": "\(reason)"])
        }
        for node in stops.keys { nodeWaiters.wakeAll(node) }
        do { _ = try await commit(writes) } catch { throw APIError.storeUnavailable(error) }
    }

    /// A job reached a terminal state: out of memory and its reservation freed. Its waiters
    /// wake once the write has committed (``commit(_:)``), so they read the final row.
    private func finish(_ job: Job) {
        open[job.id] = nil
        if let key = Self.scopedKey(job), byKey[key] == job.id { byKey[key] = nil }
        scheduler.dequeue(job.id)
        scheduler.release(job.id)
    }

    /// Writes a batch in one transaction and publishes its events after the commit. A failed
    /// write leaves memory ahead of the store: the coordinator reloads.
    private func commit(_ writes: Writes) async throws(AgentError) -> Writes.Outcome {
        let hub = self.hub
        let publish: @Sendable (Writes.Outcome) -> Void = { outcome in
            if case .committed(let events) = outcome { hub.publish(events) }
        }
        do {
            let outcome: Writes.Outcome
            if writes.isSingle {
                let single = try writes.single()
                outcome = try await store.withConnection({ connection throws(AgentError) in try Writes.apply(single, on: connection) }, after: publish)
            } else {
                outcome = try await store.inTransaction({ connection throws(AgentError) in try writes.apply(on: connection) }, afterCommit: publish)
            }
            for id in writes.finishedIDs { jobWaiters.wakeAll(id) }
            return outcome
        } catch {
            logger.error("cannot write jobs; reloading from the store", metadata: ["nodeagent.error": "\(error.message)"])
            loaded = false
            reloading = true
            for key in nodeWaiters.keys { nodeWaiters.wakeAll(key) }
            for key in jobWaiters.keys { jobWaiters.wakeAll(key) }
            throw error
        }
    }

    private func fetch(_ id: String, for caller: String) async throws(APIError) -> Job {
        let row: [String?]?
        do { row = try await store.query("SELECT \(Self.columns) FROM jobs WHERE id = $1", [id]).rows.first } catch {
            throw APIError.storeUnavailable(error)
        }
        guard let row, let job = Self.job(row)?.0, JobAccess.mayRead(job, caller) else { throw Self.notFound(id) }
        return job
    }

    /// Another caller's job is answered as if it did not exist: its id tells nothing.
    private static func notFound(_ id: String) -> APIError { APIError.notFound("no job with id '\(InputRules.printable(String(id.prefix(64))))'") }

    /// The store's form of an idempotency key: the submitter, a newline (never in a key), the key.
    static func scopedKey(_ submitter: String?, _ key: String) -> String { (submitter ?? JobAccess.admin) + "\n" + key }

    static func scopedKey(_ job: Job) -> String? { job.idempotencyKey.map { scopedKey(job.submittedBy, $0) } }

    /// The key as its submitter gave it.
    static func unscopedKey(_ stored: String) -> String {
        stored.firstIndex(of: "\n").map { String(stored[stored.index(after: $0)...]) } ?? stored
    }

    private func view(_ record: Record, positions: [String: Int]? = nil) -> Job {
        var job = record.job
        if job.state == .queued {
            job.position = positions?[job.id] ?? scheduler.position(of: job.id, now: Date().timeIntervalSince1970)
            job.etaS = job.position.flatMap { Self.eta(position: $0, slots: max(1, scheduler.placedCount), mean: meanRunTime()) }
        }
        return job
    }

    private func queuePositions() -> [String: Int] {
        var positions: [String: Int] = [:]
        for (index, id) in scheduler.order(now: Date().timeIntervalSince1970).enumerated() { positions[id] = index + 1 }
        return positions
    }

    private func noteRunTime(_ seconds: Double) {
        runTimes.append(max(0, seconds))
        if runTimes.count > 100 { runTimes.removeFirst(runTimes.count - 100) }
    }

    private func meanRunTime() -> Double? {
        runTimes.isEmpty ? nil : runTimes.reduce(0, +) / Double(runTimes.count)
    }

    /// Jobs ahead run `slots` at a time, each for the mean run time.
    static func eta(position: Int, slots: Int, mean: Double?) -> Double? {
        mean.map { (Double((position - 1) / max(1, slots) + 1) * $0).rounded(toPlaces: 1) }
    }

    // MARK: Rows

    static let columns = """
        id, kind, priority, state, attempt, max_attempts, requirements::text, idempotency_key, node, gpus::text, \
        \(SQL.iso("submitted_at")), \(SQL.iso("started_at")), \(SQL.iso("finished_at")), \(SQL.iso("lease_deadline")), \
        result::text, error, submitted_by, payload::text
        """

    static func job(_ row: [String?]) -> (Job, [String: JSONValue])? {
        guard row.count == 18, let id = row[0], let kind = row[1].flatMap(JobKind.init(rawValue:)), let priority = row[2].flatMap({ Int($0) }),
              let state = row[3].flatMap(JobState.init(rawValue:)), let attempt = row[4].flatMap({ Int($0) }),
              let maxAttempts = row[5].flatMap({ Int($0) }), let requirements = SQL.decode(JobRequirements.self, row[6]),
              let submittedAt = row[10] else { return nil }
        let job = Job(id: id, kind: kind, priority: priority, state: state, attempt: attempt, maxAttempts: maxAttempts,
                      requirements: requirements, idempotencyKey: row[7].map(unscopedKey), node: row[8], gpus: SQL.decode([Int].self, row[9]),
                      submittedAt: submittedAt, startedAt: row[11], finishedAt: row[12], leaseDeadline: row[13],
                      result: SQL.decode(JSONValue.self, row[14]), error: row[15], submittedBy: row[16])
        return (job, SQL.decode([String: JSONValue].self, row[17]) ?? [:])
    }
}

/// One transaction's worth of job writes and their events.
struct Writes: Sendable {
    enum Outcome: Sendable {
        case committed([MeshEvent])
        /// The insert's idempotency key belongs to an existing (finished) job: nothing written.
        case duplicate(Job)
    }

    private var insertJob: (Job, [String: JSONValue])?
    private var updates: [Job] = []
    private var events: [EventLog.Draft] = []

    /// One job row and its one event: written as one statement (a data-modifying CTE), which
    /// commits on its own — one round trip instead of BEGIN, two statements and COMMIT.
    var isSingle: Bool {
        events.count == 1 && ((insertJob != nil && updates.allSatisfy { $0.id == insertJob?.0.id }) || (insertJob == nil && updates.count == 1))
    }

    var isEmpty: Bool { insertJob == nil && updates.isEmpty && events.isEmpty }

    /// Jobs this batch finishes (succeeded, failed, cancelled).
    var finishedIDs: [String] { updates.filter(\.state.isTerminal).map(\.id) }

    mutating func insert(_ job: Job, payload: [String: JSONValue]) { insertJob = (job, payload) }

    mutating func update(_ job: Job) {
        if let index = updates.firstIndex(where: { $0.id == job.id }) { updates[index] = job } else { updates.append(job) }
    }

    mutating func event(_ type: String, _ job: Job, _ extra: [String: JSONValue] = [:]) {
        var data = extra
        data["id"] = .string(job.id)
        data["kind"] = .string(job.kind.rawValue)
        data["attempt"] = .number(Double(job.attempt))
        events.append(EventLog.Draft(type: type, node: job.node, data: data))
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
            return Single(sql: Self.insertWithEventSQL, name: "job_insert_event",
                          parameters: Self.insertParameters(job, payload) + [eventID, draft.type, draft.node, data],
                          eventID: eventID, draft: draft, inserted: job)
        }
        return Single(sql: Self.updateWithEventSQL, name: "job_update_event",
                      parameters: Self.updateParameters(updates[0]) + [eventID, draft.type, draft.node, data],
                      eventID: eventID, draft: draft, inserted: nil)
    }

    static func apply(_ single: Single, on connection: PostgresConnection) throws(AgentError) -> Outcome {
        let rows = try connection.execute(single.sql, single.parameters, prepared: single.name).rows
        if rows.isEmpty {
            // The insert hit an idempotency key; an update found no row (nothing to announce).
            return try single.inserted.map { job throws(AgentError) in try duplicate(of: job, on: connection) } ?? .committed([])
        }
        return .committed([try EventLog.event(single.draft, id: single.eventID, row: rows.first)])
    }

    static let insertWithEventSQL = "WITH job AS (\(insertSQL)) "
        + "INSERT INTO events (id, type, node, data) SELECT $15, $16, $17, $18::jsonb FROM job RETURNING seq, \(SQL.iso("at"))"
    static let updateWithEventSQL = "WITH job AS (\(updateSQL) RETURNING id) "
        + "INSERT INTO events (id, type, node, data) SELECT $11, $12, $13, $14::jsonb FROM job RETURNING seq, \(SQL.iso("at"))"

    /// The job that holds `job`'s idempotency key (the insert did nothing).
    private static func duplicate(of job: Job, on connection: PostgresConnection) throws(AgentError) -> Outcome {
        guard let key = JobCoordinator.scopedKey(job),
              let row = try connection.execute("SELECT \(JobCoordinator.columns) FROM jobs WHERE idempotency_key = $1", [key]).rows.first,
              let existing = JobCoordinator.job(row)?.0 else {
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
        [job.id, JobCoordinator.scopedKey(job), job.kind.rawValue, String(job.priority), SQL.json(job.requirements), SQL.json(payload),
         job.state.rawValue, String(job.attempt), String(job.maxAttempts), job.node, job.gpus.map { SQL.json($0) },
         job.leaseDeadline, job.submittedAt, job.submittedBy]
    }

    static let updateSQL = """
        UPDATE jobs SET state = $2, attempt = $3::integer, node = $4, gpus = $5::jsonb, lease_deadline = $6::timestamptz,
            started_at = $7::timestamptz, finished_at = $8::timestamptz, result = $9::jsonb, error = $10
        WHERE id = $1
        """

    static func updateParameters(_ job: Job) -> [String?] {
        [job.id, job.state.rawValue, String(job.attempt), job.node, job.gpus.map { SQL.json($0) }, job.leaseDeadline,
         job.startedAt, job.finishedAt, job.result.map { SQL.json($0) }, job.error]
    }

    func apply(on connection: PostgresConnection) throws(AgentError) -> Outcome {
        if let (job, payload) = insertJob {
            let inserted = try connection.execute(Self.insertSQL, Self.insertParameters(job, payload), prepared: "job_insert").rows
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

/// Continuations waiting for something about a key (a node's assignments, a job's end), each
/// resumed exactly once: by a wake, or by its timeout.
struct WaitList {
    private var waiters: [String: [UUID: CheckedContinuation<Void, Never>]] = [:]

    var keys: [String] { Array(waiters.keys) }

    mutating func add(_ key: String, _ id: UUID, _ continuation: CheckedContinuation<Void, Never>) {
        waiters[key, default: [:]][id] = continuation
    }

    mutating func wakeAll(_ key: String) {
        guard let list = waiters.removeValue(forKey: key) else { return }
        for continuation in list.values { continuation.resume() }
    }

    mutating func wake(_ key: String, _ id: UUID) {
        guard let continuation = waiters[key]?.removeValue(forKey: id) else { return }
        if waiters[key]?.isEmpty == true { waiters[key] = nil }
        continuation.resume()
    }
}

extension JobCoordinator {
    fileprivate enum List { case node, job, key }

    /// Waits until `key` is woken on `list`, `timeout` passes or the task is cancelled.
    fileprivate func waitOn(_ list: List, _ key: String, timeout: Duration) async {
        guard timeout > .zero, !closing || list == .key else { return }
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                add(list, key, id, continuation)
                Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    await self?.wake(list, key, id)
                }
            }
        } onCancel: {
            Task { [weak self] in await self?.wake(list, key, id) }
        }
    }

    private func add(_ list: List, _ key: String, _ id: UUID, _ continuation: CheckedContinuation<Void, Never>) {
        switch list {
        case .node: nodeWaiters.add(key, id, continuation)
        case .job: jobWaiters.add(key, id, continuation)
        case .key: keyWaiters.add(key, id, continuation)
        }
    }

    private func wake(_ list: List, _ key: String, _ id: UUID) {
        switch list {
        case .node: nodeWaiters.wake(key, id)
        case .job: jobWaiters.wake(key, id)
        case .key: keyWaiters.wake(key, id)
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
