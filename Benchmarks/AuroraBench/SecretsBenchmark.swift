import AsyncHTTPClient
import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench secrets`: resolved reads on the lead (signed node reads over loopback), the
/// rotation of many secrets, and reads a compute agent answers from its cache while the lead
/// is away (through the agent's API on loopback).
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
            case leadReads = "lead_reads", leadReadsPerSecond = "lead_reads_per_s", leadP50Ms = "lead_p50_ms",
                leadP99Ms = "lead_p99_ms"
            case cacheP50Us = "cache_p50_us", cacheP99Us = "cache_p99_us", rotationSeconds = "rotation_s"
        }
    }

    public var executable: String
    public var secrets: Int
    public var seconds: Int
    public var progress: @Sendable (String) -> Void

    /// Node reads over pinned TLS 1.3 (kept-alive connections) instead of plain HTTP.
    public var tls = false

    public init(
        executable: String, secrets: Int, seconds: Int, tls: Bool = false,
        progress: @escaping @Sendable (String) -> Void
    ) {
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
        let fullToken = try await lead.joinToken(company: "acme")
        let token = String(fullToken.prefix { $0 != ":" })
        let client = loadClient(connections: 32)
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
                    let write = SecretWrite(
                        service: "svc\(n / 10)", keyName: "key\(n % 10)", value: "value-\(n)-\(UUID().uuidString)",
                        scope: scope.0, scopeID: scope.1)
                    let answer = try await http(
                        leadURL + Routes.secrets, method: "POST", headers: ["Authorization": "Bearer \(adminToken)"],
                        body: Array(try APICoding.encoder().encode(write)), timeout: .seconds(30), client: client)
                    guard answer.status == 201 else { throw TestKitError("a secret write answered \(answer.status)") }
                }
            }
            try await group.waitForAll()
        }

        // Reads as the node, 16 at a time, for `seconds`.
        progress("reading as a node for \(seconds) s…")
        let latencies = Latencies()
        let storePIDs = { Measurements.postgresProcesses(dataDirectory: lead.dataDir + "/postgres") }
        let cpuBefore = (
            Measurements.cpuSeconds(pid: lead.process.pid) ?? 0,
            storePIDs().compactMap { Measurements.cpuSeconds(pid: $0) }.reduce(0, +), Measurements.ownCPUSeconds()
        )
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
                            latencies.values.withLock {
                                $0.append(Double(started.duration(to: .now) / .microseconds(1)) / 1000)
                            }
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
        let cpuAfter = (
            Measurements.cpuSeconds(pid: lead.process.pid) ?? 0,
            storePIDs().compactMap { Measurements.cpuSeconds(pid: $0) }.reduce(0, +), Measurements.ownCPUSeconds()
        )
        let leadLatencies = latencies.values.withLock { $0 }.sorted()
        let reads = Double(max(1, leadLatencies.count))
        guard latencies.failures.withLock({ $0 }) == 0 else { throw TestKitError("reads failed during the benchmark") }

        progress("rotating the key-encryption key…")
        let rotation: SecretRotation = try await lead.post(Routes.secretsRotateKey, Optional<Int>.none)

        // The node's cache: a real compute agent of the same company reads through the lead,
        // then, with the lead stopped, answers from its cache (through its own API on loopback).
        progress("reading from a node cache (a compute agent, the lead stopped)…")
        let cacheNodeFile = root + "/cache-node.yaml"
        try BenchLead.liftedLimits.write(toFile: cacheNodeFile, atomically: true, encoding: .utf8)
        let cacheNode = try AgentHarness(
            profile: "compute", dataDir: root + "/cache-node",
            extraArguments: [
                "--name", "cache-node", "--lead", lead.baseURL, "--join-token", fullToken,
                "--log-level", "error", "--config", cacheNodeFile,
            ],
            outputDirectory: root, executable: executable)
        defer { cacheNode.process.signal(SIGTERM) }
        try await cacheNode.waitHealthy()
        let nodeAdmin = ["Authorization": "Bearer \(try cacheNode.adminToken)"]
        // Global and company secrets resolve for it (the node-scoped ones are bench-node's).
        let cachedNames = names.enumerated().filter { $0.offset % 3 != 2 }.prefix(200).map(\.element)
        for (service, key) in cachedNames {
            _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "cache-node to read \(service)/\(key)")
            { () async throws -> Bool? in
                try await http(cacheNode.baseURL + Routes.secret(service, key), headers: nodeAdmin).status == 200
                    ? true : nil
            }
        }
        await lead.stop()
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(50), "cache-node to answer from its cache") {
            () async throws -> Bool? in
            let answer = try await http(
                cacheNode.baseURL + Routes.secret(cachedNames[0].0, cachedNames[0].1), headers: nodeAdmin)
            guard answer.status == 200 else { return nil }
            return try answer.decode(SecretRead.self).cachedAgeS != nil ? true : nil
        }
        var cacheLatencies: [Double] = []
        for i in 0..<10_000 {
            let (service, key) = cachedNames[i % cachedNames.count]
            let started = ContinuousClock.now
            let answer = try await http(cacheNode.baseURL + Routes.secret(service, key), headers: nodeAdmin)
            guard answer.status == 200 else { throw TestKitError("a cached read answered \(answer.status)") }
            cacheLatencies.append(Double(started.duration(to: .now) / .nanoseconds(1)) / 1000)
        }
        cacheLatencies.sort()

        await lead.stop()
        _ = sample
        return Report(
            secrets: secrets, leadReads: leadLatencies.count,
            leadReadsPerSecond: Double(leadLatencies.count) / readWall,
            leadP50Ms: Samples.percentile(leadLatencies, 0.5), leadP99Ms: Samples.percentile(leadLatencies, 0.99),
            cacheP50Us: Samples.percentile(cacheLatencies, 0.5), cacheP99Us: Samples.percentile(cacheLatencies, 0.99),
            rotationSeconds: rotation.seconds, rewrapped: rotation.rewrapped,
            leadCPUMicrosPerRead: (cpuAfter.0 - cpuBefore.0) / reads * 1e6,
            storeCPUMicrosPerRead: (cpuAfter.1 - cpuBefore.1) / reads * 1e6,
            clientCPUMicrosPerRead: (cpuAfter.2 - cpuBefore.2) / reads * 1e6)
    }
}
