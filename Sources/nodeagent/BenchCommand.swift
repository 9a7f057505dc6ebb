import ArgumentParser
import AuroraAPI
import Foundation
import NodeAgent

extension Nodeagent {
    /// `nodeagent bench ...`: benchmarks that print figures.
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks that print figures.", subcommands: [Startup.self])
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
