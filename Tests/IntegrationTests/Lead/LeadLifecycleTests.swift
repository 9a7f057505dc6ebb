import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The built `nodeagent --profile lead` as a real process with its managed PostgreSQL.
@Suite("Lead agent lifecycle (real processes, real PostgreSQL)", .serialized)
struct LeadLifecycleTests {
    init() throws {
        let pgBin = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]
            .first { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }
        try Binaries.requireTool(
            (pgBin ?? "/usr/lib/postgresql/15/bin") + "/initdb", hint: "install postgresql (./bootstrap does)")
    }

    @Test("start, status, SIGTERM, restart with the same keys and data, a second agent refused, kill -9 recovered")
    func lifecycle() async throws {
        let scratch = try ScratchDirectory("lead")
        defer { scratch.remove() }
        let dataDir = scratch.path + "/data"

        // First start on an empty data dir: healthy, managed store included.
        let first = try AgentHarness(dataDir: dataDir, outputDirectory: scratch.path)
        let health = try await first.waitHealthy(timeout: .seconds(60))
        #expect(health.role == .lead)
        #expect(health.store.state == .ok)
        #expect(health.store.mode == .managed)
        #expect(health.store.schemaVersion == latestSchemaVersion)
        let before = try await first.agentStatus()
        #expect(before.pid == first.process.pid)
        let meshID = try #require(before.meshID)

        // aurora-cli status --json reports it.
        let cli = try await ChildProcess.run(
            Binaries.auroraCLI, ["status", "--json", "--agent", first.baseURL, "--data-dir", dataDir],
            outputDirectory: scratch.path)
        #expect(cli.code == 0, "aurora-cli status failed: \(cli.stderr)")
        let output = try JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as? [String: Any]
        let reportedHealth = output?["health"] as? [String: Any]
        #expect(reportedHealth?["status"] as? String == "ok")
        #expect(reportedHealth?["role"] as? String == "lead")
        #expect((reportedHealth?["store"] as? [String: Any])?["state"] as? String == "ok")
        #expect((output?["detail"] as? [String: Any])?["mesh_id"] as? String == meshID)
        #expect(output?["token_error"] == nil)

        // A second agent on the same data dir is refused, clearly, and the first keeps running.
        let second = try await ChildProcess.run(
            Binaries.nodeagent,
            ["run", "--profile", "lead", "--data-dir", dataDir, "--listen", "127.0.0.1:\(try freePort())"],
            outputDirectory: scratch.path)
        #expect(second.code != 0)
        #expect(
            second.stderr
                == "nodeagent: error: data dir \(dataDir) is in use by another nodeagent (pid \(first.process.pid)); stop it or use another --data-dir\n"
        )
        #expect(first.process.isRunning)

        // SIGTERM: exit 0 within 5 s, and the managed PostgreSQL is gone.
        let postgresPID = try #require(first.postgresPID)
        #expect(processExists(postgresPID))
        first.process.signal(SIGTERM)
        let code = try await first.process.waitForExit(timeout: .seconds(5))
        #expect(code == 0, "exit code \(code); stderr: \(first.process.stderr.suffix(600))")
        #expect(try await waitGone(postgresPID, timeout: .seconds(2)), "postgres \(postgresPID) outlived the agent")
        #expect(processes(mentioning: dataDir + "/postgres").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/postgres/postmaster.pid"))

        // Restart: the same keys and the same store.
        let restarted = try AgentHarness(dataDir: dataDir, outputDirectory: scratch.path)
        try await restarted.waitHealthy(timeout: .seconds(60))
        let after = try await restarted.agentStatus()
        #expect(after.identity == before.identity)
        #expect(after.meshID == meshID)
        #expect(try restarted.adminToken == first.adminToken)

        // kill -9 leaves PostgreSQL running; the next start finds it and reuses it.
        let orphanPID = try #require(restarted.postgresPID)
        restarted.process.signal(SIGKILL)
        #expect(try await restarted.process.waitForExit(timeout: .seconds(5)) == 128 + SIGKILL)
        #expect(processExists(orphanPID))
        let recovered = try AgentHarness(dataDir: dataDir, outputDirectory: scratch.path)
        try await recovered.waitHealthy(timeout: .seconds(60))
        #expect(try await recovered.agentStatus().meshID == meshID)
        #expect(recovered.process.stderr.contains("reusing the managed PostgreSQL"))
        recovered.process.signal(SIGTERM)
        #expect(try await recovered.process.waitForExit(timeout: .seconds(5)) == 0)
        #expect(try await waitGone(orphanPID, timeout: .seconds(2)), "postgres \(orphanPID) outlived the agent")
        #expect(processes(mentioning: dataDir + "/postgres").isEmpty)
    }

    @Test("files in the data dir are private: keys and token 0600, keys dir 0700, data dir 0711")
    func permissions() async throws {
        let scratch = try ScratchDirectory("perms")
        defer { scratch.remove() }
        let agent = try AgentHarness(dataDir: scratch.path + "/data", outputDirectory: scratch.path)
        defer { agent.process.signal(SIGTERM) }
        try await agent.waitHealthy()
        func mode(_ path: String) -> mode_t {
            var info = stat()
            stat(path, &info)
            return info.st_mode & 0o777
        }
        let data = scratch.path + "/data"
        #expect(mode(data) == 0o711)
        #expect(mode(data + "/keys") == 0o700)
        for file in [
            "admin.token", "agent.lock", "keys/wireguard.key", "keys/sign.key", "keys/box.key",
            "keys/admin.token.sha256",
        ] {
            #expect(mode(data + "/" + file) == 0o600, "\(file)")
        }
        // The token never reaches the log.
        let token = try agent.adminToken
        #expect(!agent.process.stderr.contains(token))
        agent.process.signal(SIGTERM)
        #expect(try await agent.process.waitForExit(timeout: .seconds(5)) == 0)
    }
}
