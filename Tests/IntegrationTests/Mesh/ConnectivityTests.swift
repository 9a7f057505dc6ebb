import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Probes of external APIs, against local servers: one healthy, one slow, one refusing.
@Suite("Connectivity probes (lead + a compute node + local servers)", .serialized)
struct ConnectivityTests {
    @Test("healthy, degraded and down are told apart, reported to the lead, summarised, and changes are events")
    func probes() async throws {
        let scratch = try ScratchDirectory("connectivity")
        defer { scratch.remove() }
        let fast = try await FakeInference()
        let slow = try await FakeInference(defaultDelay: .milliseconds(800))
        let closed = try PortHolder()  // a port of this machine…
        let refusing = closed.port
        closed.close()  // …closed: connections are refused
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        var agents = [lead]
        defer { for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await lead.joinToken(outputDirectory: scratch.path)
        let file = scratch.path + "/node.yaml"
        try """
        connectivity:
          - {name: fast-api, url: "\(fast.url)/v1/chat/completions", interval_s: 0.3, timeout_s: 2, degraded_ms: 400}
          - {name: slow-api, url: "\(slow.url)/v1/chat/completions", interval_s: 0.3, timeout_s: 2, degraded_ms: 400}
          - {name: gone-api, url: "http://127.0.0.1:\(refusing)/health", interval_s: 0.3, timeout_s: 1}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let node = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/node",
            extraArguments: ["--name", "probe-1", "--lead", lead.baseURL, "--join-token", token, "--config", file],
            outputDirectory: scratch.path)
        agents.append(node)
        try await node.waitHealthy()

        let matrix = try await poll(timeout: .seconds(20), every: .milliseconds(100), "three results from probe-1") {
            () async throws -> [String: ProbeResult]? in
            let status = try await http(lead.baseURL + Routes.connectivityStatus, headers: admin).decode(
                ConnectivityMatrix.self)
            guard let results = status.nodes["probe-1"], results.count == 3 else { return nil }
            return results
        }
        #expect(matrix["fast-api"]?.state == .healthy && matrix["fast-api"]?.status == 200)
        #expect(matrix["slow-api"]?.state == .degraded && (matrix["slow-api"]?.latencyMs ?? 0) >= 400)
        #expect(matrix["gone-api"]?.state == .down && matrix["gone-api"]?.error != nil)

        let health = try await http(lead.baseURL + Routes.connectivityHealth, headers: admin).decode(
            ConnectivityHealth.self)
        #expect(health.state == .degraded)
        #expect(health.services["fast-api"]?.state == .healthy && health.services["gone-api"]?.state == .down)

        // The compute node forwards the view (its own operator token).
        let forwarded = try await http(
            node.baseURL + Routes.connectivityStatus, headers: ["Authorization": "Bearer \(try node.adminToken)"])
        #expect(forwarded.status == 200 && forwarded.text.contains("gone-api"))

        // Changes are events: each service's first state, with the node.
        let events = try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text
        for service in ["fast-api", "slow-api", "gone-api"] {
            #expect(events.contains("connectivity.changed") && events.contains("\"service\":\"\(service)\""))
        }
        // The CLI: a table, and exit 1 while anything is not healthy.
        let cli = try await ChildProcess.run(
            Binaries.auroraCLI, ["connectivity", "--agent", lead.baseURL, "--data-dir", lead.dataDir],
            outputDirectory: scratch.path)
        #expect(cli.code == 1 && cli.stdout.contains("slow-api") && cli.stdout.contains("overall degraded"))

        for agent in agents {
            agent.process.signal(SIGTERM)
            #expect(try await agent.process.waitForExit(timeout: .seconds(10)) == 0)
        }
        await fast.stop()
        await slow.stop()
    }
}
