import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Promotion of a standby whose managed PostgreSQL streams synchronously from the lead's: a lead
/// (`store.replication_listen`), a standby lead and a compute node.
@Suite("Promoting a streaming standby (managed stores)", .serialized)
struct ManagedPromotionTests {
    struct Mesh {
        var lead: AgentHarness
        var standby: AgentHarness
        var worker: AgentHarness
        var admin: [String: String]
    }

    static func start(scratch: ScratchDirectory, agents: inout [AgentHarness]) async throws -> Mesh {
        let leadConfig = scratch.path + "/lead.yaml"
        try "store:\n  replication_listen: \"127.0.0.1:\(try freePort())\"\n  standby_ineligible_after_s: 30\n"
            .write(toFile: leadConfig, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--config", leadConfig], outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        // The standby's own listener serves once it is promoted (the old lead rejoins through it).
        let standbyConfig = scratch.path + "/lead-b.yaml"
        try "store:\n  replication_listen: \"127.0.0.1:\(try freePort())\"\n  standby_ineligible_after_s: 30\n"
            .write(toFile: standbyConfig, atomically: true, encoding: .utf8)
        let standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b",
            extraArguments: [
                "--name", "lead-b", "--standby", "--lead", lead.baseURL, "--config", standbyConfig, "--join-token",
                try await lead.joinToken(profile: "standby", outputDirectory: scratch.path),
            ], outputDirectory: scratch.path)
        agents.append(standby)
        try await standby.waitHealthy()
        let worker = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1",
            extraArguments: [
                "--name", "gpu-1", "--lead", lead.baseURL, "--join-token",
                try await lead.joinToken(outputDirectory: scratch.path),
            ], outputDirectory: scratch.path)
        agents.append(worker)
        try await worker.waitHealthy()
        _ = try await SyncStandbyTests.waitStandby(lead, admin, "lead-b", "the standby to stream synchronously") {
            $0.replication == "streaming" && $0.sync == true && $0.eligible == true
        }
        // The standby's own sampler has seen its replica stream (what its promotion relies on).
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the standby to see itself streaming") {
            () async throws -> Bool? in
            let health = try await http(standby.baseURL + Routes.health).decode(HealthResponse.self)
            return health.postgres?.state == "streaming" ? true : nil
        }
        let workerAdmin = ["Authorization": "Bearer \(try worker.adminToken)"]
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the worker to know the standby") {
            () async throws -> Bool? in
            try await TwoLeadsTests.leadStatus(worker, workerAdmin)?.standbys.contains { $0.name == "lead-b" } == true
                ? true : nil
        }
        return Mesh(lead: lead, standby: standby, worker: worker, admin: admin)
    }

    /// `aurora-cli lead promote` (with `flags`) on `agent`, which must exit 0; then waits until the
    /// agent leads, at `epoch` when one is given.
    static func promote(
        _ agent: AgentHarness, _ flags: [String] = [], epoch: Int64? = nil, admin: [String: String],
        scratch: ScratchDirectory, _ what: String
    ) async throws {
        let promoted = try await TwoLeadsTests.cli(["lead", "promote"] + flags, agent: agent, scratch: scratch)
        #expect(promoted.code == 0, "\(promoted.stderr)")
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), what) { () async throws -> Bool? in
            let status = try? await TwoLeadsTests.leadStatus(agent, admin)
            return status?.role == .lead && (epoch == nil || status?.epoch == epoch) ? true : nil
        }
    }

    static func killLead(_ lead: AgentHarness) async throws {
        let postmaster = lead.postgresPID
        lead.process.signal(SIGKILL)
        if let postmaster { kill(postmaster, SIGKILL) }
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(20), "the lead to be gone") { () -> Bool? in
            lead.process.isRunning ? nil : true
        }
    }

    /// Waits until `agent` (an old lead) runs as a standby of `lead` at `epoch`.
    static func waitRejoined(_ agent: AgentHarness, _ admin: [String: String], lead: String, epoch: Int64)
        async throws
    {
        _ = try await poll(timeout: .seconds(90), every: .milliseconds(100), "the old lead to rejoin as a standby") {
            () async throws -> Bool? in
            let status = try? await TwoLeadsTests.leadStatus(agent, admin)
            return status?.role == .standby && status?.lead == lead && status?.epoch == epoch ? true : nil
        }
    }

    static func run(_ body: (ScratchDirectory, inout [AgentHarness]) async throws -> Void, label: String) async throws {
        let scratch = try ScratchDirectory(label)
        var agents: [AgentHarness] = []
        do {
            try await body(scratch, &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            await SyncStandbyTests.stop(agents)
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGTERM) }
        await SyncStandbyTests.stop(agents)
        scratch.remove()
    }

    @Test(
        "kill -9 of the lead and its PostgreSQL: the synchronous standby promotes without --accept-data-loss, keeps every acknowledged write, the worker follows; the old lead, started while the new one is frozen, learns the newer term from the worker and fences, then comes back as its standby (old data kept aside, streaming) and can be promoted again"
    )
    func caughtUp() async throws {
        try await Self.run(
            { scratch, agents in
                let mesh = try await Self.start(scratch: scratch, agents: &agents)
                let (lead, standby, worker, admin) = (mesh.lead, mesh.standby, mesh.worker, mesh.admin)
                let shown = try await TwoLeadsTests.cli(["lead", "status"], agent: lead, scratch: scratch)
                #expect(
                    shown.stdout.contains("standby  lead-b") && shown.stdout.contains("replica streaming")
                        && shown.stdout.contains("  sync"), "\(shown.stdout)")
                #expect(try await SyncStandbyTests.writeSecret(lead, admin, key: "synced", value: "on-both") == 201)
                try await Self.killLead(lead)
                try await Self.promote(
                    standby, ["--json"], epoch: 2, admin: admin, scratch: scratch, "the standby to lead")
                let secret = try await http(
                    standby.baseURL + Routes.secret("db", "synced") + "?node=gpu-1", headers: admin)
                #expect(secret.status == 200 && secret.text.contains("on-both"), "\(secret.status) \(secret.text)")
                let workerAdmin = ["Authorization": "Bearer \(try worker.adminToken)"]
                _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the worker to follow") {
                    () async throws -> Bool? in
                    try await TwoLeadsTests.leadStatus(worker, workerAdmin)?.lead == "lead-b" ? true : nil
                }
                #expect(try await SyncStandbyTests.writeSecret(standby, admin, key: "after", value: "new-lead") == 201)
                // The old lead starts again on its own PostgreSQL with its old command line while the new
                // lead is out of reach (frozen). The worker passes on the newer term it followed, signed
                // by lead-b: the old lead fences at its start and acknowledges nothing.
                standby.process.signal(SIGSTOP)
                let returned = try AgentHarness(
                    profile: "lead", dataDir: lead.dataDir, port: lead.port,
                    extraArguments: ["--name", "lead-a", "--config", scratch.path + "/lead.yaml"],
                    outputDirectory: scratch.path)
                agents.append(returned)
                let cutOff = try await poll(
                    timeout: .seconds(30), every: .milliseconds(100), "the old lead to fence at its start"
                ) { () async throws -> LeadStatus? in
                    let status = try? await TwoLeadsTests.leadStatus(returned, admin)
                    #expect(
                        status?.role != .lead || status?.epoch == nil, "the old lead led again beside the new one")
                    return status?.role == .fenced ? status : nil
                }
                #expect(cutOff.fencedReason?.contains("epoch 2") == true, "\(cutOff.fencedReason ?? "-")")
                #expect(try await SyncStandbyTests.writeSecret(returned, admin, key: "cut-off", value: "old") == 503)
                // Once the new lead answers again, the old lead rejoins it as its standby by itself.
                standby.process.signal(SIGCONT)
                try await Self.waitRejoined(returned, admin, lead: "lead-b", epoch: 2)
                let lost = try await http(
                    standby.baseURL + Routes.secret("db", "cut-off") + "?node=gpu-1", headers: admin)
                #expect(lost.status == 404, "\(lost.status) \(lost.text)")
                // Its old primary's data is kept aside; it streams a fresh clone of the new lead's store.
                #expect(FileManager.default.fileExists(atPath: lead.dataDir + "/pgdata.before-epoch-2/PG_VERSION"))
                #expect(FileManager.default.fileExists(atPath: lead.dataDir + "/rejoined.json"))
                _ = try await SyncStandbyTests.waitStandby(
                    standby, admin, "lead-a", "the old lead to stream synchronously from the new lead"
                ) { $0.replication == "streaming" && $0.sync == true && $0.eligible == true }
                _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "lead-a to see itself streaming") {
                    () async throws -> Bool? in
                    let health = try await http(returned.baseURL + Routes.health).decode(HealthResponse.self)
                    return health.postgres?.state == "streaming" ? true : nil
                }
                #expect(
                    try await SyncStandbyTests.writeSecret(standby, admin, key: "rejoined", value: "on-lead-a") == 201)
                let onReplica = try await poll(
                    timeout: .seconds(20), every: .milliseconds(100), "the new lead's write on lead-a's replica"
                ) { () async throws -> String? in
                    let count = try await SyncStandbyTests.replicaSQL(
                        returned.dataDir, "SELECT count(*) FROM secrets WHERE key_name = 'rejoined'", scratch: scratch)
                    return count == "1" ? count : nil
                }
                #expect(onReplica == "1")
                let events = try await http(standby.baseURL + Routes.events + "?follow=false&tail=1000", headers: admin)
                #expect(events.text.contains("lead.rejoined"), "\(events.text.suffix(2000))")

                // A restart of the same unit (the same command line, without --standby) keeps it a standby.
                returned.process.signal(SIGTERM)
                try await returned.process.waitForExit(timeout: .seconds(30))
                let again = try AgentHarness(
                    profile: "lead", dataDir: lead.dataDir, port: lead.port,
                    extraArguments: ["--name", "lead-a", "--config", scratch.path + "/lead.yaml"],
                    outputDirectory: scratch.path)
                agents.append(again)
                try await Self.waitRejoined(again, admin, lead: "lead-b", epoch: 2)
                _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "lead-a to stream again") {
                    () async throws -> Bool? in
                    let health = try await http(again.baseURL + Routes.health).decode(HealthResponse.self)
                    return health.postgres?.state == "streaming" ? true : nil
                }
                _ = try await SyncStandbyTests.waitStandby(standby, admin, "lead-a", "lead-a synchronous again") {
                    $0.replication == "streaming" && $0.sync == true && $0.eligible == true
                }

                // It is eligible again: the new lead dies, and lead-a is promoted without data loss.
                try await Self.killLead(standby)
                try await Self.promote(
                    again, ["--json"], epoch: 3, admin: admin, scratch: scratch, "lead-a to lead again")
                // Its secrets manager loads right after its term begins: the write is there once it answers.
                let kept = try await poll(timeout: .seconds(30), every: .milliseconds(100), "lead-a to serve secrets") {
                    () async throws -> HTTPAnswer? in
                    let answer = try await http(
                        again.baseURL + Routes.secret("db", "rejoined") + "?node=gpu-1", headers: admin)
                    return answer.status == 503 ? nil : answer
                }
                #expect(kept.status == 200 && kept.text.contains("on-lead-a"), "\(kept.status) \(kept.text)")
            }, label: "managed-promotion")
    }

    @Test(
        "split brain on managed stores: the lead frozen (SIGSTOP) while its standby promotes; thawed, it acknowledges no write, sees the newer term at the new lead, fences itself and rejoins as its standby"
    )
    func frozenLead() async throws {
        try await Self.run(
            { scratch, agents in
                let mesh = try await Self.start(scratch: scratch, agents: &agents)
                let (lead, standby, admin) = (mesh.lead, mesh.standby, mesh.admin)
                #expect(try await SyncStandbyTests.writeSecret(lead, admin, key: "before", value: "both") == 201)
                lead.process.signal(SIGSTOP)
                // The frozen lead's PostgreSQL still runs: the replica has everything. (The check is not
                // what this test is about, so a refusal does not stop it.)
                try await Self.promote(
                    standby, ["--accept-data-loss", "--json"], admin: admin, scratch: scratch, "the standby to lead")
                // Thawed, the old lead's writes wait for a synchronous standby that is gone: none is
                // acknowledged. It finds the newer term at the new lead, fences itself and rejoins.
                lead.process.signal(SIGCONT)
                var writes: [(key: String, status: Int?)] = []
                _ = try await poll(timeout: .seconds(60), every: .milliseconds(200), "the old lead to stop leading") {
                    () async throws -> Bool? in
                    let status = try? await TwoLeadsTests.leadStatus(lead, admin)
                    guard status?.role == .lead || status?.role == .fenced else { return status == nil ? nil : true }
                    let key = "split-\(writes.count)"
                    let write = SecretWrite(service: "db", keyName: key, value: "old-lead", scope: "global")
                    let answer = try? await http(
                        lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                        body: Array(try APICoding.encoder().encode(write)), timeout: .seconds(2))
                    writes.append((key, answer?.status))
                    return status?.role == .fenced ? true : nil
                }
                try await Self.waitRejoined(lead, admin, lead: "lead-b", epoch: 2)
                // A write that raced the restart into a standby went through the new lead (it forwards).
                for write in writes where (200..<300).contains(write.status ?? 0) {
                    let onNewLead = try await http(
                        standby.baseURL + Routes.secret("db", write.key) + "?node=gpu-1", headers: admin)
                    #expect(onNewLead.status == 200, "the old lead acknowledged \(write.key) itself: \(writes)")
                }
                #expect(FileManager.default.fileExists(atPath: lead.dataDir + "/pgdata.before-epoch-2/PG_VERSION"))
                _ = try await SyncStandbyTests.waitStandby(
                    standby, admin, "lead-a", "the old lead to stream from the new lead"
                ) { $0.replication == "streaming" && $0.sync == true }
                let kept = try await http(
                    standby.baseURL + Routes.secret("db", "before") + "?node=gpu-1", headers: admin)
                #expect(kept.status == 200 && kept.text.contains("both"), "\(kept.status) \(kept.text)")
            }, label: "managed-frozen")
    }

    @Test(
        "a standby that cannot show it holds everything (restarted after the lead was lost) is refused without --accept-data-loss, and promotes with it"
    )
    func notCaughtUp() async throws {
        try await Self.run(
            { scratch, agents in
                let mesh = try await Self.start(scratch: scratch, agents: &agents)
                let (lead, admin) = (mesh.lead, mesh.admin)
                var standby = mesh.standby
                try await Self.killLead(lead)
                // The standby restarts: it cannot tell what it missed while it was down.
                standby.process.signal(SIGTERM)
                try await standby.process.waitForExit(timeout: .seconds(30))
                standby = try AgentHarness(
                    profile: "lead", dataDir: standby.dataDir, port: standby.port,
                    extraArguments: ["--name", "lead-b", "--standby", "--lead", lead.baseURL],
                    outputDirectory: scratch.path)
                agents.append(standby)
                try await standby.waitHealthy()
                let refused = try await TwoLeadsTests.cli(["lead", "promote"], agent: standby, scratch: scratch)
                #expect(refused.code != 0 && refused.stderr.contains("not_caught_up"), "\(refused.stderr)")
                #expect(refused.stderr.contains("--accept-data-loss"))
                try await Self.promote(
                    standby, ["--accept-data-loss"], admin: admin, scratch: scratch, "the standby to lead")
            }, label: "managed-not-caught-up")
    }
}
