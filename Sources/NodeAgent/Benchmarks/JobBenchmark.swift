import AsyncHTTPClient
import AuroraAPI
import Foundation
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import NIOSSL
import Secrets
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Percentiles and medians of benchmark samples.
enum Samples {
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))]
    }
}

/// A counter shared by concurrent tasks.
private final class Counted: Sendable {
    let value = Mutex(0)
}

/// `nodeagent bench placement`: the pure placement core over simulated workers, one decision
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
                return Scheduler.GPUSlot(index: index, model: models.randomElement(using: &generator)!, totalMB: total,
                                         usedByOthersMB: Int.random(in: 0...total / 4, using: &generator))
            }
            gpuCount += gpus.count
            scheduler.upsert(Scheduler.Worker(name: "sim-\(w)", eligible: Int.random(in: 0..<20, using: &generator) > 0,
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
            let job = Scheduler.Job(id: "job-\(i)", priority: i % 10, submittedAt: Double(i) / 1000, order: Int64(i), requirements: requirements)
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
        return Report(workers: workers, gpus: gpuCount, decisions: decisions, placed: placed, decisionsPerSecond: Double(decisions) / seconds,
                      p50Us: Samples.percentile(latencies, 0.5), p99Us: Samples.percentile(latencies, 0.99), maxUs: latencies.last ?? .nan)
    }
}

/// A node the benchmark plays itself against a real lead: joins, heartbeats with a worker
/// report, long-polls for assignments and reports results.
struct SimulatedWorker: Sendable {
    let signer: RequestSigner
    let leadURL: String
    let client: HTTPClient
    /// Pinned TLS to the lead, when it is reached over https.
    var tls: TLSConfiguration? = nil
    static let timing = HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600)

    init(name: String, leadURL: String, client: HTTPClient, tls: TLSConfiguration? = nil) {
        self.signer = RequestSigner(node: name, key: SigningKey.generate())
        self.leadURL = leadURL
        self.client = client
        self.tls = tls
    }

    func join(token: String, gpus: [GPU], company: String? = nil, box: BoxKey = .generate()) async throws {
        let join = JoinRequest(
            token: token, name: signer.node, profile: .compute, company: company, labels: nil,
            wireguard: .init(publicKey: WireGuardPrivateKey.generate().publicKey.base64, endpoint: nil, listenPort: 51820),
            signPublicKey: signer.key.publicKey.base64, boxPublicKey: box.publicKey.base64, vpnIP: nil,
            capabilities: Capabilities(cpuCores: 8, memoryMB: 32_768, os: "bench", arch: "x86_64", gpus: gpus), address: nil,
            version: "bench", timing: Self.timing)
        let (status, _) = try await send("POST", Routes.join, body: Array(try APICoding.encoder().encode(join)), signed: false)
        guard status == 201 else { throw AgentError(.process, "join of \(signer.node) answered \(status)") }
    }

    func heartbeat(running: [JobLease]) async throws {
        let beat = HeartbeatRequest(capabilities: nil, version: "bench", labels: nil, checks: [], peers: [], address: nil, timing: Self.timing,
                                    worker: WorkerReport(accepting: true, allowExec: false, generate: true, jobs: running))
        _ = try await send("POST", Routes.heartbeat(signer.node), body: Array(try APICoding.encoder().encode(beat)))
    }

    func assignments(wait: Int) async throws -> AssignmentBatch {
        let (status, body) = try await send("GET", Routes.gpuAssignments + "?wait=\(wait)", body: [], timeout: .seconds(Int64(wait) + 10))
        guard status == 200 else { throw AgentError(.process, "assignments answered \(status)") }
        return try APICoding.decoder().decode(AssignmentBatch.self, from: Data(body))
    }

    func result(_ assignment: Assignment) async throws {
        let result = JobResult(attempt: assignment.attempt, outcome: .succeeded, result: .object(["text": .string("ok")]))
        _ = try await send("POST", Routes.gpuJobResult(assignment.id), body: Array(try APICoding.encoder().encode(result)))
    }

    func send(_ method: String, _ path: String, body: [UInt8], signed: Bool = true, timeout: Duration = .seconds(10)) async throws -> (Int, [UInt8]) {
        var request = HTTPClientRequest(url: leadURL + path)
        request.tlsConfiguration = tls
        request.method = .init(rawValue: method)
        if !body.isEmpty { request.body = .bytes(ByteBuffer(bytes: body)) }
        if signed { for (name, value) in signer.headers(method: method, path: path, body: body) { request.headers.add(name: name, value: value) } }
        let response = try await client.execute(request, timeout: .milliseconds(Int64(timeout / .milliseconds(1))))
        let collected = try await response.body.collect(upTo: 4 << 20)
        return (Int(response.status.code), Array(collected.readableBytesView))
    }
}

/// `nodeagent bench dispatch`: submissions at a steady rate to a real lead (durable commits),
/// timed until a simulated worker's long-poll receives each job.
public struct DispatchBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var rate: Int
        public var seconds: Int
        public var workers: Int
        public var submitted: Int
        public var dispatched: Int
        public var failed: Int
        public var p50Ms: Double
        public var p99Ms: Double
        public var maxMs: Double
        public var leadCPUPercentOfOneCore: Double

        enum CodingKeys: String, CodingKey {
            case rate, seconds, workers, submitted, dispatched, failed
            case p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms", leadCPUPercentOfOneCore = "lead_cpu_pct_of_one_core"
        }
    }

    public var executable: String
    public var rate: Int
    public var seconds: Int
    public var workers: Int
    public var progress: @Sendable (String) -> Void

    public init(executable: String, rate: Int, seconds: Int, workers: Int, progress: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.rate = rate
        self.seconds = seconds
        self.workers = workers
        self.progress = progress
    }

    private final class Clocks: Sendable {
        let submitted = Mutex<[Int: ContinuousClock.Instant]>([:])
        let received = Mutex<[Int: ContinuousClock.Instant]>([:])
        let failures = Mutex(0)
    }

    public func run() async throws -> Report {
        let lead = try await BenchLead.start("dispatch", executable: executable)
        defer { lead.discard() }
        let token = try await lead.joinToken()
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { _ = client.shutdown() }

        progress("joining \(workers) simulated workers…")
        let gpu = GPU(index: 0, uuid: "GPU-bench", name: "RTX 4090", memoryTotalMB: 24_564, memoryUsedMB: 0, utilizationPct: 0)
        let sims = (0..<workers).map { SimulatedWorker(name: "worker-\($0)", leadURL: lead.baseURL, client: client) }
        for sim in sims {
            try await sim.join(token: token, gpus: [gpu])
            try await sim.heartbeat(running: [])
        }
        let clocks = Clocks()
        let total = rate * seconds
        let leadURL = lead.baseURL, adminToken = lead.token
        @Sendable func body(_ n: Int) -> [UInt8] {
            Array((try? APICoding.encoder().encode(JobSubmission(kind: .generate, payload: ["model": .string("bench"), "prompt": .string(String(n))]))) ?? Data())
        }
        progress("submitting \(rate) jobs/s for \(seconds) s…")
        let cpuBefore = BenchLead.cpuSeconds(pid: lead.process.processIdentifier) ?? 0
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Workers: long-poll, note arrival, report the result; heartbeat every second.
            for sim in sims {
                group.addTask {
                    var lastBeat = ContinuousClock.now
                    while clocks.received.withLock({ $0.count }) < total && ContinuousClock.now < started + .seconds(Int64(seconds) + 30) {
                        let batch = try await sim.assignments(wait: 2)
                        let now = ContinuousClock.now
                        clocks.received.withLock { received in
                            for assignment in batch.assignments { received[Int(assignment.payload["prompt"]?.string ?? "") ?? -1] = now }
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
                            var request = HTTPClientRequest(url: leadURL + Routes.gpuJobs)
                            request.method = .POST
                            request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
                            request.body = .bytes(ByteBuffer(bytes: body(n)))
                            clocks.submitted.withLock { $0[n] = .now }
                            do {
                                let response = try await client.execute(request, timeout: .seconds(10))
                                _ = try await response.body.collect(upTo: 1 << 16)
                                if response.status != .created { clocks.failures.withLock { $0 += 1 } }
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
        let cpuAfter = BenchLead.cpuSeconds(pid: lead.process.processIdentifier) ?? cpuBefore
        await lead.stop()
        let submitted = clocks.submitted.withLock { $0 }
        let received = clocks.received.withLock { $0 }
        let latencies = received.compactMap { n, at in submitted[n].map { Double($0.duration(to: at) / .microseconds(1)) / 1000 } }.sorted()
        return Report(rate: rate, seconds: seconds, workers: workers, submitted: submitted.count, dispatched: latencies.count,
                      failed: clocks.failures.withLock { $0 }, p50Ms: Samples.percentile(latencies, 0.5), p99Ms: Samples.percentile(latencies, 0.99),
                      maxMs: latencies.last ?? .nan,
                      leadCPUPercentOfOneCore: 100 * (cpuAfter - cpuBefore) / (Double(wall / .milliseconds(1)) / 1000))
    }
}

/// `nodeagent bench queue`: the lead's memory with many queued jobs (no worker takes them).
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
        let before = StartupBenchmark.rssMB(pid: lead.process.processIdentifier)
        let failures = Counted()
        let leadURL = lead.baseURL, adminToken = lead.token
        progress("submitting \(jobs) jobs (32 at a time)…")
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<jobs {
                if n >= 32 { try await group.next() }
                group.addTask {
                    let submission = JobSubmission(
                        kind: .generate, priority: n % 10, requirements: JobRequirements(minVramMB: 8_000 + n % 7 * 1_000),
                        payload: ["model": .string("llama3:8b"), "prompt": .string("Summarise document \(n) in three sentences."),
                                  "options": .object(["temperature": .number(0.2)])],
                        idempotencyKey: "bench-\(n)")
                    var request = HTTPClientRequest(url: leadURL + Routes.gpuJobs)
                    request.method = .POST
                    request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
                    request.body = .bytes(ByteBuffer(bytes: try APICoding.encoder().encode(submission)))
                    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                    _ = try await response.body.collect(upTo: 1 << 16)
                    if response.status != .created { failures.value.withLock { $0 += 1 } }
                }
            }
            try await group.waitForAll()
        }
        let wall = started.duration(to: .now)
        // Let the allocator settle, then read it.
        try await Task.sleep(for: .seconds(2))
        let rss = StartupBenchmark.rssMB(pid: lead.process.processIdentifier)
        await lead.stop()
        return Report(jobs: jobs, failed: failures.value.withLock { $0 }, submitsPerSecond: Double(jobs) / (Double(wall / .milliseconds(1)) / 1000),
                      leadRSSMBBefore: before, leadRSSMB: rss)
    }
}

/// `nodeagent bench requeue`: time from `kill -9` of the worker running a job to the job
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
        var agents: [String: Process] = [:]
        var arguments: [String: [String]] = [:]
        for name in ["worker-a", "worker-b"] {
            let port = try StartupBenchmark.freePort()
            arguments[name] = ["run", "--profile", "compute", "--name", name, "--data-dir", root + "/" + name, "--listen", "127.0.0.1:\(port)",
                               "--lead", lead.baseURL, "--log-level", "error", "--config", nodeFile]
            agents[name] = try BenchLead.spawn(executable, arguments[name]! + ["--join-token", token])
        }
        defer { for process in agents.values where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        var timings: [Double] = []
        for run in 1...runs {
            try await BenchLead.waitUntil("two accepting workers", timeout: .seconds(30)) {
                let status: GPUStatus = try await lead.get(Routes.gpuStatus)
                return status.nodes.filter { $0.accepting && $0.state == .alive }.count == 2
            }
            let job: Job = try await lead.post(Routes.gpuJobs, JobSubmission(kind: .exec, requirements: JobRequirements(minVramMB: 20_000),
                                                                               payload: ["argv": .array([.string("sleep"), .string("20")])]))
            var victim = ""
            try await BenchLead.waitUntil("the job to run", timeout: .seconds(10)) {
                let current: Job = try await lead.get(Routes.gpuJob(job.id))
                victim = current.node ?? ""
                return current.state == .running
            }
            try await Task.sleep(for: .milliseconds(Int64.random(in: 500...1500)))
            kill(agents[victim]!.processIdentifier, SIGKILL)
            let killed = ContinuousClock.now
            try await BenchLead.waitUntil("the job to run elsewhere", timeout: .seconds(60)) {
                let current: Job = try await lead.get(Routes.gpuJob(job.id))
                return current.state == .running && current.node != victim
            }
            let elapsed = Double(killed.duration(to: .now) / .microseconds(1)) / 1000
            timings.append(elapsed)
            progress("run \(run)/\(runs): running on another worker \(String(format: "%.0f", elapsed)) ms after kill -9 of \(victim)")
            let _: Job = try await lead.delete(Routes.gpuJob(job.id))
            try await BenchLead.waitUntil("the killed agent to be reaped", timeout: .seconds(10)) { !agents[victim]!.isRunning }
            agents[victim] = try BenchLead.spawn(executable, arguments[victim]!)
        }
        await lead.stop()
        return KillTimings(timings)
    }
}

extension BenchLead {
    /// An operator call to the lead, decoded.
    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async throws -> T {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let collected = try await response.body.collect(upTo: 4 << 20)
        guard (200..<300).contains(Int(response.status.code)) else {
            throw AgentError(.process, "\(method.rawValue) \(path) answered \(response.status.code): \(String(buffer: collected))")
        }
        return try APICoding.decoder().decode(T.self, from: Data(collected.readableBytesView))
    }

    func get<T: Decodable>(_ path: String) async throws -> T { try await call(.GET, path) }
    func post<T: Decodable>(_ path: String, _ body: some Encodable) async throws -> T {
        try await call(.POST, path, body: Array(try APICoding.encoder().encode(body)))
    }
    func delete<T: Decodable>(_ path: String) async throws -> T { try await call(.DELETE, path) }
}

/// `nodeagent bench secrets`: resolved reads on the lead (signed node reads over loopback),
/// reads from a node's cache (in process), and the rotation of many secrets.
public struct SecretsBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var secrets: Int
        public var leadReads: Int
        public var leadReadsPerSecond: Double
        public var leadP50Ms: Double
        public var leadP99Ms: Double
        public var cacheP50Us: Double
        public var cacheP99Us: Double
        public var rotationSeconds: Double
        public var rewrapped: Int
        /// CPU per read during the read phase: the lead agent, its store (PostgreSQL), and this
        /// benchmark's client (which shares the machine).
        public var leadCPUMicrosPerRead: Double
        public var storeCPUMicrosPerRead: Double
        public var clientCPUMicrosPerRead: Double
        /// Reads one core of lead (agent + store) CPU serves: the lead's capacity when the clients
        /// run elsewhere.
        public var readsPerLeadCore: Double { 1_000_000 / max(1, leadCPUMicrosPerRead + storeCPUMicrosPerRead) }

        enum CodingKeys: String, CodingKey {
            case secrets, rewrapped
            case leadCPUMicrosPerRead = "lead_cpu_us_per_read", storeCPUMicrosPerRead = "store_cpu_us_per_read"
            case clientCPUMicrosPerRead = "client_cpu_us_per_read"
            case leadReads = "lead_reads", leadReadsPerSecond = "lead_reads_per_s", leadP50Ms = "lead_p50_ms", leadP99Ms = "lead_p99_ms"
            case cacheP50Us = "cache_p50_us", cacheP99Us = "cache_p99_us", rotationSeconds = "rotation_s"
        }
    }

    public var executable: String
    public var secrets: Int
    public var seconds: Int
    public var progress: @Sendable (String) -> Void

    /// Node reads over pinned TLS 1.3 (kept-alive connections) instead of plain HTTP.
    public var tls = false

    public init(executable: String, secrets: Int, seconds: Int, tls: Bool = false, progress: @escaping @Sendable (String) -> Void) {
        self.tls = tls
        self.executable = executable
        self.secrets = secrets
        self.seconds = seconds
        self.progress = progress
    }

    private final class Latencies: Sendable {
        let values = Mutex<[Double]>([])
        let failures = Mutex(0)
    }

    public func run() async throws -> Report {
        let lead = try await BenchLead.start("secrets", executable: executable, tls: tls)
        defer { lead.discard() }
        let root = lead.root
        let token = String(try await lead.joinToken(company: "acme").prefix { $0 != ":" })
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 32
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { _ = client.shutdown() }

        // A node to read as: its own signing and box keys.
        let node = SimulatedWorker(name: "bench-node", leadURL: lead.nodeURL, client: client, tls: try lead.nodeTLS())
        let box = BoxKey.generate()
        try await node.join(token: token, gpus: [], company: "acme", box: box)

        progress("writing \(secrets) secrets…")
        let leadURL = lead.baseURL, adminToken = lead.token
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<secrets {
                if n >= 16 { try await group.next() }
                group.addTask {
                    let scope = n % 3 == 0 ? ("global", "") : n % 3 == 1 ? ("company", "acme") : ("node", "bench-node")
                    let write = SecretWrite(service: "svc\(n / 10)", keyName: "key\(n % 10)", value: "value-\(n)-\(UUID().uuidString)",
                                            scope: scope.0, scopeID: scope.1)
                    var request = HTTPClientRequest(url: leadURL + Routes.secrets)
                    request.method = .POST
                    request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
                    request.body = .bytes(ByteBuffer(bytes: try APICoding.encoder().encode(write)))
                    let response = try await client.execute(request, timeout: .seconds(30))
                    _ = try await response.body.collect(upTo: 1 << 16)
                    guard response.status == .created else { throw AgentError(.process, "a secret write answered \(response.status.code)") }
                }
            }
            try await group.waitForAll()
        }

        // Reads as the node, 16 at a time, for `seconds`.
        progress("reading as a node for \(seconds) s…")
        let latencies = Latencies()
        let storePIDs = { BenchLead.storeProcesses(dataDir: lead.dataDir) }
        let cpuBefore = (BenchLead.cpuSeconds(pid: lead.process.processIdentifier) ?? 0,
                         storePIDs().compactMap { BenchLead.cpuSeconds(pid: $0) }.reduce(0, +), Self.ownCPUSeconds())
        let readsUntil = ContinuousClock.now + .seconds(Int64(seconds))
        let readStart = ContinuousClock.now
        let names = (0..<min(secrets, 1000)).map { ("svc\($0 / 10)", "key\($0 % 10)") }
        var sample: SecretRead?
        try await withThrowingTaskGroup(of: SecretRead?.self) { group in
            for lane in 0..<16 {
                group.addTask {
                    var last: SecretRead?
                    var i = lane
                    while ContinuousClock.now < readsUntil {
                        let (service, key) = names[i % names.count]
                        i += 16
                        let started = ContinuousClock.now
                        let (status, body) = try await node.send("GET", Routes.secret(service, key), body: [])
                        if status == 200 {
                            latencies.values.withLock { $0.append(Double(started.duration(to: .now) / .microseconds(1)) / 1000) }
                            if last == nil { last = try? APICoding.decoder().decode(SecretRead.self, from: Data(body)) }
                        } else {
                            latencies.failures.withLock { $0 += 1 }
                        }
                    }
                    return last
                }
            }
            for try await read in group where sample == nil { sample = read }
        }
        let readWall = Double(readStart.duration(to: .now) / .milliseconds(1)) / 1000
        let cpuAfter = (BenchLead.cpuSeconds(pid: lead.process.processIdentifier) ?? 0,
                        storePIDs().compactMap { BenchLead.cpuSeconds(pid: $0) }.reduce(0, +), Self.ownCPUSeconds())
        let leadLatencies = latencies.values.withLock { $0 }.sorted()
        let reads = Double(max(1, leadLatencies.count))
        guard latencies.failures.withLock({ $0 }) == 0 else { throw AgentError(.process, "reads failed during the benchmark") }

        // The node's cache: the same lookups a node's agent answers from, in process.
        progress("reading from a node cache…")
        let leadKey = try PublicKey(base64: try String(contentsOfFile: lead.dataDir + "/keys/sign.pub", encoding: .utf8))
        let cache = SecretCache(dataDir: root + "/node-cache", node: node.signer.node, box: box, leadSignKey: leadKey,
                                logger: Logger(label: "bench"))
        for (service, key) in names.prefix(200) {
            let (status, body) = try await node.send("GET", Routes.secret(service, key), body: [])
            guard status == 200 else { continue }
            let read = try APICoding.decoder().decode(SecretRead.self, from: Data(body))
            cache.store(read, value: try SecretCache.open(read, node: node.signer.node, box: box, leadKey: leadKey))
        }
        var cacheLatencies: [Double] = []
        let cachedNames = cache.names
        for i in 0..<100_000 {
            let (service, key) = cachedNames[i % cachedNames.count]
            let started = ContinuousClock.now
            _ = cache.answer(service, key)
            cacheLatencies.append(Double(started.duration(to: .now) / .nanoseconds(1)) / 1000)
        }
        cacheLatencies.sort()

        progress("rotating the key-encryption key…")
        let rotation: SecretRotation = try await lead.post(Routes.secretsRotateKey, Optional<Int>.none)
        await lead.stop()
        _ = sample
        return Report(secrets: secrets, leadReads: leadLatencies.count, leadReadsPerSecond: Double(leadLatencies.count) / readWall,
                      leadP50Ms: Samples.percentile(leadLatencies, 0.5), leadP99Ms: Samples.percentile(leadLatencies, 0.99),
                      cacheP50Us: Samples.percentile(cacheLatencies, 0.5), cacheP99Us: Samples.percentile(cacheLatencies, 0.99),
                      rotationSeconds: rotation.seconds, rewrapped: rotation.rewrapped,
                      leadCPUMicrosPerRead: (cpuAfter.0 - cpuBefore.0) / reads * 1e6, storeCPUMicrosPerRead: (cpuAfter.1 - cpuBefore.1) / reads * 1e6,
                      clientCPUMicrosPerRead: (cpuAfter.2 - cpuBefore.2) / reads * 1e6)
    }

    /// User + system CPU seconds of this process so far.
    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

}
