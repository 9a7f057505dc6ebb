import AsyncHTTPClient
import AuroraAPI
import AuroraTLS
import AuroraTestKit
import Foundation
import NIOSSL
import Secrets
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A lead started by a benchmark: `nodeagent` (the test kit's ``AgentHarness``) on a scratch
/// directory and a loopback port, with the limits lifted for thousands of simulated nodes.
struct BenchLead {
    let agent: AgentHarness
    /// The benchmark's scratch directory; the lead's data dir and output files are inside.
    let scratch: ScratchDirectory
    let token: String
    /// The TLS listener's port, when the lead was started with one.
    var tlsPort: Int? = nil
    var process: ChildProcess { agent.process }
    var root: String { scratch.path }
    var dataDir: String { agent.dataDir }
    var baseURL: String { agent.baseURL }
    /// Where nodes call: the TLS listener when there is one, else the plain one.
    var nodeURL: String { tlsPort.map { "https://127.0.0.1:\($0)" } ?? baseURL }

    /// TLS 1.3 trusting only the lead's certificate (as a joined node pins it); nil without TLS.
    func nodeTLS() throws -> TLSConfiguration? {
        guard tlsPort != nil else { return nil }
        guard let certificate = try NIOSSLCertificate.fromPEMFile(dataDir + "/keys/tls.crt").first else {
            throw TestKitError("\(dataDir)/keys/tls.crt holds no certificate")
        }
        return PinnedTLS.clientConfiguration(trusting: certificate)
    }

    /// Thousands of simulated nodes join and call from one address: the limits are lifted.
    static let liftedLimits =
        "limits: {requests_per_s: 1000000, burst: 1000000, joins_per_min: 1000000, auth_failures_per_min: 1000000}\n"

    /// A lead on a fresh scratch directory; ``discard()`` stops it and removes the directory.
    static func start(_ label: String, executable: String, config: String = "", tls: Bool = false) async throws
        -> BenchLead
    {
        let scratch = try ScratchDirectory(label, prefix: "aurora-bench")
        do {
            let tlsPort = tls ? try freePort() : nil
            // A /16, so that thousands of simulated nodes get addresses.
            let nodeFile = scratch.path + "/lead.yaml"
            try
                ("wireguard:\n  cidr: 10.64.0.0/16\n" + liftedLimits + config
                + (tlsPort.map { "tls:\n  listen: 127.0.0.1:\($0)\n" } ?? ""))
                .write(toFile: nodeFile, atomically: true, encoding: .utf8)
            let agent = try AgentHarness(
                profile: "lead", dataDir: scratch.path + "/lead",
                extraArguments: ["--name", "bench-lead", "--log-level", "error", "--config", nodeFile],
                outputDirectory: scratch.path, executable: executable)
            do {
                try await agent.waitHealthy(timeout: .seconds(60), every: .milliseconds(10))
            } catch {
                agent.process.signal(SIGKILL)
                throw error
            }
            return BenchLead(agent: agent, scratch: scratch, token: try agent.adminToken, tlsPort: tlsPort)
        } catch {
            scratch.remove()
            throw error
        }
    }

    /// Stops the lead (if `stop()` did not: SIGTERM, up to 30 s for it and its PostgreSQL to
    /// stop, on this thread since it runs in a `defer`) and removes its scratch directory.
    func discard() {
        if process.isRunning {
            process.signal(SIGTERM)
            let deadline = ContinuousClock.now + .seconds(30)
            while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
        }
        scratch.remove()
    }

    /// SIGTERM, and up to 30 s for the lead (and its PostgreSQL) to stop.
    func stop() async {
        process.signal(SIGTERM)
        _ = try? await process.waitForExit(timeout: .seconds(30))
    }

    /// Starts another `nodeagent` (a compute agent) with its output in the scratch directory.
    func spawn(_ executable: String, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(executable, arguments, outputDirectory: scratch.path)
    }

    /// A reusable compute join token (for `company`'s nodes when given).
    func joinToken(company: String? = nil) async throws -> String {
        let created: TokenCreated = try await post(
            Routes.tokens, TokenCreateRequest(profile: .compute, company: company, ttlS: 3600, reusable: true))
        return created.token
    }

    /// The registry's entry of node `name`, nil when there is none.
    func node(_ name: String) async throws -> Node? {
        let answer = try await http(baseURL + Routes.node(name), headers: ["Authorization": "Bearer \(token)"])
        return answer.status == 200 ? try answer.decode(Node.self) : nil
    }

    /// An operator call to the lead, decoded.
    func call<T: Decodable>(_ method: String, _ path: String, body: [UInt8]? = nil) async throws -> T {
        let answer = try await http(
            baseURL + path, method: method, headers: ["Authorization": "Bearer \(token)"], body: body,
            timeout: .seconds(10))
        guard (200..<300).contains(answer.status) else {
            throw TestKitError("\(method) \(path) answered \(answer.status): \(answer.text)")
        }
        return try answer.decode(T.self)
    }

    /// Joins `count` simulated compute nodes that stay alive without heartbeats (dead after 600
    /// s): a lead whose registry holds them, for benchmarks that read what the lead makes of them.
    func joinIdleSimulated(_ count: Int, progress: @Sendable (String) -> Void) async throws {
        guard count > 0 else { return }
        progress("joining \(count) simulated nodes…")
        let client = loadClient(connections: 16)
        defer { _ = client.shutdown() }
        let timing = HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600)
        _ = try await joinSimulated(count, timing: timing, client: client, tls: nil)
    }

    /// Joins `count` simulated compute nodes (`sim-0`, `sim-1`, …; 16 at a time), each with one
    /// 24 GB GPU and `timing`; their signers, in order.
    func joinSimulated(_ count: Int, timing: HeartbeatTiming, client: HTTPClient, tls: TLSConfiguration?)
        async throws -> [NodeSigner]
    {
        let token = String(try await joinToken().prefix { $0 != ":" })
        let leadURL = nodeURL
        let capabilities = Capabilities(
            cpuCores: 8, memoryMB: 32_768, os: "bench", arch: "x86_64",
            gpus: [
                GPU(
                    index: 0, uuid: "GPU-bench", name: "RTX 4090", memoryTotalMB: 24_564, memoryUsedMB: 100,
                    utilizationPct: 0)
            ])
        let signers = (0..<count).map { NodeSigner(node: "sim-\($0)") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, signer) in signers.enumerated() {
                if index >= 16 { try await group.next() }
                group.addTask {
                    let join = JoinRequest(
                        token: token, name: signer.node, profile: .compute, company: nil, labels: nil,
                        wireguard: .init(
                            publicKey: WireGuardPrivateKey.generate().publicKey.base64, endpoint: nil, listenPort: 51820
                        ),
                        signPublicKey: signer.key.publicKey.base64, boxPublicKey: BoxKey.generate().publicKey.base64,
                        vpnIP: nil,
                        capabilities: capabilities, address: nil, version: "bench", timing: timing)
                    let answer = try await http(
                        leadURL + Routes.join, method: "POST", body: Array(try APICoding.encoder().encode(join)),
                        timeout: .seconds(30), client: client, tlsConfiguration: tls)
                    guard answer.status == 201 else {
                        throw TestKitError("join of \(signer.node) answered \(answer.status)")
                    }
                }
            }
            try await group.waitForAll()
        }
        return signers
    }

    func get<T: Decodable>(_ path: String) async throws -> T { try await call("GET", path) }
    func post<T: Decodable>(_ path: String, _ body: some Encodable) async throws -> T {
        try await call("POST", path, body: Array(try APICoding.encoder().encode(body)))
    }
    func delete<T: Decodable>(_ path: String) async throws -> T { try await call("DELETE", path) }
}

/// Polls `condition` every 10 ms until it holds (the test kit's ``poll``).
func waitUntil(_ what: String, timeout: Duration, _ condition: () async throws -> Bool) async throws {
    _ = try await poll(timeout: timeout, every: .milliseconds(10), what) { try await condition() ? true : nil }
}

/// A client for load: a larger connection pool than the shared one.
func loadClient(connections: Int) -> HTTPClient {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connections
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}

/// `aurora-bench heartbeat`: heartbeat ingestion on a real lead with simulated nodes, each
/// sending one signed heartbeat per second over loopback.
public struct HeartbeatBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var nodes: Int
        public var seconds: Int
        public var sent: Int
        public var failed: Int
        public var ratePerSecond: Double
        public var p50Ms: Double
        public var p99Ms: Double
        public var maxMs: Double
        public var leadCPUPercentOfOneCore: Double
        public var leadRSSMB: Double?

        enum CodingKeys: String, CodingKey {
            case nodes, seconds, sent, failed
            case ratePerSecond = "rate_per_s", p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms"
            case leadCPUPercentOfOneCore = "lead_cpu_pct_of_one_core", leadRSSMB = "lead_rss_mb"
        }
    }

    public var executable: String
    public var nodes: Int
    public var seconds: Int
    public var progress: @Sendable (String) -> Void

    /// Heartbeats over pinned TLS 1.3 (kept-alive connections) instead of plain HTTP.
    public var tls = false

    public init(
        executable: String, nodes: Int, seconds: Int, tls: Bool = false, progress: @escaping @Sendable (String) -> Void
    ) {
        self.tls = tls
        self.executable = executable
        self.nodes = nodes
        self.seconds = seconds
        self.progress = progress
    }

    public func run() async throws -> Report {
        let lead = try await BenchLead.start("hb", executable: executable, tls: tls)
        defer { lead.discard() }
        let leadURL = lead.nodeURL
        let nodeTLS = try lead.nodeTLS()

        let client = loadClient(connections: 64)
        defer { _ = client.shutdown() }

        progress("joining \(nodes) simulated nodes…")
        let timing = HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600)
        let signers = try await lead.joinSimulated(nodes, timing: timing, client: client, tls: nodeTLS)

        // Load: N heartbeats per second, spread evenly, for `seconds`.
        progress("sending \(nodes) heartbeats/s for \(seconds) s…")
        // As real nodes do: capabilities went in full with the join; unchanged, they are left out.
        let beat = try APICoding.encoder().encode(
            HeartbeatRequest(
                capabilities: nil, version: "bench", labels: nil,
                checks: [CheckResult(name: "data_dir_disk", status: .passing, output: "40% used")],
                peers: [], address: nil, timing: timing))
        let body = Array(beat)
        let tally = Tally()
        let total = nodes * seconds
        let spacing = Duration.nanoseconds(1_000_000_000 / Int64(nodes))
        let cpuBefore = Measurements.cpuSeconds(pid: lead.process.pid) ?? 0
        let started = ContinuousClock.now
        await withDiscardingTaskGroup { group in
            for index in 0..<total {
                try? await Task.sleep(until: started + spacing * index, clock: .continuous)
                let signer = signers[index % nodes]
                group.addTask {
                    let path = Routes.heartbeat(signer.node)
                    let headers = signer.headers(method: "POST", path: path, body: body)
                    let sent = ContinuousClock.now
                    do {
                        let answer = try await http(
                            leadURL + path, method: "POST", headers: headers, body: body, timeout: .seconds(10),
                            client: client, tlsConfiguration: nodeTLS)
                        guard answer.status == 200 else {
                            tally.failures.withLock { $0 += 1 }
                            return
                        }
                        let elapsed = sent.duration(to: .now)
                        tally.latencies.withLock { $0.append(Double(elapsed / .microseconds(1)) / 1000) }
                    } catch {
                        tally.failures.withLock { $0 += 1 }
                    }
                }
            }
        }
        let wall = started.duration(to: .now)
        let wallSeconds = Double(wall / .milliseconds(1)) / 1000
        let cpuAfter = Measurements.cpuSeconds(pid: lead.process.pid) ?? cpuBefore
        let rss = Measurements.rssMB(pid: lead.process.pid)
        await lead.stop()

        let sorted = tally.latencies.withLock { $0 }.sorted()
        func percentile(_ p: Double) -> Double { Samples.percentile(sorted, p) }
        return Report(
            nodes: nodes, seconds: seconds, sent: total, failed: tally.failures.withLock { $0 },
            ratePerSecond: Double(total) / wallSeconds, p50Ms: percentile(0.5), p99Ms: percentile(0.99),
            maxMs: sorted.last ?? .nan,
            leadCPUPercentOfOneCore: 100 * (cpuAfter - cpuBefore) / wallSeconds, leadRSSMB: rss)
    }
}

/// Results collected by concurrent requests.
private final class Tally: Sendable {
    let latencies = Mutex<[Double]>([])
    let failures = Mutex<Int>(0)
}

/// Milliseconds from each `kill -9` to what a benchmark waits for, and their median.
public struct KillTimings: Codable, Sendable {
    public var runs: Int
    public var ms: [Double]
    public var medianMs: Double

    init(_ ms: [Double]) {
        self.runs = ms.count
        self.ms = ms
        self.medianMs = Samples.median(ms)
    }

    enum CodingKeys: String, CodingKey {
        case runs, ms
        case medianMs = "median_ms"
    }
}

/// `aurora-bench detection`: time from `kill -9` of a compute agent to the lead's registry
/// saying `dead`, over several runs.
public struct DetectionBenchmark: Sendable {
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
        let lead = try await BenchLead.start("detect", executable: executable)
        defer { lead.discard() }
        let root = lead.root
        let token = try await lead.joinToken()
        let port = try freePort()
        let arguments = [
            "run", "--profile", "compute", "--name", "bench-compute", "--data-dir", root + "/compute",
            "--listen", "127.0.0.1:\(port)", "--lead", lead.baseURL, "--log-level", "error",
        ]
        var detections: [Double] = []
        var compute = try lead.spawn(executable, arguments + ["--join-token", token])
        for run in 1...runs {
            try await waitUntil("bench-compute to be alive", timeout: .seconds(30)) {
                if let code = compute.exitCode {
                    throw TestKitError("the compute agent exited with \(code): \(compute.stderr.suffix(400))")
                }
                return try await lead.node("bench-compute")?.state == .alive
            }
            // Kill at a random point of its heartbeat rhythm, as a crash would.
            try await Task.sleep(for: .milliseconds(Int64.random(in: 1500...2500)))
            compute.signal(SIGKILL)
            let killed = ContinuousClock.now
            try await waitUntil("bench-compute to be dead", timeout: .seconds(60)) {
                try await lead.node("bench-compute")?.state == .dead
            }
            let elapsed = Double(killed.duration(to: .now) / .microseconds(1)) / 1000
            detections.append(elapsed)
            progress("run \(run)/\(runs): dead \(String(format: "%.0f", elapsed)) ms after kill -9")
            try await compute.waitForExit(timeout: .seconds(10))
            if run < runs { compute = try lead.spawn(executable, arguments) }  // the saved membership: no token needed
        }
        await lead.stop()
        return KillTimings(detections)
    }
}
