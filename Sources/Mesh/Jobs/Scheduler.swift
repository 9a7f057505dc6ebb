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

        public init(index: Int, model: String, totalMB: Int, usedByOthersMB: Int) {
            self.index = index
            self.model = model
            self.totalMB = totalMB
            self.usedByOthersMB = usedByOthersMB
        }

        public var freeMB: Int { totalMB - usedByOthersMB - reservedMB }
    }

    /// Why a worker takes no new job now, when it does not; `ready` when it does.
    public enum Standing: String, Sendable, Equatable {
        case ready
        /// Suspect or dead: it may come back.
        case away
        /// Joined with GPUs but its worker has not reported yet: what it allows is unknown.
        case unreported
        /// Its worker does not take jobs now (stopping, or `accept_jobs: false`).
        case notAccepting
        /// An operator cordoned or is draining it.
        case cordoned
        /// Departed or removed: not counted at all.
        case gone
    }

    /// A node that can run jobs.
    public struct Worker: Sendable, Equatable {
        public var name: String
        /// Alive and accepting jobs.
        public var eligible: Bool { standing == .ready }
        public var standing: Standing
        public var allowExec: Bool
        /// Has a local inference server for `generate` jobs.
        public var canGenerate: Bool
        public var labels: [String: String]
        public var gpus: [GPUSlot]
        /// The models its inference server serves, each with whether it is loaded now; nil when
        /// the server does not say (it may serve any: it is tried after those that list the model).
        public var models: [String: Bool]?
        /// Jobs placed here; kept by the scheduler.
        public internal(set) var placed: Int = 0
        /// Round trip to the lead in ms; `.infinity` when unknown.
        public var rttMs: Double

        public init(
            name: String, eligible: Bool, allowExec: Bool, canGenerate: Bool = true, labels: [String: String],
            gpus: [GPUSlot],
            rttMs: Double = .infinity, models: [String: Bool]? = nil
        ) {
            self.init(
                name: name, standing: eligible ? .ready : .notAccepting, allowExec: allowExec, canGenerate: canGenerate,
                labels: labels, gpus: gpus, rttMs: rttMs, models: models)
        }

        public init(
            name: String, standing: Standing, allowExec: Bool, canGenerate: Bool = true, labels: [String: String],
            gpus: [GPUSlot], rttMs: Double = .infinity, models: [String: Bool]? = nil
        ) {
            self.models = models
            self.name = name
            self.standing = standing
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
        /// The inference model a `generate` job asks for: only a worker that serves it (or does not
        /// say what it serves) takes the job; one with it loaded first.
        public var model: String?

        public init(
            minVramMB: Int = 0, gpuModel: String? = nil, gpuCount: Int = 1, labels: [String: String] = [:],
            exec: Bool = false, model: String? = nil
        ) {
            self.model = model
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

    /// A worker as the scheduler keeps it: plain values in the hot loop (GPU models interned).
    struct Member {
        var name: String
        var standing: Standing
        var eligible: Bool { standing == .ready }
        var allowExec: Bool
        var canGenerate: Bool
        var labels: [String: String]
        var rttMs: Double
        var slots: [Slot]
        var placed = 0
        var models: [String: Bool]? = nil

        /// For a job asking for `model`: 2 loaded, 1 served, 0 unknown (the server lists
        /// nothing); nil when the worker lists models and not this one.
        func serving(_ model: String?) -> Int? {
            guard let model else { return 0 }
            guard let models else { return 0 }
            return models[model].map { $0 ? 2 : 1 }
        }
    }

    struct Slot: Equatable {
        var index: Int
        var model: Int
        var totalMB: Int
        var usedByOthersMB: Int
        var reservedMB: Int
        var freeMB: Int { totalMB - usedByOthersMB - reservedMB }
    }

    var members: [Member] = []
    var memberIndex: [String: Int] = [:]
    /// Lowercased GPU model names; slots refer to them by position.
    var models: [String] = []
    private var modelIDs: [String: Int] = [:]
    /// "key\u{1F}value" → members with that label.
    var labelIndex: [String: Set<Int>] = [:]
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
        var slots = worker.gpus.map { gpu in
            Slot(
                index: gpu.index, model: modelID(gpu.model), totalMB: gpu.totalMB, usedByOthersMB: gpu.usedByOthersMB,
                reservedMB: 0)
        }
        var member = Member(
            name: worker.name, standing: worker.standing, allowExec: worker.allowExec, canGenerate: worker.canGenerate,
            labels: worker.labels, rttMs: worker.rttMs, slots: [], models: worker.models)
        if let index = memberIndex[worker.name] {
            let old = members[index]
            member.placed = old.placed
            for i in slots.indices {
                slots[i].reservedMB = old.slots.first { $0.index == slots[i].index }?.reservedMB ?? 0
            }
            // A GPU that disappeared keeps its reservations until its jobs end: the jobs still run.
            for gone in old.slots where gone.reservedMB > 0 && !slots.contains(where: { $0.index == gone.index }) {
                var kept = gone
                kept.totalMB = 0
                slots.append(kept)
            }
            member.slots = slots
            if old.labels != member.labels {
                for pair in old.labels { labelIndex[Self.labelKey(pair.key, pair.value)]?.remove(index) }
                for pair in member.labels { labelIndex[Self.labelKey(pair.key, pair.value), default: []].insert(index) }
            }
            if old.slots != member.slots || old.standing != member.standing || old.labels != member.labels
                || old.allowExec != member.allowExec
                || old.canGenerate != member.canGenerate || old.models != member.models
            {
                capacityGrew = true
            }
            members[index] = member
        } else {
            member.slots = slots
            let index = members.count
            memberIndex[worker.name] = index
            members.append(member)
            for pair in member.labels { labelIndex[Self.labelKey(pair.key, pair.value), default: []].insert(index) }
            capacityGrew = true
        }
    }

    /// Marks a worker eligible or not (alive and accepting).
    public mutating func setEligible(_ name: String, _ eligible: Bool) {
        setStanding(name, eligible ? .ready : .notAccepting)
    }

    /// Sets why a worker takes no new job (or `ready`).
    public mutating func setStanding(_ name: String, _ standing: Standing) {
        guard let index = memberIndex[name], members[index].standing != standing else { return }
        members[index].standing = standing
        if standing == .ready { capacityGrew = true }
    }

    /// A worker as the scheduler sees it now, with its reservations.
    public func worker(_ name: String) -> Worker? { memberIndex[name].map(view) }

    private func view(_ index: Int) -> Worker {
        let member = members[index]
        var worker = Worker(
            name: member.name, standing: member.standing, allowExec: member.allowExec, canGenerate: member.canGenerate,
            labels: member.labels,
            gpus: member.slots.map { slot in
                var gpu = GPUSlot(
                    index: slot.index, model: models[slot.model], totalMB: slot.totalMB,
                    usedByOthersMB: slot.usedByOthersMB)
                gpu.reservedMB = slot.reservedMB
                return gpu
            }, rttMs: member.rttMs, models: member.models)
        worker.placed = member.placed
        return worker
    }

    private mutating func modelID(_ model: String) -> Int {
        let lowered = model.lowercased()
        if let id = modelIDs[lowered] { return id }
        models.append(lowered)
        modelIDs[lowered] = models.count - 1
        return models.count - 1
    }

    static func labelKey(_ key: String, _ value: String) -> String { key + "\u{1F}" + value }

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
            let position =
                buckets[bucket].firstIndex { id in queued[id].map { Self.before(job, $0) } ?? false }
                ?? buckets[bucket].endIndex
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
        if let index = memberIndex[placement.node] {
            members[index].placed -= 1
            for i in members[index].slots.indices where placement.gpus.contains(members[index].slots[i].index) {
                members[index].slots[i].reservedMB -= placement.reservedMB
            }
        }
        capacityGrew = true
        return placement
    }

    public var placedCount: Int { placements.count }

    /// Where a queued job stands in ``order(now:)`` (1 is next), without building the order:
    /// in each bucket the jobs ahead of it form a prefix, found by binary search.
    public func position(of id: String, now: Double) -> Int? {
        guard let job = queued[id] else { return nil }
        var ahead = 0
        for bucket in buckets {
            var low = 0, high = bucket.count
            while low < high {
                let mid = (low + high) / 2
                if let other = queued[bucket[mid]], other.id != id,
                    Self.ahead(other, job, now: now, aging: agingSeconds)
                {
                    low = mid + 1
                } else {
                    high = mid
                }
            }
            ahead += low
        }
        return ahead + 1
    }
    public func isQueued(_ id: String) -> Bool { queued[id] != nil }
    public var queuedCount: Int { queued.count }
    /// When the job queued longest was submitted (the scheduler's clock); nil with none queued.
    public var oldestQueuedAt: Double? { queued.values.lazy.map(\.submittedAt).min() }

    // MARK: Placing

    /// Places every queued job that fits now, best first.
    public mutating func place(now: Double) -> [Placement] {
        let candidates: [String]
        if capacityGrew {
            candidates = order(now: now)
        } else {
            // Nothing was freed since the last round, so the jobs that did not fit then still do
            // not; only the new ones can. They go in priority order among themselves.
            candidates = fresh.compactMap { queued[$0] }.sorted { Self.ahead($0, $1, now: now, aging: agingSeconds) }
                .map(\.id)
        }
        capacityGrew = false
        fresh.removeAll(keepingCapacity: true)
        guard !candidates.isEmpty else { return [] }
        var made: [Placement] = []
        var unfit = Set<Requirements>()
        // An upper bound on any GPU's free VRAM: it only shrinks while this round places jobs,
        // so a job asking for more is skipped without a scan.
        var roomiest = Int.max
        if candidates.count > 1 {
            roomiest = Int.min
            for member in members where member.eligible {
                for slot in member.slots where slot.freeMB > roomiest { roomiest = slot.freeMB }
            }
        }
        for id in candidates {
            guard let job = queued[id], job.requirements.minVramMB <= roomiest, !unfit.contains(job.requirements) else {
                continue
            }
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
        // Which GPU models the pattern takes, decided once per model rather than per GPU.
        let modelFits: [Bool]? = need.gpuModel.map { pattern in
            let lowered = pattern.lowercased()
            return models.map { Self.matches($0, lowered) }
        }
        var best: (worker: Int, fit: Int, serving: Int)?
        func consider(_ w: Int) {
            guard members[w].eligible, need.exec ? members[w].allowExec : members[w].canGenerate else { return }
            // A worker that lists its models and not this one cannot take the job; one that has
            // it loaded beats one that must load it, which beats one that does not say.
            guard let serving = members[w].serving(need.exec ? nil : need.model) else { return }
            guard let fit = fit(w, need: need.minVramMB, count: count, modelFits: modelFits) else { return }
            if let current = best {
                if serving != current.serving {
                    guard serving > current.serving else { return }
                } else if !better(w, fit: fit, than: current.worker, fit: current.fit) {
                    return
                }
            }
            best = (w, fit, serving)
        }
        if need.labels.isEmpty {
            for w in members.indices { consider(w) }
        } else {
            // Only members carrying every label: the smallest label set, checked against the rest.
            let sets = need.labels.map { labelIndex[Self.labelKey($0.key, $0.value)] ?? [] }
            guard let smallest = sets.min(by: { $0.count < $1.count }) else { return nil }
            for w in smallest.sorted() where sets.allSatisfy({ $0.contains(w) }) { consider(w) }
        }
        guard let best else { return nil }
        return Placement(
            jobID: job.id, node: members[best.worker].name,
            gpus: gpus(best.worker, need: need.minVramMB, count: count, modelFits: modelFits),
            reservedMB: need.minVramMB)
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
        guard let index = memberIndex[placement.node] else { return }
        members[index].placed += 1
        for i in members[index].slots.indices where placement.gpus.contains(members[index].slots[i].index) {
            members[index].slots[i].reservedMB += placement.reservedMB
        }
    }

    /// How well `count` GPUs of member `w` fit `need` MB each: the free VRAM that would be left
    /// on them (lower is tighter); nil when they do not fit. Allocates nothing for one GPU.
    private func fit(_ w: Int, need: Int, count: Int, modelFits: [Bool]?) -> Int? {
        let binpack = policy == .binpack
        if count == 1 {
            var found = false, pick = 0
            for slot in members[w].slots {
                let free = slot.freeMB
                guard free >= need, slot.totalMB > 0, modelFits?[slot.model] ?? true else { continue }
                if found && (binpack ? free >= pick : free <= pick) { continue }
                found = true
                pick = free
            }
            return found ? pick - need : nil
        }
        // The `count` best frees, kept sorted in a small stack buffer: no allocation per member.
        return withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { best -> Int? in
            var kept = 0
            for slot in members[w].slots {
                let free = slot.freeMB
                guard free >= need, slot.totalMB > 0, modelFits?[slot.model] ?? true else { continue }
                // Order: binpack wants the smallest frees first, spread the largest.
                var position = kept
                while position > 0 && (binpack ? free < best[position - 1] : free > best[position - 1]) {
                    position -= 1
                }
                guard position < count else { continue }
                var i = min(kept, count - 1)
                while i > position {
                    best[i] = best[i - 1]
                    i -= 1
                }
                best[position] = free
                kept = min(kept + 1, count)
            }
            guard kept == count else { return nil }
            var sum = 0
            for i in 0..<count { sum += best[i] - need }
            return sum
        }
    }

    /// The GPU indices a placement on member `w` takes (the policy's choice).
    private func gpus(_ w: Int, need: Int, count: Int, modelFits: [Bool]?) -> [Int] {
        taking(w, need: need, count: count, modelFits: modelFits).map(\.index).sorted()
    }

    private func taking(_ w: Int, need: Int, count: Int, modelFits: [Bool]?) -> ArraySlice<Slot> {
        var fitting = members[w].slots.filter { $0.freeMB >= need && $0.totalMB > 0 && (modelFits?[$0.model] ?? true) }
        guard fitting.count >= count else { return [] }
        // Ties by GPU index, so `fit` and `gpus` agree.
        fitting.sort {
            policy == .binpack
                ? ($0.freeMB, $0.index) < ($1.freeMB, $1.index) : ($0.freeMB, -$0.index) > ($1.freeMB, -$1.index)
        }
        return fitting.prefix(count)
    }

    /// Whether member `a` with fit `fitA` beats member `b` with fit `fitB`.
    private func better(_ a: Int, fit fitA: Int, than b: Int, fit fitB: Int) -> Bool {
        if fitA != fitB { return policy == .binpack ? fitA < fitB : fitA > fitB }
        if members[a].placed != members[b].placed { return members[a].placed < members[b].placed }
        if members[a].rttMs != members[b].rttMs { return members[a].rttMs < members[b].rttMs }
        return members[a].name < members[b].name
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
