import AsyncHTTPClient
import AuroraAPI
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
import NIOCore
import NIOHTTP1
#endif

/// `nodeagent bench startup`: time from `nodeagent --profile lead` to a healthy `/health` on an
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
        public var coldStartMedianMs: Double { Self.median(coldStartMs) }
        public var restartMedianMs: Double { Self.median(restartMs) }
        public var shutdownMedianMs: Double { Self.median(shutdownMs) }

        static func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return .nan }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }

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
        let root = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var report = Report(runs: runs, coldStartMs: [], restartMs: [], shutdownMs: [], idleSeconds: idleSeconds)
        for index in 1...runs {
            let dataDir = "\(root)/run\(index)"
            let cold = try await startTimed(dataDir: dataDir)
            report.coldStartMs.append(cold.ms)
            report.shutdownMs.append(try await stopTimed(cold.process))
            let warm = try await startTimed(dataDir: dataDir)
            report.restartMs.append(warm.ms)
            let isLast = index == runs
            if isLast, idleSeconds > 0 {
                progress("run \(index)/\(runs): cold \(format(cold.ms)) ms, restart \(format(warm.ms)) ms; idling \(idleSeconds) s for RSS…")
                try await Task.sleep(for: .seconds(idleSeconds))
                report.idleRSSMB = Self.rssMB(pid: warm.process.processIdentifier)
            } else {
                progress("run \(index)/\(runs): cold \(format(cold.ms)) ms, restart \(format(warm.ms)) ms")
            }
            report.shutdownMs.append(try await stopTimed(warm.process))
        }
        return report
    }

    // MARK: Steps

    private func startTimed(dataDir: String) async throws -> (process: Process, ms: Double) {
        let port = try Self.freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["run", "--profile", "lead", "--data-dir", dataDir, "--listen", "127.0.0.1:\(port)", "--log-level", "warning"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let started = ContinuousClock.now
        try process.run()
        let deadline = started + .seconds(60)
        let url = "http://127.0.0.1:\(port)\(Routes.health)"
        while ContinuousClock.now < deadline {
            guard process.isRunning else { throw AgentError(.process, "the agent exited with status \(process.terminationStatus) before it was healthy") }
            if let response = try? await HTTPClient.shared.get(url: url).get(), response.status == .ok {
                let elapsed = ContinuousClock.now - started
                return (process, Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        process.terminate()
        throw AgentError(.process, "the agent was not healthy within 60 s")
    }

    private func stopTimed(_ process: Process) async throws -> Double {
        let started = ContinuousClock.now
        process.terminate()
        while process.isRunning {
            guard ContinuousClock.now - started < .seconds(30) else {
                kill(process.processIdentifier, SIGKILL)
                throw AgentError(.process, "the agent did not stop within 30 s of SIGTERM")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
    }

    // MARK: Helpers

    /// VmRSS of `pid` in MB, from /proc.
    static func rssMB(pid: Int32) -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = line.split(separator: " ").compactMap({ Double($0) }).first else { return nil }
        return kb / 1024
    }

    private static let portCursor = Mutex(Int.random(in: 20_000..<32_000))

    /// A port nothing listens on now, below the ephemeral range so client sockets cannot take it,
    /// handed out in turn from a random start so that two calls never get the same one.
    static func freePort() throws -> Int {
        for _ in 0..<400 {
            let port = portCursor.withLock { value in
                value = value + 1 < 32_000 ? value + 1 : 20_000
                return value
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { continue }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if bound { return port }
        }
        throw AgentError(.process, "cannot find a free port in 20000-32000")
    }

    private func makeTemporaryDirectory() throws -> String {
        let path = "/tmp/aurora-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(path, 0o755) == 0 else { throw AgentError(.dataDir, "cannot create \(path): \(String(cString: strerror(errno)))") }
        return path
    }

    private func format(_ ms: Double) -> String { String(format: "%.0f", ms) }
}
