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

    /// Puts `/aurora/lead` = `value` on a fresh lease of `ttl` seconds (another holder).
    static func plantHolder(_ etcd: EtcdCluster, value: String, ttl: Int) async throws {
        let endpoint = try #require(etcd.endpoints.first)
        let granted = try await http(
            endpoint + "/v3/lease/grant", method: "POST", body: Array(#"{"TTL":\#(ttl)}"#.utf8), timeout: .seconds(5))
        let object = try JSONSerialization.jsonObject(with: Data(granted.body)) as? [String: Any]
        let lease = try #require(object?["ID"] as? String, "\(granted.text)")
        let key = Data("/aurora/lead".utf8).base64EncodedString()
        let text = Data(value.utf8).base64EncodedString()
        let put = try await http(
            endpoint + "/v3/kv/put", method: "POST",
            body: Array(#"{"key":"\#(key)","value":"\#(text)","lease":"\#(lease)"}"#.utf8), timeout: .seconds(5))
        #expect(put.status == 200, "\(put.text)")
    }

    @Test(
        "a lead acknowledges nothing before it holds the etcd key; kill -9 of the lead: the standby takes over by itself within 12 s; one etcd member lost changes nothing; etcd fully down: the lead serves on while its standby promises, fences once it cannot, serves again when etcd is back"
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

    /// The operator token once the agent wrote it.
    static func adminToken(of agent: AgentHarness) async throws -> String {
        try await poll(timeout: .seconds(30), every: .milliseconds(50), "the admin token of \(agent.dataDir)") {
            () -> String? in try? agent.adminToken
        }
    }

    func scenario(etcd: EtcdCluster, server: PostgresServer, scratch: ScratchDirectory, agents: inout [AgentHarness])
        async throws
    {
        let election = scratch.path + "/election.yaml"
        try "election:\n  etcd: \"\(etcd.endpoints.joined(separator: ","))\"\n  ttl_s: 5\n"
            .write(toFile: election, atomically: true, encoding: .utf8)
        // Someone else holds the key when the lead starts: it acknowledges nothing until the key
        // is its own (Patroni's primary runs only while it holds the leader key).
        try await Self.plantHolder(etcd, value: "intruder", ttl: 6)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--store", server.url, "--config", election],
            outputDirectory: scratch.path)
        agents.append(lead)
        let admin = ["Authorization": "Bearer \(try await Self.adminToken(of: lead))"]
        let gated = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the lead to wait for the key") {
            () async throws -> HTTPAnswer? in
            let answer = try await TwoLeadsTests.submit("while-gated", to: lead, headers: admin)
            return answer.status == 503 ? answer : nil
        }
        #expect(gated.text.contains("awaiting_election") && gated.headers["retry-after"] == "1", "\(gated.text)")
        let waiting = try #require(try await TwoLeadsTests.leadStatus(lead, admin))
        #expect(waiting.election?.state == "follower" && waiting.election?.holder == "intruder", "\(waiting)")
        #expect(waiting.fencedReason?.contains("etcd lead key") == true)
        // The planted lease runs out: the lead takes the key and serves.
        try await lead.waitHealthy()
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
        // At once, before the worker has followed: an exec job is "retry in a second" (503
        // nodes_reporting), never a 403 as if no node allowed exec; then it is taken.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "an exec job taken by the new lead") {
            () async throws -> Bool? in
            let answer = try await TwoLeadsTests.submit("right-after", to: standby, headers: admin)
            #expect(
                answer.status == 201
                    || (answer.status == 503 && answer.text.contains("nodes_reporting")
                        && answer.headers["retry-after"] == "1"),
                "\(answer.status) \(answer.text)")
            return answer.status == 201 ? true : nil
        }
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "the worker to follow") {
            () async throws -> Bool? in
            try await TwoLeadsTests.leadStatus(worker, workerAdmin)?.lead == "lead-b" ? true : nil
        }
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the new lead to hold the etcd key") {
            () async throws -> Bool? in try await Self.holder(etcd) == "lead-b" ? true : nil
        }
        let retried = try await TwoLeadsTests.submit("before", to: standby, headers: admin)
        #expect([200, 201].contains(retried.status), "\(retried.text)")

        // The dead old lead is a standby now: removed, so that a new standby is the only peer.
        let removed = try await http(standby.baseURL + Routes.node("lead-a"), method: "DELETE", headers: admin)
        #expect(removed.status == 200, "\(removed.text)")
        let third = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-c",
            extraArguments: [
                "--name", "lead-c", "--standby", "--lead", standby.baseURL, "--join-token",
                try await standby.joinToken(profile: "standby", outputDirectory: scratch.path), "--store", server.url,
                "--config", election,
            ], outputDirectory: scratch.path)
        agents.append(third)
        try await third.waitHealthy()
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the lead to see its new standby") {
            () async throws -> Bool? in
            try await TwoLeadsTests.leadStatus(standby, admin)?.standbys.map(\.name) == ["lead-c"] ? true : nil
        }
        // The new standby has heard the lead's epoch in a heartbeat answer; the worker reports
        // to the new lead as an exec worker again.
        let thirdAdmin = ["Authorization": "Bearer \(try third.adminToken)"]
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the new standby to know epoch 2") {
            () async throws -> Bool? in
            try await TwoLeadsTests.leadStatus(third, thirdAdmin)?.epoch == 2 ? true : nil
        }
        _ = try await poll(timeout: .seconds(40), every: .milliseconds(100), "the worker to report to the new lead") {
            () async throws -> Bool? in
            let status = try await http(standby.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.name == "gpu-1" && $0.allowExec && $0.state == .alive } ? true : nil
        }
        try await Self.failsafeAttacks(lead: standby, standby: third, worker: worker, admin: admin)

        // etcd fully down: the lead serves on while its only standby promises each second not to
        // take over (the failsafe), well past the lease's TTL.
        await etcd.stopAll()
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the lead to serve on the failsafe") {
            () async throws -> Bool? in
            try? await TwoLeadsTests.leadStatus(standby, admin)?.election?.state == "failsafe" ? true : nil
        }
        let downAt = ContinuousClock.now
        var writes = 0
        while downAt.duration(to: .now) < .seconds(8) {
            let status = try #require(try await TwoLeadsTests.leadStatus(standby, admin))
            #expect(status.role == .lead && status.election?.state == "failsafe", "\(status)")
            #expect(try await TwoLeadsTests.leadStatus(third, thirdAdmin)?.role == .standby)
            let written = try await TwoLeadsTests.submit("etcd-down-\(writes)", to: standby, headers: admin)
            #expect(written.status == 201, "\(written.status) \(written.text)")
            writes += 1
            try await Task.sleep(for: .milliseconds(500))  // sampling a steady state, not waiting for one
        }

        // The standby gone too: no promise, so the lead fences itself within the TTL.
        third.process.signal(SIGKILL)
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

    /// `POST /api/lead/failsafe` on a standby: only its lead's signature, made for it, with a
    /// well-formed body of the lead's epoch, gets a promise.
    static func failsafeAttacks(
        lead: AgentHarness, standby: AgentHarness, worker: AgentHarness, admin: [String: String]
    ) async throws {
        let path = API.failsafe.pattern
        let good = Array(#"{"epoch":2,"ttl_ms":5000}"#.utf8)
        func post(_ to: AgentHarness, _ signer: NodeSigner?, _ body: [UInt8], extra: [String: String] = [:])
            async throws -> HTTPAnswer
        {
            var headers = signer?.headers(method: "POST", path: path, body: body) ?? [:]
            headers["Content-Type"] = "application/json"
            headers.merge(extra) { $1 }
            return try await http(to.baseURL + path, method: "POST", headers: headers, body: body)
        }
        let asLead = try NodeSigner(agent: "lead-b", dataDir: lead.dataDir, target: "lead-c")
        // Unauthenticated, the standby's own operator token, a compute node's signature, the
        // lead's signature made for another node, and a stranger's key under the lead's name.
        #expect(try await post(standby, nil, good).status == 401)
        #expect(
            try await post(standby, nil, good, extra: ["Authorization": "Bearer \(try standby.adminToken)"]).status
                == 401)
        let asWorker = try NodeSigner(agent: "gpu-1", dataDir: worker.dataDir, target: "lead-c")
        #expect(try await post(standby, asWorker, good).status == 401)
        let forOther = try NodeSigner(agent: "lead-b", dataDir: lead.dataDir, target: "gpu-1")
        #expect(try await post(standby, forOther, good).status == 401)
        #expect(try await post(standby, NodeSigner(node: "lead-b", target: "lead-c"), good).status == 401)
        // Malformed, out of range, unknown fields, oversized.
        for body in [
            "{", #"{"epoch":2}"#, #"{"epoch":0,"ttl_ms":5000}"#, #"{"epoch":2,"ttl_ms":999}"#,
            #"{"epoch":2,"ttl_ms":60001}"#, #"{"epoch":2,"ttl_ms":5000,"forever":true}"#,
            #"{"epoch":"2","ttl_ms":5000}"#, #"{"epoch":99999999999999999999,"ttl_ms":5000}"#,
        ] {
            let answer = try await post(standby, asLead, Array(body.utf8))
            #expect(answer.status == 400, "\(body): \(answer.status) \(answer.text)")
        }
        let huge = Array(
            ("{\"epoch\":2,\"ttl_ms\":5000,\"pad\":\"" + String(repeating: "x", count: 2 << 20) + "\"}").utf8)
        #expect(try await post(standby, asLead, huge).status == 413)
        // An older epoch than the standby has seen; a node that is not a standby; the lead itself.
        let stale = try await post(standby, asLead, Array(#"{"epoch":1,"ttl_ms":5000}"#.utf8))
        #expect(stale.status == 409 && stale.text.contains("stale_epoch"), "\(stale.text)")
        let toWorker = try await post(
            worker, try NodeSigner(agent: "lead-b", dataDir: lead.dataDir, target: "gpu-1"), good)
        #expect(toWorker.status == 409 && toWorker.text.contains("not_standby"), "\(toWorker.text)")
        let toLead = try await post(lead, asLead, good)
        #expect(toLead.status == 409 && toLead.text.contains("not_standby"), "\(toLead.text)")
        // The lead's own signature for this standby: a promise.
        let promised = try await post(standby, asLead, good)
        #expect(promised.status == 200, "\(promised.text)")
        let answer = try promised.decode(FailsafeAnswer.self)
        #expect(answer.agent == "lead-c" && answer.promisedMs == 5000)
        #expect(try await TwoLeadsTests.leadStatus(lead, admin)?.role == .lead)
    }
}
