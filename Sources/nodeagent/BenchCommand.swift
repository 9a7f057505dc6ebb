import ArgumentParser
import AuroraAPI
import Foundation
import NodeAgent

extension Nodeagent {
    /// `nodeagent bench ...`: benchmarks that print figures.
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks that print figures.", subcommands: [Startup.self, Heartbeat.self, Detection.self])
    }
}

extension Nodeagent.Bench {
    /// `nodeagent bench startup`.
    struct Startup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time to healthy for a lead on an empty data dir and on restart, SIGTERM time, and idle RSS.",
            discussion: "Starts this same binary as child processes on temporary data dirs under /tmp and loopback ports.")

        @Option(help: "How many cold start + restart pairs to time.")
        var runs = 5

        @Option(name: .customLong("idle-seconds"), help: "Seconds the last agent idles before its RSS is read (0 skips it).")
        var idleSeconds = 60

        @Flag(help: "Print the report as JSON.")
        var json = false

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
            guard (0...3600).contains(idleSeconds) else { throw ValidationError("--idle-seconds must be 0...3600") }
        }

        func run() async throws {
            let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let benchmark = StartupBenchmark(executable: executable, runs: runs, idleSeconds: idleSeconds) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            let report = try await benchmark.run()
            if json {
                let data = try APICoding.encoder(pretty: true).encode(report)
                print(String(decoding: data, as: UTF8.self))
                return
            }
            func f(_ value: Double) -> String { String(format: "%.0f", value) }
            print("nodeagent bench startup (\(runs) runs, release=\(isRelease))")
            print("  cold start to healthy (empty data dir, incl. initdb):  median \(f(report.coldStartMedianMs)) ms  [\(report.coldStartMs.map(f).joined(separator: ", "))]")
            print("  restart to healthy (existing data dir):              median \(f(report.restartMedianMs)) ms  [\(report.restartMs.map(f).joined(separator: ", "))]")
            print("  SIGTERM to exit (incl. stopping PostgreSQL):          median \(f(report.shutdownMedianMs)) ms")
            if let rss = report.idleRSSMB {
                print("  idle RSS after \(idleSeconds) s (agent only, without PostgreSQL): \(String(format: "%.1f", rss)) MB (target < 40 MB)")
            }
        }

        private var isRelease: Bool {
            #if DEBUG
            false
            #else
            true
            #endif
        }
    }
}

extension Nodeagent.Bench {
    /// `nodeagent bench heartbeat`.
    struct Heartbeat: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Heartbeat ingestion on a real lead: N simulated nodes, each one signed heartbeat per second over loopback.",
            discussion: "Prints p50/p99 latency and the lead process's CPU share. The load generator runs on the same machine.")

        @Option(help: "Simulated nodes (one heartbeat per second each).") var nodes = 1000
        @Option(help: "Seconds of load.") var seconds = 20
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            guard (1...20_000).contains(nodes) else { throw ValidationError("--nodes must be 1...20000") }
            guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
        }

        func run() async throws {
            let benchmark = HeartbeatBenchmark(executable: selfExecutable, nodes: nodes, seconds: seconds) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            let report = try await benchmark.run()
            if json { return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self)) }
            print("nodeagent bench heartbeat (\(nodes) nodes at 1 Hz for \(seconds) s, release=\(isReleaseBuild))")
            print(String(format: "  sent %d (%.0f/s), failed %d", report.sent, report.ratePerSecond, report.failed))
            print(String(format: "  latency p50 %.2f ms, p99 %.2f ms, max %.1f ms (target p99 < 5 ms)", report.p50Ms, report.p99Ms, report.maxMs))
            print(String(format: "  lead CPU %.1f %% of one core (target < 25 %%)", report.leadCPUPercentOfOneCore)
                  + (report.leadRSSMB.map { String(format: ", RSS %.1f MB", $0) } ?? ""))
        }
    }

    /// `nodeagent bench detection`.
    struct Detection: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time from kill -9 of a compute agent to 'dead' in the lead's registry, over several runs.")

        @Option(help: "How many kills to time.") var runs = 10
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
        }

        func run() async throws {
            let benchmark = DetectionBenchmark(executable: selfExecutable, runs: runs) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            let report = try await benchmark.run()
            if json { return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self)) }
            print("nodeagent bench detection (\(runs) runs, release=\(isReleaseBuild))")
            print(String(format: "  kill -9 to dead: median %.0f ms, min %.0f ms, max %.0f ms (target <= 3000 ms)", report.medianMs,
                         report.detectionMs.min() ?? .nan, report.detectionMs.max() ?? .nan))
        }
    }
}

/// This binary, for benchmarks that start it as child processes.
var selfExecutable: String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

var isReleaseBuild: Bool {
    #if DEBUG
    false
    #else
    true
    #endif
}
