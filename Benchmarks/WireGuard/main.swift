// wireguard-bench: the two WireGuard figures of issue 7, measured for real (root needed).
//   1. render + apply of a configuration with N peers (default 250) on a wireguard-go
//      interface in a private network namespace: render, write, `wg syncconf` (median, p99
//      over runs), first load and an incremental change of one peer.
//   2. time from a new compute agent's start (it joins at once) to its first ping over the
//      mesh to the lead, with a lead and joiners each in their own namespace.
//
// Usage: swift run -c release wireguard-bench [--peers 250] [--runs 20] [--joins 5] [--json]
// The agents are the built `nodeagent` in AURORA_BIN_DIR (default .build/debug).

import AuroraAPI
import AuroraTestKit
import Foundation
import Mesh

#if canImport(Glibc)
    import Glibc
#endif

struct Report: Codable {
    var peers: Int
    var runs: Int
    var firstApplyMs: [Double]
    var changeApplyMs: [Double]
    var renderOnlyMs: [Double]
    var joinToPingMs: [Double]

    enum CodingKeys: String, CodingKey {
        case peers, runs
        case firstApplyMs = "first_apply_ms", changeApplyMs = "change_apply_ms", renderOnlyMs = "render_only_ms",
            joinToPingMs = "join_to_ping_ms"
    }
}

func option(_ name: String, _ fallback: Int) -> Int {
    guard let index = CommandLine.arguments.firstIndex(of: name), index + 1 < CommandLine.arguments.count,
        let value = Int(CommandLine.arguments[index + 1]), value > 0
    else { return fallback }
    return value
}

func ms(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

func randomKey() -> String { Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString() }

func log(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

/// Render + apply of `peers` peers, `runs` times each on a fresh interface (first load) and
/// then with one peer's endpoint changed (incremental).
func applyBenchmark(_ net: NetworkNamespaces, scratch: ScratchDirectory, peers count: Int, runs: Int) async throws -> (
    [Double], [Double], [Double]
) {
    let (namespace, _) = try await net.node(1)
    let interface = "\(net.tag)-wgb"
    let network = try IPv4Network(parsing: "10.96.0.0/16")
    var members = [
        WireGuardConfig.Member(name: "me", publicKey: randomKey(), vpnIP: "10.96.0.1", endpoint: nil, behindNAT: false)
    ]
    for index in 0..<count {
        members.append(
            .init(
                name: String(format: "peer-%04d", index), publicKey: randomKey(),
                vpnIP: IPv4Network.format(network.host(index + 2)),
                endpoint: "198.18.\(index / 250).\(index % 250 + 1):51820", behindNAT: index % 7 == 0))
    }
    let privateKey = randomKey()
    let path = scratch.path + "/bench.setconf"
    var first: [Double] = [], change: [Double] = [], render: [Double] = []
    for run in 0..<runs {
        // A fresh interface for each run: the first load is a load of every peer.
        let created = try await net.run(in: namespace, "/usr/bin/wireguard-go", [interface])
        guard created.code == 0 else { throw TestKitError("wireguard-go failed: \(created.stderr)") }
        _ = try await net.run(in: namespace, "/usr/sbin/ip", ["address", "add", "10.96.0.1/16", "dev", interface])
        _ = try await net.run(in: namespace, "/usr/sbin/ip", ["link", "set", "dev", interface, "up"])

        var started = ContinuousClock.now
        let config = WireGuardConfig.build(
            for: members[0], privateKey: privateKey, listenPort: 51820, network: network, members: members)
        try config.setconf().write(toFile: path, atomically: true, encoding: .utf8)
        render.append(ms(started.duration(to: .now)))
        let loaded = try await net.run(in: namespace, "/usr/bin/wg", ["syncconf", interface, path])
        guard loaded.code == 0 else { throw TestKitError("wg syncconf failed: \(loaded.stderr)") }
        first.append(ms(started.duration(to: .now)))

        var moved = members
        moved[1 + run % count].endpoint = "198.19.0.\(run % 250 + 1):51820"
        started = ContinuousClock.now
        let next = WireGuardConfig.build(
            for: moved[0], privateKey: privateKey, listenPort: 51820, network: network, members: moved)
        let diff = WireGuardDiff(from: config, to: next)
        if diff.peersOrInterfaceChanged {
            try next.setconf().write(toFile: path, atomically: true, encoding: .utf8)
            _ = try await net.run(in: namespace, "/usr/bin/wg", ["syncconf", interface, path])
        }
        change.append(ms(started.duration(to: .now)))

        for pid in processes(mentioning: "wireguard-go \(interface)") { kill(pid, SIGTERM) }
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "the bench interface to go") {
            () async throws -> Bool? in
            try await net.run(in: namespace, "/usr/sbin/ip", ["link", "show", "dev", interface]).code != 0 ? true : nil
        }
    }
    return (first, change, render)
}

/// A lead in one namespace, then `joins` compute agents one after another, each in its own:
/// the time from starting the agent to its first answered ping to the lead's mesh address.
func joinBenchmark(_ net: NetworkNamespaces, scratch: ScratchDirectory, joins: Int) async throws -> [Double] {
    let port = 7000
    func config(_ name: String, _ index: Int, lead: Bool, underlay: String) throws -> String {
        let file = scratch.path + "/\(name).yaml"
        try """
        wireguard:
          mode: apply
          interface: \(net.tag)-wg\(index)
          cidr: 10.97.0.0/24
        \(lead ? "  endpoint: \"\(underlay):51820\"" : "")
        http:
          insecure_plain: true
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }
    let (leadNS, leadIP) = try await net.node(10)
    let leadURL = "http://\(leadIP):\(port)"
    let lead = try net.spawn(
        in: leadNS, Binaries.nodeagent,
        [
            "run", "--profile", "lead", "--name", "bench-lead", "--data-dir", scratch.path + "/lead",
            "--listen", "\(leadIP):\(port)", "--log-level", "error",
            "--config", try config("lead", 10, lead: true, underlay: leadIP),
        ])
    _ = try await poll(timeout: .seconds(60), every: .milliseconds(100), "the lead to be healthy") {
        () async throws -> Bool? in
        if let code = lead.exitCode { throw TestKitError("the lead exited with \(code): \(lead.stderr.suffix(400))") }
        return try await net.run(in: leadNS, "/usr/bin/curl", ["-s", "-m", "2", leadURL + Routes.health]).stdout
            .contains("\"status\":\"ok\"") ? true : nil
    }
    let token = try await net.run(
        in: leadNS, Binaries.auroraCLI,
        [
            "token", "create", "--profile", "compute", "--reusable", "--agent", leadURL,
            "--data-dir", scratch.path + "/lead",
        ]
    ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    var times: [Double] = []
    for join in 1...joins {
        let index = 10 + join
        let (namespace, underlay) = try await net.node(index)
        let name = "joiner-\(join)"
        let started = ContinuousClock.now
        let agent = try net.spawn(
            in: namespace, Binaries.nodeagent,
            [
                "run", "--profile", "compute", "--name", name, "--data-dir", scratch.path + "/" + name, "--listen",
                "\(underlay):\(port)",
                "--lead", leadURL, "--join-token", token, "--log-level", "error", "--config",
                try config(name, index, lead: false, underlay: underlay),
            ])
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(10), "\(name) to ping the lead over the mesh") {
            () async throws -> Bool? in
            if let code = agent.exitCode {
                throw TestKitError("\(name) exited with \(code): \(agent.stderr.suffix(400))")
            }
            let ping = try await net.run(in: namespace, "/usr/bin/ping", ["-c", "1", "-W", "0.2", "-q", "10.97.0.1"])
            return ping.code == 0 ? true : nil
        }
        times.append(ms(started.duration(to: .now)))
        log(String(format: "  join %d: first ping %.0f ms after the agent started", join, times.last!))
    }
    return times
}

let peers = option("--peers", 250), runs = option("--runs", 20), joins = option("--joins", 5)
let json = CommandLine.arguments.contains("--json")
do {
    try Binaries.requireTool(
        "/usr/bin/wireguard-go", hint: "apt-get install --no-install-recommends wireguard-go wireguard-tools")
    let scratch = try ScratchDirectory("wg-bench")
    defer { scratch.remove() }
    let net = try await NetworkNamespaces(outputDirectory: scratch.path)
    let report: Report
    do {
        log("render + apply of \(peers) peers, \(runs) runs")
        let (first, change, render) = try await applyBenchmark(net, scratch: scratch, peers: peers, runs: runs)
        log("join to first ping, \(joins) joins")
        let joined = try await joinBenchmark(net, scratch: scratch, joins: joins)
        report = Report(
            peers: peers, runs: runs, firstApplyMs: first, changeApplyMs: change, renderOnlyMs: render,
            joinToPingMs: joined)
    } catch {
        await net.remove()
        throw error
    }
    await net.remove()
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
        print("wireguard-bench (\(peers) peers, \(runs) runs, \(joins) joins; agents from \(Binaries.directory))")
        print(
            String(
                format:
                    "  render + write + wg syncconf, all %d peers new: median %.1f ms, p99 %.1f ms (target < 100 ms)",
                peers,
                median(report.firstApplyMs), percentile(report.firstApplyMs, 0.99)))
        print(
            String(
                format: "  one peer changed (render, diff, syncconf): median %.1f ms, p99 %.1f ms",
                median(report.changeApplyMs),
                percentile(report.changeApplyMs, 0.99)))
        print(String(format: "  render + write alone: median %.2f ms", median(report.renderOnlyMs)))
        print(
            String(
                format:
                    "  agent start (join) to first ping over the mesh: median %.0f ms, max %.0f ms (target < 3000 ms)",
                median(report.joinToPingMs), report.joinToPingMs.max() ?? .nan))
    }
} catch {
    FileHandle.standardError.write(Data("wireguard-bench: \(error)\n".utf8))
    exit(1)
}
