import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead and its standby on one external PostgreSQL, a 3-member etcd on loopback as the
/// arbiter (election.etcd), and an exec worker.
@Suite("Automatic failover (3-member etcd + external PostgreSQL + lead + standby + worker)", .serialized)
struct AutomaticFailoverTests {
    /// Who holds `/aurora/lead`, read from etcd's JSON gateway (linearizable); nil when nobody does.
    static func holder(_ etcd: EtcdCluster) async throws -> String? {
        let key = Data("/aurora/lead".utf8).base64EncodedString()
        for endpoint in etcd.endpoints {
            guard
                let answer = try? await http(
                    endpoint + "/v3/kv/range", method: "POST", body: Array(#"{"key":"\#(key)"}"#.utf8),
                    timeout: .seconds(2)),
                answer.status == 200
            else { continue }
            let object = try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any]
            guard let kvs = object?["kvs"] as? [[String: Any]], let value = kvs.first?["value"] as? String else {
                return nil
            }
            return Data(base64Encoded: value).map { String(decoding: $0, as: UTF8.self) }
        }
        throw TestKitError("no etcd member answered")
    }

    @Test(
        "kill -9 of the lead: the standby takes over by itself within 12 s; one etcd member lost changes nothing; etcd fully down fences the lead until etcd is back"
    )
    func failover() async throws {
        let scratch = try ScratchDirectory("auto-failover")
        let etcd = try await EtcdCluster.start(in: scratch)
        let server = try await PostgresServer(in: scratch)
        var agents: [AgentHarness] = []
        do {
            try await scenario(etcd: etcd, server: server, scratch: scratch, agents: &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            await etcd.stopAll()
            try? await server.stop()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        await etcd.stopAll()
        try? await server.stop()
        scratch.remove()
    }

    func scenario(etcd: EtcdCluster, server: PostgresServer, scratch: ScratchDirectory, agents: inout [AgentHarness])
        async throws
    {
        let election = scratch.path + "/election.yaml"
        try "election:\n  etcd: \"\(etcd.endpoints.joined(separator: ","))\"\n  ttl_s: 5\n"
            .write(toFile: election, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--store", server.url, "--config", election],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the lead to hold the etcd key") {
            () async throws -> Bool? in try await Self.holder(etcd) == "lead-a" ? true : nil
        }
        let standbyToken = try await lead.joinToken(profile: "standby", outputDirectory: scratch.path)
        let standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b",
            extraArguments: [
                "--name", "lead-b", "--standby", "--lead", lead.baseURL, "--join-token", standbyToken, "--store",
                server.url, "--config", election,
            ], outputDirectory: scratch.path)
        agents.append(standby)
        try await standby.waitHealthy()
        let standbyAdmin = ["Authorization": "Bearer \(try standby.adminToken)"]
        let worker = try ExecIsolationTests.worker(
            "gpu-1", token: try await lead.joinToken(outputDirectory: scratch.path), lead: lead, scratch: scratch)
        agents.append(worker)
        try await worker.waitHealthy()
        let workerAdmin = ["Authorization": "Bearer \(try worker.adminToken)"]
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the worker to know the standby") {
            () async throws -> Bool? in
            try await TwoLeadsTests.leadStatus(worker, workerAdmin)?.standbys.contains { $0.name == "lead-b" } == true
                ? true : nil
        }

        // One of three etcd members lost: longer than the lease's TTL, nothing changes.
        try await etcd.kill(member: 2)
        let lostAt = ContinuousClock.now
        while lostAt.duration(to: .now) < .seconds(7) {
            let status = try #require(try await TwoLeadsTests.leadStatus(lead, admin))
            #expect(status.role == .lead && status.epoch == 1, "\(status)")
            #expect(try await TwoLeadsTests.leadStatus(standby, standbyAdmin)?.role == .standby)
            try await Task.sleep(for: .milliseconds(500))  // sampling a steady state, not waiting for one
        }
        #expect(try await Self.holder(etcd) == "lead-a")
        #expect(try await TwoLeadsTests.submit("before", to: lead, headers: admin).status == 201)

        // The lead dies: the standby takes over by itself, and the worker follows.
        lead.process.signal(SIGKILL)
        let killed = ContinuousClock.now
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "the standby to lead") {
            () async throws -> Bool? in
            let status = try? await TwoLeadsTests.leadStatus(standby, admin)
            return status?.role == .lead && status?.epoch == 2 ? true : nil
        }
        let toLead = killed.duration(to: .now)
        #expect(toLead < .seconds(12), "the standby led \(toLead) after the kill")
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "the worker to follow") {
            () async throws -> Bool? in
            try await TwoLeadsTests.leadStatus(worker, workerAdmin)?.lead == "lead-b" ? true : nil
        }
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the new lead to hold the etcd key") {
            () async throws -> Bool? in try await Self.holder(etcd) == "lead-b" ? true : nil
        }
        let retried = try await TwoLeadsTests.submit("before", to: standby, headers: admin)
        #expect([200, 201].contains(retried.status), "\(retried.text)")

        // etcd fully down: the lead cannot show it still holds the key, so it fences itself
        // (no failsafe: DESIGN's documented rule); when etcd is back it holds the key again and serves.
        await etcd.stopAll()
        let fenced = try await poll(timeout: .seconds(15), every: .milliseconds(100), "the lead to fence itself") {
            () async throws -> LeadStatus? in
            let status = try? await TwoLeadsTests.leadStatus(standby, admin)
            return status?.role == .fenced ? status : nil
        }
        #expect(fenced.fencedReason?.contains("etcd") == true)
        let refused = try await TwoLeadsTests.submit("while-etcd-is-down", to: standby, headers: admin)
        #expect(refused.status == 503 && refused.text.contains("fenced"), "\(refused.text)")
        try await etcd.startAll()
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the lead to serve again") {
            () async throws -> Bool? in
            try? await TwoLeadsTests.leadStatus(standby, admin)?.role == .lead ? true : nil
        }
        // It restarted to drop what it held while fenced: the worker reports to it again, and it takes work.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the worker to report again") {
            () async throws -> Bool? in
            let status = try await http(standby.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.name == "gpu-1" && $0.allowExec && $0.state == .alive } ? true : nil
        }
        let after = try await TwoLeadsTests.submit("after-etcd", to: standby, headers: admin)
        #expect(after.status == 201, "\(after.status) \(after.text)")
    }
}
