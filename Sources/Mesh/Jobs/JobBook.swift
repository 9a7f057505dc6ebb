/// The lead's book of open GPU jobs: a pure core, driven by events and an injected time.
///
/// It holds the open jobs (queued, assigned, running), their leases, the idempotency index,
/// each node's stop list and the jobs placed on a node and not yet handed over. Each event
/// method changes the book and returns what the shell must carry out (``Directives``: rows to
/// write and events to publish, workers to wake); the book does no I/O and reads no clock.
///
/// Rules:
/// - **Leases.** A placed job holds a lease of ``leaseDuration``. Placement and hand-over set
///   it; a heartbeat naming the job with its node and attempt renews it once it runs. A job
///   whose lease runs out (``tick(now:)``) is requeued.
/// - **Fencing.** Every requeue bumps the attempt; a result or heartbeat naming another attempt
///   or node changes nothing, and the worker that holds the old attempt is told to stop.
/// - **Requeue.** A dead or departed node's jobs, expired leases and retryable failures go back
///   to the queue with attempt + 1, or fail once `maxAttempts` are spent.
/// - **Idempotency.** A key belongs to its submitter; while its job is open, submitting the key
///   again returns that job.
/// - **Cancellation.** A queued job leaves at once; a placed one also goes on its node's stop
///   list.
///
/// The book owns the ``Scheduler`` rather than leaving it to the shell: a job's state and its
/// reservation must change together (placed ↔ reserved, requeued → released and queued again,
/// finished → released), so keeping them in one value means no event can update one and not
/// the other, and tests see placement and leases together without a shell.
///
/// `Spec` is what the shell keeps with each job and the book never reads (its kind, payload
/// and submitter as the API has them), so Mesh does not depend on the API types.
public struct JobBook<Spec: Sendable>: Sendable {
    /// How long a worker may stay silent about a job it holds before the job is requeued.
    public let leaseDuration: Duration
    /// Placement; reservations follow the jobs' states.
    public private(set) var scheduler: Scheduler

    private var open: [String: Record] = [:]
    private var byKey: [IdempotencyKey: String] = [:]
    private var nodes: [String: Node] = [:]
    private var nextOrder: Int64 = 1
    /// Jobs a node's worker must stop (cancelled, or requeued elsewhere).
    private var stops: [String: [Lease]] = [:]
    /// Jobs placed on each node and not yet handed over, in placement order (ids may have gone
    /// stale through a cancel or requeue; they are checked when taken).
    private var undelivered: [String: [String]] = [:]
    /// Nodes with jobs restored as running that their worker has not reported on yet (``reattach``).
    private var unconfirmedNodes = Set<String>()
    /// Recent run times (s), for ETAs.
    private var runTimes: [Double] = []

    public init(policy: Scheduler.Policy = .binpack, agingSeconds: Double = 30, leaseDuration: Duration = .seconds(10))
    {
        self.scheduler = Scheduler(policy: policy, agingSeconds: agingSeconds)
        self.leaseDuration = leaseDuration
    }

    // MARK: Queries

    /// An open job.
    public func record(_ id: String) -> Record? { open[id] }

    /// The open job that holds an idempotency key.
    public func record(forKey key: IdempotencyKey) -> Record? { byKey[key].flatMap { open[$0] } }

    /// How many jobs are open.
    public var openCount: Int { open.count }

    /// A node as last reported.
    public func node(_ name: String) -> Node? { nodes[name] }

    /// What a node's worker must stop, not yet handed over.
    public func stops(for node: String) -> [Lease] { stops[node] ?? [] }

    /// Whether an `exec` job with these labels could run anywhere: some live node allows exec
    /// and carries every label.
    public func mayRunExec(labels: [String: String]) -> Bool {
        nodes.values.contains { node in
            node.allowExec && !node.isGone && labels.allSatisfy { node.labels[$0.key] == $0.value }
        }
    }

    /// Whether a live node that carries `labels` has not reported its worker to this lead yet (a
    /// lead that just started or took over): it may well allow exec, so refusing an exec job for
    /// want of one would be wrong; the caller should retry in a moment.
    public func awaitsWorkerReport(labels: [String: String]) -> Bool {
        nodes.values.contains { node in
            !node.reported && !node.isGone && labels.allSatisfy { node.labels[$0.key] == $0.value }
        }
    }

    /// Why a queued job is not running, node by node; nil when it is not queued.
    public func explain(_ id: String) -> PlacementExplanation? {
        guard let record = open[id], record.state == .queued else { return nil }
        return scheduler.explain(record.requirements)
    }

    /// Seconds until the queued jobs at positions 1…`count` are expected to start; nil where
    /// that is unknown.
    ///
    /// The jobs ahead take GPUs as the placed jobs end: every placed job holds a slot until the
    /// mean run time has passed since it started, and each queued job then holds the first slot
    /// to come free for the mean run time. Unknown: before any job finished (no mean), when
    /// nothing is placed (no slot will come free: the job waits for a node, see ``explain(_:)``),
    /// and behind a slot whose job already ran longer than the mean.
    public func etas(count: Int, now: Time) -> [Double?] {
        guard count > 0 else { return [] }
        guard let mean = meanRunTime else { return Array(repeating: nil, count: count) }
        var free: [Double] = []
        for record in open.values where record.state.isPlaced {
            let elapsed = record.startedAtMs.map { max(0, Double(now.wallMs - $0) / 1000) } ?? 0
            free.append(elapsed <= mean ? mean - elapsed : .infinity)
        }
        guard !free.isEmpty else { return Array(repeating: nil, count: count) }
        var heap = MinHeap(free)
        return (0..<count).map { _ in
            let start = heap.popMin()
            heap.push(start + mean)
            return start.isFinite ? (start * 10).rounded() / 10 : nil
        }
    }

    /// The mean of recent run times (s); nil before any job finished.
    public var meanRunTime: Double? {
        runTimes.isEmpty ? nil : runTimes.reduce(0, +) / Double(runTimes.count)
    }

    /// Seconds until the job at `position` (1 is next) starts: the jobs ahead run `slots` at a
    /// time, each for `mean`; rounded to 0.1 s.
    public static func eta(position: Int, slots: Int, mean: Double?) -> Double? {
        mean.map { ((Double((position - 1) / max(1, slots) + 1) * $0) * 10).rounded() / 10 }
    }

    // MARK: Events: loading and nodes

    /// Rebuilds the book from the store after a (re)start: `nodes` first, then the open jobs in
    /// submission order. Placed jobs keep their node and reservation with a fresh lease; their
    /// workers re-attach with their next heartbeat. Stop lists not yet handed over and recent run times are kept.
    /// Jobs on nodes that are gone stay placed:
    /// the shell follows with ``nodeGone(_:now:)`` for each such node, so each requeue is
    /// written on its own.
    public mutating func restore(_ records: [Record], nodes: [Node], now: Time) {
        let kept = (runTimes: runTimes, stops: stops, nextOrder: nextOrder)
        self = JobBook(policy: scheduler.policy, agingSeconds: scheduler.agingSeconds, leaseDuration: leaseDuration)
        (runTimes, stops, nextOrder) = kept
        for node in nodes { apply(node) }
        for var record in records where !record.state.isTerminal {
            record.order = nextOrder
            nextOrder += 1
            record.delivered = record.state == .running
            record.unconfirmed = record.state == .running
            if record.unconfirmed, let node = record.node { unconfirmedNodes.insert(node) }
            if record.state == .queued {
                scheduler.enqueue(schedulerJob(record))
            } else if let node = record.node {
                record.lease = now.instant + leaseDuration
                scheduler.restore(
                    Scheduler.Placement(
                        jobID: record.id, node: node, gpus: record.gpus ?? [],
                        reservedMB: record.requirements.minVramMB))
                if record.state == .assigned { undelivered[node, default: []].append(record.id) }
            }
            open[record.id] = record
            if let key = record.key { byKey[key] = record.id }
        }
    }

    /// A node's record changed (heartbeat, state): placement follows its worker, and a node
    /// that just died or left has its jobs requeued.
    public mutating func nodeChanged(_ node: Node, now: Time) -> Directives {
        let before = nodes[node.name]
        apply(node)
        guard node.isGone, before?.state != node.state else { return Directives() }
        return nodeGone(node.name, now: now)
    }

    /// Requeues every job placed on `name` (dead: `node_dead`, otherwise `node_left`).
    public mutating func nodeGone(_ name: String, now: Time) -> Directives {
        let ids = open.values.filter { $0.node == name && $0.state.isPlaced }.sorted { $0.order < $1.order }.map(\.id)
        guard !ids.isEmpty else { return Directives() }
        return requeue(ids, reason: nodes[name]?.state == .dead ? "node_dead" : "node_left", now: now)
    }

    // MARK: Events: clients

    /// Queues a new job and places what fits, or returns the open job that already holds the
    /// submitter's idempotency key.
    public mutating func submit(_ submission: Submission, now: Time) -> Submitted {
        if let key = submission.key, let existing = record(forKey: key) { return .existing(existing) }
        var record = Record(
            id: submission.id, spec: submission.spec, priority: submission.priority,
            requirements: submission.requirements,
            key: submission.key, state: .queued, attempt: 1, maxAttempts: submission.maxAttempts,
            submittedAtMs: now.wallMs)
        record.order = nextOrder
        nextOrder += 1
        open[record.id] = record
        if let key = submission.key { byKey[key] = record.id }
        scheduler.enqueue(schedulerJob(record))
        let placed = place(now: now)
        return .accepted(open[record.id] ?? record, placed: placed)
    }

    /// Forgets a job without a trace: its insert wrote nothing (the store already holds its
    /// key, on a finished job).
    public mutating func withdraw(_ id: String) {
        guard let record = open.removeValue(forKey: id) else { return }
        if let key = record.key, byKey[key] == id { byKey[key] = nil }
        scheduler.dequeue(id)
        scheduler.release(id)
    }

    /// Cancels an open job: a queued one leaves at once, a placed one also goes on its node's
    /// stop list. Nil when the job is not open.
    public mutating func cancel(_ id: String, now: Time) -> (Record, Directives)? {
        guard var record = open[id] else { return nil }
        var directives = Directives()
        if let node = record.node, record.state.isPlaced { stops[node, default: []].append(record.asLease) }
        let from = record.state
        record.state = .cancelled
        record.finishedAtMs = now.wallMs
        record.leaseDeadlineMs = nil
        finish(record)
        directives.changes.append(.cancelled(record, from: from))
        if let node = record.node { directives.addWake([node]) }
        return (record, directives)
    }

    // MARK: Events: workers

    /// Hands `node`'s worker its placed jobs (now running, with a fresh lease) and its stop
    /// list. Empty when there is nothing for it.
    public mutating func deliver(to node: String, now: Time) -> Delivery {
        var delivery = Delivery()
        delivery.stops = stops.removeValue(forKey: node) ?? []
        for id in undelivered.removeValue(forKey: node) ?? [] {
            guard var record = open[id], record.node == node, record.state == .assigned, !record.delivered else {
                continue
            }
            record.state = .running
            record.startedAtMs = now.wallMs
            record.delivered = true
            record.unconfirmed = false
            record.lease = now.instant + leaseDuration
            record.leaseDeadlineMs = now.wallMs + leaseMs
            open[id] = record
            delivery.started.append(record)
        }
        return delivery
    }

    /// Puts stops back on a node's list: the delivery that took them was not written.
    public mutating func returnStops(_ leases: [Lease], to node: String) {
        guard !leases.isEmpty else { return }
        stops[node, default: []].append(contentsOf: leases)
    }

    /// A worker's heartbeat names the jobs it holds: the leases of those it runs are renewed;
    /// those it should not hold (cancelled, requeued elsewhere, another attempt, unknown) go on
    /// its stop list, and the node is woken.
    public mutating func renew(node: String, leases: [Lease], now: Time) -> Directives {
        var stopping: [Lease] = []
        for lease in leases {
            if var record = open[lease.id], record.node == node, record.attempt == lease.attempt, record.delivered {
                record.lease = now.instant + leaseDuration
                open[lease.id] = record
            } else if !(open[lease.id].map { $0.node == node && $0.attempt == lease.attempt } ?? false) {
                stopping.append(lease)
            }
        }
        guard !stopping.isEmpty else { return Directives() }
        var list = stops[node, default: []]
        for lease in stopping where !list.contains(lease) { list.append(lease) }
        stops[node] = list
        return Directives(wake: [node])
    }

    /// A worker's first report to this lead process after ``restore(_:nodes:now:)``: a job an
    /// earlier lead process delivered to `node` (state running) that the worker neither holds
    /// nor has a result for (`leases` names both), while the worker has run since before that
    /// delivery (`workerStartedAtMs`), never reached it: the lead died between writing the
    /// delivery and answering. It is delivered again as the same attempt, not requeued when its
    /// lease runs out: a lead change alone costs no attempt.
    ///
    /// A worker that started after the delivery (it restarted, and its job ended with it) or
    /// that does not say when it started leaves the job to its lease, as before. Each restored
    /// job is considered once, at its node's first report. The two times come from two clocks;
    /// a skew between them errs either way harmlessly: the job waits for its lease (a second
    /// attempt, as before), or a restarted worker runs the attempt its crash ended once more.
    public mutating func reattach(node: String, leases: [Lease], workerStartedAtMs: Int64?, now: Time) -> Directives {
        var directives = Directives()
        guard unconfirmedNodes.remove(node) != nil else { return directives }
        let held = Set(leases)
        for (id, record) in open where record.unconfirmed && record.node == node {
            var record = record
            record.unconfirmed = false
            if !held.contains(record.asLease), record.state == .running, let started = workerStartedAtMs,
                let delivered = record.startedAtMs, started < delivered
            {
                record.state = .assigned
                record.delivered = false
                record.startedAtMs = nil
                record.lease = now.instant + leaseDuration
                undelivered[node, default: []].append(id)
                directives.addWake([node])
            }
            open[id] = record
        }
        return directives
    }

    /// A worker reports how attempt `attempt` of job `id` ended. The attempt is a fencing
    /// token: another node's or another attempt's result changes nothing. A retryable failure
    /// requeues the job; any other end finishes it (and its run time feeds the ETAs).
    public mutating func result(_ id: String, from node: String, attempt: Int, _ report: Report, now: Time)
        -> ResultOutcome
    {
        guard var record = open[id] else { return .notOpen }
        guard record.node == node else { return .notAssigned }
        guard record.attempt == attempt else { return .staleAttempt(current: record.attempt) }
        switch report {
        case .failed(let error, retry: true):
            return .requeued(before: record, requeue([id], reason: "worker: \(error ?? "failed")", now: now))
        case .succeeded:
            record.state = .succeeded
            record.error = nil
        case .failed(let error, retry: false):
            record.state = .failed
            record.error = error ?? "failed"
        }
        record.finishedAtMs = now.wallMs
        record.leaseDeadlineMs = nil
        if let started = record.startedAtMs { noteRunTime(Double(now.wallMs - started) / 1000) }
        finish(record)
        return .finished(record, Directives(changes: [.finished(record)]))
    }

    // MARK: Events: time

    /// Places every queued job that fits (state assigned, with a lease) and wakes the nodes
    /// that got jobs.
    public mutating func place(now: Time) -> Directives {
        var directives = Directives()
        for placement in scheduler.place(now: now.wallSeconds) {
            guard var record = open[placement.jobID] else { continue }
            record.state = .assigned
            record.node = placement.node
            record.gpus = placement.gpus
            record.lease = now.instant + leaseDuration
            record.leaseDeadlineMs = now.wallMs + leaseMs
            record.delivered = false
            open[placement.jobID] = record
            undelivered[placement.node, default: []].append(placement.jobID)
            directives.changes.append(.placed(record))
        }
        directives.addWake(directives.changes.compactMap(\.record.node))
        return directives
    }

    /// Time passed: jobs whose lease ran out are requeued (or fail, attempts spent), and the
    /// jobs of a draining node whose deadline passed are handed back (without spending an
    /// attempt).
    public mutating func tick(now: Time) -> Directives {
        let expired = open.values.filter { $0.state.isPlaced && ($0.lease.map { $0 < now.instant } ?? false) }
            .sorted { $0.order < $1.order }.map(\.id)
        var directives = expired.isEmpty ? Directives() : requeue(expired, reason: "lease_expired", now: now)
        let drained = Set(nodes.values.filter { ($0.drainDeadlineMs ?? .max) <= now.wallMs }.map(\.name))
        guard !drained.isEmpty else { return directives }
        let handedBack = open.values.filter { $0.state.isPlaced && $0.node.map(drained.contains) ?? false }
            .sorted { $0.order < $1.order }.map(\.id)
        guard !handedBack.isEmpty else { return directives }
        let more = requeue(handedBack, reason: "drained", now: now, spendsAttempt: false)
        directives.changes += more.changes
        directives.addWake(more.wake)
        return directives
    }

    // MARK: Internals

    private var leaseMs: Int64 {
        let (seconds, attoseconds) = leaseDuration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    private mutating func apply(_ node: Node) {
        nodes[node.name] = node
        scheduler.upsert(
            Scheduler.Worker(
                name: node.name, standing: node.standing, allowExec: node.allowExec,
                canGenerate: node.canGenerate,
                labels: node.labels, gpus: node.gpus, rttMs: node.rttMs, models: node.models))
    }

    private func schedulerJob(_ record: Record) -> Scheduler.Job {
        Scheduler.Job(
            id: record.id, priority: record.priority, submittedAt: Double(record.submittedAtMs) / 1000,
            order: record.order,
            requirements: record.requirements)
    }

    /// Puts placed jobs back in the queue with attempt + 1, or fails them when their attempts
    /// are spent. Their old worker is told to stop; every node with stops is woken.
    private mutating func requeue(_ ids: [String], reason: String, now: Time, spendsAttempt: Bool = true)
        -> Directives
    {
        var directives = Directives()
        for id in ids {
            guard var record = open[id] else { continue }
            // The attempt still grows (it is the fencing token); the allowance grows with it.
            if !spendsAttempt { record.maxAttempts += 1 }
            let from = record.node
            scheduler.release(id)
            if let from { stops[from, default: []].append(record.asLease) }
            if record.attempt >= record.maxAttempts {
                record.state = .failed
                record.error = "\(reason) on \(from ?? "?"); all \(record.maxAttempts) attempts used"
                record.finishedAtMs = now.wallMs
                record.leaseDeadlineMs = nil
                finish(record)
                directives.changes.append(.exhausted(record))
                continue
            }
            record.attempt += 1
            record.state = .queued
            record.unconfirmed = false
            record.node = nil
            record.gpus = nil
            record.startedAtMs = nil
            record.leaseDeadlineMs = nil
            record.lease = nil
            record.delivered = false
            open[id] = record
            scheduler.enqueue(schedulerJob(record))
            directives.changes.append(.requeued(record, from: from, reason: reason))
        }
        directives.addWake(stops.keys)
        return directives
    }

    /// A job reached a terminal state: out of the book, its key free, its reservation freed.
    private mutating func finish(_ record: Record) {
        open[record.id] = nil
        if let key = record.key, byKey[key] == record.id { byKey[key] = nil }
        scheduler.dequeue(record.id)
        scheduler.release(record.id)
    }

    private mutating func noteRunTime(_ seconds: Double) {
        runTimes.append(max(0, seconds))
        if runTimes.count > 100 { runTimes.removeFirst(runTimes.count - 100) }
    }
}
