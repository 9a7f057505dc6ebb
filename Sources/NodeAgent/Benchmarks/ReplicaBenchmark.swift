import AsyncHTTPClient
import AuroraAPI
import Foundation
#if canImport(Glibc)
import Glibc
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
#endif

/// `nodeagent bench replica`: a real primary, a streaming standby and an agent watching the
/// standby. Stops the primary `runs` times and times until the agent reports `disconnected`;
/// then measures the agent's CPU share over an idle window against an agent without a monitor.
public struct ReplicaBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var runs: Int
        public var intervalS: Double
        public var disconnectMs: [Double]
        public var reconnectMs: [Double]
        public var idleSeconds: Int
        /// CPU share (percent of one core) of the agent that samples, and of one that does not.
        public var cpuPctWithMonitor: Double
        public var cpuPctWithout: Double
        public var disconnectMedianMs: Double { StartupBenchmark.Report.median(disconnectMs) }
        public var reconnectMedianMs: Double { StartupBenchmark.Report.median(reconnectMs) }

        enum CodingKeys: String, CodingKey {
            case runs
            case intervalS = "interval_s"
            case disconnectMs = "disconnect_ms", reconnectMs = "reconnect_ms", idleSeconds = "idle_seconds"
            case cpuPctWithMonitor = "cpu_pct_with_monitor", cpuPctWithout = "cpu_pct_without"
        }
    }

    public var executable: String
    public var runs: Int
    public var idleSeconds: Int
    public var progress: @Sendable (String) -> Void

    public init(executable: String, runs: Int, idleSeconds: Int, progress: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.runs = runs
        self.idleSeconds = idleSeconds
        self.progress = progress
    }

    public func run() async throws -> Report {
        let root = try BenchLead.scratch("replica-pg")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cluster = try BenchCluster(root: root)
        do {
            let report = try await measure(cluster)
            await cluster.stop()
            return report
        } catch {
            await cluster.stop()
            throw error
        }
    }

    private func measure(_ cluster: BenchCluster) async throws -> Report {
        progress("starting a primary and a streaming standby")
        try await cluster.start()
        let interval = 2.0
        let watcher = try await BenchLead.start("replica-agent", executable: executable, config: """
            postgres:
              monitor: "\(cluster.standbyConninfo)"
              expect: replica
              interval_s: \(interval)

            """)
        defer { watcher.discard() }
        let plain = try await BenchLead.start("replica-plain", executable: executable)
        defer { plain.discard() }
        try await waitFor("streaming", watcher, timeout: .seconds(30))

        progress("idle for \(idleSeconds) s: CPU of an agent sampling every \(Int(interval)) s, and of one without a monitor")
        let before = (BenchLead.cpuSeconds(pid: watcher.process.processIdentifier), BenchLead.cpuSeconds(pid: plain.process.processIdentifier))
        try await Task.sleep(for: .seconds(idleSeconds))  // the measurement window itself
        let after = (BenchLead.cpuSeconds(pid: watcher.process.processIdentifier), BenchLead.cpuSeconds(pid: plain.process.processIdentifier))
        guard let a0 = before.0, let a1 = after.0, let b0 = before.1, let b1 = after.1 else {
            throw AgentError(.process, "cannot read the agents' CPU time from /proc")
        }

        var disconnect: [Double] = [], reconnect: [Double] = []
        for run in 1...runs {
            // The agent samples on a fixed period; stop the primary at a random phase of it,
            // not right after a sample (which would time the worst case every run).
            try await Task.sleep(for: .milliseconds(Int64.random(in: 0..<Int64(interval * 1000))))
            try await cluster.stopPrimary()
            let stopped = ContinuousClock.now
            try await waitFor("disconnected", watcher, timeout: .seconds(60))
            disconnect.append(Self.ms(stopped.duration(to: .now)))
            try await cluster.startPrimary()
            let started = ContinuousClock.now
            try await waitFor("streaming", watcher, timeout: .seconds(60))
            reconnect.append(Self.ms(started.duration(to: .now)))
            progress(String(format: "  run %d: disconnected after %.0f ms, streaming again %.0f ms after the primary started", run,
                            disconnect.last!, reconnect.last!))
        }
        return Report(runs: runs, intervalS: interval, disconnectMs: disconnect, reconnectMs: reconnect, idleSeconds: idleSeconds,
                      cpuPctWithMonitor: (a1 - a0) / Double(idleSeconds) * 100, cpuPctWithout: (b1 - b0) / Double(idleSeconds) * 100)
    }

    static func ms(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    /// Polls the agent's `/api/postgres/health` every 20 ms until it reports `state`.
    private func waitFor(_ state: String, _ agent: BenchLead, timeout: Duration) async throws {
        try await BenchLead.waitUntil("the agent to report \(state)", timeout: timeout) {
            var request = HTTPClientRequest(url: agent.baseURL + Routes.postgresHealth)
            request.headers.add(name: "Authorization", value: "Bearer \(agent.token)")
            guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)), response.status == .ok,
                  let body = try? await response.body.collect(upTo: 1 << 20),
                  let health = try? APICoding.decoder().decode(ReplicaHealth.self, from: Data(buffer: body)) else { return false }
            try await Task.sleep(for: .milliseconds(10))
            return health.state == state
        }
    }
}

/// A primary and a standby made with `pg_basebackup -R` through a slot, on loopback ports,
/// running as `postgres` when the benchmark is root.
struct BenchCluster: Sendable {
    let bin: String
    let runAs: String?
    let primaryDir: String
    let standbyDir: String
    let primaryPort: Int
    let standbyPort: Int

    var standbyConninfo: String { "host=127.0.0.1 port=\(standbyPort) dbname=postgres user=aurora" }

    init(root: String) throws {
        bin = try ManagedPostgres.findBinDirectory()
        runAs = geteuid() == 0 ? "postgres" : nil
        primaryDir = root + "/primary"
        standbyDir = root + "/standby"
        primaryPort = try StartupBenchmark.freePort()
        standbyPort = try StartupBenchmark.freePort()
    }

    func start() async throws {
        for directory in [primaryDir, standbyDir] {
            guard mkdir(directory, 0o700) == 0 else { throw AgentError(.dataDir, "cannot create \(directory)") }
            if let runAs {
                let account = try ManagedPostgres.account(runAs)
                chown(directory, account.uid, account.gid)
            }
        }
        try await tool("initdb", ["-D", primaryDir, "-U", "aurora", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"])
        try await startPrimary()
        try await tool("pg_basebackup", ["-h", "127.0.0.1", "-p", String(primaryPort), "-U", "aurora", "-D", standbyDir,
                                         "-R", "-C", "-S", "bench_replica", "-X", "stream", "-c", "fast"])
        try await tool("pg_ctl", startArguments(standbyDir, port: standbyPort))
    }

    func startPrimary() async throws { try await tool("pg_ctl", startArguments(primaryDir, port: primaryPort)) }

    func stopPrimary() async throws { try await tool("pg_ctl", ["stop", "-D", primaryDir, "-m", "fast", "-w", "-s"]) }

    func stop() async {
        for directory in [standbyDir, primaryDir] where FileManager.default.fileExists(atPath: directory + "/postmaster.pid") {
            _ = try? await ProcessRunner.run(bin + "/pg_ctl", ["stop", "-D", directory, "-m", "immediate", "-w", "-s"], asUser: runAs)
        }
    }

    private func startArguments(_ directory: String, port: Int) -> [String] {
        ["start", "-D", directory, "-l", directory + "/server.log", "-w", "-t", "30", "-s",
         "-o", "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories=''"]
    }

    private func tool(_ name: String, _ arguments: [String]) async throws {
        let result = try await ProcessRunner.run(bin + "/" + name, arguments, asUser: runAs)
        guard result.status == 0 else { throw AgentError(.process, "\(name) failed: \(result.lastLine)") }
    }
}
