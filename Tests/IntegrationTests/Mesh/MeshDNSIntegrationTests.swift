import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Every agent's DNS server (`dns.listen`), asked with `dig` (Debian's bind9-dnsutils) over UDP
/// and TCP: a lead and two compute agents on loopback. Names from the registry on the lead and
/// from the cached copy on a node, also while the lead is stopped; a node killed with -9 drops
/// out of its role's answer within 3 s; other domains are refused.
@Suite("Mesh DNS (real agents, dig)", .serialized)
struct MeshDNSIntegrationTests {
    static let dig = "/usr/bin/dig"

    /// `dig @127.0.0.1 -p PORT NAME TYPE +short` (and `+tcp`): the answer's lines.
    static func short(_ port: Int, _ name: String, _ type: String = "A", tcp: Bool = false, scratch: ScratchDirectory)
        async throws -> [String]
    {
        let outcome = try await ChildProcess.run(
            dig,
            ["@127.0.0.1", "-p", String(port), name, type, "+short", "+tries=1", "+time=2"] + (tcp ? ["+tcp"] : []),
            outputDirectory: scratch.path)
        #expect(outcome.code == 0, "dig \(name): \(outcome.stdout) \(outcome.stderr)")
        return outcome.stdout.split(separator: "\n").map(String.init).sorted()
    }

    /// The status dig reports (`NOERROR`, `NXDOMAIN`, `REFUSED`, …).
    static func status(_ port: Int, _ name: String, scratch: ScratchDirectory) async throws -> String {
        let outcome = try await ChildProcess.run(
            dig, ["@127.0.0.1", "-p", String(port), name, "+tries=1", "+time=2"], outputDirectory: scratch.path)
        guard let range = outcome.stdout.range(of: "status: ") else { return "no answer: \(outcome.stdout)" }
        return String(outcome.stdout[range.upperBound...].prefix { $0 != "," })
    }

    @Test(
        "dig answers names, the lead, roles and SRV from every agent over UDP and TCP; NXDOMAIN and REFUSED; a node answers with the lead stopped; kill -9 drops a node from its role within 3 s"
    )
    func names() async throws {
        try Binaries.requireTool(Self.dig, hint: "install bind9-dnsutils (./bootstrap does)")
        let scratch = try ScratchDirectory("mesh-dns")
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning {
                kill(agent.process.pid, SIGCONT)
                agent.process.signal(SIGKILL)
            }
            scratch.remove()
        }
        let ports = try (0..<3).map { _ in try freePort() }
        // Dead after 1.5 s without heartbeats: the answer must drop the node within 3 s of the kill.
        let timing = "heartbeat: {interval_s: 0.5, suspect_after: 2, dead_after: 3}\n"
        func dns(_ port: Int) -> String { timing + "dns:\n  listen: \"127.0.0.1:\(port)\"\n" }
        let (lead, workers) = try await AgentHarness.leadWithWorkers(
            in: scratch, lead: "dns-lead", leadConfig: dns(ports[0]),
            workers: [("gpu-1", dns(ports[1])), ("gpu-2", dns(ports[2]))], agents: &agents)
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let nodes = try await http(lead.baseURL + Routes.nodes, headers: admin).decode(NodeList.self).nodes
        let address = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0.vpnIP) })
        #expect(address.count == 3)

        // Every agent answers every name: the lead from its registry, the nodes from their copy
        // (which they fetch when the membership changes).
        for port in ports {
            for (name, ip) in address {
                let answer = try await poll(timeout: .seconds(10), every: .milliseconds(100), "\(name) on \(port)") {
                    () async throws -> [String]? in
                    let found = try await Self.short(port, name + ".aurora.internal", scratch: scratch)
                    return found == [ip] ? found : nil
                }
                #expect(answer == [ip])
            }
            #expect(try await Self.short(port, "lead.aurora.internal", scratch: scratch) == [address["dns-lead"]!])
            #expect(
                try await Self.short(port, "compute.aurora.internal", tcp: true, scratch: scratch)
                    == [address["gpu-1"]!, address["gpu-2"]!].sorted())
            #expect(try await Self.status(port, "nobody.aurora.internal", scratch: scratch) == "NXDOMAIN")
            // A long name (a 250-byte query with dig's EDNS and cookie) is read whole, not cut
            // short by the server's batched reads.
            let long = [String](repeating: String(repeating: "a", count: 60), count: 3).joined(separator: ".")
            #expect(try await Self.status(port, long + ".x.aurora.internal", scratch: scratch) == "NXDOMAIN")
            #expect(try await Self.status(port, "example.com", scratch: scratch) == "REFUSED")
        }
        let services = try await Self.short(ports[0], "_aurora._tcp.aurora.internal", "SRV", scratch: scratch)
        #expect(services.contains("0 0 \(lead.port) dns-lead.aurora.internal."), "\(services)")
        #expect(services.count == 3)

        // Garbage to the UDP port changes nothing: it keeps answering.
        let garbage = try await ChildProcess.run(
            "/bin/bash", ["-c", "printf '\\001\\002\\003' > /dev/udp/127.0.0.1/\(ports[1])"],
            outputDirectory: scratch.path)
        #expect(garbage.code == 0, "\(garbage.stderr)")
        #expect(try await Self.short(ports[1], "gpu-2.aurora.internal", scratch: scratch) == [address["gpu-2"]!])

        // The lead stopped: gpu-1 answers from its cached copy.
        kill(lead.process.pid, SIGSTOP)
        #expect(try await Self.short(ports[1], "gpu-2.aurora.internal", scratch: scratch) == [address["gpu-2"]!])
        #expect(try await Self.short(ports[1], "lead.aurora.internal", scratch: scratch) == [address["dns-lead"]!])
        kill(lead.process.pid, SIGCONT)

        // kill -9 of gpu-2: within 3 s it is gone from compute.aurora.internal on the lead.
        // Timed by DNSProbe, which asks from a thread of its own every 20 ms (a dig child per look
        // would time process start-up on a busy machine); dig checks the answer after.
        let killed = ContinuousClock.now
        workers[1].process.signal(SIGKILL)
        let droppedAt = await DNSProbe.waitForAnswer(
            port: ports[0], name: "compute.aurora.internal", [address["gpu-1"]!], timeout: .seconds(15))
        let dropped = try #require(droppedAt, "gpu-2 still in the compute answer 15 s after its kill")
        #expect(killed.duration(to: dropped) < .seconds(3), "dropped after \(killed.duration(to: dropped))")
        #expect(try await Self.short(ports[0], "compute.aurora.internal", scratch: scratch) == [address["gpu-1"]!])
        #expect(try await Self.status(ports[0], "gpu-2.aurora.internal", scratch: scratch) == "NXDOMAIN")
    }

    @Test(
        "dns.configure: hosts writes the mesh's names into a marked block of the hosts file, follows the mesh, and removes it at stop"
    )
    func hostsFile() async throws {
        let scratch = try ScratchDirectory("mesh-hosts")
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            scratch.remove()
        }
        let hosts = scratch.path + "/hosts"
        let original = "127.0.0.1 localhost\n# the machine's own line\n"
        try original.write(toFile: hosts, atomically: true, encoding: .utf8)
        let timing = "heartbeat: {interval_s: 0.5, suspect_after: 2, dead_after: 3}\n"
        let configured = timing + "dns:\n  configure: hosts\n  hosts_file: \"\(hosts)\"\n"
        let (lead, workers) = try await AgentHarness.leadWithWorkers(
            in: scratch, lead: "hosts-lead", workers: [("gpu-1", configured), ("gpu-2", timing)], agents: &agents)
        let nodes = try await http(
            lead.baseURL + Routes.nodes, headers: ["Authorization": "Bearer \(try lead.adminToken)"]
        )
        .decode(NodeList.self).nodes
        let address = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0.vpnIP) })
        let expected = [
            "\(address["gpu-1"]!) gpu-1.aurora.internal", "\(address["gpu-2"]!) gpu-2.aurora.internal",
            "\(address["hosts-lead"]!) hosts-lead.aurora.internal", "\(address["hosts-lead"]!) lead.aurora.internal",
        ]
        let written = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the hosts block") {
            () async throws -> String? in
            let text = try String(contentsOfFile: hosts, encoding: .utf8)
            return expected.allSatisfy(text.contains) ? text : nil
        }
        #expect(written.hasPrefix(original), "the machine's lines stay first and unchanged: \(written)")
        #expect(written.contains("# BEGIN aurora-mesh") && written.hasSuffix("# END aurora-mesh\n"))
        // With that file as /etc/hosts (a private mount namespace), the system's resolver knows the
        // names, and `aurora-cli ssh` uses the name.
        try Binaries.requireTool("/usr/bin/unshare", hint: "util-linux")
        let script = """
            mount --bind \(hosts) /etc/hosts && getent hosts gpu-2.aurora.internal \
            && \(Binaries.auroraCLI) ssh gpu-2 --dry-run --agent \(lead.baseURL) --data-dir \(lead.dataDir) -- -p 2222
            """
        let resolved = try await ChildProcess.run(
            "/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script],
            outputDirectory: scratch.path)
        #expect(resolved.code == 0, "\(resolved.stdout) \(resolved.stderr)")
        let shown = resolved.stdout.split(separator: "\n").map(String.init)
        #expect(
            shown.first?.hasPrefix(address["gpu-2"]!) == true && shown.first?.hasSuffix("gpu-2.aurora.internal") == true
        )
        #expect(shown.last == "ssh -p 2222 gpu-2.aurora.internal", "\(shown)")

        // gpu-2 dies: its line goes.
        workers[1].process.signal(SIGKILL)
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "gpu-2's line to go") {
            () async throws -> Bool? in
            try String(contentsOfFile: hosts, encoding: .utf8).contains("gpu-2.aurora.internal") ? nil : true
        }
        // A graceful stop takes the block away: the file is what it was.
        workers[0].process.signal(SIGTERM)
        #expect(try await workers[0].process.waitForExit(timeout: .seconds(20)) == 0)
        #expect(try String(contentsOfFile: hosts, encoding: .utf8) == original)
    }

    @Test(
        "dns.configure: resolved routes ~DOMAIN on the WireGuard interface to the agent through resolvectl, retries until the link exists, and reverts at stop"
    )
    func resolved() async throws {
        // systemd-resolved needs systemd as init and D-Bus, which this machine does not run: a
        // stand-in resolvectl records its calls and refuses the link until it "exists".
        let scratch = try ScratchDirectory("mesh-resolved")
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            scratch.remove()
        }
        let calls = scratch.path + "/resolvectl.log", ready = scratch.path + "/link-exists"
        let fake = scratch.path + "/resolvectl"
        try """
        #!/bin/sh
        echo "$*" >> \(calls)
        if [ "$1" != revert ] && [ ! -e \(ready) ]; then echo "Failed to resolve interface \\"$2\\": No such device" >&2; exit 1; fi
        exit 0
        """.write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        let port = try freePort()
        let config = """
            heartbeat: {interval_s: 0.5, suspect_after: 2, dead_after: 3}
            wireguard:
              interface: aurora-rs0
            dns:
              listen: "127.0.0.1:\(port)"
              configure: resolved
              resolvectl: "\(fake)"
            """
        let (lead, _) = try await AgentHarness.leadWithWorkers(
            in: scratch, lead: "resolved-lead", leadConfig: config, workers: [], agents: &agents)
        func log() -> [String] {
            ((try? String(contentsOfFile: calls, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        // Refused while the link is missing: tried again (every 2 s), and said once.
        _ = try await poll(timeout: .seconds(15), every: .milliseconds(100), "a second attempt") {
            log().filter { $0 == "dns aurora-rs0 127.0.0.1:\(port)" }.count >= 2 ? true : nil
        }
        #expect(!log().contains { $0.hasPrefix("domain") }, "nothing more after a refusal")
        FileManager.default.createFile(atPath: ready, contents: Data())
        _ = try await poll(timeout: .seconds(15), every: .milliseconds(100), "the domain route") {
            log().contains("default-route aurora-rs0 false") ? true : nil
        }
        let wired = log()
        let domain = try #require(wired.firstIndex(of: "domain aurora-rs0 ~aurora.internal"))
        #expect(
            wired[domain - 1] == "dns aurora-rs0 127.0.0.1:\(port)"
                && wired[domain + 1] == "default-route aurora-rs0 false")
        #expect(lead.process.stderr.components(separatedBy: "cannot route the mesh's domain").count == 2, "said once")
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(20)) == 0)
        #expect(log().last == "revert aurora-rs0", "undone at stop")
        // Without a DNS server to route to, the agent refuses the configuration and says what to set.
        try "dns: {configure: resolved}\n".write(toFile: scratch.path + "/bad.yaml", atomically: true, encoding: .utf8)
        let refused = try await ChildProcess.run(
            Binaries.nodeagent, ["config", "--profile", "compute", "--config", scratch.path + "/bad.yaml"],
            outputDirectory: scratch.path)
        #expect(refused.code != 0 && refused.stderr.contains("needs a DNS server to route to"), "\(refused.stderr)")
    }
}
