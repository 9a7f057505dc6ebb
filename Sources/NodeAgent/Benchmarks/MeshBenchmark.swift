import AsyncHTTPClient
import AuroraAPI
import AuroraTLS
import Foundation
import NIOCore
import NIOSSL
import Secrets
import Synchronization
#if canImport(Glibc)
import Glibc
import NIOHTTP1
#endif

/// A lead started by a benchmark: this same binary on a temporary data dir and a loopback port.
struct BenchLead {
    let process: Process
    let port: Int
    /// The benchmark's scratch directory; the lead's data dir is inside.
    let root: String
    let dataDir: String
    let token: String
    /// The TLS listener's port, when the lead was started with one.
    var tlsPort: Int? = nil
    var baseURL: String { "http://127.0.0.1:\(port)" }
    /// Where nodes call: the TLS listener when there is one, else the plain one.
    var nodeURL: String { tlsPort.map { "https://127.0.0.1:\($0)" } ?? baseURL }

    /// TLS 1.3 trusting only the lead's certificate (as a joined node pins it); nil without TLS.
    func nodeTLS() throws -> TLSConfiguration? {
        guard tlsPort != nil else { return nil }
        return PinnedTLS.clientConfiguration(trusting: try NIOSSLCertificate(file: dataDir + "/keys/tls.crt", format: .pem))
    }

    /// A lead on a fresh scratch directory `/tmp/aurora-bench-LABEL-PID`; ``discard()`` stops it
    /// and removes the directory.
    static func start(_ label: String, executable: String, config: String = "", tls: Bool = false) async throws -> BenchLead {
        let root = try scratch(label)
        let port = try StartupBenchmark.freePort()
        let tlsPort = tls ? try StartupBenchmark.freePort() : nil
        let config = config + (tlsPort.map { "tls:\n  listen: 127.0.0.1:\($0)\n" } ?? "")
        let dataDir = root + "/lead"
        // A /16, so that thousands of simulated nodes get addresses.
        let nodeFile = root + "/lead.yaml"
        // Thousands of simulated nodes join and call from one address: the limits are lifted.
        let limits = "limits: {requests_per_s: 1000000, burst: 1000000, joins_per_min: 1000000, auth_failures_per_min: 1000000}\n"
        try ("wireguard:\n  cidr: 10.64.0.0/16\n" + limits + config).write(toFile: nodeFile, atomically: true, encoding: .utf8)
        let process = try BenchLead.spawn(executable, ["run", "--profile", "lead", "--name", "bench-lead", "--data-dir", dataDir,
                                                      "--listen", "127.0.0.1:\(port)", "--log-level", "error", "--config", nodeFile])
        let url = "http://127.0.0.1:\(port)"
        do {
            try await waitUntil("the lead to be healthy", timeout: .seconds(60)) {
                guard process.isRunning else {
                    throw AgentError(.process, "the lead exited with \(process.terminationStatus) (its output is discarded: "
                                     + "'nodeagent run --profile lead --data-dir DIR' shows why)")
                }
                return (try? await HTTPClient.shared.get(url: url + Routes.health).get())?.status == .ok
            }
        } catch {
            if process.isRunning { process.terminate() }
            try? FileManager.default.removeItem(atPath: root)
            throw error
        }
        let token = try String(contentsOfFile: dataDir + "/" + Defaults.adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return BenchLead(process: process, port: port, root: root, dataDir: dataDir, token: token, tlsPort: tlsPort)
    }

    /// Stops the lead at once (if `stop()` did not) and removes its scratch directory.
    func discard() {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// A fresh directory under /tmp for one benchmark run.
    static func scratch(_ label: String) throws -> String {
        let root = "/tmp/aurora-bench-\(label)-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        guard mkdir(root, 0o755) == 0 else { throw AgentError(.dataDir, "cannot create \(root)") }
        return root
    }

    static func spawn(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// A reusable compute join token (for `company`'s nodes when given).
    func joinToken(company: String? = nil) async throws -> String {
        var request = HTTPClientRequest(url: baseURL + Routes.tokens)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.body = .bytes(ByteBuffer(bytes: try APICoding.encoder().encode(TokenCreateRequest(profile: .compute, company: company, ttlS: 3600, reusable: true))))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return try APICoding.decoder().decode(TokenCreated.self, from: Data(body.readableBytesView)).token
    }

    func node(_ name: String) async throws -> Node? {
        var request = HTTPClientRequest(url: baseURL + Routes.node(name))
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        return response.status == .ok ? try APICoding.decoder().decode(Node.self, from: Data(body.readableBytesView)) : nil
    }

    func stop() async {
        process.terminate()
        try? await BenchLead.waitUntil("the lead to stop", timeout: .seconds(30)) { !process.isRunning }
    }

    /// Polls `condition` every 10 ms until it holds.
    static func waitUntil(_ what: String, timeout: Duration, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw AgentError(.process, "timed out after \(timeout) waiting for \(what)")
    }

    /// The managed PostgreSQL of a lead's data dir: the postmaster (from `postmaster.pid`) and
    /// its children (backends, WAL writer, checkpointer).
    static func storeProcesses(dataDir: String) -> [Int32] {
        guard let text = try? String(contentsOfFile: dataDir + "/postgres/postmaster.pid", encoding: .utf8),
              let postmaster = text.split(separator: "\n").first.flatMap({ Int32($0) }) else { return [] }
        let children = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> Int32? in
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == postmaster ? pid : nil
        }
        return [postmaster] + children
    }

    /// User + system CPU seconds of `pid` so far.
    static func cpuSeconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// `nodeagent bench heartbeat`: heartbeat ingestion on a real lead with simulated nodes, each
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

    public init(executable: String, nodes: Int, seconds: Int, tls: Bool = false, progress: @escaping @Sendable (String) -> Void) {
        self.tls = tls
        self.executable = executable
        self.nodes = nodes
        self.seconds = seconds
        self.progress = progress
    }

    public func run() async throws -> Report {
        let lead = try await BenchLead.start("hb", executable: executable, tls: tls)
        defer { lead.discard() }
        let token = String(try await lead.joinToken().prefix { $0 != ":" })
        let leadURL = lead.nodeURL
        let nodeTLS = try lead.nodeTLS()

        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { _ = client.shutdown() }

        // Join the simulated nodes (16 at a time).
        progress("joining \(nodes) simulated nodes…")
        let timing = HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600)
        let capabilities = Capabilities(cpuCores: 8, memoryMB: 32_768, os: "bench", arch: "x86_64",
                                        gpus: [GPU(index: 0, uuid: "GPU-bench", name: "RTX 4090", memoryTotalMB: 24_564, memoryUsedMB: 100, utilizationPct: 0)])
        let signers = (0..<nodes).map { RequestSigner(node: "sim-\($0)", key: SigningKey.generate()) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, signer) in signers.enumerated() {
                if index >= 16 { try await group.next() }
                group.addTask {
                    let join = JoinRequest(
                        token: token, name: signer.node, profile: .compute, company: nil, labels: nil,
                        wireguard: .init(publicKey: WireGuardPrivateKey.generate().publicKey.base64, endpoint: nil, listenPort: 51820),
                        signPublicKey: signer.key.publicKey.base64, boxPublicKey: BoxKey.generate().publicKey.base64, vpnIP: nil,
                        capabilities: capabilities, address: nil, version: "bench", timing: timing)
                    var request = HTTPClientRequest(url: leadURL + Routes.join)
                    request.tlsConfiguration = nodeTLS
                    request.method = .POST
                    request.body = .bytes(ByteBuffer(bytes: try APICoding.encoder().encode(join)))
                    let response = try await client.execute(request, timeout: .seconds(30))
                    _ = try await response.body.collect(upTo: 1 << 20)
                    guard response.status == .created else { throw AgentError(.process, "join of \(signer.node) answered \(response.status.code)") }
                }
            }
            try await group.waitForAll()
        }

        // Load: N heartbeats per second, spread evenly, for `seconds`.
        progress("sending \(nodes) heartbeats/s for \(seconds) s…")
        // As real nodes do: capabilities went in full with the join; unchanged, they are left out.
        let beat = try APICoding.encoder().encode(HeartbeatRequest(capabilities: nil, version: "bench", labels: nil,
                                                                   checks: [CheckResult(name: "data_dir_disk", status: .passing, output: "40% used")],
                                                                   peers: [], address: nil, timing: timing))
        let body = Array(beat)
        let tally = Tally()
        let total = nodes * seconds
        let spacing = Duration.nanoseconds(1_000_000_000 / Int64(nodes))
        let cpuBefore = BenchLead.cpuSeconds(pid: lead.process.processIdentifier) ?? 0
        let started = ContinuousClock.now
        await withDiscardingTaskGroup { group in
            for index in 0..<total {
                try? await Task.sleep(until: started + spacing * index, clock: .continuous)
                let signer = signers[index % nodes]
                group.addTask {
                    let path = Routes.heartbeat(signer.node)
                    var request = HTTPClientRequest(url: leadURL + path)
                    request.tlsConfiguration = nodeTLS
                    request.method = .POST
                    for (name, value) in signer.headers(method: "POST", path: path, body: body) { request.headers.add(name: name, value: value) }
                    request.body = .bytes(ByteBuffer(bytes: body))
                    let sent = ContinuousClock.now
                    do {
                        let response = try await client.execute(request, timeout: .seconds(10))
                        _ = try await response.body.collect(upTo: 1 << 16)
                        guard response.status == .ok else {
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
        let cpuAfter = BenchLead.cpuSeconds(pid: lead.process.processIdentifier) ?? cpuBefore
        let rss = StartupBenchmark.rssMB(pid: lead.process.processIdentifier)
        await lead.stop()

        let sorted = tally.latencies.withLock { $0 }.sorted()
        func percentile(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
        }
        return Report(nodes: nodes, seconds: seconds, sent: total, failed: tally.failures.withLock { $0 },
                      ratePerSecond: Double(total) / wallSeconds, p50Ms: percentile(0.5), p99Ms: percentile(0.99), maxMs: sorted.last ?? .nan,
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
        self.medianMs = StartupBenchmark.Report.median(ms)
    }

    enum CodingKeys: String, CodingKey {
        case runs, ms
        case medianMs = "median_ms"
    }
}

/// `nodeagent bench detection`: time from `kill -9` of a compute agent to the lead's registry
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
        let port = try StartupBenchmark.freePort()
        let arguments = ["run", "--profile", "compute", "--name", "bench-compute", "--data-dir", root + "/compute",
                         "--listen", "127.0.0.1:\(port)", "--lead", lead.baseURL, "--log-level", "error"]
        var detections: [Double] = []
        var compute = try BenchLead.spawn(executable, arguments + ["--join-token", token])
        for run in 1...runs {
            try await BenchLead.waitUntil("bench-compute to be alive", timeout: .seconds(30)) {
                guard compute.isRunning else { throw AgentError(.process, "the compute agent exited with \(compute.terminationStatus)") }
                return try await lead.node("bench-compute")?.state == .alive
            }
            // Kill at a random point of its heartbeat rhythm, as a crash would.
            try await Task.sleep(for: .milliseconds(Int64.random(in: 1500...2500)))
            kill(compute.processIdentifier, SIGKILL)
            let killed = ContinuousClock.now
            try await BenchLead.waitUntil("bench-compute to be dead", timeout: .seconds(60)) {
                try await lead.node("bench-compute")?.state == .dead
            }
            let elapsed = Double(killed.duration(to: .now) / .microseconds(1)) / 1000
            detections.append(elapsed)
            progress("run \(run)/\(runs): dead \(String(format: "%.0f", elapsed)) ms after kill -9")
            try await BenchLead.waitUntil("the killed agent to be reaped", timeout: .seconds(10)) { !compute.isRunning }
            if run < runs { compute = try BenchLead.spawn(executable, arguments) }  // the saved membership: no token needed
        }
        await lead.stop()
        return KillTimings(detections)
    }
}
