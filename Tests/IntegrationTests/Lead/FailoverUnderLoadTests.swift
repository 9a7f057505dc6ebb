import AuroraAPI
import AuroraTestKit
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The lead killed while a client submits: a lead and its standby, a 3-member etcd as the
/// arbiter, Redis for the event stream, three exec workers, and a client that retries every call
/// against any agent until one acknowledges it. Twice: with each lead's own managed PostgreSQL
/// (the standby a synchronous streaming replica; the lead's PostgreSQL killed with it), and with
/// both leads on one external PostgreSQL.
/// Job ids by idempotency key, as the clients got them acknowledged.
final class Acknowledged: Sendable {
    let jobs = Mutex<[String: String]>([:])
}

@Suite("Failover under load (etcd + PostgreSQL + Redis + lead + standby + 3 workers)", .serialized)
struct FailoverUnderLoadTests {
    @Test(
        "kill -9 of the lead (and its PostgreSQL) amid 200 keyed jobs and 20 secret writes: every acknowledged one exists once, every job succeeds exactly once, every node follows, the Redis stream has no gap and no duplicate",
        arguments: [true, false])
    func underLoad(managed: Bool) async throws {
        let scratch = try ScratchDirectory(managed ? "failover-load-managed" : "failover-load-shared")
        let etcd = try await EtcdCluster.start(in: scratch)
        let server = managed ? nil : try await PostgresServer(in: scratch)
        let redis = try await RedisServer(in: scratch)
        var agents: [AgentHarness] = []
        do {
            try await scenario(etcd: etcd, server: server, redis: redis, scratch: scratch, agents: &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            await etcd.stopAll()
            await redis.stopIfRunning()
            try? await server?.stop()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        await etcd.stopAll()
        await redis.stopIfRunning()
        try? await server?.stop()
        scratch.remove()
    }

    /// With `server`, both leads use it; without, each lead runs its own PostgreSQL and the
    /// standby's streams synchronously from the lead's.
    func scenario(
        etcd: EtcdCluster, server: PostgresServer?, redis: RedisServer, scratch: ScratchDirectory,
        agents: inout [AgentHarness]
    ) async throws {
        let file = scratch.path + "/leads.yaml"
        try """
        election:
          etcd: "\(etcd.endpoints.joined(separator: ","))"
          ttl_s: 5
        events:
          redis: "\(redis.url)"
        \(server == nil ? "store:\n  replication_listen: \"127.0.0.1:\(try freePort())\"\n" : "")
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let store = server.map { ["--store", $0.url] } ?? []
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--config", file] + store,
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the lead to hold the etcd key") {
            () async throws -> Bool? in try await AutomaticFailoverTests.holder(etcd) == "lead-a" ? true : nil
        }
        let standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b",
            extraArguments: [
                "--name", "lead-b", "--standby", "--lead", lead.baseURL, "--join-token",
                try await lead.joinToken(profile: "standby", outputDirectory: scratch.path), "--config", file,
            ] + store, outputDirectory: scratch.path)
        agents.append(standby)
        try await standby.waitHealthy()
        if server == nil {
            _ = try await SyncStandbyTests.waitStandby(lead, admin, "lead-b", "the standby to stream synchronously") {
                $0.replication == "streaming" && $0.sync == true
            }
        }
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        var workers: [AgentHarness] = []
        for name in ["w-1", "w-2", "w-3"] {
            let worker = try ExecIsolationTests.worker(name, token: token, lead: lead, scratch: scratch)
            agents.append(worker)
            workers.append(worker)
        }
        for worker in workers { try await worker.waitHealthy() }
        for worker in workers {
            let headers = ["Authorization": "Bearer \(try worker.adminToken)"]
            _ = try await poll(
                timeout: .seconds(20), every: .milliseconds(100), "\(worker.dataDir) to know the standby"
            ) { () async throws -> Bool? in
                try await TwoLeadsTests.leadStatus(worker, headers)?.standbys.contains { $0.name == "lead-b" } == true
                    ? true : nil
            }
        }
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "three exec workers") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.filter { $0.allowExec && $0.state == .alive }.count == 3 ? true : nil
        }

        // The client: every call goes to the first agent that acknowledges it, the mesh admin
        // token through any agent (the workers pass it to the lead).
        let targets = [lead, standby] + workers
        let acknowledged = Acknowledged()
        @Sendable func submitUntilAcknowledged(_ key: String) async throws {
            let submission = JobSubmission(
                kind: .exec, payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string("echo \(key)")])],
                idempotencyKey: key)
            let body = Array(try APICoding.encoder().encode(submission))
            let id = try await poll(timeout: .seconds(60), every: .milliseconds(20), "job \(key) to be acknowledged") {
                () async throws -> String? in
                for target in targets {
                    guard
                        let answer = try? await http(
                            target.baseURL + Routes.gpuJobs, method: "POST", headers: admin, body: body,
                            timeout: .seconds(3)),
                        [200, 201].contains(answer.status), let job = try? answer.decode(Job.self)
                    else { continue }
                    return job.id
                }
                return nil
            }
            let earlier = acknowledged.jobs.withLock { known in
                defer { known[key] = known[key] ?? id }
                return known[key]
            }
            #expect(earlier == nil || earlier == id, "\(key) acknowledged as two jobs")
        }
        @Sendable func writeUntilAcknowledged(_ index: Int) async throws {
            let write = SecretWrite(
                service: "load", keyName: "key-\(index)", value: "value-\(index)", scope: "global")
            let body = Array(try APICoding.encoder().encode(write))
            _ = try await poll(timeout: .seconds(60), every: .milliseconds(20), "secret \(index) to be acknowledged") {
                () async throws -> Bool? in
                for target in [lead, standby] {
                    if let answer = try? await http(
                        target.baseURL + Routes.secrets, method: "POST", headers: admin, body: body,
                        timeout: .seconds(3)), answer.status == 201
                    {
                        return true
                    }
                }
                return nil
            }
        }

        // Ten clients at once, each with its share of the keys; the lead dies once 60 jobs were
        // acknowledged, in the middle of everyone's work.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<10 {
                group.addTask {
                    for index in stride(from: client, to: 200, by: 10) {
                        try await submitUntilAcknowledged("load-\(index)")
                        if index % 10 == 0 { try await writeUntilAcknowledged(index / 10) }
                    }
                }
            }
            _ = try await poll(timeout: .seconds(120), every: .milliseconds(10), "60 jobs to be acknowledged") {
                () -> Bool? in acknowledged.jobs.withLock { $0.count } >= 60 ? true : nil
            }
            let postmaster = server == nil ? lead.postgresPID : nil
            lead.process.signal(SIGKILL)
            if let postmaster { kill(postmaster, SIGKILL) }
            try await group.waitForAll()
        }
        let secrets = (0..<20).map { "key-\($0)" }

        // Every acknowledged job exists once and succeeds.
        let keys = acknowledged.jobs.withLock { $0 }
        #expect(keys.count == 200)
        #expect(Set(keys.values).count == 200, "two keys share a job")
        for (key, id) in keys.sorted(by: { $0.key < $1.key }) {
            let job = try await poll(timeout: .seconds(60), every: .milliseconds(50), "job \(key) to finish") {
                () async throws -> Job? in
                let job = try await http(standby.baseURL + Routes.gpuJob(id), headers: admin).decode(Job.self)
                return [.succeeded, .failed, .cancelled].contains(job.state) ? job : nil
            }
            // Exactly once: one job per key, succeeded, on attempt 1: the lead change cost no
            // attempt (a delivery the dying lead wrote but never answered is delivered again).
            #expect(job.state == .succeeded, "\(key): \(job.state) attempt \(job.attempt)")
            #expect(job.attempt == 1, "\(key): attempt \(job.attempt)")
        }
        let listed = try await http(standby.baseURL + Routes.gpuJobs + "?limit=1000", headers: admin).decode(
            JobList.self)
        #expect(listed.jobs.filter { $0.idempotencyKey?.hasPrefix("load-") == true }.count == 200)
        // Every acknowledged secret is there.
        for key in secrets {
            let read = try await http(standby.baseURL + Routes.secret("load", key) + "?node=w-1", headers: admin)
            #expect(read.status == 200 && read.text.contains("value-"), "\(key): \(read.status) \(read.text)")
        }
        #expect(secrets.count == 20)
        // Every node follows the new lead.
        for worker in workers {
            let headers = ["Authorization": "Bearer \(try worker.adminToken)"]
            let seen = try await TwoLeadsTests.leadStatus(worker, headers)
            #expect(seen?.lead == "lead-b" && seen?.epoch == 2, "\(worker.dataDir): \(String(describing: seen))")
        }
        // Every event the new lead's store holds, in order.
        func storedEvents() async throws -> [MeshEvent] {
            try await http(standby.baseURL + Routes.events + "?since=0&follow=false", headers: admin)
                .text.split(separator: "\n").compactMap { line -> MeshEvent? in
                    guard line.hasPrefix("data: ") else { return nil }
                    return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
                }
        }
        // The Redis stream holds exactly the store's events: no gap, no duplicate, in order.
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the stream to hold every event") {
            () async throws -> Bool? in
            let stored = try await storedEvents().map(\.seq)
            let streamed = try await redis.streamSeqs("aurora:events")
            return !stored.isEmpty && streamed == stored ? true : nil
        }
        // A promoted replica's event sequence goes on from the last committed event: the new
        // term's first event (lead.promoted) follows the old term's last one without a gap.
        if server == nil {
            let events = try await storedEvents()
            let promoted = try #require(events.firstIndex { $0.type == EventType.leadPromoted })
            #expect(promoted > 0 && events[promoted].seq == events[promoted - 1].seq + 1)
        }
    }
}
