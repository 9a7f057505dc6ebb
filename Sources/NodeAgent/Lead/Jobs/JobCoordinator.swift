import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics

/// The lead's GPU job coordinator: the shell around the ``JobBook`` (placement, leases,
/// fencing, requeues, cancellation, idempotency), which decides; this actor carries its
/// directives out: it reads the clocks, writes the rows and events, publishes, wakes
/// long-polls and keeps the metrics.
///
/// Open jobs (queued, assigned, running) live in the book and in the `jobs` table; finished jobs
/// only in the table. Every change is applied to the book and written, with its event, in one
/// transaction before it is acknowledged. If a write fails, the book may be ahead of the store:
/// the coordinator then answers 503 and reloads from the store, which is the truth.
actor JobCoordinator {
    /// What the shell keeps with each job in the book: the API's view of it, which the book
    /// never reads.
    struct JobSpec: Sendable {
        var kind: JobKind
        var requirements: JobRequirements
        var payload: [String: JSONValue]
        var idempotencyKey: String?
        var submittedBy: String?
        /// A gateway call (`/v1/…`): kept in memory only, never written to the store and without
        /// events. Its client waits on its connection, which a lost lead ends anyway.
        var ephemeral = false
    }

    typealias Book = JobBook<JobSpec>

    /// What the registry tells the coordinator about a node.
    struct NodeUpdate: Sendable, Equatable {
        var name: String
        var state: NodeState
        var labels: [String: String]
        var gpus: [GPU]
        /// What its inference server serves (nil: it does not say).
        var models: [ServedModel]? = nil
        var worker: WorkerReport?
        var rttMs: Double?
        /// Cordoned or draining by an operator; nil while open.
        var scheduling: NodeScheduling? = nil
    }

    /// How long a worker may stay silent about a job it holds before the job is requeued.
    static let leaseDuration = Duration.seconds(10)

    let store: any JobStore
    let hub: EventHub
    let logger: Logger
    let leadName: String

    var book: Book
    var nodes: [String: NodeUpdate] = [:]
    var waiters = JobWaiters()
    var keysInFlight = Set<String>()
    /// How ephemeral (gateway) jobs ended, for their waiters: the last 1024, for 60 s.
    var ephemeralEnds = EphemeralEnds()
    /// Streamed gateway calls: their workers' chunks, on their way to the waiting requests.
    nonisolated let streams = InferenceStreams()
    private(set) var loaded = false
    /// When the jobs were (last) loaded: for a while after, nodes that have not reported their
    /// worker to this lead yet may still allow exec.
    private var loadedAt: ContinuousClock.Instant?
    /// How long after loading an unreported node counts as "not heard yet" rather than "no worker"
    /// (an edge node never reports one): a few heartbeats of the slowest default profile.
    static let reportWindow: Duration = .seconds(15)
    var reloading = false
    /// Graceful shutdown: long-polls answer at once so the HTTP server can drain.
    private(set) var closing = false

    let submitted = Counter(label: "aurora_jobs_submitted_total")
    /// Jobs a worker finished, by their state (`succeeded`, `failed`).
    /// And the job's time in the queue and on its node, by priority
    /// (`aurora_job_queue_wait_seconds`, `aurora_job_run_seconds`).
    func countFinished(_ record: Book.Record) {
        Counter(label: "aurora_jobs_finished_total", dimensions: [("state", record.state.rawValue)]).increment()
        let priority = [("priority", String(record.priority))]
        guard let started = record.startedAtMs else { return }
        let waited = max(0, started - record.submittedAtMs)
        Timer(label: "aurora_job_queue_wait_seconds", dimensions: priority).recordMilliseconds(waited)
        if let finished = record.finishedAtMs {
            Timer(label: "aurora_job_run_seconds", dimensions: priority).recordMilliseconds(max(0, finished - started))
        }
    }
    let requeued = Counter(label: "aurora_jobs_requeued_total")
    let queuedGauge = Gauge(label: "aurora_jobs_queued")
    let placedGauge = Gauge(label: "aurora_jobs_placed")
    let oldestQueuedGauge = Gauge(label: "aurora_jobs_oldest_queued_seconds")

    init(store: any JobStore, hub: EventHub, leadName: String, policy: Scheduler.Policy = .binpack, logger: Logger) {
        self.store = store
        self.hub = hub
        self.leadName = leadName
        self.book = Book(policy: policy, agingSeconds: 30, leaseDuration: Self.leaseDuration)
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
        nodes = merged
        let (open, unreadable) = try await store.openJobs()
        for id in unreadable {
            logger.error("skipping an unreadable job row", metadata: ["nodeagent.job": "\(id)"])
        }
        let now = Self.now()
        let records = open.map { Self.record($0.0, $0.1, now: now) }
        let updates = nodes.values.sorted { $0.name < $1.name }
        book.restore(records, nodes: updates.map(Self.bookNode), now: now)
        loaded = true
        loadedAt = .now
        reloading = false
        logger.info("jobs loaded", metadata: ["nodeagent.open": "\(book.openCount)"])
        // Jobs on nodes that died while the lead was away go elsewhere.
        for update in updates where update.state == .dead || update.state == .left {
            try? await carryOut(book.nodeGone(update.name, now: Self.now()))
        }
        try? await dispatch()
    }

    // MARK: Submitting

    /// Queues a job, or returns the job already submitted with the same idempotency key
    /// (`created` false).
    func submit(_ submission: JobSubmission, by submitter: String, ephemeral: Bool = false) async throws(Refusal) -> (
        job: Job, created: Bool
    ) {
        try requireLoaded()
        let valid = try Self.validate(submission)
        if valid.kind == .exec, !JobAccess.mayRunExec(submitter) {
            throw Refusal(
                .forbidden, code: "exec_not_allowed",
                message: "exec jobs run only when the mesh admin submits them (\(submitter) may submit generate jobs); "
                    + "submit on the lead with its operator token")
        }
        // Idempotency keys belong to their submitter: another caller's key is another key.
        let scopedKey = valid.idempotencyKey.map { JobRows.scopedKey(submitter, $0) }
        let bookKey = valid.idempotencyKey.map { Book.IdempotencyKey(submitter: submitter, key: $0) }
        // Duplicates of a key wait for the first submission's outcome, then find its job. A
        // retry of a job that already finished (through another agent, or after a new lead took
        // over, when no worker may have reported yet) gets that job, before any check of the nodes.
        if let key = scopedKey, let bookKey {
            while keysInFlight.contains(key) {
                await waitOn(.key, key, timeout: .seconds(30))
            }
            if let record = book.record(forKey: bookKey) { return (view(record), false) }
            keysInFlight.insert(key)
        }
        defer {
            if let key = scopedKey {
                keysInFlight.remove(key)
                waiters.key.wakeAll(key)
            }
        }
        if let key = scopedKey {
            let stored: Job?
            do { stored = try await store.job(byKey: key) } catch { throw Refusal.storeUnavailable(error) }
            if let stored { return (stored, false) }
        }
        if valid.kind == .exec {
            let labels = valid.requirements.labels ?? [:]
            guard book.mayRunExec(labels: labels) else {
                // A lead that just started or took over has not heard every worker yet: not a "no".
                if let loadedAt, loadedAt.duration(to: .now) < Self.reportWindow,
                    book.awaitsWorkerReport(labels: labels)
                {
                    throw Refusal(
                        .unavailable, code: "nodes_reporting",
                        message:
                            "not every node has reported its worker to this lead yet (it started or took over moments ago); retry in a second",
                        retryAfterSeconds: 1)
                }
                throw Refusal(
                    .forbidden, code: "exec_not_allowed",
                    message:
                        "kind: exec jobs are not allowed on any \(labels.isEmpty ? "" : "matching ")node (set gpu.allow_exec: true in a worker's profile)"
                )
            }
        }

        let id = UUID().uuidString.lowercased()
        let spec = JobSpec(
            kind: valid.kind, requirements: valid.requirements, payload: valid.payload,
            idempotencyKey: valid.idempotencyKey,
            submittedBy: submitter, ephemeral: ephemeral && valid.idempotencyKey == nil)
        let requirements = Self.schedulerRequirements(valid.requirements, valid.kind, payload: valid.payload)
        // A job no known node could ever run is refused with the reasons, unless asked to wait
        // for a fitting node to join.
        let runnable = book.scheduler.couldEverRun(requirements)
        if !runnable && submission.allowUnplaceable != true {
            throw Refusal(
                .unprocessable, code: "unplaceable",
                message: "no node could ever run this job: \(book.scheduler.explain(requirements).summary); "
                    + "change its requirements, or pass allow_unplaceable (aurora-cli jobs submit --allow-unplaceable) "
                    + "to queue it for a node that has not joined yet")
        }
        let submission = Book.Submission(
            id: id, spec: spec, priority: valid.priority, requirements: requirements,
            maxAttempts: valid.maxAttempts, key: bookKey)
        let record: Book.Record, placed: Book.Directives
        switch book.submit(submission, now: Self.now()) {
        case .existing(let existing): return (view(existing), false)
        case .accepted(let accepted, let placements): (record, placed) = (accepted, placements)
        }

        var writes = Writes()
        write(.queued(record), into: &writes)
        for change in placed.changes where change.record.id != id { write(change, into: &writes) }
        let outcome: Writes.Outcome
        do { outcome = try await commit(writes) } catch { throw Refusal.storeUnavailable(error) }
        if case .duplicate(let existing) = outcome {
            // The key belongs to a job that already finished: that job is the answer.
            book.withdraw(id)
            try? await dispatch()
            return (existing, false)
        }
        submitted.increment()
        wakeNodes(placed.wake)
        var job = view(book.record(id) ?? record)
        job.warnings = Self.warnings(job.waiting, runnable: runnable)
        return (job, true)
    }

    /// What a submitter should know of a job that was not placed at once: no known node can
    /// ever run it (it waits for one to join), or none can now and no running job's end will
    /// change that (the fitting nodes are away, not accepting or cordoned).
    static func warnings(_ waiting: JobWaiting?, runnable: Bool) -> [String]? {
        guard let waiting else { return nil }
        if !runnable {
            return ["no node that has joined could ever run this job (\(waiting.summary)); it waits for a fitting node"]
        }
        let now = waiting.reasons.contains {
            $0.code == "fits" || $0.code == PlacementExplanation.Reason.vramFree.rawValue
        }
        return now ? nil : ["no node can run this job now (\(waiting.summary)); it waits until one can"]
    }

    // MARK: Workers

    /// New jobs for `node`'s worker and the jobs it must stop; waits up to `wait` for either.
    /// Handing a job over marks it running (written before the answer).
    func assignments(for node: String, wait: Duration) async throws(Refusal) -> AssignmentBatch {
        let deadline = ContinuousClock.now + wait
        while true {
            try requireLoaded()
            let now = Self.now()
            let delivery = book.deliver(to: node, now: now)
            if !delivery.isEmpty || now.instant >= deadline || closing || Task.isCancelled {
                var writes = Writes()
                var handed: [Assignment] = []
                for record in delivery.started {
                    write(.started(record), into: &writes)
                    handed.append(
                        Assignment(
                            id: record.id, attempt: record.attempt, kind: record.spec.kind,
                            payload: record.spec.payload,
                            gpus: record.gpus ?? [], submittedBy: record.spec.submittedBy))
                }
                if !writes.isEmpty {
                    do { _ = try await commit(writes) } catch {
                        book.returnStops(delivery.stops, to: node)
                        throw Refusal.storeUnavailable(error)
                    }
                }
                return AssignmentBatch(
                    assignments: handed, cancel: delivery.stops.map { JobLease(id: $0.id, attempt: $0.attempt) })
            }
            await waitOn(.node, node, timeout: deadline - ContinuousClock.now)
        }
    }

    /// Whether job `id` is a gateway call held in memory only (false for an unknown id).
    func isEphemeral(_ id: String) -> Bool {
        book.record(id)?.spec.ephemeral ?? false
    }

    /// Whether some known node could ever run a `generate` job for `model`: it serves the model,
    /// or its backend does not say what it serves (the gateway's 404 `model_not_found` otherwise).
    func couldServe(model: String) -> Bool {
        book.scheduler.couldEverRun(Scheduler.Requirements(model: model))
    }

    /// A worker's heartbeat names the jobs it holds: their leases are extended; jobs it should
    /// not hold (cancelled, requeued elsewhere, unknown) are added to its stop list. Its first
    /// report after this lead loaded also finds jobs an earlier lead delivered that never reached
    /// it (``JobBook/reattach(node:leases:workerStartedAtMs:now:)``): delivered again, same attempt.
    func renew(_ node: String, _ leases: [JobLease], workerStartedAt: Date? = nil) {
        guard loaded else { return }
        let held = leases.map { Book.Lease(id: $0.id, attempt: $0.attempt) }
        let now = Self.now()
        let reattached = book.reattach(
            node: node, leases: held,
            workerStartedAtMs: workerStartedAt.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }, now: now)
        if !reattached.wake.isEmpty {
            logger.notice(
                "a job delivered before this lead took over never reached its worker; delivering it again",
                metadata: ["nodeagent.node": "\(node)"])
        }
        wakeNodes(reattached.wake)
        guard !held.isEmpty else { return }
        wakeNodes(book.renew(node: node, leases: held, now: now).wake)
    }

    /// A worker reports how a job ended. The attempt is a fencing token: a stale one is
    /// refused with 409 and changes nothing.
    func result(_ id: String, from node: String, _ report: JobResult) async throws(Refusal) -> Job {
        try requireLoaded()
        let ending: Book.Report =
            report.outcome == .succeeded ? .succeeded : .failed(error: report.error, retry: report.retry == true)
        switch book.result(id, from: node, attempt: report.attempt, ending, now: Self.now()) {
        case .notOpen:
            let stored = try await fetch(id, for: JobAccess.admin)
            guard stored.node == node else {
                throw Refusal(.conflict, code: "not_assigned", message: "job \(id) is not assigned to node '\(node)'")
            }
            throw Refusal(
                .conflict, code: "already_finished",
                message: "job \(id) is already \(stored.state.rawValue); this result changes nothing")
        case .notAssigned:
            throw Refusal(
                .conflict, code: "not_assigned", message: "job \(id) is not assigned to node '\(node)' (any more)")
        case .staleAttempt(let current):
            throw Refusal(
                .conflict, code: "stale_attempt",
                message: "job \(id) is at attempt \(current); the result of attempt \(report.attempt) is refused")
        case .requeued(let before, let directives):
            try await carryOut(directives)
            try? await dispatch()
            return view(book.record(id) ?? before)
        case .finished(let record, let directives):
            var writes = Writes()
            for change in directives.changes { write(change, into: &writes, result: report.result) }
            do { _ = try await commit(writes) } catch { throw Refusal.storeUnavailable(error) }
            countFinished(record)
            try? await dispatch()
            var job = Self.job(record)
            job.result = report.result
            return job
        }
    }

    // MARK: Clients

    /// Cancels a job: a queued one at once, a placed one also on its worker.
    func cancel(_ id: String, by caller: String) async throws(Refusal) -> Job {
        try requireLoaded()
        guard let record = book.record(id) else {
            let stored = try await fetch(id, for: caller)
            throw Refusal(.conflict, code: "already_finished", message: "job \(id) is already \(stored.state.rawValue)")
        }
        guard JobAccess.mayRead(Self.job(record), caller),
            let (cancelled, directives) = book.cancel(id, now: Self.now())
        else {
            throw Self.notFound(id)
        }
        try await carryOut(directives)
        try? await dispatch()
        return Self.job(cancelled)
    }

    /// A job by id; with `wait`, waits up to that long for it to finish.
    func job(_ id: String, wait: Duration? = nil, for caller: String) async throws(Refusal) -> Job {
        try requireLoaded()
        let deadline = ContinuousClock.now + (wait ?? .zero)
        while let record = book.record(id) {
            guard JobAccess.mayRead(Self.job(record), caller) else { throw Self.notFound(id) }
            guard wait != nil, ContinuousClock.now < deadline, !closing, !Task.isCancelled else { return view(record) }
            await waitOn(.job, id, timeout: deadline - ContinuousClock.now)
        }
        return try await fetch(id, for: caller)
    }

    /// Jobs, newest first, optionally in one state: every job for the mesh admin, the
    /// caller's own for anyone else.
    func list(state: JobState?, limit: Int, for caller: String) async throws(Refusal) -> JobList {
        try requireLoaded()
        let stored: [Job]
        do { stored = try await store.jobs(state: state, visibleTo: caller, limit: max(1, min(limit, 10_000))) } catch {
            throw Refusal.storeUnavailable(error)
        }
        let estimates = queueEstimates()
        return JobList(
            jobs: stored.map { job in book.record(job.id).map { view($0, estimates: estimates, explain: false) } ?? job
            })
    }

    func queue() throws(Refusal) -> QueueView {
        try requireLoaded()
        let now = Self.now()
        let order = book.scheduler.order(now: now.wallSeconds)
        let mean = book.meanRunTime
        let etas = book.etas(count: order.count, now: now)
        var byPriority: [String: Int] = [:]
        let entries = order.enumerated().compactMap { index, id -> QueueView.Entry? in
            guard let record = book.record(id) else { return nil }
            byPriority[String(record.priority), default: 0] += 1
            return QueueView.Entry(
                id: id, kind: record.spec.kind, priority: record.priority, position: index + 1,
                etaS: etas[index],
                submittedAt: ISOTime.string(milliseconds: record.submittedAtMs),
                minVramMB: record.spec.requirements.minVramMB)
        }
        return QueueView(queued: entries, byPriority: byPriority, meanRunS: mean.map { $0.rounded(toPlaces: 3) })
    }

    func status() throws(Refusal) -> GPUStatus {
        try requireLoaded()
        let views = nodes.values.sorted { $0.name < $1.name }.compactMap { node -> GPUStatus.NodeView? in
            guard let worker = book.scheduler.worker(node.name), node.worker != nil || !node.gpus.isEmpty else {
                return nil
            }
            let gpus = node.gpus.map { gpu in
                let slot = worker.gpus.first { $0.index == gpu.index }
                return GPUStatus.GPUView(gpu: gpu, reservedMB: slot?.reservedMB ?? 0, freeVramMB: slot?.freeMB ?? 0)
            }
            return GPUStatus.NodeView(
                name: node.name, state: node.state, accepting: node.worker?.accepting ?? false,
                allowExec: node.worker?.allowExec ?? false, gpus: gpus, running: worker.placed,
                scheduling: node.scheduling)
        }
        return GPUStatus(nodes: views, queued: book.scheduler.queuedCount, policy: book.scheduler.policy.rawValue)
    }

    // MARK: Nodes and time

    /// A node's record changed (heartbeat, state): placement follows; a dead or departed node's
    /// jobs are requeued.
    func nodeChanged(_ update: NodeUpdate) async {
        nodes[update.name] = update
        // Before the (re)load, the book is rebuilt from `nodes` anyway.
        guard loaded else { return }
        try? await carryOut(book.nodeChanged(Self.bookNode(update), now: Self.now()))
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
        let now = Self.now()
        try? await carryOut(book.tick(now: now))
        try? await dispatch()
        queuedGauge.record(book.scheduler.queuedCount)
        placedGauge.record(book.scheduler.placedCount)
        let oldest = book.scheduler.oldestQueuedAt.map { max(0, Double(now.wallMs) / 1000 - $0) }
        oldestQueuedGauge.record(oldest ?? 0)
    }

    /// Graceful shutdown: every long-poll answers now, and later ones do not wait.
    func close() {
        closing = true
        waiters.node.wakeEveryone()
        waiters.job.wakeEveryone()
    }

    // MARK: Carrying out

    func requireLoaded() throws(Refusal) {
        guard loaded else {
            throw Refusal(.unavailable, code: "starting", message: "the job coordinator is starting; retry in a moment")
        }
    }

    /// Places what fits, writes the placements, then wakes the nodes that got jobs.
    func dispatch() async throws(AgentError) {
        let placed = book.place(now: Self.now())
        guard !placed.changes.isEmpty else { return }
        var writes = Writes()
        for change in placed.changes { write(change, into: &writes) }
        _ = try await commit(writes)
        wakeNodes(placed.wake)
    }

    /// Wakes the nodes with news (stops), then writes the changes (requeues, cancellations).
    func carryOut(_ directives: Book.Directives) async throws(Refusal) {
        wakeNodes(directives.wake)
        guard !directives.changes.isEmpty else { return }
        var writes = Writes()
        for change in directives.changes { write(change, into: &writes) }
        do { _ = try await commit(writes) } catch { throw Refusal.storeUnavailable(error) }
    }

    /// Adds a change's row and event to a batch, and counts and logs requeues. An ephemeral job
    /// writes nothing: its end is kept in memory for its waiter (``ephemeralEnds``).
    func write(_ change: Book.Change, into writes: inout Writes, result: JSONValue? = nil) {
        var job = Self.job(change.record)
        if change.record.spec.ephemeral {
            switch change {
            case .finished, .exhausted, .cancelled:
                job.result = result
                ephemeralEnds.keep(job)
                writes.wake(job.id)
                streams.ended(job.id)
            case .requeued(let record, let from, let reason):
                streams.requeued(job.id, attempt: record.attempt)
                requeued.increment()
                logger.notice(
                    "gateway job requeued",
                    metadata: [
                        "nodeagent.job": "\(job.id)", "nodeagent.from": "\(from ?? "?")",
                        "nodeagent.reason": "\(reason)",
                    ])
            case .queued, .placed, .started: break
            }
            return
        }
        switch change {
        case .queued(let record):
            writes.insert(job, payload: record.spec.payload)
            writes.event(
                EventType.jobQueued, job,
                [
                    "kind": .string(job.kind.rawValue), "priority": .number(Double(job.priority)),
                    "min_vram_mb": .number(Double(job.requirements.minVramMB)),
                ])
        case .placed:
            writes.update(job)
        case .started:
            writes.update(job)
            writes.event(EventType.jobStarted, job, ["gpus": .array((job.gpus ?? []).map { .number(Double($0)) })])
        case .requeued(_, let from, let reason):
            writes.update(job)
            writes.event(
                EventType.jobRequeued, job,
                [
                    "from_node": from.map(JSONValue.string) ?? .null,
                    "attempt": .number(Double(job.attempt)), "reason": .string(reason),
                ])
            requeued.increment()
            logger.notice(
                "job requeued",
                metadata: [
                    "nodeagent.job": "\(job.id)", "nodeagent.from": "\(from ?? "?")", "nodeagent.reason": "\(reason)",
                ])
        case .finished:
            job.result = result
            writes.update(job)
            var data: [String: JSONValue] = ["attempt": .number(Double(job.attempt))]
            if let error = job.error { data["error"] = .string(String(error.prefix(200))) }
            writes.event(job.state == .succeeded ? EventType.jobSucceeded : EventType.jobFailed, job, data)
        case .exhausted:
            writes.update(job)
            writes.event(
                EventType.jobFailed, job,
                ["attempt": .number(Double(job.attempt)), "error": .string(job.error ?? "failed")])
        case .cancelled(_, let from):
            writes.update(job)
            writes.event(EventType.jobCancelled, job, ["from": .string(from.rawValue)])
        }
    }

    /// Writes a batch in one transaction and publishes its events after the commit; waiters
    /// on finished jobs wake once it committed, so they read the final row. A failed write
    /// leaves the book ahead of the store: the coordinator reloads.
    func commit(_ writes: Writes) async throws(AgentError) -> Writes.Outcome {
        let hub = self.hub
        guard !writes.isEmpty else {
            // Ephemeral jobs only: nothing to write, only waiters to wake.
            for id in writes.finishedIDs { waiters.job.wakeAll(id) }
            return .committed([])
        }
        do {
            let outcome = try await store.commit(writes, published: { hub.publish($0) })
            for id in writes.finishedIDs { waiters.job.wakeAll(id) }
            return outcome
        } catch {
            logger.error(
                "cannot write jobs; reloading from the store", metadata: ["nodeagent.error": "\(error.message)"])
            loaded = false
            reloading = true
            waiters.node.wakeEveryone()
            waiters.job.wakeEveryone()
            throw error
        }
    }

    func fetch(_ id: String, for caller: String) async throws(Refusal) -> Job {
        if let ended = ephemeralEnds.job(id) {
            guard JobAccess.mayRead(ended, caller) else { throw Self.notFound(id) }
            return ended
        }
        let stored: Job?
        do { stored = try await store.job(id) } catch { throw Refusal.storeUnavailable(error) }
        guard let job = stored, JobAccess.mayRead(job, caller) else { throw Self.notFound(id) }
        return job
    }

    /// Another caller's job is answered as if it did not exist: its id tells nothing.
    static func notFound(_ id: String) -> Refusal {
        Refusal.notFound("no job with id '\(InputRules.printable(String(id.prefix(64))))'")
    }
}

// MARK: - The book's values and the API's

extension JobCoordinator {
    /// Both clocks, read once per event: the only place the coordinator reads them for the book.
    static func now() -> Book.Time { Book.Time(instant: .now, wallMs: ISOTime.milliseconds(Date())) }

    /// A book record as the API's job (no queue position, no result).
    static func job(_ record: Book.Record) -> Job {
        Job(
            id: record.id, kind: record.spec.kind, priority: record.priority,
            state: JobState(rawValue: record.state.rawValue) ?? .queued,
            attempt: record.attempt, maxAttempts: record.maxAttempts, requirements: record.spec.requirements,
            idempotencyKey: record.spec.idempotencyKey, node: record.node, gpus: record.gpus,
            submittedAt: ISOTime.string(milliseconds: record.submittedAtMs),
            startedAt: record.startedAtMs.map(ISOTime.string(milliseconds:)),
            finishedAt: record.finishedAtMs.map(ISOTime.string(milliseconds:)),
            leaseDeadline: record.leaseDeadlineMs.map(ISOTime.string(milliseconds:)), error: record.error,
            submittedBy: record.spec.submittedBy)
    }

    /// A stored open job as a book record.
    static func record(_ job: Job, _ payload: [String: JSONValue], now: Book.Time) -> Book.Record {
        func ms(_ text: String?) -> Int64? {
            text.flatMap(ISOTime.parse).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
        }
        return Book.Record(
            id: job.id,
            spec: JobSpec(
                kind: job.kind, requirements: job.requirements, payload: payload, idempotencyKey: job.idempotencyKey,
                submittedBy: job.submittedBy),
            priority: job.priority, requirements: schedulerRequirements(job.requirements, job.kind, payload: payload),
            key: job.idempotencyKey.map { Book.IdempotencyKey(submitter: job.submittedBy ?? JobAccess.admin, key: $0) },
            state: Book.State(rawValue: job.state.rawValue) ?? .queued, attempt: job.attempt,
            maxAttempts: job.maxAttempts,
            node: job.node, gpus: job.gpus, submittedAtMs: ms(job.submittedAt) ?? now.wallMs,
            startedAtMs: ms(job.startedAt),
            finishedAtMs: ms(job.finishedAt), leaseDeadlineMs: ms(job.leaseDeadline), error: job.error)
    }

    /// A `generate` job's `model` routes it: only to a node that serves it (or does not say).
    static func schedulerRequirements(
        _ requirements: JobRequirements, _ kind: JobKind, payload: [String: JSONValue] = [:]
    ) -> Scheduler.Requirements {
        var model: String?
        if kind == .generate, case .string(let name)? = payload["model"], !name.isEmpty { model = name }
        return Scheduler.Requirements(
            minVramMB: requirements.minVramMB, gpuModel: requirements.gpuModel, gpuCount: requirements.gpuCount ?? 1,
            labels: requirements.labels ?? [:], exec: kind == .exec, model: model)
    }

    /// A node as the book sees it.
    static func bookNode(_ update: NodeUpdate) -> Book.Node {
        let state = MemberState(rawValue: update.state.rawValue) ?? .alive
        let gpus: [Scheduler.GPUSlot] = update.gpus.map { gpu in
            Scheduler.GPUSlot(
                index: gpu.index, model: gpu.name, totalMB: gpu.memoryTotalMB, usedByOthersMB: gpu.memoryUsedMB)
        }
        let worker = update.worker
        let scheduling = update.scheduling
        return Book.Node(
            name: update.name, state: state, accepting: worker?.accepting ?? false,
            allowExec: worker?.allowExec ?? false,
            canGenerate: worker?.generate ?? false, labels: update.labels, gpus: gpus, rttMs: update.rttMs ?? .infinity,
            models: update.models.map { Dictionary($0.map { ($0.name, $0.loaded) }, uniquingKeysWith: { $0 || $1 }) },
            reported: worker != nil, cordoned: (scheduling?.state ?? .open) != .open,
            drainDeadlineMs: scheduling?.state == .draining
                ? scheduling?.deadline.flatMap(ISOTime.parse).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
                : nil)
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The ends of ephemeral (gateway) jobs, kept in memory for their waiters: at most 1024, each
/// for 60 s (the waiter reads it at once; a later read is 404).
struct EphemeralEnds: Sendable {
    private var ends: [String: (job: Job, at: ContinuousClock.Instant)] = [:]
    private var order: [String] = []

    mutating func keep(_ job: Job, now: ContinuousClock.Instant = .now) {
        if ends[job.id] == nil { order.append(job.id) }
        ends[job.id] = (job, now)
        while order.count > 1024 || (order.first.flatMap { ends[$0] }.map { now - $0.at > .seconds(60) } ?? false) {
            ends[order.removeFirst()] = nil
        }
    }

    func job(_ id: String, now: ContinuousClock.Instant = .now) -> Job? {
        guard let end = ends[id], now - end.at <= .seconds(60) else { return nil }
        return end.job
    }
}
