import AuroraAPI
import AuroraTestKit
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench replica`: a real primary, a streaming standby and an agent watching the
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
        public var disconnectMedianMs: Double { Samples.median(disconnectMs) }
        public var reconnectMedianMs: Double { Samples.median(reconnectMs) }

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
        let scratch = try ScratchDirectory("replica-pg", prefix: "aurora-bench")
        defer { scratch.remove() }
        var servers: [PostgresServer] = []
        do {
            progress("starting a primary and a streaming standby")
            let primary = try await PostgresServer(in: scratch, name: "primary")
            servers.append(primary)
            let standby = try await PostgresServer(
                standbyOf: primary, slot: "bench_replica", in: scratch, name: "standby")
            servers.append(standby)
            let report = try await measure(primary: primary, standby: standby)
            for server in servers.reversed() { await server.stopIfRunning() }
            return report
        } catch {
            for server in servers.reversed() { await server.stopIfRunning() }
            throw error
        }
    }

    private func measure(primary: PostgresServer, standby: PostgresServer) async throws -> Report {
        let interval = 2.0
        let watcher = try await BenchLead.start(
            "replica-agent", executable: executable,
            config: """
                postgres:
                  monitor: "\(standby.conninfo)"
                  expect: replica
                  interval_s: \(interval)

                """)
        defer { watcher.discard() }
        let plain = try await BenchLead.start("replica-plain", executable: executable)
        defer { plain.discard() }
        try await waitFor("streaming", watcher, timeout: .seconds(30))

        progress(
            "idle for \(idleSeconds) s: CPU of an agent sampling every \(Int(interval)) s, and of one without a monitor"
        )
        let before = (
            Measurements.cpuSeconds(pid: watcher.process.pid), Measurements.cpuSeconds(pid: plain.process.pid)
        )
        try await Task.sleep(for: .seconds(idleSeconds))  // the measurement window itself
        let after = (Measurements.cpuSeconds(pid: watcher.process.pid), Measurements.cpuSeconds(pid: plain.process.pid))
        guard let a0 = before.0, let a1 = after.0, let b0 = before.1, let b1 = after.1 else {
            throw TestKitError("cannot read the agents' CPU time from /proc")
        }

        var disconnect: [Double] = [], reconnect: [Double] = []
        for run in 1...runs {
            // The agent samples on a fixed period; stop the primary at a random phase of it,
            // not right after a sample (which would time the worst case every run).
            try await Task.sleep(for: .milliseconds(Int64.random(in: 0..<Int64(interval * 1000))))
            try await primary.stop()
            let stopped = ContinuousClock.now
            try await waitFor("disconnected", watcher, timeout: .seconds(60))
            disconnect.append(Measurements.ms(stopped.duration(to: .now)))
            try await primary.start()
            let started = ContinuousClock.now
            try await waitFor("streaming", watcher, timeout: .seconds(60))
            reconnect.append(Measurements.ms(started.duration(to: .now)))
            progress(
                String(
                    format: "  run %d: disconnected after %.0f ms, streaming again %.0f ms after the primary started",
                    run,
                    disconnect.last!, reconnect.last!))
        }
        return Report(
            runs: runs, intervalS: interval, disconnectMs: disconnect, reconnectMs: reconnect, idleSeconds: idleSeconds,
            cpuPctWithMonitor: (a1 - a0) / Double(idleSeconds) * 100,
            cpuPctWithout: (b1 - b0) / Double(idleSeconds) * 100)
    }

    /// Polls the agent's `/api/postgres/health` every 20 ms until it reports `state`.
    private func waitFor(_ state: String, _ agent: BenchLead, timeout: Duration) async throws {
        try await waitUntil("the agent to report \(state)", timeout: timeout) {
            guard
                let answer = try? await http(
                    agent.baseURL + Routes.postgresHealth, headers: ["Authorization": "Bearer \(agent.token)"],
                    timeout: .seconds(2)), answer.status == 200,
                let health = try? answer.decode(ReplicaHealth.self)
            else { return false }
            try await Task.sleep(for: .milliseconds(10))
            return health.state == state
        }
    }
}
