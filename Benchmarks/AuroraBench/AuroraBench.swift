import ArgumentParser
import AuroraAPI
import AuroraTestKit
import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench`: the benchmarks that print figures, beside the product. They start the
/// built `nodeagent` as child processes (through the test kit) and talk to it over HTTP.
@main
enum AuroraBenchMain {
    static func main() async {
        Interruption.install()
        do {
            var command = try AuroraBench.parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // A benchmark interrupted fails as its children go away: the handler exits, not this.
            await Interruption.waitIfInterrupted()
            AuroraBench.exit(withError: error)
        }
        await Interruption.waitIfInterrupted()
    }
}

struct AuroraBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aurora-bench",
        abstract: "Benchmarks that print figures.",
        discussion:
            "Build: ./bootstrap (nodeagent), then swift build -c release --static-swift-stdlib --product aurora-bench; run .build/release/aurora-bench SUBCOMMAND.",
        subcommands: [
            Startup.self, Heartbeat.self, Detection.self, Placement.self, Dispatch.self, Requeue.self, Queue.self,
            ReplicaBench.self,
            SecretsBench.self, RedisBench.self, Failover.self, Gateway.self, Scrape.self, ConsoleBench.self,
            DNSBench.self, RelayBench.self,
        ])
}

/// `--nodeagent PATH`: the agent binary the benchmarks start.
struct AgentBinary: ParsableArguments {
    @Option(
        name: .customLong("nodeagent"), help: "The nodeagent binary to start (default: the one next to aurora-bench).")
    var path: String = AgentBinary.besideThisExecutable

    /// `nodeagent` in the directory of this executable (the same build directory).
    static var besideThisExecutable: String {
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("nodeagent").path
    }

    func validate() throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError(
                "\(path) does not exist: build it (swift build -c release --product nodeagent) or pass --nodeagent PATH"
            )
        }
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ValidationError("\(path) is not executable: pass --nodeagent PATH")
        }
    }
}

/// SIGTERM and SIGINT end every process the benchmark started (a lead first stops its
/// PostgreSQL), remove its scratch directories, and exit 143 or 130.
enum Interruption {
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []
    private static let interrupted = Atomic(false)

    static func install() {
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                guard !interrupted.exchange(true, ordering: .relaxed) else { return }
                FileHandle.standardError.write(Data("aurora-bench: interrupted, stopping what it started…\n".utf8))
                StartedProcesses.endAll(grace: .seconds(10))
                exit(128 + signalNumber)
            }
            source.resume()
            sources.append(source)
        }
    }

    /// Once a signal came, never returns: the handler is ending the children and exits.
    static func waitIfInterrupted() async {
        while interrupted.load(ordering: .relaxed) { try? await Task.sleep(for: .seconds(1)) }
    }
}

/// Progress lines go to stderr; the figures to stdout.
@Sendable func progressLine(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

extension AuroraBench {
    /// `aurora-bench startup`.
    struct Startup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time to healthy for a lead on an empty data dir and on restart, SIGTERM time, and idle RSS.",
            discussion:
                "Starts nodeagent (--nodeagent) as child processes on temporary data dirs under /tmp and loopback ports."
        )

        @Option(help: "How many cold start + restart pairs to time.")
        var runs = 5

        @Option(
            name: .customLong("idle-seconds"), help: "Seconds the last agent idles before its RSS is read (0 skips it)."
        )
        var idleSeconds = 60

        @Flag(help: "Print the report as JSON.")
        var json = false

        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
            guard (0...3600).contains(idleSeconds) else { throw ValidationError("--idle-seconds must be 0...3600") }
        }

        func run() async throws {
            let benchmark = StartupBenchmark(
                executable: agent.path, runs: runs, idleSeconds: idleSeconds, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                let data = try APICoding.encoder(pretty: true).encode(report)
                print(String(decoding: data, as: UTF8.self))
                return
            }
            func f(_ value: Double) -> String { String(format: "%.0f", value) }
            print("aurora-bench startup (\(runs) runs, release=\(isReleaseBuild))")
            print(
                "  cold start to healthy (empty data dir, incl. initdb):  median \(f(report.coldStartMedianMs)) ms  [\(report.coldStartMs.map(f).joined(separator: ", "))]"
            )
            print(
                "  restart to healthy (existing data dir):              median \(f(report.restartMedianMs)) ms  [\(report.restartMs.map(f).joined(separator: ", "))]"
            )
            print("  SIGTERM to exit (incl. stopping PostgreSQL):          median \(f(report.shutdownMedianMs)) ms")
            if let rss = report.idleRSSMB {
                print(
                    "  idle RSS after \(idleSeconds) s (agent only, without PostgreSQL): \(String(format: "%.1f", rss)) MB (target < 40 MB)"
                )
            }
        }
    }
}

extension AuroraBench {
    /// `aurora-bench heartbeat`.
    struct Heartbeat: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Heartbeat ingestion on a real lead: N simulated nodes, each one signed heartbeat per second over loopback.",
            discussion:
                "Prints p50/p99 latency and the lead process's CPU share. The load generator runs on the same machine.")

        @Option(help: "Simulated nodes (one heartbeat per second each).") var nodes = 1000
        @Option(help: "Seconds of load.") var seconds = 20
        @Flag(help: "Heartbeats over pinned TLS 1.3 (the lead's tls.listen) with kept-alive connections.") var tls =
            false
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...20_000).contains(nodes) else { throw ValidationError("--nodes must be 1...20000") }
            guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
        }

        func run() async throws {
            let benchmark = HeartbeatBenchmark(
                executable: agent.path, nodes: nodes, seconds: seconds, tls: tls, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench heartbeat (\(nodes) nodes at 1 Hz for \(seconds) s, \(tls ? "pinned TLS 1.3" : "plain HTTP"), release=\(isReleaseBuild))"
            )
            print(String(format: "  sent %d (%.0f/s), failed %d", report.sent, report.ratePerSecond, report.failed))
            print(
                String(
                    format: "  latency p50 %.2f ms, p99 %.2f ms, max %.1f ms (target p99 < 5 ms)", report.p50Ms,
                    report.p99Ms, report.maxMs))
            print(
                String(format: "  lead CPU %.1f %% of one core (target < 25 %%)", report.leadCPUPercentOfOneCore)
                    + (report.leadRSSMB.map { String(format: ", RSS %.1f MB", $0) } ?? ""))
        }
    }

    struct Scrape: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Prometheus's cost of scraping one agent: GET /metrics durations (p50/p99) and size.",
            discussion:
                "A lead with N simulated compute nodes (one GPU each: the lead exports their per-node and per-GPU series) is scraped one request after another, as Prometheus does; --nodes 0 is an agent's own metrics."
        )

        @Option(help: "Simulated compute nodes in the lead's registry.") var nodes = 1000
        @Option(help: "Scrapes to time.") var scrapes = 200
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (0...20_000).contains(nodes) else { throw ValidationError("--nodes must be 0...20000") }
            guard (1...100_000).contains(scrapes) else { throw ValidationError("--scrapes must be 1...100000") }
        }

        func run() async throws {
            let report = try await ScrapeBenchmark(
                executable: agent.path, nodes: nodes, scrapes: scrapes, progress: progressLine
            ).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print("aurora-bench scrape (\(nodes) nodes, \(scrapes) scrapes, release=\(isReleaseBuild))")
            print(
                String(
                    format: "  GET /metrics p50 %.2f ms, p99 %.2f ms, max %.1f ms; %d series, %.1f KB", report.p50Ms,
                    report.p99Ms, report.maxMs, report.series, Double(report.bytes) / 1024))
        }
    }

    /// `aurora-bench console`.
    struct ConsoleBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "console",
            abstract:
                "The web console's cost: first load (bytes, time) and the lead's RSS with N consoles on the live stream.",
            discussion:
                "First load: the page and its files on a fresh connection each time (an empty cache), then with the sign-in and the Mesh page's first calls. Then N consoles sign in, load the page and follow GET /api/events; the benchmark writes --events secrets (one event each) and times each event's arrival on every stream."
        )

        @Option(help: "Simulated compute nodes in the lead's registry (the Mesh page's data).") var nodes = 20
        @Option(help: "First loads to time.") var loads = 50
        @Option(help: "Consoles open on the live stream.") var consoles = 10
        @Option(help: "Events written while they are open.") var events = 200
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (0...10_000).contains(nodes) else { throw ValidationError("--nodes must be 0...10000") }
            guard (1...10_000).contains(loads) else { throw ValidationError("--loads must be 1...10000") }
            guard (1...200).contains(consoles) else { throw ValidationError("--consoles must be 1...200") }
            guard (1...100_000).contains(events) else { throw ValidationError("--events must be 1...100000") }
        }

        func run() async throws {
            let report = try await ConsoleBenchmark(
                executable: agent.path, nodes: nodes, loads: loads, consoles: consoles, events: events,
                progress: progressLine
            ).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench console (\(nodes) nodes, \(loads) loads, \(consoles) consoles, \(events) events, release=\(isReleaseBuild))"
            )
            print(
                String(
                    format: "  first load, page + 3 files: %.1f KB, p50 %.2f ms, p99 %.2f ms",
                    Double(report.assetBytes) / 1024,
                    report.assetsP50Ms, report.assetsP99Ms))
            print(
                String(
                    format:
                        "  first view (+ sign-in, session, nodes, topology, GPU status): %.1f KB, p50 %.2f ms, p99 %.2f ms",
                    Double(report.firstViewBytes) / 1024, report.firstViewP50Ms, report.firstViewP99Ms))
            print(
                String(
                    format: "  lead RSS: %.1f MB idle, %.1f MB with %d consoles, %.1f MB after %d events",
                    report.rssIdleMB, report.rssConsolesMB, report.consoles, report.rssAfterEventsMB, report.events))
            print(
                String(
                    format: "  event fan-out to %d consoles: p50 %.2f ms, p99 %.2f ms", report.consoles,
                    report.fanoutP50Ms,
                    report.fanoutP99Ms))
        }
    }

    /// `aurora-bench dns`.
    struct DNSBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dns",
            abstract: "The mesh DNS server against dnsmasq on the same names, with dnsperf: queries/s and p50/p99.",
            discussion:
                "A lead with N simulated nodes serves NAME.aurora.internal from its registry; dnsmasq serves the same names from a hosts file. dnsperf asks each for --seconds with 100 queries outstanding (queries/s), then at --rate queries/s with every answer timed (p50/p99)."
        )

        @Option(help: "Simulated compute nodes (names to ask for).") var nodes = 100
        @Option(help: "Seconds of each dnsperf run.") var seconds = 10
        @Option(help: "Queries per second of the latency run.") var rate = 5000
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...10_000).contains(nodes) else { throw ValidationError("--nodes must be 1...10000") }
            guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
            guard (1...1_000_000).contains(rate) else { throw ValidationError("--rate must be 1...1000000") }
        }

        func run() async throws {
            let report = try await DNSBenchmark(
                executable: agent.path, nodes: nodes, seconds: seconds, rate: rate, progress: progressLine
            ).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench dns (\(report.nodes) names, \(seconds) s runs, \(rate)/s latency run, release=\(isReleaseBuild))"
            )
            for (name, server) in [("nodeagent", report.agent), ("dnsmasq", report.dnsmasq)] {
                print(
                    String(
                        format: "  %@: %.0f queries/s (%d lost); at %d/s p50 %.3f ms, p99 %.3f ms", name,
                        server.queriesPerSecond, server.lost, rate, server.p50Ms, server.p99Ms))
            }
        }
    }

    struct RelayBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "relay",
            abstract: "Relayed against direct between homes behind NAT (ping, iperf3, relay CPU), and re-NAT recovery.",
            discussion:
                "Network namespaces (root): a public lead and relay, two endpoint-independent homes whose pair turns direct and two symmetric homes whose pair stays relayed. Ping RTT p50/p99 and iperf3 throughput for each pair, the relay agent's CPU share during the relayed iperf3 run, then --runs re-NATs of a symmetric home: the time until the relayed pair answers again (median). Needs wireguard-go, nftables, conntrack and iperf3; aurora-cli next to nodeagent."
        )

        @Option(help: "Seconds of each iperf3 run.") var seconds = 5
        @Option(help: "Pings per path (5 ms apart).") var pings = 200
        @Option(help: "Re-NATs to time.") var runs = 10
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...120).contains(seconds) else { throw ValidationError("--seconds must be 1...120") }
            guard (1...10_000).contains(pings) else { throw ValidationError("--pings must be 1...10000") }
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
            guard geteuid() == 0 else {
                throw ValidationError("the relay benchmark makes network namespaces: run it as root")
            }
        }

        func run() async throws {
            let cli = URL(fileURLWithPath: agent.path).deletingLastPathComponent().appendingPathComponent("aurora-cli")
                .path
            let report = try await RelayBenchmark(
                executable: agent.path, cli: cli, seconds: seconds, pings: pings, runs: runs, progress: progressLine
            ).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench relay (\(pings) pings, \(seconds) s iperf3, \(runs) re-NATs, release=\(isReleaseBuild))")
            for (name, path) in [("direct ", report.direct), ("relayed", report.relayed)] {
                print(
                    String(
                        format: "  %@: ping p50 %.3f ms, p99 %.3f ms; iperf3 %.0f Mbit/s; relay CPU %.1f%%", name,
                        path.rttP50Ms, path.rttP99Ms, path.megabitsPerSecond, path.relayCPUPercent))
            }
            print(
                String(
                    format: "  re-NAT → relayed pings again: median %.0f ms (%@)", report.roamingMedianMs,
                    report.roamingMs.map { String(format: "%.0f", $0) }.joined(separator: ", ")))
        }
    }

    /// `aurora-bench detection`.
    struct Detection: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time from kill -9 of a compute agent to 'dead' in the lead's registry, over several runs.")

        @Option(help: "How many kills to time.") var runs = 10
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
        }

        func run() async throws {
            let benchmark = DetectionBenchmark(executable: agent.path, runs: runs, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print("aurora-bench detection (\(runs) runs, release=\(isReleaseBuild))")
            print(
                String(
                    format: "  kill -9 to dead: median %.0f ms, min %.0f ms, max %.0f ms (target <= 3000 ms)",
                    report.medianMs,
                    report.ms.min() ?? .nan, report.ms.max() ?? .nan))
        }
    }
}

extension AuroraBench {
    /// `aurora-bench placement`.
    struct Placement: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Placement decisions per second and their latency over simulated workers (the pure core, one thread).")

        @Option(help: "Simulated workers (1-8 GPUs each).") var workers = 1000
        @Option(help: "Decisions to time.") var decisions = 200_000
        @Option(help: "binpack or spread.") var policy = "binpack"
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            guard (1...100_000).contains(workers) else { throw ValidationError("--workers must be 1...100000") }
            guard (1...10_000_000).contains(decisions) else {
                throw ValidationError("--decisions must be 1...10000000")
            }
            guard ["binpack", "spread"].contains(policy) else {
                throw ValidationError("--policy must be binpack or spread")
            }
        }

        func run() async throws {
            let report = PlacementBenchmark(workers: workers, decisions: decisions, policy: policy).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench placement (\(report.workers) workers, \(report.gpus) GPUs, \(policy), release=\(isReleaseBuild))"
            )
            print(
                String(
                    format: "  %d decisions (%d placed): %.0f/s (target >= 20000/s)", report.decisions, report.placed,
                    report.decisionsPerSecond))
            print(
                String(
                    format: "  latency p50 %.1f µs, p99 %.1f µs, max %.0f µs (target p99 <= 200 µs)", report.p50Us,
                    report.p99Us, report.maxUs))
        }
    }

    /// `aurora-bench dispatch`.
    struct Dispatch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Submit → dispatched to a worker's long-poll on a real lead at a steady rate (durable commits), p50/p99.",
            discussion:
                "Simulated workers (signed, in this process) pull assignments and report results. All on loopback.")

        @Option(help: "Submissions per second.") var rate = 500
        @Option(help: "Seconds of load.") var seconds = 10
        @Option(help: "Simulated workers.") var workers = 4
        @Option(help: "Nodes with GPUs too small for the jobs, joined first (placement checks walk past them).")
        var decoys = 0
        @Option(
            name: .customLong("min-vram"),
            help: "MB each job needs; over 12282 a worker takes one job at a time, so jobs queue and are explained.")
        var minVram = 0
        @Flag(
            name: .customLong("sync-standby"),
            help:
                "Run twice in one invocation: a lead alone, then a lead that commits synchronously to a streaming standby lead; prints both and the cost."
        )
        var syncStandby = false
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...20_000).contains(rate) else { throw ValidationError("--rate must be 1...20000") }
            guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
            guard (1...256).contains(workers) else { throw ValidationError("--workers must be 1...256") }
            guard (0...10_000).contains(decoys) else { throw ValidationError("--decoys must be 0...10000") }
            guard (0...24_564).contains(minVram) else { throw ValidationError("--min-vram must be 0...24564") }
        }

        func run() async throws {
            let benchmark = DispatchBenchmark(
                executable: agent.path, rate: rate, seconds: seconds, workers: workers, decoys: decoys,
                minVramMB: minVram, progress: progressLine)
            let report = try await benchmark.run()
            if syncStandby {
                var synchronous = benchmark
                synchronous.syncStandby = true
                let withStandby = try await synchronous.run()
                if json {
                    return print(
                        String(
                            decoding: try APICoding.encoder(pretty: true).encode([report, withStandby]),
                            as: UTF8.self))
                }
                print(
                    "aurora-bench dispatch --sync-standby (\(rate)/s for \(seconds) s, \(workers) workers, release=\(isReleaseBuild))"
                )
                for (label, one) in [("lead alone  ", report), ("sync standby", withStandby)] {
                    let figures = String(
                        format: "dispatched %d/%d, failed %d, p50 %.2f ms, p99 %.2f ms, max %.1f ms", one.dispatched,
                        one.submitted, one.failed, one.p50Ms, one.p99Ms, one.maxMs)
                    print("  \(label): \(figures)")
                }
                if !withStandby.syncStandby { print("  WARNING: the standby was no longer synchronous at the end") }
                print(
                    String(
                        format: "  synchronous replication's cost on submit → worker: p50 %+.2f ms, p99 %+.2f ms",
                        withStandby.p50Ms - report.p50Ms, withStandby.p99Ms - report.p99Ms))
                return
            }
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print("aurora-bench dispatch (\(rate)/s for \(seconds) s, \(workers) workers, release=\(isReleaseBuild))")
            print("  submitted \(report.submitted), dispatched \(report.dispatched), failed \(report.failed)")
            if decoys > 0 || minVram > 0 {
                print(
                    "  \(decoys) decoy nodes, min VRAM \(minVram) MB: \(report.explained) submissions answered queued with their placement explanation"
                )
            }
            print(
                String(
                    format:
                        "  submit → worker p50 %.2f ms, p99 %.2f ms, max %.1f ms (target p99 <= 5 ms); lead CPU %.0f %% of one core",
                    report.p50Ms, report.p99Ms, report.maxMs, report.leadCPUPercentOfOneCore))
        }
    }

    /// `aurora-bench requeue`.
    struct ReplicaBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "replica",
            abstract:
                "Time from stopping a PostgreSQL primary to its standby's agent reporting disconnected, and the monitor's CPU cost.",
            discussion:
                "Starts a primary and a streaming standby (pg_basebackup -R; as the postgres user when root) and a lead agent watching the standby every 2 s."
        )

        @Option(help: "How many primary stops to time.") var runs = 10
        @Option(help: "Seconds of idle sampling over which CPU is measured.") var idleSeconds = 60
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
            guard (5...3600).contains(idleSeconds) else { throw ValidationError("--idle-seconds must be 5...3600") }
        }

        func run() async throws {
            let benchmark = ReplicaBenchmark(
                executable: agent.path, runs: runs, idleSeconds: idleSeconds, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench replica (\(runs) runs, sampling every \(Int(report.intervalS)) s, release=\(isReleaseBuild))"
            )
            print(
                String(
                    format:
                        "  primary stopped to disconnected: median %.0f ms, min %.0f ms, max %.0f ms (target <= 10000 ms)",
                    report.disconnectMedianMs, report.disconnectMs.min() ?? .nan, report.disconnectMs.max() ?? .nan))
            print(String(format: "  primary started to streaming: median %.0f ms", report.reconnectMedianMs))
            print(
                String(
                    format:
                        "  agent CPU over %d s idle: %.2f%% of a core with the monitor, %.2f%% without; monitoring costs %.2f%% (target < 1%%)",
                    report.idleSeconds, report.cpuPctWithMonitor, report.cpuPctWithout,
                    report.cpuPctWithMonitor - report.cpuPctWithout))
        }
    }

    struct Failover: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "failover",
            abstract:
                "Time from SIGKILL of the lead to its promoted standby taking writes, and to every node heartbeating to it.",
            discussion: """
                Each run: an external PostgreSQL, a lead and a standby on it, N compute agents. The lead is killed and the
                standby promoted at once (POST /api/lead/promote), so detection is not counted: promotion is manual.
                Reference points (their documentation, not run here): Patroni with ttl 30 / loop_wait 10 fails over in
                about 31 s on average; Consul's Raft elects in 5-10 s at the default raft_multiplier, then clients retry.
                """)

        @Option(help: "How many failovers to time.") var runs = 10
        @Option(help: "Compute agents that must follow the new lead.") var nodes = 3
        @Flag(help: "Use a 3-member etcd (election.etcd, ttl 5 s): nobody promotes; detection is counted.")
        var etcd = false
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
            guard (1...50).contains(nodes) else { throw ValidationError("--nodes must be 1...50") }
        }

        func run() async throws {
            let report = try await FailoverBenchmark(
                executable: agent.path, runs: runs, nodes: nodes, etcd: etcd, progress: progressLine
            ).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench failover (\(runs) runs, \(nodes) nodes, "
                    + (etcd ? "automatic through a 3-member etcd, ttl 5 s" : "promoted at once by hand")
                    + ", release=\(isReleaseBuild))")
            print(
                String(
                    format: "  kill -9 to writes on the new lead: median %.0f ms, max %.0f ms (target <= 10000 ms)",
                    Samples.median(report.toWritesMs), report.toWritesMs.max() ?? .nan))
            print(
                String(
                    format:
                        "  kill -9 to every node heartbeating to it: median %.0f ms, max %.0f ms (target <= 12000 ms)",
                    Samples.median(report.toAllNodesMs), report.toAllNodesMs.max() ?? .nan))
            if !etcd {
                print(
                    String(
                        format: "  the promotion call alone: median %.0f ms, max %.0f ms",
                        Samples.median(report.promoteCallMs), report.promoteCallMs.max() ?? .nan))
            }
        }
    }

    struct Gateway: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gateway",
            abstract:
                "Latency the OpenAI-compatible gateway adds: a fake backend direct, through the mesh, and through LiteLLM.",
            discussion: """
                One fake OpenAI-style backend that answers at once; the same chat completions, from N concurrent
                clients, sent to it directly, through the mesh (a compute agent, the lead, a worker) and, with
                --litellm PATH (the `litellm` executable of a virtualenv with litellm[proxy]), through LiteLLM's
                proxy configured with the same backend. Prints p50/p99 per path, what each adds to the direct call,
                and requests/s. Streaming (time to first token) is not measured: the gateway does not stream yet.
                """)

        @Option(help: "Concurrent clients.") var clients = 50
        @Option(help: "Chat completions per path.") var requests = 2000
        @Option(help: "Compute agents serving the model.") var nodes = 2
        @Option(help: "The litellm executable (litellm[proxy]); without it LiteLLM is not measured.")
        var litellm: String?
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...500).contains(clients) else { throw ValidationError("--clients must be 1...500") }
            guard (1...1_000_000).contains(requests) else { throw ValidationError("--requests must be 1...1000000") }
            guard (1...20).contains(nodes) else { throw ValidationError("--nodes must be 1...20") }
            if let litellm, !FileManager.default.isExecutableFile(atPath: litellm) {
                throw ValidationError("--litellm \(litellm) is not an executable")
            }
        }

        func run() async throws {
            let report = try await GatewayBenchmark(
                executable: agent.path, clients: clients, requests: requests, nodes: nodes, liteLLM: litellm,
                progress: progressLine
            ).run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print("aurora-bench gateway (\(clients) clients, \(requests) requests per path, release=\(isReleaseBuild))")
            for path in report.paths {
                print(
                    "  " + path.name.padding(toLength: 8, withPad: " ", startingAt: 0)
                        + String(
                            format: "p50 %7.2f ms, p99 %7.2f ms, %7.0f requests/s, %d failed", path.p50Ms, path.p99Ms,
                            path.requestsPerSecond, path.failed)
                        + String(
                            format: "; streamed: first event p50 %7.2f ms, p99 %7.2f ms, %d failed",
                            path.ttftP50Ms ?? 0,
                            path.ttftP99Ms ?? 0, path.streamFailed ?? 0))
            }
            print(
                String(
                    format: "  the mesh adds p50 %.2f ms, p99 %.2f ms (target p99 <= 5 ms)", report.meshAddedP50Ms,
                    report.meshAddedP99Ms))
            if let p50 = report.liteLLMAddedP50Ms, let p99 = report.liteLLMAddedP99Ms {
                print(String(format: "  LiteLLM adds p50 %.2f ms, p99 %.2f ms", p50, p99))
                print(
                    String(
                        format: "  mesh / LiteLLM added: p50 %.2f, p99 %.2f (target p99 <= 0.20)",
                        report.meshAddedP50Ms / p50, report.meshAddedP99Ms / p99))
            } else {
                print("  LiteLLM not measured (pass --litellm PATH)")
            }
            if let p50 = report.meshAddedTTFTP50Ms, let p99 = report.meshAddedTTFTP99Ms {
                print(String(format: "  streamed, the mesh adds to the first token p50 %.2f ms, p99 %.2f ms", p50, p99))
            }
            if let p50 = report.liteLLMAddedTTFTP50Ms, let p99 = report.liteLLMAddedTTFTP99Ms,
                let mesh50 = report.meshAddedTTFTP50Ms, let mesh99 = report.meshAddedTTFTP99Ms
            {
                print(
                    String(
                        format: "  streamed, LiteLLM adds p50 %.2f ms, p99 %.2f ms; mesh / LiteLLM: p50 %.2f, p99 %.2f",
                        p50, p99, mesh50 / p50, mesh99 / p99))
            }
        }
    }

    struct Requeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Time from kill -9 of the worker running a job to the job running on another worker (two real compute agents)."
        )

        @Option(help: "How many kills to time.") var runs = 10
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100") }
        }

        func run() async throws {
            let benchmark = RequeueBenchmark(executable: agent.path, runs: runs, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print("aurora-bench requeue (\(runs) runs, release=\(isReleaseBuild))")
            print(
                String(
                    format:
                        "  kill -9 to running elsewhere: median %.0f ms, min %.0f ms, max %.0f ms (target <= 5000 ms)",
                    report.medianMs,
                    report.ms.min() ?? .nan, report.ms.max() ?? .nan))
        }
    }

    /// `aurora-bench queue`.
    struct Queue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The lead's RSS with many queued jobs (no worker takes them).")

        @Option(help: "Jobs to queue.") var jobs = 10_000
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...1_000_000).contains(jobs) else { throw ValidationError("--jobs must be 1...1000000") }
        }

        func run() async throws {
            let benchmark = QueueMemoryBenchmark(executable: agent.path, jobs: jobs, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print("aurora-bench queue (\(jobs) jobs, release=\(isReleaseBuild))")
            print(String(format: "  submitted at %.0f/s, failed %d", report.submitsPerSecond, report.failed))
            print(
                "  lead RSS: \(report.leadRSSMBBefore.map { String(format: "%.1f", $0) } ?? "?") MB empty, "
                    + "\(report.leadRSSMB.map { String(format: "%.1f", $0) } ?? "?") MB with \(jobs) queued (target < 64 MB; PostgreSQL not counted)"
            )
        }
    }
}

extension AuroraBench {
    /// `aurora-bench secrets`.
    struct SecretsBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "secrets",
            abstract: "Resolved reads on the lead and from a node's cache (p50/p99), and the rotation of many secrets.")

        @Option(help: "Secrets to write (and rotate).") var secrets = 10_000
        @Option(help: "Seconds of reads on the lead.") var seconds = 10
        @Flag(help: "Node reads over pinned TLS 1.3 (the lead's tls.listen) with kept-alive connections.") var tls =
            false
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...1_000_000).contains(secrets) else { throw ValidationError("--secrets must be 1...1000000") }
            guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
        }

        func run() async throws {
            let benchmark = SecretsBenchmark(
                executable: agent.path, secrets: secrets, seconds: seconds, tls: tls, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench secrets (\(secrets) secrets, \(tls ? "pinned TLS 1.3" : "plain HTTP"), release=\(isReleaseBuild))"
            )
            print(
                String(
                    format:
                        "  lead, signed node reads (16 concurrent): %.0f/s, p50 %.2f ms, p99 %.2f ms (target >= 10000/s, p99 <= 2 ms)",
                    report.leadReadsPerSecond, report.leadP50Ms, report.leadP99Ms))
            print(
                String(
                    format:
                        "  CPU per read: lead agent %.0f us, its PostgreSQL %.0f us, this client %.0f us; one lead core serves %.0f reads/s",
                    report.leadCPUMicrosPerRead, report.storeCPUMicrosPerRead, report.clientCPUMicrosPerRead,
                    report.readsPerLeadCore))
            print(
                String(
                    format:
                        "  node cache (lead away, through the node's API): p50 %.1f µs, p99 %.1f µs (target p99 <= 100 µs)",
                    report.cacheP50Us, report.cacheP99Us))
            print(
                String(
                    format: "  rotation: %d data keys re-wrapped in %.2f s (target < 5 s)", report.rewrapped,
                    report.rotationSeconds))
        }
    }
}

extension AuroraBench {
    /// `aurora-bench redis`.
    struct RedisBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "redis",
            abstract:
                "Events through the lead to Redis: end-to-end latency from a state change to a channel consumer, live and catch-up events/s.",
            discussion:
                "Starts redis-server (from PATH) and a lead on loopback ports; the consumer subscribes in this process."
        )

        @Option(help: "State changes per second in the latency phase (each: a submit and a cancel, two events).")
        var rate = 500
        @Option(help: "Seconds of each live phase.") var seconds = 10
        @Option(name: .customLong("catch-up"), help: "Events written to the store for the catch-up phase.")
        var catchUp = 50_000
        @Flag(help: "Print the report as JSON.") var json = false
        @OptionGroup var agent: AgentBinary

        func validate() throws {
            guard (1...20_000).contains(rate) else { throw ValidationError("--rate must be 1...20000") }
            guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
            guard (1...5_000_000).contains(catchUp) else { throw ValidationError("--catch-up must be 1...5000000") }
        }

        func run() async throws {
            let benchmark = RedisBenchmark(
                executable: agent.path, rate: rate, seconds: seconds, catchUp: catchUp, progress: progressLine)
            let report = try await benchmark.run()
            if json {
                return print(String(decoding: try APICoding.encoder(pretty: true).encode(report), as: UTF8.self))
            }
            print(
                "aurora-bench redis (\(rate) changes/s for \(seconds) s, catch-up \(catchUp), release=\(isReleaseBuild))"
            )
            print(
                String(
                    format:
                        "  API call that changes state → Redis consumer: p50 %.2f ms, p99 %.2f ms, max %.1f ms over %d changes (target p99 <= 10 ms)",
                    report.latencyP50Ms, report.latencyP99Ms, report.latencyMaxMs, report.latencySamples))
            print(
                String(
                    format: "  event committed (its `at`, ms resolution) → Redis consumer: p50 %.2f ms, p99 %.2f ms",
                    report.commitToConsumerP50Ms, report.commitToConsumerP99Ms))
            print(
                String(
                    format: "  live, 32 clients: %.0f events/s reached the consumer (%d events)",
                    report.liveEventsPerSecond, report.liveEvents))
            print(
                String(
                    format: "  catch-up from the store: %.0f events/s (%d events) (target >= 5000/s)",
                    report.catchUpEventsPerSecond, report.catchUpEvents))
            print(
                "  stream: \(report.streamEvents) entries for \(report.storeEvents) events, \(report.duplicates) duplicates, \(report.outOfOrder) out of order; \(report.failed) failed calls"
            )
        }
    }
}

var isReleaseBuild: Bool {
    #if DEBUG
        false
    #else
        true
    #endif
}
