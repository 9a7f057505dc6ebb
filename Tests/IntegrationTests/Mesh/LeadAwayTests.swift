import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A node whose lead went away says so (status, nodes, /health, doctor), and `events --follow`
/// outlives a restart of the lead: real agents and aurora-cli processes on loopback.
@Suite("Lead away (real agents on loopback)", .serialized)
struct LeadAwayTests {
    /// `aurora-cli ARGS --agent URL --data-dir DIR`: exit code, stdout, stderr.
    static func cli(_ arguments: [String], agent: AgentHarness, scratch: ScratchDirectory) async throws
        -> (code: Int32, stdout: String, stderr: String)
    {
        try await ChildProcess.run(
            Binaries.auroraCLI, arguments + ["--agent", agent.baseURL, "--data-dir", agent.dataDir],
            outputDirectory: scratch.path)
    }

    /// The lead's whole event log, by `seq`.
    static func log(_ lead: AgentHarness) async throws -> [MeshEvent] {
        let answer = try await http(
            lead.baseURL + Routes.events + "?since=0&follow=false",
            headers: ["Authorization": "Bearer \(try lead.adminToken)"])
        return answer.text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("data: ") else { return nil }
            return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
        }
    }

    @Test(
        "lead stopped: status and nodes warn first, mark rows with the copy's age and exit 4; /health is degraded (strict: 503); doctor fails the lead check"
    )
    func nodeWithoutLead() async throws {
        let scratch = try ScratchDirectory("lead-away")
        defer { scratch.remove() }
        var agents: [AgentHarness] = []
        defer { for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) } }

        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let token = try await lead.joinToken(outputDirectory: scratch.path)
        let inventory = scratch.path + "/gpus.yaml"
        try """
        gpus:
          - {index: 0, uuid: GPU-aaaa, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24564}
        """.write(toFile: inventory, atomically: true, encoding: .utf8)
        let node = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1",
            extraArguments: ["--name", "gpu-1", "--lead", lead.baseURL, "--join-token", token, "--config", inventory],
            outputDirectory: scratch.path)
        agents.append(node)
        try await node.waitHealthy()

        // With the lead: status exits 0, no warning; /health says the lead is reachable.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(200), "both nodes alive, seen from gpu-1") {
            () async throws -> Bool? in
            let status = try await Self.cli(["status"], agent: node, scratch: scratch)
            return status.code == 0 && status.stdout.contains("2 nodes: 2 alive") ? true : nil
        }
        let reachable = try await poll(timeout: .seconds(10), every: .milliseconds(50), "gpu-1's first heartbeat") {
            () async throws -> HTTPAnswer? in
            let answer = try await http(node.baseURL + Routes.health)
            return try answer.decode(HealthResponse.self).lead?.state == .reachable ? answer : nil
        }
        #expect(reachable.status == 200)
        #expect(try reachable.decode(HealthResponse.self).status == .ok)
        #expect(try await http(node.baseURL + Routes.health + "?strict=1").status == 200)

        // The lead stops.
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(15)) == 0)

        // /health: degraded, lead unreachable since a time; 200 for liveness, 503 when strict.
        let degraded = try await poll(timeout: .seconds(10), every: .milliseconds(50), "gpu-1 to see its lead away") {
            () async throws -> HTTPAnswer? in
            let answer = try await http(node.baseURL + Routes.health)
            return try answer.decode(HealthResponse.self).lead?.state == .unreachable ? answer : nil
        }
        #expect(degraded.status == 200, "liveness: the agent still serves")
        let health = try degraded.decode(HealthResponse.self)
        #expect(health.status == .degraded)
        #expect(health.lead?.since != nil && health.lead?.unreachableS != nil)
        for strict in ["1", "true", ""] {
            #expect(
                try await http(node.baseURL + Routes.health + "?strict=\(strict)").status == 503, "strict=\(strict)")
        }
        #expect(try await http(node.baseURL + Routes.health + "?strict=0").status == 200)
        let bad = try await http(node.baseURL + Routes.health + "?strict=maybe")
        #expect(bad.status == 400)
        #expect(bad.text.contains("bad_request") && bad.text.contains("strict"), "\(bad.text)")

        // status: the warning first, each row's state marked with the copy's age, exit 4.
        let status = try await Self.cli(["status"], agent: node, scratch: scratch)
        #expect(status.code == 4, "\(status.stderr)")
        let lines = status.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("STALE VIEW: the lead is unreachable for") == true, "\(status.stdout)")
        let header = try #require(lines.firstIndex { $0.hasPrefix("NODE") })
        let rows = lines[(header + 1)...].prefix(2)
        #expect(rows.count == 2 && rows.allSatisfy { $0.contains("alive (") && $0.contains(" ago)") }, "\(rows)")
        #expect(lines.allSatisfy { $0.count <= 100 }, "the table fits 100 columns")
        #expect(status.stdout.contains("degraded (lead unreachable since"))

        // status --json: clean JSON on stdout with stale and since; the warning on stderr.
        let json = try await Self.cli(["status", "--json"], agent: node, scratch: scratch)
        #expect(json.code == 4)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["stale"] as? Bool == true)
        #expect(object["lead_unreachable_since"] as? String == health.lead?.since)
        #expect(json.stderr.hasPrefix("STALE VIEW"))

        // nodes: the same.
        let nodes = try await Self.cli(["nodes"], agent: node, scratch: scratch)
        #expect(nodes.code == 4)
        #expect(nodes.stdout.hasPrefix("STALE VIEW: the lead is unreachable"))
        #expect(nodes.stdout.contains("alive ("))

        // doctor: the lead check fails and says so.
        let doctor = try await Self.cli(["doctor"], agent: node, scratch: scratch)
        #expect(doctor.code == 1)
        let leadLine = try #require(
            doctor.stdout.split(separator: "\n").first { $0.hasPrefix("fail") && $0.contains("lead ") },
            "\(doctor.stdout)")
        #expect(leadLine.contains("UNREACHABLE from this node since"))

        node.process.signal(SIGTERM)
        #expect(try await node.process.waitForExit(timeout: .seconds(10)) == 0)
    }

    @Test(
        "events --follow outlives a restart of the lead: every event before and after it printed once, in order; it keeps running"
    )
    func followAcrossRestart() async throws {
        let scratch = try ScratchDirectory("follow")
        defer { scratch.remove() }
        var agents: [AgentHarness] = []
        defer { for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) } }
        let dataDir = scratch.path + "/lead"
        let lead = try AgentHarness(
            profile: "lead", dataDir: dataDir, extraArguments: ["--name", "lead-1"], outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()

        // Each label change is one node.labels_changed event.
        func label(_ value: Int, on agent: AgentHarness) async throws {
            let result = try await Self.cli(["nodes", "label", "lead-1", "n=\(value)"], agent: agent, scratch: scratch)
            #expect(result.code == 0, "\(result.stderr)")
        }
        try await label(0, on: lead)

        let follower = try ChildProcess(
            Binaries.auroraCLI,
            ["events", "--follow", "--json", "--since", "0", "--agent", lead.baseURL, "--data-dir", dataDir],
            outputDirectory: scratch.path)
        defer { if follower.isRunning { follower.signal(SIGKILL) } }
        // A second follower that is told to give up after 2 s without a stream.
        let quitter = try ChildProcess(
            Binaries.auroraCLI,
            ["events", "--follow", "--give-up-after", "2s", "--agent", lead.baseURL, "--data-dir", dataDir],
            outputDirectory: scratch.path)
        defer { if quitter.isRunning { quitter.signal(SIGKILL) } }
        func printed() -> [MeshEvent] {
            follower.stdout.split(separator: "\n").compactMap {
                try? APICoding.decoder().decode(MeshEvent.self, from: Data($0.utf8))
            }
        }
        for value in 1...3 { try await label(value, on: lead) }
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "the follower to print 4 label changes") {
            () -> Bool? in
            printed().filter { $0.type == EventType.nodeLabelsChanged }.count == 4 ? true : nil
        }

        // The lead stops: the follower says so and keeps running.
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(15)) == 0)
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "the follower to report the lead away") {
            () -> Bool? in
            follower.stderr.contains("lead unreachable, reconnecting") ? true : nil
        }
        #expect(follower.isRunning, "it reconnects instead of exiting: \(follower.stderr)")
        // The one told to give up exits 3 once the lead has been away for 2 s, saying so.
        #expect(try await quitter.waitForExit(timeout: .seconds(20)) == 3)
        #expect(quitter.stderr.contains("gave up"), "\(quitter.stderr)")
        #expect(follower.isRunning)

        // The lead is back on the same port and data dir: the follower resumes.
        let restarted = try AgentHarness(
            profile: "lead", dataDir: dataDir, port: lead.port, extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        agents.append(restarted)
        try await restarted.waitHealthy()
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "the follower to reconnect") {
            () -> Bool? in
            follower.stderr.contains("reconnected, resuming after event") ? true : nil
        }
        for value in 4...6 { try await label(value, on: restarted) }

        // Every event of the log printed exactly once, in order: compare ids.
        let expected = try await poll(timeout: .seconds(10), every: .milliseconds(50), "every event printed") {
            () async throws -> [MeshEvent]? in
            let log = try await Self.log(restarted)
            let labels = log.filter { $0.type == EventType.nodeLabelsChanged }.count
            return labels >= 7 && printed().count >= log.count ? log : nil
        }
        let seen = printed()
        #expect(seen.map(\.id) == expected.map(\.id), "printed \(seen.map(\.seq)), the log has \(expected.map(\.seq))")
        #expect(Set(seen.map(\.id)).count == seen.count, "no event printed twice")
        #expect(follower.isRunning, "still following: \(follower.stderr)")
        follower.signal(SIGTERM)
        _ = try await follower.waitForExit(timeout: .seconds(5))
        restarted.process.signal(SIGTERM)
        #expect(try await restarted.process.waitForExit(timeout: .seconds(15)) == 0)
    }
}
