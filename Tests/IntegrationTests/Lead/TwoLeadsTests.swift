import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Two leads on one external PostgreSQL (the store both reach), a standby joined with a standby
/// token, and an exec worker: the lead killed with SIGKILL, the standby promoted, the worker
/// following it by itself, and the old lead fenced when it comes back.
@Suite("Two leads (external PostgreSQL + lead + standby + an exec worker)", .serialized)
struct TwoLeadsTests {
    struct Mesh {
        var lead: AgentHarness
        var standby: AgentHarness
        var worker: AgentHarness
        var admin: [String: String]
    }

    static func cli(_ arguments: [String], agent: AgentHarness, scratch: ScratchDirectory) async throws -> (
        code: Int32, stdout: String, stderr: String
    ) {
        try await ChildProcess.run(
            Binaries.auroraCLI, arguments + ["--agent", agent.baseURL, "--data-dir", agent.dataDir],
            outputDirectory: scratch.path)
    }

    static func submit(_ key: String, to agent: AgentHarness, headers: [String: String]) async throws -> HTTPAnswer {
        let submission = JobSubmission(
            kind: .exec, payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string("echo \(key)")])],
            idempotencyKey: key)
        return try await http(
            agent.baseURL + Routes.gpuJobs, method: "POST", headers: headers,
            body: Array(try APICoding.encoder().encode(submission)))
    }

    static func leadStatus(_ agent: AgentHarness, _ headers: [String: String]) async throws -> LeadStatus? {
        let answer = try await http(agent.baseURL + API.leadStatus.pattern, headers: headers)
        return answer.status == 200 ? try answer.decode(LeadStatus.self) : nil
    }

    @Test(
        "kill -9 of the lead: the standby promoted keeps every job, secret and credential; the worker follows it; the old lead comes back fenced"
    )
    func failover() async throws {
        let scratch = try ScratchDirectory("two-leads")
        let server = try await PostgresServer(in: scratch)
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        }
        do {
            try await scenario(server: server, scratch: scratch, agents: &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            try? await server.stop()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        try? await server.stop()
        scratch.remove()
    }

    /// A lead on `server`, a standby joined with a standby token and an exec worker `gpu-1`,
    /// started and appended to `agents`; returns once the worker knows the standby.
    static func startMesh(server: PostgresServer, scratch: ScratchDirectory, agents: inout [AgentHarness])
        async throws -> Mesh
    {
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--store", server.url], outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let first = try #require(try await Self.leadStatus(lead, admin))
        #expect(first.role == .lead && first.epoch == 1 && first.lead == "lead-a" && first.standbys.isEmpty)

        // The standby joins with a standby token; a compute token is refused for it.
        let computeToken = try await lead.joinToken(outputDirectory: scratch.path)
        let standbyToken = try await lead.joinToken(profile: "standby", outputDirectory: scratch.path)
        let standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b",
            extraArguments: [
                "--name", "lead-b", "--standby", "--lead", lead.baseURL, "--join-token", standbyToken, "--store",
                server.url,
            ], outputDirectory: scratch.path)
        agents.append(standby)
        try await standby.waitHealthy()
        let file = scratch.path + "/gpu-1.yaml"
        try """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: GPU-two-leads, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 0}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let worker = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1",
            extraArguments: [
                "--name", "gpu-1", "--lead", lead.baseURL, "--join-token", computeToken, "--config", file,
            ],
            outputDirectory: scratch.path)
        agents.append(worker)
        try await worker.waitHealthy()
        let workerAdmin = ["Authorization": "Bearer \(try worker.adminToken)"]
        // The standby holds the master key the lead sealed to it, and every node knows the standby.
        #expect(FileManager.default.fileExists(atPath: standby.dataDir + "/keys/secrets.master"))
        let audit = try await http(lead.baseURL + Routes.audit + "?verify=true", headers: admin).decode(AuditLog.self)
        #expect(
            audit.verified == true
                && audit.entries.contains { $0.action == "seal_master_key" && $0.node == "lead-b" },
            "the master key's sealing to the standby is audited")
        // A lead without store.replication_listen offers no replication: the standby shares the store.
        #expect(!FileManager.default.fileExists(atPath: standby.dataDir + "/standby.json"))
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the worker to know the standby") {
            () async throws -> Bool? in
            let seen = try await Self.leadStatus(worker, workerAdmin)
            return seen?.standbys.contains(where: { $0.name == "lead-b" && $0.state == .alive }) == true
                && seen?.epoch == 1 ? true : nil
        }

        return Mesh(lead: lead, standby: standby, worker: worker, admin: admin)
    }

    func scenario(server: PostgresServer, scratch: ScratchDirectory, agents: inout [AgentHarness]) async throws {
        let mesh = try await Self.startMesh(server: server, scratch: scratch, agents: &agents)
        let (lead, standby, worker, admin) = (mesh.lead, mesh.standby, mesh.worker, mesh.admin)
        let workerAdmin = ["Authorization": "Bearer \(try worker.adminToken)"]

        // Work acknowledged by the old lead: 10 exec jobs (idempotency keys) and a secret.
        var acknowledged: [String: String] = [:]
        for index in 0..<10 {
            let answer = try await Self.submit("before-\(index)", to: lead, headers: admin)
            #expect(answer.status == 201, "\(answer.status) \(answer.text)")
            acknowledged["before-\(index)"] = try answer.decode(Job.self).id
        }
        // The standby reads jobs and nodes from the store both leads share, not through the lead.
        let fromStore = try await http(standby.baseURL + Routes.gpuJob(acknowledged["before-0"]!), headers: admin)
        #expect(fromStore.status == 200 && fromStore.headers["x-aurora-read-from"] == "store", "\(fromStore.text)")
        let storeList = try await http(standby.baseURL + Routes.gpuJobs + "?limit=100", headers: admin)
        #expect(Set(try storeList.decode(JobList.self).jobs.map(\.id)).isSuperset(of: Set(acknowledged.values)))
        #expect(try await http(standby.baseURL + Routes.nodes, headers: admin).headers["x-aurora-read-from"] == "store")
        let write = SecretWrite(service: "db", keyName: "password", value: "kept-across-leads", scope: "global")
        #expect(
            try await http(
                lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(write))
            ).status == 201)

        // Attacks: a compute node's signature cannot make the lead step down (403); without a
        // signature 401; promote is refused on the lead, on a compute node, and without a token.
        let stepDown = try await http(lead.baseURL + API.stepDown.pattern, method: "POST")
        #expect(stepDown.status == 401, "\(stepDown.status) \(stepDown.text)")
        let asWorker = try NodeSigner(agent: "gpu-1", dataDir: worker.dataDir)
        let workerStepDown = try await http(
            lead.baseURL + API.stepDown.pattern, method: "POST",
            headers: asWorker.headers(method: "POST", path: API.stepDown.pattern, body: []))
        #expect(workerStepDown.status == 403, "\(workerStepDown.status) \(workerStepDown.text)")
        let oversized = try await http(
            standby.baseURL + API.promoteLead.pattern, method: "POST",
            headers: ["Authorization": "Bearer \(try standby.adminToken)", "Content-Type": "application/json"],
            body: Array(
                ("{\"accept_data_loss\":false,\"pad\":\"" + String(repeating: "x", count: 2 << 20) + "\"}").utf8))
        #expect(oversized.status == 413, "\(oversized.status) \(oversized.text)")
        // An epoch a caller claims is only a hint: out of range, malformed or merely higher, the
        // lead serves the call and stays the lead of epoch 1 (its store says so).
        for claimed in ["99999999999999999999", "-5", "0", "abc", String(repeating: "9", count: 300), "50"] {
            let answer = try await http(
                lead.baseURL + Routes.nodes, headers: admin.merging(["aurora-epoch": claimed]) { $1 })
            #expect(answer.status == 200 && answer.headers["aurora-epoch"] == "1", "\(claimed): \(answer.status)")
        }
        #expect(try await Self.leadStatus(lead, admin)?.role == .lead, "a claimed epoch fenced the lead")
        let onLead = try await Self.cli(["lead", "promote"], agent: lead, scratch: scratch)
        #expect(onLead.code != 0 && onLead.stderr.contains("already_lead"), "\(onLead.stderr)")
        let onWorker = try await Self.cli(["lead", "promote"], agent: worker, scratch: scratch)
        #expect(onWorker.code != 0 && onWorker.stderr.contains("not_standby"), "\(onWorker.stderr)")
        let anonymous = try await http(
            standby.baseURL + API.promoteLead.pattern, method: "POST", body: Array("{}".utf8))
        #expect(anonymous.status == 401)
        let unknownField = try await http(
            standby.baseURL + API.promoteLead.pattern, method: "POST",
            headers: ["Authorization": "Bearer \(try standby.adminToken)"], body: Array(#"{"force":true}"#.utf8))
        #expect(unknownField.status == 400 && unknownField.text.contains("force"), "\(unknownField.text)")
        // Rejoining as a standby: unsigned 401; a compute node's own signature 403; an impostor's key
        // 401; a standby's malformed or oversized body 400 and 413. None changes a role.
        let rejoin = API.rejoinLead.pattern
        func signedRejoin(_ agent: AgentHarness, as name: String, body: [UInt8], key: SigningKey? = nil)
            async throws -> HTTPAnswer
        {
            let seed = try String(contentsOfFile: agent.dataDir + "/keys/sign.key", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let signer = NodeSigner(node: name, key: try key ?? SigningKey(base64Seed: seed))
            return try await http(
                lead.baseURL + rejoin, method: "POST",
                headers: signer.headers(method: "POST", path: rejoin, body: body), body: body)
        }
        let empty = Array("{}".utf8)
        #expect(try await http(lead.baseURL + rejoin, method: "POST", body: empty).status == 401)
        let asCompute = try await signedRejoin(worker, as: "gpu-1", body: empty)
        #expect(asCompute.status == 403, "\(asCompute.status) \(asCompute.text)")
        let impostor = try await signedRejoin(standby, as: "lead-b", body: empty, key: SigningKey.generate())
        #expect(impostor.status == 401, "\(impostor.status) \(impostor.text)")
        let unknown = try await signedRejoin(standby, as: "lead-b", body: Array(#"{"role":"lead"}"#.utf8))
        #expect(unknown.status == 400 && unknown.text.contains("role"), "\(unknown.status) \(unknown.text)")
        let oversizedRejoin = try await signedRejoin(
            standby, as: "lead-b",
            body: Array((#"{"address":""# + String(repeating: "x", count: 2 << 20) + #""}"#).utf8))
        #expect(oversizedRejoin.status == 413, "\(oversizedRejoin.status)")
        let roles = try await http(lead.baseURL + Routes.nodes, headers: admin).decode(NodeList.self)
        #expect(roles.nodes.first { $0.name == "gpu-1" }?.role == .compute)
        #expect(try await Self.leadStatus(lead, admin)?.role == .lead, "a refused promotion changed nothing")
        // A worker passes a caller's own token to the lead for job calls: a stranger's is the
        // lead's 401, a malformed one is refused on the spot, the mesh admin token works.
        let stranger = try await Self.submit("via-worker", to: worker, headers: ["Authorization": "Bearer aur_nobody"])
        #expect(stranger.status == 401, "\(stranger.status) \(stranger.text)")
        let malformed = try await Self.submit(
            "via-worker", to: worker, headers: ["Authorization": "Bearer " + String(repeating: "x", count: 300)])
        #expect(malformed.status == 401, "\(malformed.status) \(malformed.text)")
        let keyViaWorker = try await Self.submit("before-0", to: worker, headers: admin)
        #expect(
            keyViaWorker.status == 200 && (try? keyViaWorker.decode(Job.self).id) == acknowledged["before-0"],
            "the mesh admin's key through a worker is the same job: \(keyViaWorker.status) \(keyViaWorker.text)")

        // The lead dies with SIGKILL; the standby is promoted.
        lead.process.signal(SIGKILL)
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(20), "the lead to be gone") { () -> Bool? in
            lead.process.isRunning ? nil : true
        }
        let promoted = try await Self.cli(["lead", "promote", "--json"], agent: standby, scratch: scratch)
        #expect(promoted.code == 0, "\(promoted.stderr)")
        let answer = try APICoding.decoder().decode(PromoteResponse.self, from: Data(promoted.stdout.utf8))
        #expect(answer.term.epoch == 2 && answer.term.lead == "lead-b" && !answer.oldLeadSteppedDown)

        // The old admin token works on the new lead (it is in the store); the new lead leads epoch 2.
        let now = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the standby to lead") {
            () async throws -> LeadStatus? in
            let status = try? await Self.leadStatus(standby, admin)
            return status?.role == .lead && status?.epoch == 2 ? status : nil
        }
        #expect(now.lead == "lead-b")
        // The worker follows by itself (no operator action), and records the new lead and epoch.
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the worker to follow lead-b") {
            () async throws -> Bool? in
            let seen = try await Self.leadStatus(worker, workerAdmin)
            return seen?.lead == "lead-b" && seen?.epoch == 2 ? true : nil
        }
        #expect(worker.process.isRunning)
        let membership = try String(contentsOfFile: worker.dataDir + "/membership.json", encoding: .utf8)
        #expect(membership.contains("\"epoch\":2") || membership.contains("\"epoch\": 2"), "\(membership)")
        #expect(membership.contains(standby.baseURL))

        // Every job the old lead acknowledged exists once and succeeds; retrying a key returns the same job.
        for (key, id) in acknowledged {
            let done = try await poll(timeout: .seconds(60), every: .milliseconds(100), "job \(key) to finish") {
                () async throws -> Job? in
                let job = try await http(standby.baseURL + Routes.gpuJob(id), headers: admin).decode(Job.self)
                return job.state == .succeeded || job.state == .failed ? job : nil
            }
            #expect(done.state == .succeeded, "\(key): \(done.state) \(done.error ?? "")")
            let retried = try await Self.submit(key, to: standby, headers: admin)
            #expect([200, 201].contains(retried.status) && (try? retried.decode(Job.self).id) == id, "\(retried.text)")
        }
        // The worker heartbeats to the new lead: it is alive and takes exec jobs there.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the worker to report to lead-b") {
            () async throws -> Bool? in
            let status = try await http(standby.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.name == "gpu-1" && $0.allowExec && $0.state == .alive } ? true : nil
        }
        let fresh = try await Self.submit("after-0", to: standby, headers: admin)
        #expect(fresh.status == 201, "\(fresh.text)")
        let freshID = try fresh.decode(Job.self).id
        let freshDone = try await poll(timeout: .seconds(30), every: .milliseconds(100), "a new job to run") {
            () async throws -> Job? in
            let job = try await http(standby.baseURL + Routes.gpuJob(freshID), headers: admin).decode(Job.self)
            return job.state == .succeeded ? job : nil
        }
        #expect(freshDone.node == "gpu-1")
        // The secret opens on the new lead (the master key reached it sealed at its join).
        let secret = try await http(standby.baseURL + Routes.secret("db", "password") + "?node=gpu-1", headers: admin)
        #expect(secret.status == 200 && secret.text.contains("kept-across-leads"), "\(secret.status) \(secret.text)")
        // The worker's agent reads it through the new lead too.
        let viaWorker = try await http(worker.baseURL + Routes.secret("db", "password"), headers: workerAdmin)
        #expect(viaWorker.status == 200 && viaWorker.text.contains("kept-across-leads"), "\(viaWorker.text)")

        // The old lead comes back with its old command line: it sees the newer term and is fenced
        // (and, told not to rejoin as a standby, stays fenced).
        let stayFenced = scratch.path + "/stay-fenced.yaml"
        try "election:\n  rejoin_as_standby: false\n".write(toFile: stayFenced, atomically: true, encoding: .utf8)
        let returned = try AgentHarness(
            profile: "lead", dataDir: lead.dataDir, port: lead.port,
            extraArguments: ["--name", "lead-a", "--store", server.url, "--config", stayFenced],
            outputDirectory: scratch.path)
        agents.append(returned)
        let fenced = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the old lead to be fenced") {
            () async throws -> LeadStatus? in
            let status = try? await Self.leadStatus(returned, admin)
            return status?.role == .fenced ? status : nil
        }
        #expect(fenced.fencedReason?.contains("lead-b") == true, "\(fenced.fencedReason ?? "")")
        let refused = try await Self.submit("to-the-old-lead", to: returned, headers: admin)
        #expect(refused.status == 503 && refused.text.contains("fenced"), "\(refused.status) \(refused.text)")
        let noHandoff = try await http(returned.baseURL + API.leadHandoff.pattern)
        #expect(noHandoff.status == 503)
        // Its web console still loads and signs in (acknowledging nothing); the mesh's pages get 503.
        #expect(try await http(returned.baseURL + API.consolePage.pattern).status == 200)
        #expect(try await http(returned.baseURL + "/ui/assets/app.js").status == 200)
        let signIn = try await http(
            returned.baseURL + API.consoleSignIn.pattern, method: "POST", headers: ["Content-Type": "application/json"],
            body: Array(try APICoding.encoder().encode(ConsoleSignIn(token: try returned.adminToken))))
        #expect(signIn.status == 201, "\(signIn.status) \(signIn.text)")
        let cookie = signIn.headers["set-cookie"]?.split(separator: ";").first.map(String.init) ?? ""
        #expect(try await http(returned.baseURL + Routes.nodes, headers: ["Cookie": cookie]).status == 503)
        let status = try await Self.cli(["lead", "status"], agent: returned, scratch: scratch)
        #expect(status.code == 1 && status.stdout.contains("FENCED"), "\(status.stdout)")
        // `aurora-cli status` names the lead and its epoch first.
        let table = try await Self.cli(["status"], agent: worker, scratch: scratch)
        #expect(table.stdout.hasPrefix("lead") && table.stdout.contains("lead-b  epoch 2"), "\(table.stdout)")
        // The new lead's events say what happened.
        let events = try await http(standby.baseURL + Routes.events + "?follow=false&tail=1000", headers: admin)
        #expect(events.text.contains("lead.promoted"), "\(events.text.suffix(2000))")
    }

    @Test(
        "split brain: the lead frozen (SIGSTOP) while the standby takes over; thawed, it acknowledges no write, writes nothing into the store, and rejoins as the new lead's standby"
    )
    func frozenLead() async throws {
        let scratch = try ScratchDirectory("two-leads-frozen")
        let server = try await PostgresServer(in: scratch)
        var agents: [AgentHarness] = []
        do {
            try await frozen(server: server, scratch: scratch, agents: &agents)
        } catch {
            for agent in agents where agent.process.isRunning {
                agent.process.signal(SIGCONT)
                agent.process.signal(SIGKILL)
            }
            try? await server.stop()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        try? await server.stop()
        scratch.remove()
    }

    func frozen(server: PostgresServer, scratch: ScratchDirectory, agents: inout [AgentHarness]) async throws {
        let mesh = try await Self.startMesh(server: server, scratch: scratch, agents: &agents)
        let (lead, standby, worker, admin) = (mesh.lead, mesh.standby, mesh.worker, mesh.admin)
        let workerAdmin = ["Authorization": "Bearer \(try worker.adminToken)"]
        #expect(try await Self.submit("before", to: lead, headers: admin).status == 201)

        lead.process.signal(SIGSTOP)
        let promoted = try await Self.cli(["lead", "promote", "--json"], agent: standby, scratch: scratch)
        #expect(promoted.code == 0, "\(promoted.stderr)")
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the standby to lead") {
            () async throws -> Bool? in
            try? await Self.leadStatus(standby, admin)?.role == .lead ? true : nil
        }
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the worker to follow lead-b") {
            () async throws -> Bool? in
            try await Self.leadStatus(worker, workerAdmin)?.lead == "lead-b" ? true : nil
        }
        let nodesBefore = try await http(standby.baseURL + Routes.nodes, headers: admin).decode(NodeList.self)

        // Thawed, the old lead acknowledges nothing: every write it is sent while it is still the old
        // lead's process is refused. It ends fenced by the new term, then rejoins the new lead as its
        // standby by itself.
        lead.process.signal(SIGCONT)
        var writes: [(status: Int, id: String?)] = []
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the old lead to stop leading") {
            () async throws -> Bool? in
            let status = try? await Self.leadStatus(lead, admin)
            guard status?.role == .lead || status?.role == .fenced else { return status == nil ? nil : true }
            if let write = try? await Self.submit("after-\(writes.count)", to: lead, headers: admin) {
                writes.append((write.status, try? write.decode(Job.self).id))
            }
            return status?.role == .fenced ? true : nil
        }
        // A write that raced the restart into a standby went through the new lead (it forwards).
        for write in writes where (200..<300).contains(write.status) {
            let id = try #require(write.id)
            let onNewLead = try await http(standby.baseURL + Routes.gpuJob(id), headers: admin)
            #expect(onNewLead.status == 200, "the old lead acknowledged a write itself: \(writes)")
        }
        try await ManagedPromotionTests.waitRejoined(lead, admin, lead: "lead-b", epoch: 2)
        #expect(FileManager.default.fileExists(atPath: lead.dataDir + "/rejoined.json"))
        let shown = try await Self.cli(["lead", "status"], agent: lead, scratch: scratch)
        #expect(shown.code == 0 && shown.stdout.contains("standby"), "\(shown.stdout)")
        let health = try await http(lead.baseURL + Routes.health)
        #expect(health.status == 200, "\(health.text)")
        let table = try await Self.cli(["status"], agent: standby, scratch: scratch)
        #expect(
            table.stdout.split(separator: "\n").contains { $0.contains("lead-a") && $0.contains("standby") },
            "\(table.stdout)")
        // The new lead sees it as a live standby again (its heartbeats).
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "lead-a alive as a standby") {
            () async throws -> Bool? in
            try await Self.leadStatus(standby, admin)?.standbys.contains {
                $0.name == "lead-a" && $0.state == .alive
            } == true ? true : nil
        }
        // No job it was sent exists on the new lead; the worker stays with the new lead.
        let jobs = try await http(standby.baseURL + Routes.gpuJobs, headers: admin).decode(JobList.self)
        let forwarded = Set(writes.compactMap(\.id))
        #expect(!jobs.jobs.contains { $0.idempotencyKey?.hasPrefix("after-") == true && !forwarded.contains($0.id) })
        #expect(try await Self.leadStatus(worker, workerAdmin)?.epoch == 2)
        // Nothing the old lead held in memory reached the store: the registry's roles are the new lead's.
        let nodesAfter = try await http(standby.baseURL + Routes.nodes, headers: admin).decode(NodeList.self)
        #expect(nodesAfter.nodes.first { $0.name == "lead-b" }?.role == .lead)
        #expect(nodesAfter.nodes.first { $0.name == "lead-a" }?.role == .standby)
        #expect(nodesBefore.nodes.count == nodesAfter.nodes.count)
        let events = try await http(standby.baseURL + Routes.events + "?follow=false&tail=1000", headers: admin)
        #expect(
            events.text.contains("lead.fenced") && events.text.contains("lead.promoted")
                && events.text.contains("lead.rejoined"))
    }
}
