import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead and a compute node (`chk-1`) whose profile has HTTP, TCP and command checks against
/// local test servers, a recovery command, and resource alert thresholds low enough to fire.
@Suite("Service checks, resource alerts and the operator CLI (lead + a compute node + local servers)", .serialized)
struct HealthCheckTests {
    @Test(
        "checks flip passing/critical with their thresholds; the recovery runs once per window, not in a loop; results in heartbeats and /health; alerts are events; logs, restart and ssh"
    )
    func checks() async throws {
        let scratch = try ScratchDirectory("checks")
        defer { scratch.remove() }
        let web = try await ToggleServer()
        var agents: [AgentHarness] = []
        do {
            try await scenario(scratch: scratch, web: web, agents: &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            await web.stop()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        await web.stop()
    }

    func scenario(scratch: ScratchDirectory, web: ToggleServer, agents: inout [AgentHarness]) async throws {
        let port = try PortHolder()  // listening: TCP connects succeed
        let flag = scratch.path + "/flag"
        let recoveries = scratch.path + "/recoveries.log"
        let file = scratch.path + "/node.yaml"
        try """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: GPU-chk-0, name: Test GPU, memory_total_mb: 24000}
        checks:
          - {name: web, http: "\(web.url)/health", interval_s: 0.2, timeout_s: 1, failures_before_critical: 3, success_before_passing: 2,
             recovery: [/bin/sh, -c, "echo ran >> \(recoveries)"], recovery_window_s: 10}
          - {name: port, tcp: "127.0.0.1:\(port.port)", interval_s: 0.2, timeout_s: 1}
          - {name: script, args: [/bin/sh, -c, "test -e \(flag) || exit 2"], interval_s: 0.2, timeout_s: 2}
        alerts:
          memory_pct: 1
          disk_pct: 1
          interval_s: 0.2
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "chk-lead"],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await lead.joinToken(outputDirectory: scratch.path)
        let node = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/chk-1",
            extraArguments: ["--name", "chk-1", "--lead", lead.baseURL, "--join-token", token, "--config", file],
            outputDirectory: scratch.path)
        agents.append(node)
        try await node.waitHealthy()
        let nodeAdmin = ["Authorization": "Bearer \(try node.adminToken)"]
        func checks() async throws -> [String: ServiceCheckState] {
            let report = try await http(node.baseURL + Routes.checks, headers: nodeAdmin).decode(CheckReport.self)
            return Dictionary(uniqueKeysWithValues: report.checks.map { ($0.name, $0) })
        }
        func cli(_ arguments: [String], agent: AgentHarness) async throws -> (
            code: Int32, stdout: String, stderr: String
        ) {
            try await ChildProcess.run(
                Binaries.auroraCLI, arguments + ["--agent", agent.baseURL, "--data-dir", agent.dataDir],
                outputDirectory: scratch.path)
        }

        // Passing web and port, critical script (no flag file). (The script's timeout is 2 s, not
        // the default min(2, interval): a loaded CI machine can take over 0.2 s to start a shell,
        // and this test is about thresholds and recoveries, not timeouts.)
        // A run that overran its timeout on a loaded machine reports "timed out", not the exit
        // code, so the first snapshot is the one where every check has said what this setup
        // makes it say (each kept as it is: any other status or output fails by the deadline).
        let first = try await poll(timeout: .seconds(20), every: .milliseconds(50), "every check to have run") {
            () async throws -> [String: ServiceCheckState]? in
            let checks = try await checks()
            guard checks.count == 3, checks.values.allSatisfy({ $0.status != nil }) else { return nil }
            return checks["script"]?.output == "exit 2" ? checks : nil
        }
        #expect(first["web"]?.status == .passing, "\(String(describing: first["web"]))")
        #expect(first["web"]?.output.hasPrefix("HTTP 200") == true, "\(String(describing: first["web"]))")
        #expect(first["port"]?.status == .passing, "\(String(describing: first["port"]))")
        #expect(first["script"]?.status == .critical, "\(String(describing: first["script"]))")
        // The flag appears: the script passes at the next run.
        #expect(FileManager.default.createFile(atPath: flag, contents: Data()))
        _ = try await poll(timeout: .seconds(5), every: .milliseconds(50), "the script check to pass") {
            () async throws -> Bool? in
            try await checks()["script"]?.status == .passing ? true : nil
        }

        // web answers 500: passing through two failures, critical at the third; the recovery
        // runs once, and not again while the failures go on inside its 10 s window (wide, so that
        // a loaded machine running checks late still stays well inside it).
        web.set(status: 500)
        let failedAt = ContinuousClock.now
        let critical = try await poll(timeout: .seconds(10), every: .milliseconds(20), "web to turn critical") {
            () async throws -> ServiceCheckState? in
            let check = try #require(try await checks()["web"])
            if check.status == .passing {
                #expect(check.consecutiveFailures < 3, "critical only from the third failure")
            }
            return check.status == .critical ? check : nil
        }
        #expect(
            critical.consecutiveFailures >= 3 && critical.lastOutcome == .critical
                && critical.output.hasPrefix("HTTP 500"))
        _ = try await poll(timeout: .seconds(5), every: .milliseconds(50), "the recovery to run") { () -> Bool? in
            FileManager.default.fileExists(atPath: recoveries) ? true : nil
        }
        // Failing on for ~2 s more, well inside the window: still one run.
        _ = try await poll(timeout: .seconds(9), every: .milliseconds(50), "more failures") {
            () async throws -> Bool? in
            try await checks()["web"]!.consecutiveFailures >= critical.consecutiveFailures + 10 ? true : nil
        }
        #expect(try String(contentsOfFile: recoveries, encoding: .utf8).split(separator: "\n").count == 1)
        #expect(ContinuousClock.now - failedAt < .seconds(10), "still inside the window")
        // After the window it may run once more; recovered, it passes after two successes.
        _ = try await poll(timeout: .seconds(16), every: .milliseconds(50), "the second recovery after the window") {
            () -> Bool? in
            ((try? String(contentsOfFile: recoveries, encoding: .utf8)) ?? "").split(separator: "\n").count == 2
                ? true : nil
        }
        #expect(ContinuousClock.now - failedAt >= .seconds(10))
        web.set(status: 200)
        let recovered = try await poll(timeout: .seconds(5), every: .milliseconds(20), "web to pass again") {
            () async throws -> ServiceCheckState? in
            let check = try #require(try await checks()["web"])
            if check.lastOutcome == .passing, check.consecutiveSuccesses < 2 {
                #expect(check.status == .critical, "passing only from the second success")
            }
            return check.status == .passing ? check : nil
        }
        #expect(recovered.recoveries == 2 && recovered.lastRecoveryExitCode == 0)
        let runs = try String(contentsOfFile: recoveries, encoding: .utf8).split(separator: "\n").count
        #expect(runs == 2)

        // The TCP check: the port closes, critical at once (threshold 1).
        port.close()
        _ = try await poll(timeout: .seconds(5), every: .milliseconds(50), "the port check to fail") {
            () async throws -> Bool? in
            try await checks()["port"]?.status == .critical ? true : nil
        }

        // /health and the heartbeat carry the checks; every change is an event on the lead.
        let health = try await http(node.baseURL + Routes.health).decode(HealthResponse.self)
        #expect(health.status == .ok, "a failing service does not make the agent unhealthy")
        #expect(health.checksStatus == .critical && health.checks?.first { $0.name == "port" }?.status == .critical)
        #expect(Set(health.alerts ?? []) == ["disk", "memory"])
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the lead to see chk-1's checks") {
            () async throws -> Bool? in
            let record = try await http(lead.baseURL + Routes.node("chk-1"), headers: admin).decode(Node.self)
            let byName = Dictionary(uniqueKeysWithValues: (record.checks ?? []).map { ($0.name, $0.status) })
            return byName["web"] == .passing && byName["port"] == .critical && byName["script"] == .passing
                && byName["data_dir_disk"] != nil ? true : nil
        }
        let events = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the check events") {
            () async throws -> [MeshEvent]? in
            let events = try await http(
                lead.baseURL + Routes.events + "?since=0&follow=false&node=chk-1", headers: admin
            ).text
                .split(separator: "\n").compactMap { line -> MeshEvent? in
                    guard line.hasPrefix("data: ") else { return nil }
                    return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
                }
            return events.filter({ $0.type == EventType.checkRecovery }).count == 2
                && events.contains { $0.data["check"]?.string == "port" && $0.data["to"]?.string == "critical" }
                ? events : nil
        }
        #expect(events.allSatisfy { $0.node == "chk-1" })
        let webChanges = events.filter { $0.type == EventType.checkChanged && $0.data["check"]?.string == "web" }
            .compactMap { $0.data["to"]?.string }
        #expect(webChanges == ["passing", "critical", "passing"])
        let scriptChanges = events.filter { $0.type == EventType.checkChanged && $0.data["check"]?.string == "script" }
            .compactMap { $0.data["to"]?.string }
        #expect(scriptChanges == ["critical", "passing"])
        #expect(
            events.filter { $0.type == EventType.checkRecovery }.allSatisfy {
                $0.data["exit_code"] == .number(0) && $0.data["program"]?.string == "/bin/sh"
            })
        let raised = Set(events.filter { $0.type == EventType.alertRaised }.compactMap { $0.data["resource"]?.string })
        #expect(raised == ["disk", "memory"])

        // Logs: the node's own ring, and the same through the lead (signed by the lead).
        let local = try await cli(["logs", "checks"], agent: node)
        #expect(local.code == 0 && local.stdout.contains("check changed") && local.stdout.contains("check=web"))
        let remote = try await cli(["logs", "checks", "--node", "chk-1", "--json"], agent: lead)
        #expect(remote.code == 0, "\(remote.stderr)")
        let remoteLines = remote.stdout.split(separator: "\n").compactMap {
            try? APICoding.decoder().decode(LogLine.self, from: Data($0.utf8))
        }
        #expect(!remoteLines.isEmpty && remoteLines.allSatisfy { $0.subsystem == "checks" })
        #expect(try await http(node.baseURL + Routes.logs).status == 401, "no token, no signature: refused")
        let unknown = try await cli(["logs", "--node", "nowhere"], agent: lead)
        #expect(unknown.code == 1 && unknown.stderr.contains("no node named 'nowhere'"))
        #expect(try await http(node.baseURL + Routes.logs + "?limit=0", headers: nodeAdmin).status == 400)
        let elsewhere = try await cli(["logs", "--node", "chk-lead"], agent: node)
        #expect(
            elsewhere.code == 1 && elsewhere.stderr.contains("not_lead"), "another node's logs are read on the lead")

        // restart gpu: a running job is handed back and runs again on the restarted worker.
        let submission = JobSubmission(
            kind: .exec, requirements: JobRequirements(minVramMB: 1000),
            payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string("sleep 30")])])
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "chk-1 to accept jobs") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.name == "chk-1" && $0.accepting } ? true : nil
        }
        let job = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(submission))
        )
        .decode(Job.self)
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "the job to run") {
            () async throws -> Bool? in
            try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self).state == .running
                ? true : nil
        }
        let restart = try await cli(["restart", "gpu", "--json"], agent: node)
        #expect(restart.code == 0, "\(restart.stderr)")
        let restarted = try APICoding.decoder().decode(SubsystemState.self, from: Data(restart.stdout.utf8))
        // `gpu` is accepted; the subsystem is shown as its log lines name it.
        #expect(restarted.name == "gpu-worker" && restarted.state == "running" && restarted.restarts == 1)
        let again = try await poll(
            timeout: .seconds(15), every: .milliseconds(50), "the job to run again after the restart"
        ) { () async throws -> Job? in
            let current = try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self)
            return current.state == .running && current.attempt == 2 ? current : nil
        }
        #expect(again.node == "chk-1")
        let requeue = try await http(
            lead.baseURL + Routes.events + "?since=0&follow=false&type=job.requeued", headers: admin
        ).text
        #expect(requeue.contains("the worker on chk-1 stopped"))
        #expect(try await cli(["restart", "connectivity"], agent: node).code == 1, "no probes: not a subsystem here")
        let bogus = try await cli(["restart", "bogus"], agent: node)
        #expect(
            bogus.code == 1 && bogus.stderr.contains("no restartable subsystem 'bogus'") && bogus.stderr.contains("gpu")
        )
        let checksRestart = try await cli(["restart", "checks"], agent: node)
        #expect(checksRestart.code == 0 && checksRestart.stdout.contains("restarted checks"))
        let list = try await cli(["restart"], agent: node)
        #expect(list.code == 0 && list.stdout.contains("gpu") && list.stdout.contains("outbox"))
        // The outbox sender restarted still delivers: the script fails again, and the lead hears it.
        #expect(try await cli(["restart", "outbox"], agent: node).code == 0)
        try FileManager.default.removeItem(atPath: flag)
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the lead to hear the script fail again") {
            () async throws -> Bool? in
            let text = try await http(
                lead.baseURL + Routes.events + "?since=0&follow=false&node=chk-1&type=check.changed", headers: admin
            ).text
            let changes = text.split(separator: "\n").compactMap { line -> String? in
                guard line.hasPrefix("data: "),
                    let event = try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8)),
                    event.data["check"]?.string == "script"
                else { return nil }
                return event.data["to"]?.string
            }
            return changes == ["critical", "passing", "critical"] ? true : nil
        }

        // ssh: the node's mesh address, as a dry run.
        let record = try await http(lead.baseURL + Routes.node("chk-1"), headers: admin).decode(Node.self)
        let ssh = try await ChildProcess.run(
            Binaries.auroraCLI,
            [
                "ssh", "chk-1", "--user", "root", "--dry-run", "--agent", lead.baseURL,
                "--data-dir", lead.dataDir, "--", "-p", "2222",
            ], outputDirectory: scratch.path)
        #expect(
            ssh.code == 0
                && ssh.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "ssh -l root -p 2222 \(record.vpnIP)")
        let noNode = try await cli(["ssh", "nowhere", "--dry-run"], agent: lead)
        #expect(noNode.code == 1 && noNode.stderr.contains("nowhere"))

        for agent in [node, lead] {
            agent.process.signal(SIGTERM)
            #expect(try await agent.process.waitForExit(timeout: .seconds(15)) == 0)
        }
    }

    @Test("a bad check in the profile stops the agent before it starts, naming the entry")
    func badCheck() async throws {
        let scratch = try ScratchDirectory("checks-bad")
        defer { scratch.remove() }
        let file = scratch.path + "/node.yaml"
        try "checks:\n  - {name: both, http: \"http://127.0.0.1:1/\", tcp: \"127.0.0.1:1\"}\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        let outcome = try await ChildProcess.run(
            Binaries.nodeagent, ["config", "--profile", "compute", "--config", file], outputDirectory: scratch.path)
        #expect(outcome.code == 1)
        #expect(outcome.stderr.contains("\(file):2: check 'both' needs exactly one of 'http'"), "\(outcome.stderr)")
    }
}
