import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead whose managed PostgreSQL streams to a standby lead (`store.replication_listen`): the
/// standby clones the lead at its join and becomes the synchronous standby; stopped, it is
/// recorded ineligible and the lead commits without it; started again, it is synchronous again.
@Suite("Synchronous standby (managed store streaming to a standby lead)", .serialized)
struct SyncStandbyTests {
    /// The lead's view of standby `name` once `condition` holds for it.
    static func waitStandby(
        _ lead: AgentHarness, _ admin: [String: String], _ name: String, _ what: String,
        timeout: Duration = .seconds(60), _ condition: @escaping (LeadStatus.Standby) -> Bool
    ) async throws -> LeadStatus.Standby {
        try await poll(timeout: timeout, every: .milliseconds(100), what) { () async throws -> LeadStatus.Standby? in
            guard
                let standby = try await TwoLeadsTests.leadStatus(lead, admin)?.standbys.first(where: { $0.name == name }
                )
            else { return nil }
            return condition(standby) ? standby : nil
        }
    }

    static func writeSecret(_ lead: AgentHarness, _ admin: [String: String], key: String, value: String)
        async throws -> Int
    {
        let write = SecretWrite(service: "db", keyName: key, value: value, scope: "global")
        return try await http(
            lead.baseURL + Routes.secrets, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(write)), timeout: .seconds(8)
        ).status
    }

    /// `psql -Atc SQL` on the managed PostgreSQL in `dataDir/postgres` (socket `.s.PGSQL.port`), as `postgres`.
    static func replicaSQL(_ dataDir: String, _ sql: String, port: Int = 5432, scratch: ScratchDirectory)
        async throws -> String
    {
        let psql = try PostgresServer.binDirectory() + "/psql"
        let command = [
            "/usr/sbin/runuser", "-u", "postgres", "--", psql, "-h", dataDir + "/postgres", "-p", String(port),
            "-U", "aurora", "-d", "aurora", "-Atc", sql,
        ]
        let outcome = try await ChildProcess.run(
            "/bin/sh", ["-c", "cd / && exec \"$@\"", "sh"] + command, outputDirectory: scratch.path)
        guard outcome.code == 0 else { throw TestKitError("psql failed: \(outcome.stderr.suffix(300))") }
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(
        "the standby streams and is synchronous; stopped, it is ineligible and commits go on; back, it is synchronous again"
    )
    func synchronousStandby() async throws {
        guard geteuid() == 0 else { return }  // the managed clusters run as `postgres`
        let scratch = try ScratchDirectory("sync-standby")
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        }
        do {
            try await scenario(scratch: scratch, agents: &agents)
        } catch {
            await Self.stop(agents)
            throw error
        }
        await Self.stop(agents)
        scratch.remove()
    }

    /// SIGTERM to each agent still running, which stops its managed PostgreSQL too.
    static func stop(_ agents: [AgentHarness]) async {
        for agent in agents where agent.process.isRunning {
            agent.process.signal(SIGTERM)
            _ = try? await agent.process.waitForExit(timeout: .seconds(30))
        }
    }

    @Test("bad replication settings stop the lead before anything starts, in one line")
    func badSettings() async throws {
        let scratch = try ScratchDirectory("sync-standby-config")
        let cases: [(settings: String, arguments: [String], message: String)] = [
            ("replication_listen: \"lead.example.net:5433\"", [], "must be an IP address"),
            (
                "replication_listen: \"127.0.0.1:5433\"", ["--store", "postgres://aurora@127.0.0.1:1/aurora"],
                "managed store"
            ),
            ("standby_ineligible_after_s: 0", [], "standby_ineligible_after_s"),
        ]
        for (index, bad) in cases.enumerated() {
            let file = scratch.path + "/bad-\(index).yaml"
            try "store:\n  \(bad.settings)\n".write(toFile: file, atomically: true, encoding: .utf8)
            let agent = try AgentHarness(
                profile: "lead", dataDir: scratch.path + "/lead-\(index)",
                extraArguments: ["--name", "lead-\(index)", "--config", file] + bad.arguments,
                outputDirectory: scratch.path)
            let code = try await agent.process.waitForExit(timeout: .seconds(30))
            #expect(code != 0)
            #expect(agent.process.stderr.contains(bad.message), "\(agent.process.stderr.suffix(400))")
        }
        scratch.remove()
    }

    func scenario(scratch: ScratchDirectory, agents: inout [AgentHarness]) async throws {
        let replicationPort = try freePort()
        let leadConfig = scratch.path + "/lead.yaml"
        try """
        store:
          replication_listen: "127.0.0.1:\(replicationPort)"
          standby_ineligible_after_s: 3
        """.write(toFile: leadConfig, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--config", leadConfig], outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]

        // Attack: a compute node's join gets no replication role, file or slot.
        let computeToken = try await lead.joinToken(outputDirectory: scratch.path)
        let worker = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1",
            extraArguments: ["--name", "gpu-1", "--lead", lead.baseURL, "--join-token", computeToken],
            outputDirectory: scratch.path)
        agents.append(worker)
        try await worker.waitHealthy()
        #expect(!FileManager.default.fileExists(atPath: worker.dataDir + "/standby.json"))
        #expect(
            try await Self.replicaSQL(
                lead.dataDir, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'aurora_repl_%'", port: replicationPort,
                scratch: scratch)
                == "0")

        // The standby joins with a standby token, clones the lead and streams.
        let standbyToken = try await lead.joinToken(profile: "standby", outputDirectory: scratch.path)
        let standbyArguments = ["--name", "lead-b", "--standby", "--lead", lead.baseURL]
        var standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b",
            extraArguments: standbyArguments + ["--join-token", standbyToken], outputDirectory: scratch.path)
        agents.append(standby)
        try await standby.waitHealthy()
        let synchronous = try await Self.waitStandby(lead, admin, "lead-b", "the standby to stream synchronously") {
            $0.replication == "streaming" && $0.sync == true && $0.eligible == true
        }
        // The standby reports its replica's health in heartbeats: the lead records it streaming.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(200), "the standby's replica health") {
            () async throws -> Bool? in
            let text = try await http(lead.baseURL + Routes.events + "?follow=false&tail=1000", headers: admin).text
            return ReplicaHealthTests.replicaStates(text, node: "lead-b").last == "streaming" ? true : nil
        }
        let kept = standby.dataDir + "/standby.json"
        #expect(FileManager.default.fileExists(atPath: kept))
        #expect(((try? FileManager.default.attributesOfItem(atPath: kept)[.posixPermissions]) as? Int) == 0o600)
        #expect(synchronous.lagBytes != nil)

        // A write acknowledged by the lead is on the standby's replica.
        #expect(try await Self.writeSecret(lead, admin, key: "password", value: "streamed-to-the-standby") == 201)
        _ = try await poll(timeout: .seconds(2), every: .milliseconds(50), "the secret on the replica") {
            () async throws -> Bool? in
            try await Self.replicaSQL(
                standby.dataDir, "SELECT count(*) FROM secrets WHERE service = 'db' AND key_name = 'password'",
                scratch: scratch) == "1" ? true : nil
        }
        #expect(
            try await Self.replicaSQL(standby.dataDir, "SELECT pg_is_in_recovery()", scratch: scratch) == "t")

        try await Self.readsFromItsReplica(lead: lead, standby: standby, admin: admin)

        // Stopped: ineligible and not synchronous within seconds, an event, and writes go on.
        let replicaPID = try #require(standby.postgresPID)
        standby.process.signal(SIGTERM)
        #expect(try await standby.process.waitForExit(timeout: .seconds(30)) == 0)
        #expect(try await waitGone(replicaPID, timeout: .seconds(10)))
        let gone = try await Self.waitStandby(
            lead, admin, "lead-b", "the standby to be ineligible", timeout: .seconds(12)
        ) { $0.eligible == false && $0.sync == false }
        #expect(gone.replication == "disconnected")
        let events = try await http(lead.baseURL + Routes.events + "?follow=false&tail=1000", headers: admin).text
        #expect(events.contains(EventType.leadStandbyIneligible))
        #expect(try await Self.writeSecret(lead, admin, key: "after-stop", value: "written-without-it") == 201)

        // Back: streaming, eligible and synchronous again (no second clone).
        standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b", extraArguments: standbyArguments,
            outputDirectory: scratch.path)
        agents.append(standby)
        try await standby.waitHealthy()
        _ = try await Self.waitStandby(lead, admin, "lead-b", "the standby to be synchronous again") {
            $0.replication == "streaming" && $0.sync == true && $0.eligible == true
        }
        let later = try await http(lead.baseURL + Routes.events + "?follow=false&tail=1000", headers: admin).text
        #expect(later.contains(EventType.leadStandbyEligible))
        _ = try await poll(timeout: .seconds(5), every: .milliseconds(50), "the later secret on the replica") {
            () async throws -> Bool? in
            try await Self.replicaSQL(
                standby.dataDir, "SELECT count(*) FROM secrets WHERE key_name = 'after-stop'", scratch: scratch) == "1"
                ? true : nil
        }

        // The replication password (in the standby's server-only password file) is in no log or event.
        let passfile = try String(
            contentsOfFile: standby.dataDir + "/postgres.replication/primary.pgpass", encoding: .utf8)
        let password = String(passfile.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").last ?? "")
        #expect(password.count == 64)
        let logs = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter {
            $0.hasSuffix(".out") || $0.hasSuffix(".err")
        }
        for log in logs {
            let text = (try? String(contentsOfFile: scratch.path + "/" + log, encoding: .utf8)) ?? ""
            #expect(!text.contains(password), "\(log) holds the replication password")
        }
        for dir in [lead.dataDir, standby.dataDir] {
            let text = (try? String(contentsOfFile: dir + "/postgres/server.log", encoding: .utf8)) ?? ""
            #expect(!text.contains(password))
        }
        #expect(!later.contains(password))
        #expect(!((try? String(contentsOfFile: kept, encoding: .utf8)) ?? "").contains(password))

        // Removed: its slot (which would keep WAL for it for ever) and its role go, the lead stops
        // waiting for it, and writes go on.
        let removed = try await http(
            lead.baseURL + Routes.node("lead-b"), method: "DELETE", headers: admin, timeout: .seconds(20))
        #expect(removed.status == 200, "\(removed.text)")
        _ = try await poll(timeout: .seconds(15), every: .milliseconds(100), "the slot and the role to go") {
            () async throws -> Bool? in
            let left = try await Self.replicaSQL(
                lead.dataDir,
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'aurora_lead_b') + "
                    + "(SELECT count(*) FROM pg_roles WHERE rolname = 'aurora_repl_lead_b')",
                port: replicationPort, scratch: scratch)
            return left == "0" ? true : nil
        }
        #expect(try await Self.writeSecret(lead, admin, key: "after-remove", value: "written-alone") == 201)
        #expect(try await TwoLeadsTests.leadStatus(lead, admin)?.standbys.isEmpty == true)
    }

    /// The standby answers node and job reads from its own replica (`X-Aurora-Read-From:
    /// replica`), with the lead's credentials and visibility rules, and goes on answering them
    /// while the lead is frozen.
    static func readsFromItsReplica(
        lead: AgentHarness, standby: AgentHarness, admin: [String: String]
    ) async throws {
        func token(_ request: TokenCreateRequest) async throws -> APITokenCreated {
            try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(request))
            ).decode(APITokenCreated.self)
        }
        // A job that waits in the queue (no node here runs it).
        let submission = JobSubmission(
            kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")], idempotencyKey: "replica-read",
            allowUnplaceable: true)
        let submitted = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(submission)))
        #expect([200, 201, 202].contains(submitted.status), "\(submitted.text)")
        let job = try submitted.decode(Job.self)
        let acme = try await token(TokenCreateRequest(apiRole: .read, company: "acme"))
        let revoked = try await token(TokenCreateRequest(apiRole: .read))
        let own = ["Authorization": "Bearer \(try standby.adminToken)"]

        // The mesh admin token (the lead's, recorded in the store) reads from the replica.
        let read = try await http(standby.baseURL + Routes.gpuJob(job.id), headers: admin)
        #expect(read.status == 200, "\(read.text)")
        #expect(read.headers["x-aurora-read-from"] == "replica")
        #expect(try read.decode(Job.self).id == job.id)
        let list = try await http(standby.baseURL + Routes.gpuJobs + "?limit=50", headers: admin)
        #expect(list.headers["x-aurora-read-from"] == "replica")
        #expect(try list.decode(JobList.self).jobs.contains { $0.id == job.id })
        let nodes = try await http(standby.baseURL + Routes.nodes, headers: admin)
        #expect(nodes.headers["x-aurora-read-from"] == "replica")
        #expect(Set(try nodes.decode(NodeList.self).nodes.map(\.name)).isSuperset(of: ["lead-a", "lead-b", "gpu-1"]))
        let one = try await http(standby.baseURL + Routes.node("gpu-1"), headers: own)
        #expect(one.status == 200 && one.headers["x-aurora-read-from"] == "replica", "\(one.text)")
        let atLead = try await http(lead.baseURL + Routes.node("gpu-1"), headers: admin).decode(Node.self)
        #expect(try one.decode(Node.self).vpnIP == atLead.vpnIP)
        #expect(try await http(standby.baseURL + Routes.node("no-such-node"), headers: admin).status == 404)

        // Visibility as on the lead: the standby's own token reads as node:lead-b, a company's
        // read token sees its company's jobs only; another's job is 404, never 403.
        #expect(try await http(standby.baseURL + Routes.gpuJob(job.id), headers: own).status == 404)
        #expect(
            try await http(standby.baseURL + Routes.gpuJobs, headers: own).decode(JobList.self).jobs.contains {
                $0.id == job.id
            } == false)
        let acmeHeaders = ["Authorization": "Bearer \(acme.token)"]
        #expect(try await http(standby.baseURL + Routes.gpuJob(job.id), headers: acmeHeaders).status == 404)
        #expect(try await http(standby.baseURL + Routes.nodes, headers: acmeHeaders).status == 200)

        // Attacks: no token, an unknown token, another agent's operator token, a malformed and an
        // oversized one (401); a revoked token once the revocation is on the replica (synchronous:
        // at once); bad parameters (400). None of them reaches data.
        let revokedHeaders = ["Authorization": "Bearer \(revoked.token)"]
        #expect(try await http(standby.baseURL + Routes.gpuJobs, headers: revokedHeaders).status == 200)
        #expect(
            try await http(
                lead.baseURL + API.revokeToken.path(revoked.info.id), method: "DELETE", headers: admin
            ).status == 200)
        for headers in [
            [:], ["Authorization": "Bearer aurapi_" + String(repeating: "0", count: 48)],
            ["Authorization": "Bearer aur_" + String(repeating: "ab", count: 32)],
            ["Authorization": "Basic \(try lead.adminToken)"],
            ["Authorization": "Bearer " + String(repeating: "x", count: 300)], revokedHeaders,
        ] {
            for path in [Routes.gpuJobs, Routes.gpuJob(job.id), Routes.nodes, Routes.node("gpu-1")] {
                let refused = try await http(standby.baseURL + path, headers: headers)
                #expect(
                    refused.status == 401, "\(path) with \(headers.keys.sorted()): \(refused.status) \(refused.text)")
                #expect(!refused.text.contains(job.id))
            }
        }
        for query in ["?state=bogus", "?limit=0", "?limit=10001", "?limit=99999999999999999999", "?limit=-1"] {
            #expect(try await http(standby.baseURL + Routes.gpuJobs + query, headers: admin).status == 400, "\(query)")
        }

        // The lead frozen: the standby still answers from its replica, at once.
        lead.process.signal(SIGSTOP)
        defer { lead.process.signal(SIGCONT) }
        let frozen = try await http(standby.baseURL + Routes.gpuJob(job.id), headers: admin, timeout: .seconds(3))
        #expect(frozen.status == 200 && frozen.headers["x-aurora-read-from"] == "replica", "\(frozen.text)")
        let frozenNodes = try await http(standby.baseURL + Routes.nodes, headers: admin, timeout: .seconds(3))
        #expect(frozenNodes.status == 200 && frozenNodes.headers["x-aurora-read-from"] == "replica")
    }
}
