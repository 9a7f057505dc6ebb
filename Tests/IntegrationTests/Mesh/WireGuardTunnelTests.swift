import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real tunnels: a lead and compute agents, each in its own network namespace (veth to a
/// bridge in a hub namespace), with `wireguard.mode: apply` and wireguard-go.
@Suite("WireGuard mesh (agents in network namespaces, wireguard-go)", .serialized)
struct WireGuardTunnelTests {
    static let port = 7000

    /// One agent in its namespace.
    struct Member {
        var name: String
        var index: Int
        var namespace: String
        var underlay: String
        var dataDir: String
        var interface: String
        var meshIP: String { "10.77.0.\(index)" }
        var url: String { "http://\(underlay):\(WireGuardTunnelTests.port)" }
    }

    @Test(
        "every pair pings over the mesh; a fourth node joins without resetting sessions; tunnels outlive the lead; a restarted agent brings its interface back from the last good config"
    )
    func tunnels() async throws {
        try Binaries.requireTool(
            "/usr/bin/wireguard-go", hint: "apt-get install --no-install-recommends wireguard-go wireguard-tools")
        let scratch = try ScratchDirectory("wireguard")
        defer { scratch.remove() }
        let net = try await NetworkNamespaces(outputDirectory: scratch.path)
        do {
            try await scenario(net, scratch: scratch)
        } catch {
            await net.remove()
            throw error
        }
        await net.remove()
        #expect(await net.namespaces.isEmpty)
    }

    func scenario(_ net: NetworkNamespaces, scratch: ScratchDirectory) async throws {
        func member(_ name: String, _ index: Int) async throws -> Member {
            let (namespace, underlay) = try await net.node(index)
            return Member(
                name: name, index: index, namespace: namespace, underlay: underlay, dataDir: scratch.path + "/" + name,
                interface: "\(net.tag)-wg\(index)")
        }
        func start(_ m: Member, profile: String, extra: [String]) throws -> ChildProcess {
            let file = scratch.path + "/\(m.name).yaml"
            try """
            wireguard:
              mode: apply
              interface: \(m.interface)
              cidr: 10.77.0.0/24
            \(profile == "lead" ? "  endpoint: \"\(m.underlay):51820\"" : "")
            vpn_ip: \(m.meshIP)
            http:
              insecure_plain: true
            dns:
              mesh: true
            """.write(toFile: file, atomically: true, encoding: .utf8)
            return try net.spawn(
                in: m.namespace, Binaries.nodeagent,
                [
                    "run", "--profile", profile, "--name", m.name, "--data-dir", m.dataDir, "--listen",
                    "\(m.underlay):\(Self.port)",
                    "--config", file,
                ] + extra)
        }
        func healthy(_ m: Member, _ process: ChildProcess) async throws {
            _ = try await poll(timeout: .seconds(60), every: .milliseconds(100), "\(m.name) to be healthy") {
                () async throws -> Bool? in
                if let code = process.exitCode {
                    throw TestKitError("\(m.name) exited with \(code): \(process.stderr.suffix(600))")
                }
                let answer = try await net.run(
                    in: m.namespace, "/usr/bin/curl", ["-s", "-m", "2", m.url + Routes.health])
                return answer.stdout.contains("\"status\":\"ok\"") ? true : nil
            }
        }
        func allPing(_ members: [Member], _ what: String) async throws {
            _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), what) { () async throws -> Bool? in
                for a in members {
                    for b in members where a.name != b.name {
                        guard await net.pings(from: a.namespace, b.meshIP) else { return nil }
                    }
                }
                return true
            }
        }
        /// Handshake time and counters of `m`'s peers, by public key.
        func dump(_ m: Member) async throws -> [String: (handshake: Int64, rx: Int64, tx: Int64)] {
            let text = try await net.run(in: m.namespace, "/usr/bin/wg", ["show", m.interface, "dump"]).stdout
            var peers: [String: (Int64, Int64, Int64)] = [:]
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: "\t").map(String.init)
                guard fields.count >= 8 else { continue }
                peers[fields[0]] = (Int64(fields[4]) ?? 0, Int64(fields[5]) ?? 0, Int64(fields[6]) ?? 0)
            }
            return peers
        }

        let lead = try await member("wg-lead", 1), a = try await member("wg-a", 2), b = try await member("wg-b", 3),
            c = try await member("wg-c", 4)
        let leadProcess = try start(lead, profile: "lead", extra: [])
        try await healthy(lead, leadProcess)
        let tokenAnswer = try await net.run(
            in: lead.namespace, Binaries.auroraCLI,
            [
                "token", "create", "--profile", "compute", "--reusable",
                "--agent", lead.url, "--data-dir", lead.dataDir,
            ])
        let token = tokenAnswer.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(tokenAnswer.code == 0 && !token.isEmpty, "\(tokenAnswer.stderr)")
        var processes: [String: ChildProcess] = [:]
        for m in [a, b] {
            processes[m.name] = try start(m, profile: "compute", extra: ["--lead", lead.url, "--join-token", token])
        }
        for m in [a, b] { try await healthy(m, processes[m.name]!) }

        // After join every pair pings over the mesh addresses.
        try await allPing([lead, a, b], "lead, a and b to ping each other over the mesh")
        // Every agent answers DNS on its mesh address (dns.mesh): a asks b for a's own name over
        // the tunnel; with its own agent as the namespace's resolver, a resolves and pings b by name.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(200), "b's DNS server on its mesh address") {
            () async throws -> Bool? in
            let asked = try await net.run(
                in: a.namespace, "/usr/bin/dig",
                ["@\(b.meshIP)", "wg-a.aurora.internal", "+short", "+tries=1", "+time=1"])
            return asked.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == a.meshIP ? true : nil
        }
        let resolverDirectory = "/etc/netns/\(a.namespace)"
        try FileManager.default.createDirectory(atPath: resolverDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: resolverDirectory) }
        try "nameserver \(a.meshIP)\n".write(
            toFile: resolverDirectory + "/resolv.conf", atomically: true, encoding: .utf8)
        let byName = try await poll(timeout: .seconds(20), every: .milliseconds(200), "a to resolve wg-b by name") {
            () async throws -> String? in
            let found = try await net.run(in: a.namespace, "/usr/bin/getent", ["hosts", "wg-b.aurora.internal"]).stdout
            return found.hasPrefix(b.meshIP + " ") ? found : nil
        }
        #expect(byName.contains("wg-b.aurora.internal"))
        #expect(await net.pings(from: a.namespace, "wg-b.aurora.internal"), "ping by name over the mesh")
        // The rendered file is 0600 and holds the node's own key; the CLI hides it unless asked.
        let confPath = a.dataDir + "/wireguard/\(a.interface).conf"
        var info = stat()
        #expect(stat(confPath, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let shown = try await net.run(
            in: a.namespace, Binaries.auroraCLI, ["wg", "config", "--agent", a.url, "--data-dir", a.dataDir])
        #expect(
            shown.code == 0 && shown.stdout.contains("[Peer]") && shown.stdout.contains("hidden")
                && !shown.stdout.contains(privateKey(a)))
        // `wg show` as the agent last observed it (each heartbeat interval).
        let view = try await poll(timeout: .seconds(10), every: .milliseconds(200), "a's view of its two peers") {
            () async throws -> WireGuardStatus? in
            let status = try await net.run(
                in: a.namespace, Binaries.auroraCLI,
                ["wg", "show", "--json", "--agent", a.url, "--data-dir", a.dataDir])
            let view = try APICoding.decoder().decode(WireGuardStatus.self, from: Data(status.stdout.utf8))
            return view.peers.count == 2 && view.peers.allSatisfy({ $0.handshakeAgeS != nil }) ? view : nil
        }
        #expect(view.up && view.mode == "apply" && view.address == "10.77.0.2/24")
        #expect(Set(view.peers.compactMap(\.name)) == ["wg-lead", "wg-b"])
        #expect(view.peers.allSatisfy { $0.rxBytes > 0 && $0.txBytes > 0 })

        // A fourth node joins: all pairs ping, and a's existing sessions were not reset.
        let before = try await dump(a)
        processes[c.name] = try start(c, profile: "compute", extra: ["--lead", lead.url, "--join-token", token])
        try await healthy(c, processes[c.name]!)
        try await allPing([lead, a, b, c], "all four to ping each other")
        let after = try await dump(a)
        #expect(after.count == 3)
        for (key, old) in before {
            let new = try #require(after[key])
            #expect(new.handshake == old.handshake || new.handshake >= old.handshake + 120, "handshake of \(key) reset")
            #expect(new.rx >= old.rx && new.tx >= old.tx, "counters of \(key) reset: \(old) → \(new)")
        }
        // The lead's registry has the handshakes: the status table shows their age.
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(200), "handshake ages on the lead") {
            () async throws -> Bool? in
            let table = try await net.run(
                in: lead.namespace, Binaries.auroraCLI,
                ["nodes", "list", "--json", "--agent", lead.url, "--data-dir", lead.dataDir])
            guard let list = try? APICoding.decoder().decode(NodeList.self, from: Data(table.stdout.utf8)) else {
                return nil
            }
            return list.nodes.count == 4 && list.nodes.allSatisfy({ $0.wireguard.handshakeAgeS != nil }) ? true : nil
        }

        // The lead stops: tunnels keep working, the lead's own included.
        leadProcess.signal(SIGTERM)
        #expect(try await leadProcess.waitForExit(timeout: .seconds(15)) == 0)
        try await allPing([lead, a, b, c], "tunnels to keep working with the lead's agent stopped")

        // a restarts while the lead is away, after its interface went away too: the last good
        // configuration brings it back and a pings its peers.
        processes[a.name]!.signal(SIGTERM)
        #expect(try await processes[a.name]!.waitForExit(timeout: .seconds(15)) == 0)
        for pid in AuroraTestKit.processes(mentioning: "wireguard-go \(a.interface)") { kill(pid, SIGTERM) }
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "a's interface to be gone") {
            () async throws -> Bool? in
            try await net.run(in: a.namespace, "/usr/sbin/ip", ["link", "show", "dev", a.interface]).code != 0
                ? true : nil
        }
        processes[a.name] = try start(a, profile: "compute", extra: ["--lead", lead.url])
        try await allPing([a, b, c], "a to ping its peers again with the lead away")
        #expect(await net.pings(from: a.namespace, lead.meshIP))

        for process in processes.values where process.isRunning {
            process.signal(SIGTERM)
            _ = try await process.waitForExit(timeout: .seconds(15))
        }
    }

    func privateKey(_ m: Member) -> String {
        ((try? String(contentsOfFile: m.dataDir + "/keys/wireguard.key", encoding: .utf8)) ?? "no key file")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
