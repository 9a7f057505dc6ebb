import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 19, part 4: a five-node namespace mesh in apply mode, brought up again and again while
/// both cores are kept busy by other work. Each time every compute agent creates its interface
/// and reaches the lead (and the others) over the mesh, and no agent is left saying it waits.
/// Before the fix a loaded compute agent could fetch no registry copy within its 1-s heartbeat
/// timeout and so never rendered a configuration.
@Suite("Tunnel bring-up under load (five agents in namespaces, repeated)", .serialized)
struct TunnelBringUpTests {
    static let rounds = 3
    static let computes = 4
    static let port = 7000

    @Test("three times over, with both cores busy: every interface comes up and every node pings every other")
    func repeated() async throws {
        try Binaries.requireTool(
            "/usr/bin/wireguard-go", hint: "apt-get install --no-install-recommends wireguard-go wireguard-tools")
        let scratch = try ScratchDirectory("bringup")
        defer { scratch.remove() }
        // Two busy loops: the load under which the failures were seen (2 cores busy elsewhere).
        // Each ends by itself after 5 minutes, should this process die before it kills them.
        let burners = try (0..<2).map { _ in
            try ChildProcess(
                "/bin/bash", ["-c", "while [ $SECONDS -lt 300 ]; do :; done"], outputDirectory: scratch.path)
        }
        defer { for burner in burners { burner.signal(SIGKILL) } }
        for round in 1...Self.rounds {
            let net = try await NetworkNamespaces(outputDirectory: scratch.path)
            do {
                try await bringUp(net, directory: scratch.path + "/round\(round)", round: round)
            } catch {
                await net.remove()
                throw error
            }
            await net.remove()
        }
        for burner in burners { #expect(burner.isRunning, "the load ran the whole time") }
    }

    struct Member {
        var name: String, namespace: String, underlay: String, dataDir: String, interface: String, meshIP: String
        var url: String { "http://\(underlay):\(TunnelBringUpTests.port)" }
        var operatorToken: String {
            ((try? String(contentsOfFile: dataDir + "/" + Defaults.adminTokenFile, encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    func bringUp(_ net: NetworkNamespaces, directory: String, round: Int) async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var members: [Member] = []
        for index in 1...(Self.computes + 1) {
            let (namespace, underlay) = try await net.node(index)
            members.append(
                Member(
                    name: index == 1 ? "lead" : "gpu-\(index - 1)", namespace: namespace, underlay: underlay,
                    dataDir: directory + "/n\(index)", interface: "\(net.tag)-wg\(index)", meshIP: "10.78.0.\(index)"))
        }
        func start(_ m: Member, profile: String, extra: [String]) throws -> ChildProcess {
            let file = directory + "/\(m.name).yaml"
            try """
            wireguard:
              mode: apply
              interface: \(m.interface)
              cidr: 10.78.0.0/24
            \(profile == "lead" ? "  endpoint: \"\(m.underlay):51820\"" : "")
            vpn_ip: \(m.meshIP)
            http:
              insecure_plain: true
            """.write(toFile: file, atomically: true, encoding: .utf8)
            return try net.spawn(
                in: m.namespace, Binaries.nodeagent,
                [
                    "run", "--profile", profile, "--name", m.name, "--data-dir", m.dataDir, "--listen",
                    "\(m.underlay):\(Self.port)", "--config", file,
                ] + extra)
        }
        let lead = members[0]
        var processes = [try start(lead, profile: "lead", extra: [])]
        defer {
            for process in processes where process.isRunning { process.signal(SIGKILL) }
        }
        _ = try await poll(timeout: .seconds(90), every: .milliseconds(200), "round \(round): the lead to be healthy") {
            () async throws -> Bool? in
            if let code = processes[0].exitCode { throw TestKitError("the lead exited with \(code)") }
            let answer = try await net.run(
                in: lead.namespace, "/usr/bin/curl", ["-s", "-m", "2", lead.url + "/health"])
            return answer.stdout.contains("\"status\":\"ok\"") ? true : nil
        }
        let token = try await net.run(
            in: lead.namespace, Binaries.auroraCLI,
            ["token", "create", "--profile", "compute", "--reusable", "--agent", lead.url, "--data-dir", lead.dataDir]
        ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!token.isEmpty)
        for m in members.dropFirst() {
            processes.append(try start(m, profile: "compute", extra: ["--lead", lead.url, "--join-token", token]))
        }
        // Every compute agent creates its interface and reaches the lead and the others over the mesh.
        do {
            _ = try await poll(timeout: .seconds(90), every: .milliseconds(250), "round \(round): every pair to ping") {
                () async throws -> Bool? in
                for (index, process) in processes.enumerated() where !process.isRunning {
                    throw TestKitError("\(members[index].name) exited: \(process.stderr.suffix(600))")
                }
                for a in members {
                    for b in members where a.name != b.name {
                        guard await net.pings(from: a.namespace, b.meshIP) else { return nil }
                    }
                }
                return true
            }
        } catch {
            // What each agent said about its tunnel: the post-mortem the issue lacked.
            var said = ""
            for (index, m) in members.enumerated() {
                let status = try? await net.run(
                    in: m.namespace, "/usr/bin/curl",
                    ["-s", "-m", "2", "-H", "Authorization: Bearer \(m.operatorToken)", m.url + "/api/wireguard"])
                said += "\n\(m.name): \(status?.stdout.prefix(400) ?? "") \(processes[index].stderr.suffix(400))"
            }
            throw TestKitError("\(error)\(said)")
        }
        // Nobody is left waiting or failing: the status names no error.
        for m in members {
            let status = try await net.run(
                in: m.namespace, "/usr/bin/curl",
                ["-s", "-m", "5", "-H", "Authorization: Bearer \(m.operatorToken)", m.url + "/api/wireguard"])
            let view = try APICoding.decoder().decode(WireGuardStatus.self, from: Data(status.stdout.utf8))
            #expect(view.up && view.lastError == nil, "\(m.name): \(view.lastError ?? "down")")
        }
        for process in processes {
            process.signal(SIGTERM)
            _ = try await process.waitForExit(timeout: .seconds(20))
        }
    }
}
