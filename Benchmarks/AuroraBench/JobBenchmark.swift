import AsyncHTTPClient
import AuroraAPI
import AuroraTestKit
import Foundation
import Mesh
import NIOSSL
import Secrets
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A counter shared by concurrent tasks.
private final class Counted: Sendable {
    let value = Mutex(0)
}

/// `aurora-bench placement`: the pure placement core over simulated workers, one decision
/// at a time, on this thread (one core).
public struct PlacementBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var workers: Int
        public var gpus: Int
        public var decisions: Int
        public var placed: Int
        public var decisionsPerSecond: Double
        public var p50Us: Double
        public var p99Us: Double
        public var maxUs: Double

        enum CodingKeys: String, CodingKey {
            case workers, gpus, decisions, placed
            case decisionsPerSecond = "decisions_per_s", p50Us = "p50_us", p99Us = "p99_us", maxUs = "max_us"
        }
    }

    public var workers: Int
    public var decisions: Int
    public var policy: String

    public init(workers: Int, decisions: Int, policy: String) {
        self.workers = workers
        self.decisions = decisions
        self.policy = policy
    }

    public func run() -> Report {
        var generator = SystemRandomNumberGenerator()
        var scheduler = Scheduler(policy: Scheduler.Policy(rawValue: policy) ?? .binpack, agingSeconds: 30)
        let models = ["NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB", "NVIDIA L4", "NVIDIA H100 80GB HBM3"]
        var gpuCount = 0
        for w in 0..<workers {
            let gpus = (0..<Int.random(in: 1...8, using: &generator)).map { index -> Scheduler.GPUSlot in
                let total = [24_000, 48_000, 81_920].randomElement(using: &generator)!
                return Scheduler.GPUSlot(
                    index: index, model: models.randomElement(using: &generator)!, totalMB: total,
                    usedByOthersMB: Int.random(in: 0...total / 4, using: &generator))
            }
            gpuCount += gpus.count
            scheduler.upsert(
                Scheduler.Worker(
                    name: "sim-\(w)", eligible: Int.random(in: 0..<20, using: &generator) > 0,
                    allowExec: Bool.random(using: &generator), labels: ["zone": "z\(w % 8)"], gpus: gpus,
                    rttMs: Double.random(in: 0.1...40, using: &generator)))
        }
        // Jobs of the usual shapes; a bounded set of running jobs is released as new ones come,
        // so the cluster stays busy but not full.
        var running: [String] = []
        var latencies = [Double]()
        latencies.reserveCapacity(decisions)
        var placed = 0
        let clock = ContinuousClock()
        let started = clock.now
        for i in 0..<decisions {
            let requirements = Scheduler.Requirements(
                minVramMB: [0, 4_000, 8_000, 16_000, 24_000, 40_000][i % 6], gpuModel: i % 7 == 0 ? "a100" : nil,
                gpuCount: i % 11 == 0 ? 2 : 1, labels: i % 5 == 0 ? ["zone": "z\(i % 8)"] : [:], exec: i % 13 == 0)
            let job = Scheduler.Job(
                id: "job-\(i)", priority: i % 10, submittedAt: Double(i) / 1000, order: Int64(i),
                requirements: requirements)
            let before = clock.now
            scheduler.enqueue(job)
            let made = scheduler.place(now: Double(i) / 1000)
            let elapsed = before.duration(to: clock.now)
            latencies.append(Double(elapsed.components.attoseconds) / 1e12 + Double(elapsed.components.seconds) * 1e6)
            if made.isEmpty {
                scheduler.dequeue(job.id)  // one decision per job: a job that fits nowhere is dropped
            } else {
                placed += made.count
                running += made.map(\.jobID)
            }
            if running.count > workers * 2 { scheduler.release(running.removeFirst()) }
        }
        let wall = started.duration(to: clock.now)
        let seconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
        latencies.sort()
        return Report(
            workers: workers, gpus: gpuCount, decisions: decisions, placed: placed,
            decisionsPerSecond: Double(decisions) / seconds,
            p50Us: Samples.percentile(latencies, 0.5), p99Us: Samples.percentile(latencies, 0.99),
            maxUs: latencies.last ?? .nan)
    }
}

/// A node the benchmark plays itself against a real lead: joins, heartbeats with a worker
/// report, long-polls for assignments and reports results.
struct SimulatedWorker: Sendable {
    let signer: NodeSigner
    let leadURL: String
    let client: HTTPClient
    /// Pinned TLS to the lead, when it is reached over https.
    var tls: TLSConfiguration? = nil
    static let timing = HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600)
    /// What it tells the lead about its heartbeats.
    var timing = SimulatedWorker.timing

    init(name: String, leadURL: String, client: HTTPClient, tls: TLSConfiguration? = nil) {
        self.signer = NodeSigner(node: name)
        self.leadURL = leadURL
        self.client = client
        self.tls = tls
    }

    func join(token: String, gpus: [GPU], company: String? = nil, box: BoxKey = .generate()) async throws {
        let join = JoinRequest(
            token: token, name: signer.node, profile: .compute, company: company, labels: nil,
            wireguard: .init(
                publicKey: WireGuardPrivateKey.generate().publicKey.base64, endpoint: nil, listenPort: 51820),
            signPublicKey: signer.key.publicKey.base64, boxPublicKey: box.publicKey.base64, vpnIP: nil,
            capabilities: Capabilities(cpuCores: 8, memoryMB: 32_768, os: "bench", arch: "x86_64", gpus: gpus),
            address: nil,
            version: "bench", timing: timing)
        let (status, _) = try await send(
            "POST", Routes.join, body: Array(try APICoding.encoder().encode(join)), signed: false)
        guard status == 201 else { throw TestKitError("join of \(signer.node) answered \(status)") }
    }

    func heartbeat(running: [JobLease]) async throws {
        let beat = HeartbeatRequest(
            capabilities: nil, version: "bench", labels: nil, checks: [], peers: [], address: nil, timing: timing,
            worker: WorkerReport(accepting: true, allowExec: false, generate: true, jobs: running))
        _ = try await send("POST", Routes.heartbeat(signer.node), body: Array(try APICoding.encoder().encode(beat)))
    }

    func assignments(wait: Int) async throws -> AssignmentBatch {
        let (status, body) = try await send(
            "GET", Routes.gpuAssignments + "?wait=\(wait)", body: [], timeout: .seconds(Int64(wait) + 10))
        guard status == 200 else { throw TestKitError("assignments answered \(status)") }
        return try APICoding.decoder().decode(AssignmentBatch.self, from: Data(body))
    }

    func result(_ assignment: Assignment) async throws {
        let result = JobResult(
            attempt: assignment.attempt, outcome: .succeeded, result: .object(["text": .string("ok")]))
        _ = try await send(
            "POST", Routes.gpuJobResult(assignment.id), body: Array(try APICoding.encoder().encode(result)))
    }

    func send(_ method: String, _ path: String, body: [UInt8], signed: Bool = true, timeout: Duration = .seconds(10))
        async throws -> (Int, [UInt8])
    {
        let answer = try await http(
            leadURL + path, method: method,
            headers: signed ? signer.headers(method: method, path: path, body: body) : [:],
            body: body.isEmpty ? nil : body, timeout: timeout, client: client, tlsConfiguration: tls)
        return (answer.status, Array(answer.body))
    }
}

/// `aurora-bench dispatch`: submissions at a steady rate to a real lead (durable commits),
/// timed until a simulated worker's long-poll receives each job.
public struct DispatchBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var rate: Int
        public var seconds: Int
        public var workers: Int
        public var submitted: Int
        public var dispatched: Int
        public var failed: Int
        public var decoys: Int
        public var minVramMB: Int
        /// Submissions answered `queued`: their placement explanation (`waiting`) was computed.
        public var explained: Int
        public var p50Ms: Double
        public var p99Ms: Double
        public var maxMs: Double
        public var leadCPUPercentOfOneCore: Double
        /// The lead committed synchronously to a streaming standby lead (`--sync-standby`), and
        /// still did when the load ended.
        public var syncStandby = false

        enum CodingKeys: String, CodingKey {
            case rate, seconds, workers, submitted, dispatched, failed, decoys, explained
            case syncStandby = "sync_standby"
            case minVramMB = "min_vram_mb"
            case p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms", leadCPUPercentOfOneCore =
                "lead_cpu_pct_of_one_core"
        }
    }

    public var executable: String
    public var rate: Int
    public var seconds: Int
    public var workers: Int
    /// Nodes that joined first with GPUs too small for the jobs: every submission's placement
    /// check and explanation walks past them.
    public var decoys: Int
    /// What each job needs on one GPU: above 12 282 MB a worker's GPU holds one job at a time,
    /// so jobs wait in the queue (and are explained) while the workers are busy.
    public var minVramMB: Int
    /// The lead's managed PostgreSQL streams to a standby lead that is synchronous: every
    /// submission is acknowledged only once the standby has it.
    public var syncStandby: Bool
    public var progress: @Sendable (String) -> Void

    public init(
        executable: String, rate: Int, seconds: Int, workers: Int, decoys: Int = 0, minVramMB: Int = 0,
        syncStandby: Bool = false, progress: @escaping @Sendable (String) -> Void
    ) {
        self.syncStandby = syncStandby
        self.executable = executable
        self.rate = rate
        self.seconds = seconds
        self.workers = workers
        self.decoys = decoys
        self.minVramMB = minVramMB
        self.progress = progress
    }

    private final class Clocks: Sendable {
        let submitted = Mutex<[Int: ContinuousClock.Instant]>([:])
        let received = Mutex<[Int: ContinuousClock.Instant]>([:])
        let failures = Mutex(0)
        let explained = Mutex(0)
    }

    public func run() async throws -> Report {
        let replicationPort = syncStandby ? try freePort() : nil
        let lead = try await BenchLead.start(
            "dispatch", executable: executable,
            config: replicationPort.map { "store:\n  replication_listen: \"127.0.0.1:\($0)\"\n" } ?? "")
        defer { lead.discard() }
        let standby = try await syncStandby ? startSyncStandby(lead) : nil
        defer {
            if let standby, standby.process.isRunning {
                standby.process.signal(SIGTERM)
                let deadline = ContinuousClock.now + .seconds(30)
                while standby.process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
            }
        }
        let token = try await lead.joinToken()
        let client = loadClient(connections: 64)
        defer { _ = client.shutdown() }

        if decoys > 0 {
            progress("joining \(decoys) decoy nodes with 8 GB GPUs…")
            let small = GPU(
                index: 0, uuid: "GPU-decoy", name: "RTX 4060", memoryTotalMB: 8_188, memoryUsedMB: 0, utilizationPct: 0)
            for index in 0..<decoys {
                // An hour between heartbeats: they stay alive (and in every check) without a beat.
                var decoy = SimulatedWorker(name: "decoy-\(index)", leadURL: lead.baseURL, client: client)
                decoy.timing = HeartbeatTiming(intervalS: 3600, suspectAfter: 1, awayAfter: 0, deadAfter: 2)
                try await decoy.join(token: token, gpus: [small])
                try await decoy.heartbeat(running: [])
            }
        }
        progress("joining \(workers) simulated workers…")
        let gpu = GPU(
            index: 0, uuid: "GPU-bench", name: "RTX 4090", memoryTotalMB: 24_564, memoryUsedMB: 0, utilizationPct: 0)
        let sims = (0..<workers).map { SimulatedWorker(name: "worker-\($0)", leadURL: lead.baseURL, client: client) }
        for sim in sims {
            try await sim.join(token: token, gpus: [gpu])
            try await sim.heartbeat(running: [])
        }
        let clocks = Clocks()
        let total = rate * seconds
        let leadURL = lead.baseURL, adminToken = lead.token, minVramMB = self.minVramMB
        @Sendable func body(_ n: Int) -> [UInt8] {
            Array(
                (try? APICoding.encoder().encode(
                    JobSubmission(
                        kind: .generate, requirements: minVramMB > 0 ? JobRequirements(minVramMB: minVramMB) : nil,
                        payload: ["model": .string("bench"), "prompt": .string(String(n))])))
                    ?? Data())
        }
        progress("submitting \(rate) jobs/s for \(seconds) s…")
        let cpuBefore = Measurements.cpuSeconds(pid: lead.process.pid) ?? 0
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Workers: long-poll, note arrival, report the result; heartbeat every second.
            for sim in sims {
                group.addTask {
                    var lastBeat = ContinuousClock.now
                    while clocks.received.withLock({ $0.count }) < total
                        && ContinuousClock.now < started + .seconds(Int64(seconds) + 30)
                    {
                        let batch = try await sim.assignments(wait: 2)
                        let now = ContinuousClock.now
                        clocks.received.withLock { received in
                            for assignment in batch.assignments {
                                received[Int(assignment.payload["prompt"]?.string ?? "") ?? -1] = now
                            }
                        }
                        // Results go out beside the next poll, as a real worker's do.
                        for assignment in batch.assignments { Task { try? await sim.result(assignment) } }
                        if lastBeat.duration(to: .now) >= .seconds(1) {
                            lastBeat = .now
                            try await sim.heartbeat(running: [])
                        }
                    }
                }
            }
            group.addTask {
                await withDiscardingTaskGroup { submits in
                    let spacing = Duration.nanoseconds(1_000_000_000 / Int64(rate))
                    for n in 0..<total {
                        try? await Task.sleep(until: started + spacing * n, clock: .continuous)
                        submits.addTask {
                            let submission = body(n)
                            clocks.submitted.withLock { $0[n] = .now }
                            do {
                                let answer = try await http(
                                    leadURL + Routes.gpuJobs, method: "POST",
                                    headers: ["Authorization": "Bearer \(adminToken)"],
                                    body: submission, timeout: .seconds(10), client: client)
                                if answer.status != 201 {
                                    clocks.failures.withLock { $0 += 1 }
                                } else if (try? answer.decode(Job.self))?.waiting != nil {
                                    clocks.explained.withLock { $0 += 1 }
                                }
                            } catch {
                                clocks.failures.withLock { $0 += 1 }
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let wall = started.duration(to: .now)
        let cpuAfter = Measurements.cpuSeconds(pid: lead.process.pid) ?? cpuBefore
        let stillSync = try await syncStandby ? standbyIsSync(lead) : false
        await lead.stop()
        let submitted = clocks.submitted.withLock { $0 }
        let received = clocks.received.withLock { $0 }
        let latencies = received.compactMap { n, at in
            submitted[n].map { Double($0.duration(to: at) / .microseconds(1)) / 1000 }
        }.sorted()
        return Report(
            rate: rate, seconds: seconds, workers: workers, submitted: submitted.count, dispatched: latencies.count,
            failed: clocks.failures.withLock { $0 }, decoys: decoys, minVramMB: minVramMB,
            explained: clocks.explained.withLock { $0 }, p50Ms: Samples.percentile(latencies, 0.5),
            p99Ms: Samples.percentile(latencies, 0.99),
            maxMs: latencies.last ?? .nan,
            leadCPUPercentOfOneCore: 100 * (cpuAfter - cpuBefore) / (Double(wall / .milliseconds(1)) / 1000),
            syncStandby: stillSync)
    }

    /// A standby lead (a real `nodeagent --standby`) that clones the lead's store and streams
    /// from it; returned once the lead commits synchronously to it.
    private func startSyncStandby(_ lead: BenchLead) async throws -> AgentHarness {
        progress("starting a standby lead; waiting until the lead commits synchronously to it…")
        let created: TokenCreated = try await lead.post(
            Routes.tokens, TokenCreateRequest(profile: .standby, ttlS: 3600, reusable: false))
        let standby = try AgentHarness(
            profile: "lead", dataDir: lead.root + "/standby",
            extraArguments: [
                "--name", "bench-standby", "--standby", "--lead", lead.baseURL, "--join-token", created.token,
                "--log-level", "error",
            ], outputDirectory: lead.root, executable: executable)
        do {
            try await standby.waitHealthy(timeout: .seconds(60))
            try await waitUntil("the lead to commit synchronously to its standby", timeout: .seconds(120)) {
                try await standbyIsSync(lead)
            }
        } catch {
            standby.process.signal(SIGKILL)
            throw error
        }
        return standby
    }

    /// Whether the lead's commits wait for its standby now.
    private func standbyIsSync(_ lead: BenchLead) async throws -> Bool {
        let status: LeadStatus = try await lead.get(API.leadStatus.pattern)
        return status.standbys.contains { $0.name == "bench-standby" && $0.sync == true }
    }
}

/// `aurora-bench queue`: the lead's memory with many queued jobs (no worker takes them).
public struct QueueMemoryBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var jobs: Int
        public var failed: Int
        public var submitsPerSecond: Double
        public var leadRSSMBBefore: Double?
        public var leadRSSMB: Double?

        enum CodingKeys: String, CodingKey {
            case jobs, failed
            case submitsPerSecond = "submits_per_s", leadRSSMBBefore = "lead_rss_mb_before", leadRSSMB = "lead_rss_mb"
        }
    }

    public var executable: String
    public var jobs: Int
    public var progress: @Sendable (String) -> Void

    public init(executable: String, jobs: Int, progress: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.jobs = jobs
        self.progress = progress
    }

    public func run() async throws -> Report {
        let lead = try await BenchLead.start("queue", executable: executable)
        defer { lead.discard() }
        let before = Measurements.rssMB(pid: lead.process.pid)
        let failures = Counted()
        let leadURL = lead.baseURL, adminToken = lead.token
        progress("submitting \(jobs) jobs (32 at a time)…")
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<jobs {
                if n >= 32 { try await group.next() }
                group.addTask {
                    let submission = JobSubmission(
                        kind: .generate, priority: n % 10,
                        requirements: JobRequirements(minVramMB: 8_000 + n % 7 * 1_000),
                        payload: [
                            "model": .string("llama3:8b"),
                            "prompt": .string("Summarise document \(n) in three sentences."),
                            "options": .object(["temperature": .number(0.2)]),
                        ],
                        idempotencyKey: "bench-\(n)")
                    let answer = try await http(
                        leadURL + Routes.gpuJobs, method: "POST", headers: ["Authorization": "Bearer \(adminToken)"],
                        body: Array(try APICoding.encoder().encode(submission)), timeout: .seconds(30))
                    if answer.status != 201 { failures.value.withLock { $0 += 1 } }
                }
            }
            try await group.waitForAll()
        }
        let wall = started.duration(to: .now)
        // Let the allocator settle, then read it.
        try await Task.sleep(for: .seconds(2))
        let rss = Measurements.rssMB(pid: lead.process.pid)
        await lead.stop()
        return Report(
            jobs: jobs, failed: failures.value.withLock { $0 },
            submitsPerSecond: Double(jobs) / (Double(wall / .milliseconds(1)) / 1000),
            leadRSSMBBefore: before, leadRSSMB: rss)
    }
}

/// `aurora-bench requeue`: time from `kill -9` of the worker running a job to the job
/// running on another worker, over several runs (two real compute agents, `exec` jobs).
public struct RequeueBenchmark: Sendable {
    public typealias Report = KillTimings

    public var executable: String
    public var runs: Int
    public var progress: @Sendable (String) -> Void

    public init(executable: String, runs: Int, progress: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.runs = runs
        self.progress = progress
    }

    public func run() async throws -> Report {
        let lead = try await BenchLead.start("requeue", executable: executable)
        defer { lead.discard() }
        let root = lead.root
        let token = try await lead.joinToken()
        let nodeFile = root + "/worker.yaml"
        try """
        gpu: {accept_jobs: true, allow_exec: true}
        gpus:
          - {index: 0, uuid: GPU-bench, name: RTX 4090, memory_total_mb: 24564, memory_used_mb: 0}
        """.write(toFile: nodeFile, atomically: true, encoding: .utf8)
        var agents: [String: ChildProcess] = [:]
        var arguments: [String: [String]] = [:]
        for name in ["worker-a", "worker-b"] {
            let port = try freePort()
            arguments[name] = [
                "run", "--profile", "compute", "--name", name, "--data-dir", root + "/" + name, "--listen",
                "127.0.0.1:\(port)",
                "--lead", lead.baseURL, "--log-level", "error", "--config", nodeFile,
            ]
            agents[name] = try lead.spawn(executable, arguments[name]! + ["--join-token", token])
        }
        defer { for process in agents.values { process.signal(SIGKILL) } }
        var timings: [Double] = []
        for run in 1...runs {
            try await waitUntil("two accepting workers", timeout: .seconds(30)) {
                let status: GPUStatus = try await lead.get(Routes.gpuStatus)
                return status.nodes.filter { $0.accepting && $0.state == .alive }.count == 2
            }
            let job: Job = try await lead.post(
                Routes.gpuJobs,
                JobSubmission(
                    kind: .exec, requirements: JobRequirements(minVramMB: 20_000),
                    payload: ["argv": .array([.string("sleep"), .string("20")])]))
            var victim = ""
            try await waitUntil("the job to run", timeout: .seconds(10)) {
                let current: Job = try await lead.get(Routes.gpuJob(job.id))
                victim = current.node ?? ""
                return current.state == .running
            }
            try await Task.sleep(for: .milliseconds(Int64.random(in: 500...1500)))
            agents[victim]!.signal(SIGKILL)
            let killed = ContinuousClock.now
            try await waitUntil("the job to run elsewhere", timeout: .seconds(60)) {
                let current: Job = try await lead.get(Routes.gpuJob(job.id))
                return current.state == .running && current.node != victim
            }
            let elapsed = Double(killed.duration(to: .now) / .microseconds(1)) / 1000
            timings.append(elapsed)
            progress(
                "run \(run)/\(runs): running on another worker \(String(format: "%.0f", elapsed)) ms after kill -9 of \(victim)"
            )
            let _: Job = try await lead.delete(Routes.gpuJob(job.id))
            try await agents[victim]!.waitForExit(timeout: .seconds(10))
            agents[victim] = try lead.spawn(executable, arguments[victim]!)
        }
        await lead.stop()
        return KillTimings(timings)
    }
}
