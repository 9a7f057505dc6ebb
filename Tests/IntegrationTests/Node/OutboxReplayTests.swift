import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead and one compute node (`out-1`: exec allowed, one static GPU, a command check and a
/// connectivity probe), restarted on the same ports and data directories.
struct OutboxMesh {
    let scratch: ScratchDirectory
    let leadPort: Int
    let nodePort: Int
    let nodeFile: String
    let flag: String
    /// Jobs wait for this file: they finish when the test says so.
    let gate: String
    let api: ToggleServer

    init(_ label: String) async throws {
        scratch = try ScratchDirectory(label)
        leadPort = try freePort()
        nodePort = try freePort()
        flag = scratch.path + "/flag"
        gate = scratch.path + "/gate"
        api = try await ToggleServer()
        nodeFile = scratch.path + "/node.yaml"
        try """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: GPU-out-0, name: Test GPU, memory_total_mb: 80000}
        checks:
          - {name: flag, args: [/bin/sh, -c, "test -e \(flag) || exit 2"], interval_s: 0.2, timeout_s: 2}
        connectivity:
          - {name: api, url: "\(api.url)/health", interval_s: 0.3, timeout_s: 5, degraded_ms: 4000}
        """.write(toFile: nodeFile, atomically: true, encoding: .utf8)
    }

    func startLead() throws -> AgentHarness {
        try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", port: leadPort, extraArguments: ["--name", "out-lead"],
            outputDirectory: scratch.path)
    }

    func startNode(token: String?) throws -> AgentHarness {
        try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/out-1", port: nodePort,
            extraArguments: ["--name", "out-1", "--lead", "http://127.0.0.1:\(leadPort)", "--config", nodeFile]
                + (token.map { ["--join-token", $0] } ?? []),
            outputDirectory: scratch.path)
    }

    static func admin(_ lead: AgentHarness) throws -> [String: String] {
        ["Authorization": "Bearer \(try lead.adminToken)"]
    }

    /// The lead, then out-1 joined to it, both healthy; both are in `agents` for cleanup.
    func startLeadAndNode(_ agents: inout [AgentHarness]) async throws -> (lead: AgentHarness, node: AgentHarness) {
        let lead = try startLead()
        agents.append(lead)
        try await lead.waitHealthy()
        let node = try startNode(token: try await lead.joinToken(outputDirectory: scratch.path))
        agents.append(node)
        try await node.waitHealthy()
        return (lead, node)
    }

    /// Waits until out-1's worker takes jobs.
    static func accepting(_ lead: AgentHarness) async throws {
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "out-1 to accept jobs") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: try admin(lead)).decode(
                GPUStatus.self)
            return status.nodes.contains { $0.name == "out-1" && $0.accepting && $0.state == .alive } ? true : nil
        }
    }

    /// A job that waits for the gate file, then prints `output`.
    func gated(_ output: String) -> String { "while [ ! -e \(gate) ]; do sleep 0.05; done; echo \(output)" }

    static func submit(_ script: String, lead: AgentHarness) async throws -> Job {
        let submission = JobSubmission(
            kind: .exec, requirements: JobRequirements(minVramMB: 1000),
            payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string(script)])])
        let answer = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: try admin(lead),
            body: Array(try APICoding.encoder().encode(submission)))
        guard answer.status == 201 else { throw TestKitError("submit answered \(answer.status): \(answer.text)") }
        return try answer.decode(Job.self)
    }

    static func jobs(_ ids: [String], lead: AgentHarness) async throws -> [String: Job] {
        let list = try await http(lead.baseURL + Routes.gpuJobs + "?limit=10000", headers: try admin(lead)).decode(
            JobList.self)
        return Dictionary(uniqueKeysWithValues: list.jobs.filter { ids.contains($0.id) }.map { ($0.id, $0) })
    }

    static func events(_ lead: AgentHarness) async throws -> [MeshEvent] {
        try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: try admin(lead)).text.split(
            separator: "\n"
        ).compactMap { line in
            guard line.hasPrefix("data: ") else { return nil }
            return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
        }
    }

    static func outbox(_ node: AgentHarness) async throws -> OutboxStatus {
        try await http(node.baseURL + Routes.outbox, headers: ["Authorization": "Bearer \(try node.adminToken)"])
            .decode(OutboxStatus.self)
    }

    /// Runs `body` and always stops every agent it started and the servers.
    static func with(_ label: String, _ body: (OutboxMesh, inout [AgentHarness]) async throws -> Void) async throws {
        let mesh = try await OutboxMesh(label)
        var agents: [AgentHarness] = []
        do {
            try await body(mesh, &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            await mesh.api.stop()
            mesh.scratch.remove()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        await mesh.api.stop()
        mesh.scratch.remove()
    }
}

@Suite("Node outbox: the lead away while a node reports")
struct OutboxLeadAwayTests {
    @Test(
        "the lead stops while a compute node finishes jobs and its checks and probes change; after the lead restarts every report arrives exactly once"
    )
    func leadAway() async throws {
        try await OutboxMesh.with("outbox-away") { mesh, agents in
            let (lead, node) = try await mesh.startLeadAndNode(&agents)

            // Seen by the lead while it is up: the check fails (no flag file), the probe is healthy.
            _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the first check and probe events") {
                () async throws -> Bool? in
                let types = try await OutboxMesh.events(lead).filter { $0.node == "out-1" }.map(\.type)
                return types.contains(EventType.checkChanged) && types.contains(EventType.connectivityChanged)
                    ? true : nil
            }
            try await OutboxMesh.accepting(lead)
            var ids: [String] = []
            for index in 0..<12 { ids.append(try await OutboxMesh.submit(mesh.gated("done-\(index)"), lead: lead).id) }
            _ = try await poll(timeout: .seconds(15), every: .milliseconds(50), "12 jobs running on out-1") {
                () async throws -> Bool? in
                let jobs = try await OutboxMesh.jobs(ids, lead: lead)
                return jobs.count == 12 && jobs.values.allSatisfy { $0.state == .running } ? true : nil
            }

            // The lead goes away; meanwhile the jobs finish, the check passes, the probe goes down.
            lead.process.signal(SIGTERM)
            #expect(try await lead.process.waitForExit(timeout: .seconds(15)) == 0)
            #expect(FileManager.default.createFile(atPath: mesh.gate, contents: Data()))
            #expect(FileManager.default.createFile(atPath: mesh.flag, contents: Data()))
            mesh.api.set(status: 503)
            let waiting = try await poll(
                timeout: .seconds(20), every: .milliseconds(100), "the reports in out-1's outbox"
            ) { () async throws -> OutboxStatus? in
                let status = try await OutboxMesh.outbox(node)
                return status.pending >= 14 ? status : nil
            }
            #expect(waiting.failing && waiting.lastError != nil)
            // The node's own view works without the lead.
            let checks = try await http(
                node.baseURL + Routes.checks, headers: ["Authorization": "Bearer \(try node.adminToken)"]
            ).decode(CheckReport.self)
            #expect(checks.checks.first { $0.name == "flag" }?.status == .passing)
            let nodeHealth = try await http(node.baseURL + Routes.health).decode(HealthResponse.self)
            #expect(nodeHealth.outboxPending ?? 0 >= 14 && nodeHealth.checksStatus == .passing)

            // The lead is back: the outbox drains and each report counts once.
            let restarted = try mesh.startLead()
            agents.append(restarted)
            try await restarted.waitHealthy()
            let jobs = try await poll(timeout: .seconds(20), every: .milliseconds(100), "every job to succeed") {
                () async throws -> [String: Job]? in
                let jobs = try await OutboxMesh.jobs(ids, lead: restarted)
                return jobs.values.filter({ $0.state == .succeeded }).count == 12 ? jobs : nil
            }
            for (index, id) in ids.enumerated() {
                let job = try #require(jobs[id])
                #expect(job.attempt == 1, "the result of the first run counted; the job did not run again")
                if case .object(let result)? = job.result { #expect(result["stdout"]?.string == "done-\(index)\n") }
            }
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the outbox to drain") {
                () async throws -> Bool? in
                try await OutboxMesh.outbox(node).pending == 0 ? true : nil
            }
            let events = try await OutboxMesh.events(restarted)
            for id in ids {
                #expect(
                    events.filter { $0.type == EventType.jobSucceeded && $0.data["id"]?.string == id }.count == 1,
                    "job \(id) succeeded once")
                #expect(!events.contains { $0.type == EventType.jobRequeued && $0.data["id"]?.string == id })
            }
            let checkChanges = events.filter { $0.type == EventType.checkChanged && $0.node == "out-1" }.compactMap {
                $0.data["to"]?.string
            }
            #expect(checkChanges == ["critical", "passing"])
            let probeChanges = events.filter { $0.type == EventType.connectivityChanged && $0.node == "out-1" }
                .compactMap { $0.data["to"]?.string }
            #expect(probeChanges == ["healthy", "down"])
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "out-1's checks in its heartbeat") {
                () async throws -> Bool? in
                let record = try await http(
                    restarted.baseURL + Routes.node("out-1"), headers: try OutboxMesh.admin(restarted)
                ).decode(Node.self)
                return record.checks?.contains { $0.name == "flag" && $0.status == .passing } == true ? true : nil
            }

            // Deduplication by id, as a replay after a lost answer sees it: the same report twice
            // is taken once and answered `duplicate` (200); a result for a finished job is refused.
            let seed = try String(contentsOfFile: node.dataDir + "/keys/sign.key", encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)
            let key = try SigningKey(base64Seed: seed)
            let report = NodeReport(
                id: UUID().uuidString.lowercased(), kind: .event, at: "2026-01-01T00:00:00.000Z",
                event: NodeEvent(
                    type: EventType.alertRaised, data: ["resource": .string("disk"), "value_pct": .number(99)]))
            let late = NodeReport(
                id: UUID().uuidString.lowercased(), kind: .jobResult, at: "2026-01-01T00:00:00.000Z", job: ids[0],
                result: JobResult(attempt: 1, outcome: .failed, error: "late"))
            func send(_ reports: [NodeReport]) async throws -> (Int, ReportAnswer?) {
                let path = Routes.nodeReports("out-1")
                let body = Array(try APICoding.encoder().encode(ReportBatch(reports: reports)))
                let answer = try await http(
                    restarted.baseURL + path, method: "POST",
                    headers: SimulatedNode(name: "out-1").headers(path: path, body: body, key: key),
                    body: body)
                return (answer.status, try? answer.decode(ReportAnswer.self))
            }
            let (firstStatus, first) = try await send([report, late])
            #expect(firstStatus == 200)
            #expect(first?.results.map(\.status) == [.accepted, .refused])
            #expect(first?.results.last?.code == "already_finished")
            let (againStatus, again) = try await send([report])
            #expect(
                againStatus == 200 && again?.results.first?.status == .duplicate
                    && again?.results.first?.duplicate == true)
            #expect(
                try await OutboxMesh.events(restarted).filter { $0.id == report.id }.count == 1,
                "the event id is the report id, once")
            #expect(
                try await OutboxMesh.jobs([ids[0]], lead: restarted)[ids[0]]?.state == .succeeded,
                "the late result changed nothing")
            // A node may not report other event types.
            let forged = NodeReport(
                id: UUID().uuidString.lowercased(), kind: .event, at: "2026-01-01T00:00:00.000Z",
                event: NodeEvent(type: EventType.nodeJoined, data: [:]))
            let (_, refusal) = try await send([forged])
            #expect(refusal?.results.first?.status == .refused && refusal?.results.first?.code == "event_not_allowed")

            for agent in [node, restarted] {
                agent.process.signal(SIGTERM)
                #expect(try await agent.process.waitForExit(timeout: .seconds(15)) == 0)
            }
        }
    }
}

@Suite("Node outbox: kill -9 during outbox writes")
struct OutboxCrashTests {
    @Test(
        "kill -9 of a node while it writes job results to its outbox: the outbox reopens (torn tail cut), replays, and every job succeeds exactly once"
    )
    func crash() async throws {
        try await OutboxMesh.with("outbox-crash") { mesh, agents in
            #expect(FileManager.default.createFile(atPath: mesh.flag, contents: Data()))
            let (lead, node) = try await mesh.startLeadAndNode(&agents)
            // Let the first check and probe reports drain, so the outbox is empty.
            _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the first reports to drain") {
                () async throws -> Bool? in
                let types = try await OutboxMesh.events(lead).filter { $0.node == "out-1" }.map(\.type)
                let pending = try await OutboxMesh.outbox(node).pending
                return types.contains(EventType.checkChanged) && types.contains(EventType.connectivityChanged)
                    && pending == 0 ? true : nil
            }

            try await OutboxMesh.accepting(lead)
            var ids: [String] = []
            for index in 0..<20 { ids.append(try await OutboxMesh.submit(mesh.gated("crash-\(index)"), lead: lead).id) }
            _ = try await poll(timeout: .seconds(15), every: .milliseconds(50), "20 jobs running on out-1") {
                () async throws -> Bool? in
                let jobs = try await OutboxMesh.jobs(ids, lead: lead)
                return jobs.count == 20 && jobs.values.allSatisfy { $0.state == .running } ? true : nil
            }
            lead.process.signal(SIGKILL)
            _ = try await lead.process.waitForExit(timeout: .seconds(5))
            #expect(FileManager.default.createFile(atPath: mesh.gate, contents: Data()))

            // The results start landing in the outbox: kill -9 in the middle of it.
            let file = node.dataDir + "/outbox/reports.log"
            _ = try await poll(timeout: .seconds(15), every: .milliseconds(2), "out-1 to write results to its outbox") {
                () -> Bool? in
                ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0) > 0 ? true : nil
            }
            node.process.signal(SIGKILL)
            _ = try await node.process.waitForExit(timeout: .seconds(5))
            // And a record cut short, as a crash inside write() leaves one.
            let handle = try #require(FileHandle(forWritingAtPath: file))
            handle.seekToEndOfFile()
            handle.write(Data("AOB1".utf8) + Data([1, 99, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 1, 2, 3, 4, 123, 34]))
            try handle.close()

            // The node comes back first (the lead must not find it dead), then the lead.
            let reborn = try mesh.startNode(token: nil)
            agents.append(reborn)
            try await reborn.waitHealthy()
            let reopened = try await OutboxMesh.outbox(reborn)
            #expect(reopened.tornTailRepaired)
            let restarted = try mesh.startLead()
            agents.append(restarted)
            try await restarted.waitHealthy()

            // Results that reached the disk are replayed; runs whose results were lost with the
            // process are requeued when their lease runs out and run again. Each job succeeds once.
            let jobs = try await poll(timeout: .seconds(45), every: .milliseconds(200), "every job to succeed") {
                () async throws -> [String: Job]? in
                let jobs = try await OutboxMesh.jobs(ids, lead: restarted)
                return jobs.values.filter({ $0.state == .succeeded }).count == 20 ? jobs : nil
            }
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the outbox to drain") {
                () async throws -> Bool? in
                try await OutboxMesh.outbox(reborn).pending == 0 ? true : nil
            }
            let events = try await OutboxMesh.events(restarted)
            var replayed = 0
            for (index, id) in ids.enumerated() {
                #expect(
                    events.filter { $0.type == EventType.jobSucceeded && $0.data["id"]?.string == id }.count == 1,
                    "job \(id) succeeded once")
                let job = try #require(jobs[id])
                if job.attempt == 1 { replayed += 1 }
                if case .object(let result)? = job.result { #expect(result["stdout"]?.string == "crash-\(index)\n") }
            }
            #expect(replayed >= 1, "at least the result that was on disk before the kill was replayed")

            for agent in [reborn, restarted] {
                agent.process.signal(SIGTERM)
                #expect(try await agent.process.waitForExit(timeout: .seconds(15)) == 0)
            }
        }
    }
}
