import AuroraAPI
import AuroraTestKit
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench startup`: time from `nodeagent --profile lead` to a healthy `/health` on an
/// empty data directory and on restart, the time a SIGTERM takes, and the agent's idle RSS
/// (PostgreSQL excluded: it is a separate process).
public struct StartupBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var runs: Int
        public var coldStartMs: [Double]
        public var restartMs: [Double]
        public var shutdownMs: [Double]
        public var idleSeconds: Int
        public var idleRSSMB: Double?
        public var coldStartMedianMs: Double { Samples.median(coldStartMs) }
        public var restartMedianMs: Double { Samples.median(restartMs) }
        public var shutdownMedianMs: Double { Samples.median(shutdownMs) }

        enum CodingKeys: String, CodingKey {
            case runs
            case coldStartMs = "cold_start_ms", restartMs = "restart_ms", shutdownMs = "shutdown_ms"
            case idleSeconds = "idle_seconds", idleRSSMB = "idle_rss_mb"
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
        let scratch = try ScratchDirectory("startup", prefix: "aurora-bench")
        defer { scratch.remove() }
        var report = Report(runs: runs, coldStartMs: [], restartMs: [], shutdownMs: [], idleSeconds: idleSeconds)
        for index in 1...runs {
            let dataDir = "\(scratch.path)/run\(index)"
            let cold = try await startTimed(dataDir: dataDir, scratch: scratch)
            report.coldStartMs.append(cold.ms)
            report.shutdownMs.append(try await stopTimed(cold.agent))
            let warm = try await startTimed(dataDir: dataDir, scratch: scratch)
            report.restartMs.append(warm.ms)
            let isLast = index == runs
            if isLast, idleSeconds > 0 {
                progress(
                    "run \(index)/\(runs): cold \(format(cold.ms)) ms, restart \(format(warm.ms)) ms; idling \(idleSeconds) s for RSS…"
                )
                try await Task.sleep(for: .seconds(idleSeconds))
                report.idleRSSMB = Measurements.rssMB(pid: warm.agent.process.pid)
            } else {
                progress("run \(index)/\(runs): cold \(format(cold.ms)) ms, restart \(format(warm.ms)) ms")
            }
            report.shutdownMs.append(try await stopTimed(warm.agent))
        }
        return report
    }

    // MARK: Steps

    private func startTimed(dataDir: String, scratch: ScratchDirectory) async throws -> (
        agent: AgentHarness, ms: Double
    ) {
        let started = ContinuousClock.now
        let agent = try AgentHarness(
            profile: "lead", dataDir: dataDir, extraArguments: ["--log-level", "warning"],
            outputDirectory: scratch.path, executable: executable)
        do {
            try await agent.waitHealthy(timeout: .seconds(60), every: .milliseconds(5))
        } catch {
            agent.process.signal(SIGKILL)
            throw error
        }
        return (agent, Measurements.ms(started.duration(to: .now)))
    }

    private func stopTimed(_ agent: AgentHarness) async throws -> Double {
        let started = ContinuousClock.now
        agent.process.signal(SIGTERM)
        do {
            try await agent.process.waitForExit(timeout: .seconds(30), every: .milliseconds(5))
        } catch {
            agent.process.signal(SIGKILL)
            throw TestKitError("the agent did not stop within 30 s of SIGTERM")
        }
        return Measurements.ms(started.duration(to: .now))
    }

    private func format(_ ms: Double) -> String { String(format: "%.0f", ms) }
}
