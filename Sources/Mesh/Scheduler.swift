/// GPU job placement: a pure core with an injected clock (seconds on any fixed epoch).
///
/// Order: highest effective priority first, where a job's effective priority is its priority
/// plus one step for every `agingSeconds` it has waited (so a low-priority job cannot starve);
/// FIFO among equals. A job that fits nowhere stays queued and does not block the jobs behind
/// it.
///
/// Feasibility: the worker is eligible (alive and accepting), allows `exec` when the job is
/// one (or has an inference server for a `generate` job), carries every required label, and has `gpuCount` GPUs whose model matches and whose
/// free VRAM (total − used by other processes − reserved by jobs placed there) is at least the
/// requirement. Among feasible workers the policy scores: `binpack` takes the tightest fit,
/// `spread` the loosest; fewer placed jobs, then lower RTT, then the name break ties.
///
/// VRAM is never over-committed: a placement reserves `minVramMB` on each GPU it takes, and a
/// GPU is only taken while its free VRAM covers that.
public struct Scheduler: Sendable {
    public enum Policy: String, Sendable, CaseIterable {
        case binpack, spread
    }

    /// One GPU of a worker.
    public struct GPUSlot: Sendable, Equatable {
        public var index: Int
        public var model: String
        public var totalMB: Int
        /// Memory the heartbeat reports in use by processes that are not our jobs.
        public var usedByOthersMB: Int
        /// Reserved by jobs placed here; kept by the scheduler.
        public internal(set) var reservedMB: Int = 0
        fileprivate var modelLowercased: String

        public init(index: Int, model: String, totalMB: Int, usedByOthersMB: Int) {
            self.index = index
            self.model = model
            self.totalMB = totalMB
            self.usedByOthersMB = usedByOthersMB
            self.modelLowercased = model.lowercased()
        }

        public var freeMB: Int { totalMB - usedByOthersMB - reservedMB }
    }

    /// A node that can run jobs.
    public struct Worker: Sendable, Equatable {
        public var name: String
        /// Alive and accepting jobs.
        public var eligible: Bool
        public var allowExec: Bool
        /// Has a local inference server for `generate` jobs.
        public var canGenerate: Bool
        public var labels: [String: String]
        public var gpus: [GPUSlot]
        /// Jobs placed here; kept by the scheduler.
        public internal(set) var placed: Int = 0
        /// Round trip to the lead in ms; `.infinity` when unknown.
        public var rttMs: Double

        public init(name: String, eligible: Bool, allowExec: Bool, canGenerate: Bool = true, labels: [String: String], gpus: [GPUSlot],
                    rttMs: Double = .infinity) {
            self.name = name
            self.eligible = eligible
            self.allowExec = allowExec
            self.canGenerate = canGenerate
            self.labels = labels
            self.gpus = gpus
            self.rttMs = rttMs
        }
    }

    /// What a job needs.
    public struct Requirements: Sendable, Hashable {
        public var minVramMB: Int
        /// Case-insensitive: a substring, or a glob when it contains `*`.
        public var gpuModel: String?
        public var gpuCount: Int
        public var labels: [String: String]
        public var exec: Bool

        public init(minVramMB: Int = 0, gpuModel: String? = nil, gpuCount: Int = 1, labels: [String: String] = [:], exec: Bool = false) {
            self.minVramMB = minVramMB
            self.gpuModel = gpuModel
            self.gpuCount = gpuCount
            self.labels = labels
            self.exec = exec
        }
    }

    /// A job waiting for a GPU.
    public struct Job: Sendable, Equatable {
        public var id: String
        /// 0–9, 9 highest.
        public var priority: Int
        /// Seconds on the scheduler's clock.
        public var submittedAt: Double
        /// Submission order, for FIFO among jobs submitted in the same instant.
        public var order: Int64
        public var requirements: Requirements

        public init(id: String, priority: Int, submittedAt: Double, order: Int64, requirements: Requirements) {
            self.id = id
            self.priority = priority
            self.submittedAt = submittedAt
            self.order = order
            self.requirements = requirements
        }
    }

    /// A decision: this job runs on these GPUs of this node.
    public struct Placement: Sendable, Equatable {
        public var jobID: String
        public var node: String
        public var gpus: [Int]
        /// Reserved on each of `gpus`.
        public var reservedMB: Int

        public init(jobID: String, node: String, gpus: [Int], reservedMB: Int) {
            self.jobID = jobID
            self.node = node
            self.gpus = gpus
            self.reservedMB = reservedMB
        }
    }

    public var policy: Policy
    /// Seconds of waiting that raise a job's effective priority by one.
    public var agingSeconds: Double

    public private(set) var workers: [Worker] = []
    private var workerIndex: [String: Int] = [:]
    /// Queued jobs by id; the buckets hold ids by priority, oldest first.
    private var queued: [String: Job] = [:]
    private var buckets = [[String]](repeating: [], count: 10)
    private var placements: [String: Placement] = [:]
    /// Jobs queued since the last round: the only ones that can newly fit while no capacity
    /// was freed.
    private var fresh: [String] = []
    /// Capacity may have grown (a release, a new or changed worker): every queued job is tried.
    private var capacityGrew = false

    public init(policy: Policy = .binpack, agingSeconds: Double = 30) {
        self.policy = policy
        self.agingSeconds = agingSeconds
    }

    // MARK: Workers

    /// Adds or updates a worker. Reservations of jobs placed on it are kept (by GPU index).
    public mutating func upsert(_ worker: Worker) {
        var worker = worker
        if let index = workerIndex[worker.name] {
            let old = workers[index]
            worker.placed = old.placed
            for i in worker.gpus.indices {
                worker.gpus[i].reservedMB = old.gpus.first { $0.index == worker.gpus[i].index }?.reservedMB ?? 0
            }
            // A GPU that disappeared keeps its reservations until its jobs end: the jobs still run.
            for gone in old.gpus where gone.reservedMB > 0 && !worker.gpus.contains(where: { $0.index == gone.index }) {
                var kept = gone
                kept.totalMB = 0
                worker.gpus.append(kept)
            }
            if worker != old { capacityGrew = true }
            workers[index] = worker
        } else {
            workerIndex[worker.name] = workers.count
            workers.append(worker)
            capacityGrew = true
        }
    }

    /// Marks a worker eligible or not (alive and accepting).
    public mutating func setEligible(_ name: String, _ eligible: Bool) {
        guard let index = workerIndex[name], workers[index].eligible != eligible else { return }
        workers[index].eligible = eligible
        if eligible { capacityGrew = true }
    }

    public func worker(_ name: String) -> Worker? { workerIndex[name].map { workers[$0] } }

    /// Jobs placed on `node`.
    public func placed(on node: String) -> [Placement] {
        placements.values.filter { $0.node == node }
    }

    // MARK: Jobs

    /// Queues a job (again, for a requeued one: it keeps its place by submission time).
    public mutating func enqueue(_ job: Job) {
        guard queued[job.id] == nil, placements[job.id] == nil else { return }
        queued[job.id] = job
        let bucket = min(max(job.priority, 0), 9)
        if buckets[bucket].last.flatMap({ queued[$0] }).map({ Self.before($0, job) }) ?? true {
            buckets[bucket].append(job.id)
        } else {
            // Out of order (a requeue, or a load): insert by submission time.
            let position = buckets[bucket].firstIndex { id in queued[id].map { Self.before(job, $0) } ?? false } ?? buckets[bucket].endIndex
            buckets[bucket].insert(job.id, at: position)
        }
        fresh.append(job.id)
    }

    /// Removes a queued job (cancelled); false when it is not queued.
    @discardableResult
    public mutating func dequeue(_ id: String) -> Bool {
        guard let job = queued.removeValue(forKey: id) else { return false }
        let bucket = min(max(job.priority, 0), 9)
        if let position = buckets[bucket].firstIndex(of: id) { buckets[bucket].remove(at: position) }
        return true
    }

    /// Records a placement made earlier (a lead restart reloads running jobs). The reservation
    /// is kept even if the GPU is now short: the job is running there.
    public mutating func restore(_ placement: Placement) {
        guard placements[placement.jobID] == nil else { return }
        dequeue(placement.jobID)
        reserve(placement)
    }

    /// Frees what a placed job reserved (it finished, was cancelled or is being requeued).
    @discardableResult
    public mutating func release(_ id: String) -> Placement? {
        guard let placement = placements.removeValue(forKey: id) else { return nil }
        if let index = workerIndex[placement.node] {
            workers[index].placed -= 1
            for i in workers[index].gpus.indices where placement.gpus.contains(workers[index].gpus[i].index) {
                workers[index].gpus[i].reservedMB -= placement.reservedMB
            }
        }
        capacityGrew = true
        return placement
    }

    public func placement(of id: String) -> Placement? { placements[id] }
    public func isQueued(_ id: String) -> Bool { queued[id] != nil }
    public var queuedCount: Int { queued.count }

    // MARK: Placing

    /// Places every queued job that fits now, best first.
    public mutating func place(now: Double) -> [Placement] {
        let candidates: [String]
        if capacityGrew {
            candidates = order(now: now)
        } else {
            // Nothing was freed since the last round, so the jobs that did not fit then still do
            // not; only the new ones can. They go in priority order among themselves.
            candidates = fresh.compactMap { queued[$0] }.sorted { Self.ahead($0, $1, now: now, aging: agingSeconds) }.map(\.id)
        }
        capacityGrew = false
        fresh.removeAll(keepingCapacity: true)
        guard !candidates.isEmpty else { return [] }
        var made: [Placement] = []
        var unfit = Set<Requirements>()
        // An upper bound on any GPU's free VRAM: it only shrinks while this round places jobs,
        // so a job asking for more is skipped without a scan.
        var roomiest = Int.min
        for worker in workers where worker.eligible {
            for gpu in worker.gpus where gpu.freeMB > roomiest { roomiest = gpu.freeMB }
        }
        for id in candidates {
            guard let job = queued[id], job.requirements.minVramMB <= roomiest, !unfit.contains(job.requirements) else { continue }
            guard let placement = decide(job) else {
                unfit.insert(job.requirements)
                continue
            }
            dequeue(id)
            reserve(placement)
            made.append(placement)
        }
        return made
    }

    /// The best placement for `job` now, without making it.
    public func decide(_ job: Job) -> Placement? {
        let need = job.requirements
        let count = max(1, need.gpuCount)
        let pattern = need.gpuModel.map { $0.lowercased() }
        var best: (worker: Int, gpus: [Int], fit: Int)?
        for (w, worker) in workers.enumerated() where worker.eligible {
            if need.exec ? !worker.allowExec : !worker.canGenerate { continue }
            if !need.labels.isEmpty && !need.labels.allSatisfy({ worker.labels[$0.key] == $0.value }) { continue }
            guard let (gpus, fit) = choose(worker, need: need.minVramMB, count: count, pattern: pattern) else { continue }
            if let current = best, !better(w, fit: fit, than: current.worker, fit: current.fit) { continue }
            best = (w, gpus, fit)
        }
        guard let best else { return nil }
        return Placement(jobID: job.id, node: workers[best.worker].name, gpus: best.gpus, reservedMB: need.minVramMB)
    }

    /// Queued jobs in the order they would be placed.
    public func order(now: Double) -> [String] {
        // Each bucket is oldest-first, and aging only grows with age, so each bucket is already
        // in effective-priority order: a k-way merge gives the global order.
        var cursors = [Int](repeating: 0, count: buckets.count)
        var result: [String] = []
        result.reserveCapacity(queued.count)
        while true {
            var pick: (bucket: Int, job: Job)?
            for b in buckets.indices {
                while cursors[b] < buckets[b].count, queued[buckets[b][cursors[b]]] == nil { cursors[b] += 1 }
                guard cursors[b] < buckets[b].count, let job = queued[buckets[b][cursors[b]]] else { continue }
                if let current = pick, !Self.ahead(job, current.job, now: now, aging: agingSeconds) { continue }
                pick = (b, job)
            }
            guard let pick else { return result }
            result.append(pick.job.id)
            cursors[pick.bucket] += 1
        }
    }

    /// A job's priority after aging.
    public static func effectivePriority(_ job: Job, now: Double, aging: Double) -> Double {
        let waited = max(0, now - job.submittedAt)
        return Double(job.priority) + (aging > 0 ? (waited / aging).rounded(.down) : 0)
    }

    // MARK: Internals

    private static func before(_ a: Job, _ b: Job) -> Bool {
        a.submittedAt != b.submittedAt ? a.submittedAt < b.submittedAt : a.order < b.order
    }

    private static func ahead(_ a: Job, _ b: Job, now: Double, aging: Double) -> Bool {
        let pa = effectivePriority(a, now: now, aging: aging), pb = effectivePriority(b, now: now, aging: aging)
        return pa != pb ? pa > pb : before(a, b)
    }

    private mutating func reserve(_ placement: Placement) {
        placements[placement.jobID] = placement
        guard let index = workerIndex[placement.node] else { return }
        workers[index].placed += 1
        for i in workers[index].gpus.indices where placement.gpus.contains(workers[index].gpus[i].index) {
            workers[index].gpus[i].reservedMB += placement.reservedMB
        }
    }

    /// The GPUs of `worker` that `count` jobs' worth of `need` MB would take, and the fit score:
    /// the free VRAM left on them (lower is tighter).
    private func choose(_ worker: Worker, need: Int, count: Int, pattern: String?) -> ([Int], Int)? {
        if count == 1 {
            var pick: (index: Int, free: Int)?
            for gpu in worker.gpus {
                let free = gpu.freeMB
                guard free >= need, gpu.totalMB > 0, pattern.map({ Self.matches(gpu.modelLowercased, $0) }) ?? true else { continue }
                if let current = pick {
                    let takes = policy == .binpack ? free < current.free : free > current.free
                    if !takes { continue }
                }
                pick = (gpu.index, free)
            }
            return pick.map { ([$0.index], $0.free - need) }
        }
        var fitting = worker.gpus.filter { gpu in
            gpu.freeMB >= need && gpu.totalMB > 0 && (pattern.map { Self.matches(gpu.modelLowercased, $0) } ?? true)
        }
        guard fitting.count >= count else { return nil }
        fitting.sort { policy == .binpack ? $0.freeMB < $1.freeMB : $0.freeMB > $1.freeMB }
        let taken = fitting.prefix(count)
        return (taken.map(\.index).sorted(), taken.reduce(0) { $0 + $1.freeMB - need })
    }

    /// Whether worker `a` with fit `fitA` beats worker `b` with fit `fitB`.
    private func better(_ a: Int, fit fitA: Int, than b: Int, fit fitB: Int) -> Bool {
        if fitA != fitB { return policy == .binpack ? fitA < fitB : fitA > fitB }
        let wa = workers[a], wb = workers[b]
        if wa.placed != wb.placed { return wa.placed < wb.placed }
        if wa.rttMs != wb.rttMs { return wa.rttMs < wb.rttMs }
        return wa.name < wb.name
    }

    /// Case-insensitive model match (both lowercased): a glob when the pattern has `*`, else a substring.
    static func matches(_ model: String, _ pattern: String) -> Bool {
        guard pattern.contains("*") else { return pattern.isEmpty || model.contains(pattern) }
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map(Substring.init)
        var rest = Substring(model)
        for (i, part) in parts.enumerated() {
            if part.isEmpty { continue }
            if i == 0 {
                guard rest.hasPrefix(part) else { return false }
                rest = rest.dropFirst(part.count)
            } else if i == parts.count - 1 {
                return rest.hasSuffix(part)
            } else {
                guard let range = rest.firstRange(of: part) else { return false }
                rest = rest[range.upperBound...]
            }
        }
        return true  // the pattern ends with `*`
    }
}
