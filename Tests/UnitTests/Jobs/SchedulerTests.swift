import Testing

@testable import Mesh

/// GPU placement, pure: order, aging, VRAM accounting, policies, labels, no over-commit.
@Suite("Scheduler (pure placement)")
struct SchedulerTests {
    typealias Job = Scheduler.Job
    typealias Requirements = Scheduler.Requirements

    static func gpu(_ index: Int, _ totalMB: Int, used: Int = 0, model: String = "NVIDIA RTX 4090") -> Scheduler.GPUSlot
    {
        Scheduler.GPUSlot(index: index, model: model, totalMB: totalMB, usedByOthersMB: used)
    }

    static func worker(
        _ name: String, _ gpus: [Scheduler.GPUSlot], labels: [String: String] = [:], exec: Bool = false,
        rtt: Double = .infinity
    ) -> Scheduler.Worker {
        Scheduler.Worker(name: name, eligible: true, allowExec: exec, labels: labels, gpus: gpus, rttMs: rtt)
    }

    static func job(
        _ id: String, priority: Int = 5, at: Double = 0, order: Int64 = 0, vram: Int = 0, model: String? = nil,
        count: Int = 1, labels: [String: String] = [:], exec: Bool = false
    ) -> Job {
        Job(
            id: id, priority: priority, submittedAt: at, order: order,
            requirements: Requirements(minVramMB: vram, gpuModel: model, gpuCount: count, labels: labels, exec: exec))
    }

    @Test(
        "a generate job asking for a model: only nodes that serve it (or do not say); loaded beats not loaded beats unknown"
    )
    func modelRouting() {
        func generate(_ id: String, _ model: String?) -> Job {
            Job(id: id, priority: 5, submittedAt: 0, order: 0, requirements: Requirements(model: model))
        }
        var scheduler = Scheduler(policy: .binpack, agingSeconds: 0)
        var cold = Self.worker("cold", [Self.gpu(0, 24_000)])
        cold.models = ["llama3": false, "qwen": true]
        var warm = Self.worker("warm", [Self.gpu(0, 80_000)])  // binpack alone would prefer cold
        warm.models = ["llama3": true]
        var silent = Self.worker("silent", [Self.gpu(0, 8_000)])  // its server lists nothing
        silent.models = nil
        var other = Self.worker("other", [Self.gpu(0, 8_000)])
        other.models = ["mistral": true]
        for worker in [cold, warm, silent, other] { scheduler.upsert(worker) }
        #expect(scheduler.decide(generate("a", "llama3"))?.node == "warm")
        #expect(scheduler.decide(generate("b", "qwen"))?.node == "cold")
        #expect(scheduler.decide(generate("c", "mistral"))?.node == "other")
        // Nobody lists it: only the node that does not say may serve it.
        #expect(scheduler.decide(generate("d", "phi3"))?.node == "silent")
        // Without a model, routing is as before (binpack: the tightest GPUs, 8 GB; then the name).
        #expect(scheduler.decide(generate("e", nil))?.node == "other")
        // An exec job ignores models.
        var exec = Self.worker("exec", [Self.gpu(0, 4_000)], exec: true)
        exec.models = [:]
        scheduler.upsert(exec)
        #expect(scheduler.decide(Self.job("f", exec: true))?.node == "exec")
        // Explained: nodes that list other models are "not serving the model".
        scheduler.upsert(Self.worker("silent", [Self.gpu(0, 8_000)], labels: ["x": "y"]))
        var gone = silent
        gone.models = ["mistral": true]
        scheduler.upsert(gone)
        #expect(scheduler.decide(generate("g", "phi3")) == nil)
        #expect(!scheduler.couldEverRun(Requirements(model: "phi3")))
        let why = scheduler.explain(Requirements(model: "phi3"))
        #expect(why.entries.first { $0.reason == .noModel }?.nodes == ["cold", "exec", "other", "silent", "warm"])
        #expect(why.summary.contains("not serving the model 'phi3'"))
    }

    @Test("higher priority first, FIFO within one priority")
    func priorityAndFIFO() {
        var scheduler = Scheduler(agingSeconds: 0)
        scheduler.enqueue(Self.job("low-1", priority: 2, at: 1, order: 1))
        scheduler.enqueue(Self.job("high-1", priority: 7, at: 2, order: 2))
        scheduler.enqueue(Self.job("low-2", priority: 2, at: 3, order: 3))
        scheduler.enqueue(Self.job("high-2", priority: 7, at: 4, order: 4))
        scheduler.enqueue(Self.job("critical", priority: 9, at: 5, order: 5))
        #expect(scheduler.order(now: 10) == ["critical", "high-1", "high-2", "low-1", "low-2"])

        // No VRAM needed: all fit at once, placed in that order.
        scheduler.upsert(Self.worker("a", [Self.gpu(0, 1000)]))
        let result1 = scheduler.place(now: 10)
        #expect(result1.map(\.jobID) == ["critical", "high-1", "high-2", "low-1", "low-2"])
    }

    @Test("placement order with limited VRAM follows priority, then FIFO")
    func orderUnderContention() {
        var scheduler = Scheduler(agingSeconds: 0)
        scheduler.upsert(Self.worker("a", [Self.gpu(0, 1000)]))
        let ids = [("l1", 2), ("h1", 7), ("l2", 2), ("h2", 7), ("n1", 5)]
        for (i, (id, priority)) in ids.enumerated() {
            scheduler.enqueue(Self.job(id, priority: priority, at: Double(i), order: Int64(i), vram: 1000))
        }
        var started: [String] = []
        var placed = scheduler.place(now: 10)
        while let first = placed.first {
            #expect(placed.count == 1)
            started.append(first.jobID)
            scheduler.release(first.jobID)
            placed = scheduler.place(now: 10)
        }
        #expect(started == ["h1", "h2", "n1", "l1", "l2"])
    }

    @Test("aging: a low-priority job that waited long enough goes before newer high-priority jobs")
    func aging() {
        var scheduler = Scheduler(agingSeconds: 10)
        scheduler.enqueue(Self.job("old-low", priority: 2, at: 0, order: 1))
        scheduler.enqueue(Self.job("new-high", priority: 7, at: 45, order: 2))
        // At 46 s: old-low is 2 + 4 = 6 < 7.
        #expect(scheduler.order(now: 46) == ["new-high", "old-low"])
        // At 50 s: 2 + 5 = 7, equal, and older: first.
        #expect(scheduler.order(now: 50) == ["old-low", "new-high"])
        // Even a critical job submitted now waits behind it once it has waited long enough.
        scheduler.enqueue(Self.job("new-critical", priority: 9, at: 100, order: 3))
        #expect(scheduler.order(now: 100).first == "old-low")  // 2 + 10 = 12 > 9
        #expect(Scheduler.effectivePriority(Self.job("x", priority: 3, at: 0), now: 29.9, aging: 10) == 5)
    }

    @Test("free VRAM counts memory used by other processes and jobs already placed")
    func vramAccounting() {
        var scheduler = Scheduler()
        // 24 GB, 20 GB used by something else: 4 GB free.
        scheduler.upsert(Self.worker("a", [Self.gpu(0, 24_000, used: 20_000)]))
        scheduler.enqueue(Self.job("big", at: 1, order: 1, vram: 5_000))
        let result2 = scheduler.place(now: 1)
        #expect(result2.isEmpty)
        scheduler.enqueue(Self.job("small-1", at: 2, order: 2, vram: 3_000))
        scheduler.enqueue(Self.job("small-2", at: 3, order: 3, vram: 3_000))
        let placed = scheduler.place(now: 3)
        // The big job waits without blocking the small one; the second small one does not fit
        // beside the first (4 GB − 3 GB reserved = 1 GB).
        #expect(placed.map(\.jobID) == ["small-1"])
        #expect(scheduler.worker("a")?.gpus[0].freeMB == 1_000)
        #expect(scheduler.isQueued("big") && scheduler.isQueued("small-2"))

        // The other process frees its memory (a heartbeat): both waiting jobs fit now.
        scheduler.upsert(Self.worker("a", [Self.gpu(0, 24_000, used: 0)]))
        let result3 = scheduler.place(now: 4)
        #expect(Set(result3.map(\.jobID)) == ["big", "small-2"])
        #expect(scheduler.worker("a")?.gpus[0].reservedMB == 11_000)
        #expect(scheduler.worker("a")?.gpus[0].freeMB == 13_000)

        scheduler.release("big")
        #expect(scheduler.worker("a")?.gpus[0].reservedMB == 6_000)
    }

    @Test("binpack fills the tightest GPU; spread takes the emptiest")
    func policies() {
        func first(_ policy: Scheduler.Policy) -> Scheduler.Placement? {
            var scheduler = Scheduler(policy: policy)
            scheduler.upsert(Self.worker("roomy", [Self.gpu(0, 80_000)]))
            scheduler.upsert(
                Self.worker("tight", [Self.gpu(0, 24_000, used: 10_000), Self.gpu(1, 24_000, used: 2_000)]))
            scheduler.enqueue(Self.job("j", vram: 8_000))
            return scheduler.place(now: 0).first
        }
        #expect(first(.binpack) == Scheduler.Placement(jobID: "j", node: "tight", gpus: [0], reservedMB: 8_000))
        #expect(first(.spread) == Scheduler.Placement(jobID: "j", node: "roomy", gpus: [0], reservedMB: 8_000))
    }

    @Test("multi-GPU jobs: binpack takes the tightest GPUs of the tightest node, spread the emptiest")
    func multiGPU() {
        func place(_ policy: Scheduler.Policy) -> Scheduler.Placement? {
            var scheduler = Scheduler(policy: policy)
            scheduler.upsert(
                Self.worker(
                    "four",
                    [
                        Self.gpu(0, 24_000, used: 4_000), Self.gpu(1, 24_000), Self.gpu(2, 24_000, used: 12_000),
                        Self.gpu(3, 24_000, used: 2_000),
                    ]))
            scheduler.upsert(Self.worker("two", [Self.gpu(0, 48_000), Self.gpu(1, 48_000)]))
            scheduler.enqueue(Self.job("pair", vram: 10_000, count: 2))
            return scheduler.place(now: 0).first
        }
        // binpack: on "four", GPUs 2 (12 GB free) and 0 (20 GB) leave 2 + 10 GB; on "two", 76 GB.
        #expect(place(.binpack) == Scheduler.Placement(jobID: "pair", node: "four", gpus: [0, 2], reservedMB: 10_000))
        #expect(place(.spread) == Scheduler.Placement(jobID: "pair", node: "two", gpus: [0, 1], reservedMB: 10_000))
    }

    @Test("ties go to fewer placed jobs, then lower RTT, then the name")
    func tieBreaks() {
        var scheduler = Scheduler()
        scheduler.upsert(Self.worker("b", [Self.gpu(0, 24_000)], rtt: 0.4))
        scheduler.upsert(Self.worker("a", [Self.gpu(0, 24_000)], rtt: 0.9))
        scheduler.upsert(Self.worker("c", [Self.gpu(0, 24_000)], rtt: 0.4))
        scheduler.enqueue(Self.job("1", at: 1, order: 1))
        let result4 = scheduler.place(now: 1)
        #expect(result4.first?.node == "b")  // same fit, lower RTT than a, name before c
        scheduler.enqueue(Self.job("2", at: 2, order: 2))
        let result5 = scheduler.place(now: 2)
        #expect(result5.first?.node == "c")  // b has a job now
    }

    @Test("labels, GPU model patterns, GPU count and exec permission")
    func constraints() {
        var scheduler = Scheduler()
        scheduler.upsert(
            Self.worker(
                "a100-box", [Self.gpu(0, 81_920, model: "NVIDIA A100-SXM4-80GB")], labels: ["zone": "fsn1"], exec: true)
        )
        scheduler.upsert(Self.worker("office", [Self.gpu(0, 24_564), Self.gpu(1, 24_564)], labels: ["zone": "office"]))

        scheduler.enqueue(Self.job("zone", at: 1, order: 1, labels: ["zone": "office"]))
        scheduler.enqueue(Self.job("model", at: 2, order: 2, model: "a100"))
        scheduler.enqueue(Self.job("glob", at: 3, order: 3, model: "*rtx*4090"))
        scheduler.enqueue(Self.job("pair", at: 4, order: 4, vram: 20_000, count: 2))
        scheduler.enqueue(Self.job("exec", at: 5, order: 5, exec: true))
        scheduler.enqueue(Self.job("nowhere", at: 6, order: 6, labels: ["zone": "mars"]))
        scheduler.enqueue(Self.job("three", at: 7, order: 7, count: 3))
        let placed = Dictionary(uniqueKeysWithValues: scheduler.place(now: 7).map { ($0.jobID, $0) })
        #expect(placed["zone"]?.node == "office")
        #expect(placed["model"]?.node == "a100-box")
        #expect(placed["glob"]?.node == "office")
        #expect(placed["pair"]?.node == "office" && placed["pair"]?.gpus == [0, 1])
        #expect(placed["exec"]?.node == "a100-box")
        #expect(placed["nowhere"] == nil && placed["three"] == nil)
        #expect(Scheduler.matches("nvidia geforce rtx 4090", "rtx 4090"))
        #expect(Scheduler.matches("nvidia geforce rtx 4090", "nvidia*4090"))
        #expect(!Scheduler.matches("nvidia geforce rtx 4090", "a100*"))
    }

    @Test("ineligible workers (dead, not accepting) get nothing; eligible again, they do")
    func eligibility() {
        var scheduler = Scheduler()
        scheduler.upsert(Self.worker("a", [Self.gpu(0, 24_000)]))
        scheduler.setEligible("a", false)
        scheduler.enqueue(Self.job("j"))
        let result6 = scheduler.place(now: 0)
        #expect(result6.isEmpty)
        scheduler.setEligible("a", true)
        let result7 = scheduler.place(now: 0)
        #expect(result7.map(\.node) == ["a"])
    }

    @Test("a job's position agrees with the placement order, aging included")
    func positions() {
        var generator = SplitMix64(seed: 7)
        var scheduler = Scheduler(agingSeconds: 10)
        for i in 0..<300 {
            scheduler.enqueue(
                Self.job(
                    "j\(i)", priority: Int.random(in: 0...9, using: &generator), at: Double(i) / 3, order: Int64(i)))
        }
        for now in [100.0, 150.0, 400.0] {
            let order = scheduler.order(now: now)
            for (index, id) in order.enumerated() { #expect(scheduler.position(of: id, now: now) == index + 1) }
        }
        #expect(scheduler.position(of: "nope", now: 0) == nil)
    }

    @Test("a requeued job keeps its place by submission time")
    func requeueKeepsPlace() {
        var scheduler = Scheduler(agingSeconds: 0)
        scheduler.enqueue(Self.job("first", at: 1, order: 1, vram: 10))
        scheduler.enqueue(Self.job("second", at: 2, order: 2, vram: 10))
        scheduler.enqueue(Self.job("third", at: 3, order: 3, vram: 10))
        let result8 = scheduler.dequeue("first")
        #expect(result8)
        scheduler.enqueue(Self.job("first", at: 1, order: 1, vram: 10))
        #expect(scheduler.order(now: 5) == ["first", "second", "third"])
    }

    @Test("no over-commit over 10,000 random placements, releases and worker changes")
    func randomizedNoOverCommit() {
        var generator = SplitMix64(seed: 0xA0F0)
        var scheduler = Scheduler(policy: .binpack, agingSeconds: 5)
        let models = ["NVIDIA RTX 4090", "NVIDIA A100-SXM4-80GB", "NVIDIA L4"]
        func randomWorker(_ name: String) -> Scheduler.Worker {
            let gpus = (0..<Int.random(in: 1...4, using: &generator)).map { index in
                let total = [24_000, 48_000, 81_920].randomElement(using: &generator)!
                return Self.gpu(
                    index, total, used: Int.random(in: 0...total / 2, using: &generator),
                    model: models.randomElement(using: &generator)!)
            }
            return Self.worker(
                name, gpus, labels: ["zone": ["a", "b"].randomElement(using: &generator)!],
                exec: Bool.random(using: &generator))
        }
        for w in 0..<20 { scheduler.upsert(randomWorker("w\(w)")) }
        var running: [String] = []
        var placements = 0
        var order: Int64 = 0
        var now = 0.0
        var violations: [String] = []
        while placements < 10_000 {
            now += 0.01
            for _ in 0..<Int.random(in: 1...8, using: &generator) where scheduler.queuedCount < 100 {
                order += 1
                scheduler.enqueue(
                    Self.job(
                        "j\(order)", priority: Int.random(in: 0...9, using: &generator), at: now, order: order,
                        vram: Int.random(in: 0...30_000, using: &generator),
                        model: Bool.random(using: &generator) ? nil : "rtx",
                        count: Int.random(in: 1...2, using: &generator),
                        labels: Int.random(in: 0..<4, using: &generator) == 0 ? ["zone": "a"] : [:],
                        exec: Int.random(in: 0..<5, using: &generator) == 0))
            }
            for _ in 0..<Int.random(in: 0...6, using: &generator) where !running.isEmpty {
                let index = Int.random(in: 0..<running.count, using: &generator)
                scheduler.release(running.remove(at: index))
            }
            if Int.random(in: 0..<50, using: &generator) == 0 {
                let name = "w\(Int.random(in: 0..<20, using: &generator))"
                if Bool.random(using: &generator) {
                    scheduler.setEligible(name, Bool.random(using: &generator))
                } else {
                    // Other processes' use changes: existing reservations stay.
                    var changed = scheduler.worker(name)!
                    for i in changed.gpus.indices {
                        changed.gpus[i].usedByOthersMB = Int.random(
                            in: 0...changed.gpus[i].totalMB / 4, using: &generator)
                    }
                    scheduler.upsert(changed)
                }
            }
            let made = scheduler.place(now: now)
            placements += made.count
            running += made.map(\.jobID)
            // The invariant: a placement goes to an eligible worker, on distinct GPUs, and leaves
            // each of them with free VRAM ≥ 0 (other processes' use plus reservations within
            // its memory).
            for placement in made {
                let worker = scheduler.worker(placement.node)!
                if !worker.eligible { violations.append("\(placement.jobID) on ineligible \(worker.name)") }
                if Set(placement.gpus).count != placement.gpus.count {
                    violations.append("\(placement.jobID) took a GPU twice")
                }
                for index in placement.gpus where worker.gpus.first(where: { $0.index == index })!.freeMB < 0 {
                    violations.append("\(placement.jobID) over-commits \(worker.name) GPU \(index)")
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        #expect(placements >= 10_000)
    }
}

/// A small seeded generator, so the randomized run is the same every time.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
