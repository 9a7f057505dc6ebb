import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `--store URL`: the lead uses a PostgreSQL server it does not own.
@Suite("Lead with an external store (real PostgreSQL on loopback)")
struct ExternalStoreTests {
    @Test("migrations run on an external server, the URL's password never shows, and the server outlives the agent")
    func externalStore() async throws {
        let scratch = try ScratchDirectory("external")
        defer { scratch.remove() }
        let server = try await PostgresServer(in: scratch)
        let url = server.url.replacingOccurrences(of: "aurora@", with: "aurora:unused-pw@")  // trust auth ignores it

        let agent = try AgentHarness(
            dataDir: scratch.path + "/data", extraArguments: ["--store", url], outputDirectory: scratch.path)
        let health = try await agent.waitHealthy(timeout: .seconds(30))
        #expect(health.store.mode == .external)
        #expect(health.store.schemaVersion == latestSchemaVersion)
        let meshID = try #require(try await agent.agentStatus().meshID)
        #expect(!FileManager.default.fileExists(atPath: agent.dataDir + "/postgres"))
        #expect(!agent.process.stderr.contains("unused-pw"))
        agent.process.signal(SIGTERM)
        #expect(try await agent.process.waitForExit(timeout: .seconds(5)) == 0)

        // The server is not ours: it keeps running; a second start finds the schema and the mesh.
        let again = try AgentHarness(
            dataDir: scratch.path + "/data", extraArguments: ["--store", url], outputDirectory: scratch.path)
        try await again.waitHealthy(timeout: .seconds(30))
        #expect(try await again.agentStatus().meshID == meshID)
        again.process.signal(SIGTERM)
        #expect(try await again.process.waitForExit(timeout: .seconds(5)) == 0)
        try await server.stop()
    }

    @Test("an unreachable store keeps the agent up and says why in /health, until it answers")
    func unreachableStore() async throws {
        let scratch = try ScratchDirectory("unreachable")
        defer { scratch.remove() }
        let port = try freePort()
        let agent = try AgentHarness(
            dataDir: scratch.path + "/data",
            extraArguments: ["--store", "postgres://aurora@127.0.0.1:\(port)/postgres"],
            outputDirectory: scratch.path)
        let degraded = try await poll(timeout: .seconds(20), "a degraded /health") {
            () async throws -> HealthResponse? in
            let health = try await http(agent.baseURL + Routes.health).decode(HealthResponse.self)
            return health.status == .degraded ? health : nil
        }
        #expect(degraded.store.state == .failed)
        #expect(degraded.store.message?.contains("cannot connect to PostgreSQL") == true)
        #expect(try await http(agent.baseURL + Routes.health).status == 503)

        // The server appears: the agent connects, migrates and is healthy without a restart.
        let server = try await PostgresServer(in: scratch, port: port)
        let healthy = try await agent.waitHealthy(timeout: .seconds(20))
        #expect(healthy.store.state == .ok)
        #expect(healthy.store.schemaVersion == latestSchemaVersion)
        agent.process.signal(SIGTERM)
        #expect(try await agent.process.waitForExit(timeout: .seconds(5)) == 0)
        try await server.stop()
    }
}
