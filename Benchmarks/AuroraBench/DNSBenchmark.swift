import AuroraAPI
import AuroraTestKit
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench dns`: a lead's mesh DNS server against dnsmasq serving the same names from a
/// hosts file, both measured with dnsperf (Debian's) in one run. Throughput: dnsperf with 100
/// queries outstanding for `seconds`; latency: a fixed rate with every answer's time (`-v`),
/// p50/p99.
struct DNSBenchmark: Sendable {
    struct Server: Codable, Sendable {
        var queriesPerSecond: Double
        var lost: Int
        var p50Ms: Double
        var p99Ms: Double

        enum CodingKeys: String, CodingKey {
            case lost
            case queriesPerSecond = "queries_per_s", p50Ms = "p50_ms", p99Ms = "p99_ms"
        }
    }

    struct Report: Codable, Sendable {
        var nodes: Int
        var seconds: Int
        var rate: Int
        var agent: Server
        var dnsmasq: Server
    }

    var executable: String
    var nodes: Int
    var seconds: Int
    var rate: Int
    var progress: @Sendable (String) -> Void

    func run() async throws -> Report {
        for tool in ["/usr/bin/dnsperf", "/usr/sbin/dnsmasq"] {
            guard FileManager.default.isExecutableFile(atPath: tool) else {
                throw TestKitError("\(tool) is missing (apt-get install dnsperf dnsmasq-base)")
            }
        }
        let port = try freePort()
        let lead = try await BenchLead.start(
            "dns", executable: executable, config: "dns:\n  listen: \"127.0.0.1:\(port)\"\n")
        defer { lead.discard() }
        try await lead.joinIdleSimulated(nodes, progress: progress)
        let listed = try await http(lead.baseURL + Routes.nodes, headers: ["Authorization": "Bearer \(lead.token)"])
            .decode(NodeList.self).nodes
        let names = listed.map { ($0.name + ".aurora.internal", $0.vpnIP) }
        let queries = lead.root + "/queries.txt"
        try names.map { "\($0.0) A" }.joined(separator: "\n").appending("\n")
            .write(toFile: queries, atomically: true, encoding: .utf8)
        let hosts = lead.root + "/hosts"
        try names.map { "\($0.1) \($0.0)" }.joined(separator: "\n").appending("\n")
            .write(toFile: hosts, atomically: true, encoding: .utf8)

        progress("measuring the agent's DNS server (\(listed.count) names)…")
        let agent = try await measure(port: port, queries: queries, scratch: lead.root)

        let dnsmasqPort = try freePort()
        let dnsmasq = try ChildProcess(
            "/usr/sbin/dnsmasq",
            [
                "--keep-in-foreground", "--port=\(dnsmasqPort)", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--addn-hosts=\(hosts)", "--local=/aurora.internal/", "--local-ttl=5",
                "--user=root", "--pid-file=", "--cache-size=10000",
            ], outputDirectory: lead.root)
        defer { dnsmasq.signal(SIGKILL) }
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "dnsmasq to answer") {
            () async throws -> Bool? in
            let dig = try await ChildProcess.run(
                "/usr/bin/dnsperf",
                ["-s", "127.0.0.1", "-p", String(dnsmasqPort), "-d", queries, "-n", "1", "-t", "1"],
                outputDirectory: lead.root)
            return dig.stdout.contains("Queries completed:") && !dig.stdout.contains("Queries completed:    0 ")
                ? true : nil
        }
        progress("measuring dnsmasq on the same names…")
        let peer = try await measure(port: dnsmasqPort, queries: queries, scratch: lead.root)
        return Report(nodes: listed.count, seconds: seconds, rate: rate, agent: agent, dnsmasq: peer)
    }

    /// Throughput with 100 queries outstanding, then latencies at `rate` queries/s.
    func measure(port: Int, queries: String, scratch: String) async throws -> Server {
        let common = ["-s", "127.0.0.1", "-p", String(port), "-d", queries, "-l", String(seconds), "-t", "2"]
        let throughput = try await ChildProcess.run(
            "/usr/bin/dnsperf", common + ["-c", "4", "-q", "100"], outputDirectory: scratch,
            timeout: .seconds(Int64(seconds) + 30))
        guard throughput.code == 0, let qps = Self.number(after: "Queries per second:", in: throughput.stdout) else {
            throw TestKitError("dnsperf failed: \(throughput.stdout.suffix(800)) \(throughput.stderr.suffix(400))")
        }
        let lost = Int(Self.number(after: "Queries lost:", in: throughput.stdout) ?? 0)
        let timed = try await ChildProcess.run(
            "/usr/bin/dnsperf", common + ["-Q", String(rate), "-v"], outputDirectory: scratch,
            timeout: .seconds(Int64(seconds) + 30))
        // Verbose lines: "> NOERROR sim-1.aurora.internal A 0.000104"
        let latencies = timed.stdout.split(separator: "\n").compactMap { line -> Double? in
            guard line.hasPrefix("> ") else { return nil }
            return line.split(separator: " ").last.flatMap { Double($0) }.map { $0 * 1000 }
        }.sorted()
        guard !latencies.isEmpty else {
            throw TestKitError("dnsperf -v printed no latencies: \(timed.stdout.suffix(400))")
        }
        return Server(
            queriesPerSecond: qps, lost: lost, p50Ms: Samples.percentile(latencies, 0.5),
            p99Ms: Samples.percentile(latencies, 0.99))
    }

    /// The number after `label` on its line of dnsperf's summary.
    static func number(after label: String, in text: String) -> Double? {
        guard let range = text.range(of: label) else { return nil }
        let rest = text[range.upperBound...].drop { $0 == " " }
        return Double(rest.prefix { $0.isNumber || $0 == "." })
    }
}
