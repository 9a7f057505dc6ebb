import AuroraAPI
import AuroraTestKit
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench relay`: four homes behind NAT in network namespaces (two endpoint-independent,
/// whose pair turns direct; two symmetric, whose pair stays relayed through the relay node), a
/// public lead and a public relay. Between each pair's two homes over the mesh: ping RTT
/// (p50/p99) and iperf3 throughput, with the relay agent's CPU share during the relayed run; then
/// re-NAT of a symmetric home, `runs` times: the time until its relayed pings answer again.
struct RelayBenchmark: Sendable {
    struct Path: Codable, Sendable {
        var rttP50Ms: Double
        var rttP99Ms: Double
        var megabitsPerSecond: Double
        /// CPU seconds the relay agent used per second of the iperf3 run, in percent of one core.
        var relayCPUPercent: Double

        enum CodingKeys: String, CodingKey {
            case rttP50Ms = "rtt_p50_ms", rttP99Ms = "rtt_p99_ms", megabitsPerSecond = "mbit_per_s"
            case relayCPUPercent = "relay_cpu_percent"
        }
    }

    struct Report: Codable, Sendable {
        var direct: Path
        var relayed: Path
        /// Re-NAT → the relayed pair answers again, each run, in ms.
        var roamingMs: [Double]
        var roamingMedianMs: Double

        enum CodingKeys: String, CodingKey {
            case direct, relayed
            case roamingMs = "roaming_ms", roamingMedianMs = "roaming_median_ms"
        }
    }

    var executable: String
    var cli: String
    var seconds: Int
    var pings: Int
    var runs: Int
    var progress: @Sendable (String) -> Void

    func run() async throws -> Report {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/iperf3") else {
            throw TestKitError("/usr/bin/iperf3 is missing (apt-get install iperf3)")
        }
        let root = NSTemporaryDirectory() + "aurora-bench-relay-\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        progress("starting a lead, a relay and four homes behind NAT in namespaces…")
        let mesh = try await NATMesh(
            root: root, homes: [false, false, true, true], executable: executable, cli: cli)
        do {
            let report = try await measure(mesh)
            await mesh.stop()
            return report
        } catch {
            await mesh.stop()
            throw error
        }
    }

    func measure(_ mesh: NATMesh) async throws -> Report {
        let h = mesh.homes
        progress("waiting for home-1 ↔ home-2 to turn direct and home-3 ↔ home-4 to be relayed…")
        _ = try await poll(timeout: .seconds(120), every: .milliseconds(500), "the paths to settle") {
            () async throws -> Bool? in
            let paths = try await mesh.paths()
            return paths["home-1|home-2"]?.mode == .direct && paths["home-3|home-4"]?.mode == .relayed
                && paths["home-3|home-4"]?.relay == mesh.relay.name ? true : nil
        }
        for (a, b) in [(h[0], h[1]), (h[2], h[3])] {
            _ = try await poll(timeout: .seconds(30), every: .milliseconds(200), "\(a.name) to reach \(b.name)") {
                await mesh.net.pings(from: a.namespace, b.meshIP) ? true : nil
            }
        }
        progress("direct: ping and iperf3 between home-1 and home-2…")
        let direct = try await path(mesh, from: h[0], to: h[1])
        progress("relayed: ping and iperf3 between home-3 and home-4 through \(mesh.relay.name)…")
        let relayed = try await path(mesh, from: h[2], to: h[3])
        var roaming: [Double] = []
        for run in 1...runs {
            progress("re-NAT \(run)/\(runs): home-3's router changes its public address…")
            _ = try await mesh.net.renumber(home: 5, back: run % 2 == 0)
            let moved = ContinuousClock.now
            _ = try await poll(timeout: .seconds(60), every: .milliseconds(20), "home-3 ↔ home-4 to answer again") {
                () async throws -> Bool? in
                let ping = try await mesh.net.run(
                    in: h[2].namespace, "/usr/bin/ping", ["-c", "1", "-W", "0.2", "-q", h[3].meshIP])
                return ping.code == 0 ? true : nil
            }
            roaming.append(Measurements.ms(moved.duration(to: .now)))
            // The next run starts from a settled mesh: both ways answer, and the relay has latched.
            _ = try await poll(timeout: .seconds(30), every: .milliseconds(200), "home-4 → home-3") {
                await mesh.net.pings(from: h[3].namespace, h[2].meshIP) ? true : nil
            }
        }
        return Report(direct: direct, relayed: relayed, roamingMs: roaming, roamingMedianMs: Samples.median(roaming))
    }

    /// RTT from `pings` pings 5 ms apart, and iperf3 for `seconds` from `from` to `to`, with the
    /// relay agent's CPU over the iperf3 run.
    func path(_ mesh: NATMesh, from: NATMesh.Member, to: NATMesh.Member) async throws -> Path {
        let ping = try await mesh.net.run(
            in: from.namespace, "/usr/bin/ping", ["-c", String(pings), "-i", "0.005", "-W", "1", to.meshIP])
        let rtts = ping.stdout.split(separator: "\n").compactMap { line -> Double? in
            guard let range = line.range(of: "time=") else { return nil }
            return Double(line[range.upperBound...].split(separator: " ").first ?? "")
        }.sorted()
        guard !rtts.isEmpty else { throw TestKitError("no ping from \(from.name) to \(to.name) answered") }
        let server = try mesh.net.spawn(in: to.namespace, "/usr/bin/iperf3", ["-s", "-1", "-B", to.meshIP])
        defer { server.signal(SIGKILL) }
        let relayPID = mesh.processes[mesh.relay.name]!.pid
        var result: (code: Int32, stdout: String, stderr: String) = (1, "", "")
        var cpu = 0.0
        var wall = 1.0
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "iperf3 to run") {
            () async throws -> Bool? in
            let before = Measurements.cpuSeconds(pid: relayPID) ?? 0, started = ContinuousClock.now
            result = try await mesh.net.run(
                in: from.namespace, "/usr/bin/iperf3", ["-c", to.meshIP, "-t", String(seconds), "-J"])
            cpu = (Measurements.cpuSeconds(pid: relayPID) ?? 0) - before
            wall = Measurements.ms(started.duration(to: .now)) / 1000
            return result.code == 0 ? true : nil
        }
        let json = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let end = json?["end"] as? [String: Any]
        guard let received = ((end?["sum_received"] as? [String: Any])?["bits_per_second"] as? NSNumber)?.doubleValue
        else {
            throw TestKitError("iperf3 gave no throughput: \(result.stdout.prefix(400)) \(result.stderr.prefix(400))")
        }
        return Path(
            rttP50Ms: Samples.percentile(rtts, 0.5), rttP99Ms: Samples.percentile(rtts, 0.99),
            megabitsPerSecond: received / 1e6, relayCPUPercent: cpu / wall * 100)
    }
}
