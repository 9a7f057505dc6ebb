import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The HTTP surface of a real agent: JSON errors, the body limit, the token, metrics.
@Suite("HTTP API of a running agent")
struct HTTPTests {
    @Test(
        "metrics.listen on a taken port: the agent serves its API meanwhile and binds the metrics listener once the port is free"
    )
    func metricsListenerWaits() async throws {
        let scratch = try ScratchDirectory("metrics-listen")
        defer { scratch.remove() }
        let taken = try PortHolder()
        defer { taken.close() }
        let node = scratch.path + "/node.yaml"
        try "metrics:\n  listen: \"127.0.0.1:\(taken.port)\"\n".write(toFile: node, atomically: true, encoding: .utf8)
        let agent = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/data",
            extraArguments: ["--config", node, "--lead", "http://127.0.0.1:9", "--join-token", "aurjoin_unused"],
            outputDirectory: scratch.path)
        defer { agent.process.signal(SIGKILL) }
        try await agent.waitHealthy(timeout: .seconds(30))
        // The port is someone else's: the agent keeps serving and says why metrics wait.
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "the agent's warning") {
            (agent.process.stdout + agent.process.stderr).contains("cannot serve /metrics yet") ? true : nil
        }
        #expect(try await http(agent.baseURL + Routes.health).status == 200)
        taken.close()
        let served = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the metrics listener") {
            () async throws -> HTTPAnswer? in
            let answer = try? await http("http://127.0.0.1:\(taken.port)/metrics")
            return answer?.status == 200 ? answer : nil
        }
        #expect(served.text.contains("aurora_uptime_seconds"))
        #expect(try await http("http://127.0.0.1:\(taken.port)/api/agent").status == 404)
    }

    @Test("errors are JSON with code and message; 404, 413, 401; metrics are Prometheus text")
    func httpSurface() async throws {
        let scratch = try ScratchDirectory("http")
        defer { scratch.remove() }
        let node = scratch.path + "/node.yaml"
        try "http:\n  max_body_bytes: 2048\n".write(toFile: node, atomically: true, encoding: .utf8)
        // A compute node whose lead is away: it keeps trying to join and serves its own API meanwhile.
        let agent = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/data",
            extraArguments: ["--config", node, "--lead", "http://127.0.0.1:9", "--join-token", "aurjoin_unused"],
            outputDirectory: scratch.path)
        try await agent.waitHealthy(timeout: .seconds(30))

        let health = try await http(agent.baseURL + Routes.health)
        #expect(health.status == 200)
        #expect(health.contentType == "application/json")
        let decoded = try health.decode(HealthResponse.self)
        #expect(decoded.role == .compute)
        #expect(decoded.store.state == StoreState.none)
        #expect(decoded.version == AuroraVersion.current)

        let missing = try await http(agent.baseURL + "/no/such/route")
        #expect(missing.status == 404)
        #expect(try missing.decode(ErrorResponse.self).error.code == "not_found")

        let large = try await http(
            agent.baseURL + Routes.health, method: "POST", body: [UInt8](repeating: 65, count: 4096))
        #expect(large.status == 413)
        let largeError = try large.decode(ErrorResponse.self).error
        #expect(largeError.code == "payload_too_large")
        #expect(largeError.message.contains("2048"))

        let anonymous = try await http(agent.baseURL + Routes.agent)
        #expect(anonymous.status == 401)
        #expect(try anonymous.decode(ErrorResponse.self).error.code == "unauthorized")
        let forged = try await http(agent.baseURL + Routes.agent, headers: ["Authorization": "Bearer aur_0000"])
        #expect(forged.status == 401)
        let authorised = try await http(
            agent.baseURL + Routes.agent, headers: ["Authorization": "Bearer \(try agent.adminToken)"])
        #expect(authorised.status == 200)
        #expect(try authorised.decode(AgentStatus.self).dataDir == scratch.path + "/data")

        let metrics = try await http(agent.baseURL + Routes.metrics)
        #expect(metrics.status == 200)
        #expect(metrics.contentType?.hasPrefix("text/plain") == true)
        // A path no endpoint has counts under route "other": a client cannot make new series.
        #expect(metrics.text.contains("aurora_http_requests_total{method=\"GET\",route=\"other\",status=\"404\"} 1"))
        #expect(metrics.text.contains("aurora_uptime_seconds"))

        agent.process.signal(SIGINT)
        #expect(try await agent.process.waitForExit(timeout: .seconds(5)) == 0)
    }
}
