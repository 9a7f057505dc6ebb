import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real primary and a real streaming standby (pg_basebackup -R through a slot), each watched
/// by an agent: the lead watches the primary, a compute node the standby.
@Suite("PostgreSQL replica health (primary + streaming standby, two agents)", .serialized)
struct ReplicaHealthTests {
    static let slot = "replica_pg_b"

    @Test(
        "streaming, an idle primary without false lag, bulk-write lag and a stall, disconnect and return, promotion; both views on the lead"
    )
    func replicaHealth() async throws {
        let scratch = try ScratchDirectory("replica")
        defer { scratch.remove() }
        try await PostgresServer.withStreamingPair(in: scratch, slot: Self.slot) { primary, standby, agents in
            try await scenario(scratch: scratch, primary: primary, standby: standby, agents: &agents)
        }
    }

    func scenario(
        scratch: ScratchDirectory, primary: PostgresServer, standby: PostgresServer, agents: inout [AgentHarness]
    ) async throws {
        let leadFile = scratch.path + "/lead.yaml", nodeFile = scratch.path + "/node.yaml"
        try """
        postgres:
          monitor: "\(primary.conninfo)"
          interval_s: 0.5
          slot_max_retained_bytes: 1
        """.write(toFile: leadFile, atomically: true, encoding: .utf8)
        try """
        postgres:
          monitor: "\(standby.conninfo)"
          interval_s: 0.5
          stall_after_s: 4
        """.write(toFile: nodeFile, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead",
            extraArguments: ["--name", "pg-lead", "--config", leadFile],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await lead.joinToken(outputDirectory: scratch.path)
        let node = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/node",
            extraArguments: ["--name", "pg-b", "--lead", lead.baseURL, "--join-token", token, "--config", nodeFile],
            outputDirectory: scratch.path)
        agents.append(node)
        try await node.waitHealthy()
        let nodeAdmin = ["Authorization": "Bearer \(try node.adminToken)"]

        func local() async throws -> ReplicaHealth {
            try await http(node.baseURL + Routes.postgresHealth, headers: nodeAdmin).decode(ReplicaHealth.self)
        }
        func wait(
            for state: String, timeout: Duration, _ extra: @escaping @Sendable (ReplicaHealth) -> Bool = { _ in true }
        ) async throws -> ReplicaHealth {
            try await poll(timeout: timeout, every: .milliseconds(100), "pg-b's replica to be \(state)") {
                () async throws -> ReplicaHealth? in
                let health = try await http(node.baseURL + Routes.postgresHealth, headers: nodeAdmin)
                guard health.status == 200, let view = try? health.decode(ReplicaHealth.self) else { return nil }
                return view.state == state && extra(view) ? view : nil
            }
        }

        /// Waits until the lead has heard the state in a heartbeat (so it is an event).
        func leadSees(_ state: String) async throws {
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the lead to hear pg-b is \(state)") {
                () async throws -> Bool? in
                let view = try await http(lead.baseURL + Routes.node("pg-b"), headers: admin).decode(Node.self)
                return view.postgres?.state == state ? true : nil
            }
        }

        // Healthy: streaming and caught up after the clone (on a loaded machine the first samples
        // may still show the clone's tail), the replica check passes; the primary's agent is the primary.
        let healthy = try await wait(for: "streaming", timeout: .seconds(20)) { $0.lagS == 0 && $0.lagBytes == 0 }
        #expect(healthy.role == .replica && !healthy.degraded)
        #expect(healthy.receiver?.slot == Self.slot && healthy.receiver?.status == "streaming")
        #expect(try await http(node.baseURL + Routes.postgresReplica).status == 200)
        #expect(try await http(node.baseURL + Routes.postgresReplica + "?lag=5s").status == 200)
        #expect(try await http(node.baseURL + Routes.postgresReplica + "?lag=16MB").status == 200)
        #expect(try await http(node.baseURL + Routes.postgresReadOnly).status == 200)
        let notPrimary = try await http(node.baseURL + Routes.postgresPrimary)
        #expect(notPrimary.status == 503 && notPrimary.text.contains("not a primary"))
        #expect(try await http(node.baseURL + Routes.postgresReplica + "?lag=5parsecs").status == 400)
        #expect(try await http(lead.baseURL + Routes.postgresPrimary).status == 200)
        #expect(try await http(lead.baseURL + Routes.postgresReplica).status == 503)
        // The lead's heartbeat row reached the standby.
        let heartbeatNode = try await poll(timeout: .seconds(10), "the heartbeat row on the standby") {
            () async throws -> String? in
            let text = try? await standby.sql("SELECT node FROM aurora_replica_heartbeat WHERE id = 1")
            return text?.isEmpty == false ? text : nil
        }
        #expect(heartbeatNode == "pg-lead")

        // Both views on the lead, side by side.
        let overview = try await poll(timeout: .seconds(10), every: .milliseconds(100), "both views on the lead") {
            () async throws -> ReplicaOverview? in
            let view = try await http(lead.baseURL + Routes.postgresReplicas, headers: admin).decode(
                ReplicaOverview.self)
            return view.members.first(where: { $0.node == "pg-b" })?.primaryView != nil ? view : nil
        }
        #expect(overview.primary == "pg-lead")
        let member = try #require(overview.members.first { $0.node == "pg-b" })
        #expect(
            member.local?.state == "streaming" && member.primaryView?.slot == Self.slot
                && member.primaryView?.state == "streaming")
        #expect(overview.members.first { $0.node == "pg-lead" }?.local?.role == .primary)
        #expect(overview.unmatched.isEmpty)

        // An idle primary for 30 s: still streaming, never a lag alert.
        let idleUntil = ContinuousClock.now + .seconds(30)
        var idleSamples = 0
        while ContinuousClock.now < idleUntil {
            let view = try await local()
            #expect(
                view.state == "streaming" && !view.degraded && (view.lagS ?? 99) < 5,
                "idle sample: \(view.state) lag_s \(view.lagS ?? -1)")
            idleSamples += 1
            try await Task.sleep(for: .milliseconds(500))  // sampling cadence, not waiting for a condition
        }
        // One sample a second at least (a loaded machine answers slower than the 500 ms cadence).
        #expect(idleSamples >= 30)

        // Bulk write with replay paused: byte lag seen on both sides, catching up, then a stall;
        // replay resumed: streaming again with no lag.
        try await standby.sql("SELECT pg_wal_replay_pause()")
        try await primary.sql(
            "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 200000) AS g")
        let behind = try await wait(for: "catching_up", timeout: .seconds(10)) { ($0.lagBytes ?? 0) > 16 << 20 }
        #expect(behind.degraded && behind.reason.contains("lag"))
        #expect(try await http(node.baseURL + Routes.postgresReplica + "?lag=16MB").status == 503)
        #expect(try await http(node.baseURL + Routes.postgresReplica).status == 200)  // still a replica serving reads
        let primarySide = try await poll(
            timeout: .seconds(10), every: .milliseconds(100), "the primary's view of the lag"
        ) { () async throws -> StandbyView? in
            let view = try await http(lead.baseURL + Routes.postgresReplicas, headers: admin).decode(
                ReplicaOverview.self)
            let standbyView = view.members.first { $0.node == "pg-b" }?.primaryView
            return (standbyView?.lagBytes ?? 0) > 16 << 20 ? standbyView : nil
        }
        #expect(primarySide.slot == Self.slot)
        let stalled = try await wait(for: "stalled", timeout: .seconds(15))
        #expect(stalled.reason.contains("replay has not advanced"))
        #expect(try await http(node.baseURL + Routes.postgresReplica).status == 503)
        try await leadSees("stalled")
        try await standby.sql("SELECT pg_wal_replay_resume()")
        _ = try await wait(for: "streaming", timeout: .seconds(20)) { $0.lagBytes == 0 }
        #expect(try await standby.sql("SELECT count(*) FROM bulk") == "200000")
        try await leadSees("streaming")

        // The primary stops: disconnected within 10 s, the lag check fails; it returns: streaming.
        try await primary.stop()
        let stoppedAt = ContinuousClock.now
        let gone = try await wait(for: "disconnected", timeout: .seconds(10))
        #expect(ContinuousClock.now - stoppedAt < .seconds(10))
        try await leadSees("disconnected")
        #expect(gone.degraded && gone.role == .replica)
        let refused = try await http(node.baseURL + Routes.postgresReplica + "?lag=5s")
        #expect(refused.status == 503 && refused.text.contains("disconnected"))
        let leadDown = try await poll(
            timeout: .seconds(10), every: .milliseconds(100), "the lead to see its server down"
        ) { () async throws -> PostgresCheck? in
            let answer = try await http(lead.baseURL + Routes.postgresPrimary)
            let check = try answer.decode(PostgresCheck.self)
            return answer.status == 503 && check.state == "down" ? check : nil
        }
        #expect(!leadDown.ok)
        try await primary.start()
        _ = try await wait(for: "streaming", timeout: .seconds(20))
        #expect(try await http(node.baseURL + Routes.postgresReplica + "?lag=5s").status == 200)
        try await leadSees("streaming")

        // Promotion: the standby leaves recovery: not_a_replica, and the primary check passes there.
        try await standby.promote()
        let promoted = try await wait(for: "not_a_replica", timeout: .seconds(10))
        #expect(promoted.role == .primary && promoted.degraded)
        #expect(try await http(node.baseURL + Routes.postgresPrimary).status == 200)
        #expect(try await http(node.baseURL + Routes.postgresReplica).status == 503)

        // The promoted standby left its slot on the old primary: inactive, retaining WAL, reported.
        let slotted = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the inactive slot on the lead")
        { () async throws -> ReplicaHealth? in
            let view = try await http(lead.baseURL + Routes.postgresHealth, headers: admin).decode(ReplicaHealth.self)
            return view.inactiveSlots?.contains { $0.name == Self.slot } == true ? view : nil
        }
        #expect(slotted.degraded && slotted.state == "primary")
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(200), "a replica.slot_inactive event") {
            () async throws -> Bool? in
            let text = try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text
            return text.contains(EventType.replicaSlotInactive) && text.contains("\"slot\":\"\(Self.slot)\"")
                ? true : nil
        }

        // Every change was an event on the lead, in order, with the node.
        let events = try await poll(timeout: .seconds(10), every: .milliseconds(200), "replica events on the lead") {
            () async throws -> [String]? in
            let text = try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text
            let states = Self.replicaStates(text, node: "pg-b")
            return states.last == "not_a_replica" ? states : nil
        }
        let expected = [
            "streaming", "catching_up", "stalled", "streaming", "disconnected", "streaming", "not_a_replica",
        ]
        // Once replay resumes, a replica may show `catching_up` for a report or two before
        // `streaming` (the backlog of the stall is replayed): that is the truth, not a skipped state.
        let resumedThroughCatchingUp = [
            "streaming", "catching_up", "stalled", "catching_up", "streaming", "disconnected", "streaming",
            "not_a_replica",
        ]
        let seen = events.filter { expected.contains($0) }.reduce(into: [String]()) {
            if $0.last != $1 { $0.append($1) }
        }
        #expect(seen == expected || seen == resumedThroughCatchingUp, "\(seen)")

        // The status table shows the replica column.
        let table = try await ChildProcess.run(
            Binaries.auroraCLI, ["status", "--agent", lead.baseURL, "--data-dir", lead.dataDir],
            outputDirectory: scratch.path)
        #expect(table.stdout.contains("not_a_replica"), "\(table.stdout)")

        for agent in agents {
            agent.process.signal(SIGTERM)
            #expect(try await agent.process.waitForExit(timeout: .seconds(10)) == 0)
        }
        // The monitor's connection string never reaches the logs whole.
        let logs = (try? String(contentsOfFile: lead.process.stderrPath, encoding: .utf8)) ?? ""
        #expect(!logs.contains(primary.conninfo))
    }

    /// The `to` of each `replica.state_changed` event of `node` in an SSE dump, in order.
    static func replicaStates(_ sse: String, node: String) -> [String] {
        sse.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("data: "), let data = line.dropFirst(6).data(using: .utf8),
                let event = try? JSONDecoder().decode(MeshEvent.self, from: data),
                event.type == EventType.replicaStateChanged, event.node == node
            else { return nil }
            return event.data["to"]?.string
        }
    }
}
