import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Placement you can see, end to end through aurora-cli: jobs no node could ever run are
/// refused with the reasons, a job allowed to wait says why and runs when a fitting node joins,
/// and a drain hands running work back at its deadline.
@Suite("Placement explanations and drain (lead + exec workers, aurora-cli)", .serialized)
struct PlacementTests {
    /// A compute agent that runs exec jobs on one fake GPU of `vramMB`.
    static func worker(
        _ name: String, vramMB: Int, token: String, lead: AgentHarness, scratch: ScratchDirectory
    ) throws -> AgentHarness {
        let file = scratch.path + "/\(name).yaml"
        try """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: GPU-\(name), name: NVIDIA GeForce RTX 4090, memory_total_mb: \(vramMB), memory_used_mb: 0}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/" + name,
            extraArguments: ["--name", name, "--lead", lead.baseURL, "--config", file, "--join-token", token],
            outputDirectory: scratch.path)
    }

    /// aurora-cli against the lead.
    static func cli(_ arguments: [String], lead: AgentHarness, scratch: ScratchDirectory) async throws -> (
        code: Int32, stdout: String, stderr: String
    ) {
        let result = try await ChildProcess.run(
            // Before the command: a job's command after `--` takes everything behind it.
            Binaries.auroraCLI, ["--agent", lead.baseURL, "--data-dir", lead.dataDir] + arguments,
            outputDirectory: scratch.path)
        return (result.code, result.stdout, result.stderr)
    }

    static func waitAccepting(_ names: Set<String>, lead: AgentHarness) async throws {
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "workers \(names) accepting") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            let ready = Set(status.nodes.filter { $0.accepting && $0.allowExec && $0.state == .alive }.map(\.name))
            return names.isSubset(of: ready) ? true : nil
        }
    }

    @Test(
        "unplaceable jobs are refused with the reasons; one allowed to wait shows why and runs when a fitting node joins"
    )
    func unplaceable() async throws {
        let scratch = try ScratchDirectory("placement")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        var agents = [lead]
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            scratch.remove()
        }
        try await lead.waitHealthy()
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)

        // No GPU worker at all: refused, naming why.
        let none = try await Self.cli(
            ["jobs", "submit", "--model", "llama3", "--prompt", "hi"], lead: lead, scratch: scratch)
        #expect(none.code != 0)
        #expect(none.stderr.contains("no node could ever run this job"), "\(none.stderr)")

        let small = try Self.worker("g-small", vramMB: 24_064, token: token, lead: lead, scratch: scratch)
        agents.append(small)
        try await small.waitHealthy()
        try await Self.waitAccepting(["g-small"], lead: lead)

        // (Labels are checked first: an exec job for labels no exec node has is 403 exec_not_allowed,
        // so that case is a generate job, which this worker without an inference server never runs.)
        for (arguments, reason) in [
            (["--min-vram", "50000", "--", "/bin/true"], "1 node too little VRAM (need 50000 MB, largest 24064)"),
            (["--gpu-model", "A100", "--", "/bin/true"], "1 node no GPU matching 'A100'"),
            (["--gpus", "2", "--", "/bin/true"], "fewer than 2 fitting GPUs"),
            (["--labels", "zone=secure", "--model", "m", "--prompt", "p"], "without the labels zone=secure"),
            (["--model", "m", "--prompt", "p"], "1 node without an inference server"),
        ] {
            let refused = try await Self.cli(["jobs", "submit"] + arguments, lead: lead, scratch: scratch)
            #expect(refused.code != 0, "\(arguments)")
            #expect(refused.stderr.contains("no node could ever run this job"), "\(arguments): \(refused.stderr)")
            #expect(refused.stderr.contains(reason), "\(arguments): \(refused.stderr)")
        }
        let listed = try await Self.cli(["jobs", "list", "--json"], lead: lead, scratch: scratch)
        #expect(try APICoding.decoder().decode(JobList.self, from: Data(listed.stdout.utf8)).jobs.isEmpty)

        // Allowed to wait: queued with a warning; `jobs show` says why and that the ETA is unknown.
        let waiting = try await Self.cli(
            ["jobs", "submit", "--min-vram", "50000", "--allow-unplaceable", "--", "/bin/true"], lead: lead,
            scratch: scratch)
        #expect(waiting.code == 0, "\(waiting.stderr)")
        #expect(
            waiting.stderr.contains("warning: no node that has joined could ever run this job"), "\(waiting.stderr)")
        let id = waiting.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let shown = try await Self.cli(["jobs", "show", String(id.prefix(8))], lead: lead, scratch: scratch)
        #expect(shown.code == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("waiting: "), "\(shown.stdout)")
        #expect(shown.stdout.contains("1 node too little VRAM (need 50000 MB, largest 24064)"), "\(shown.stdout)")
        #expect(shown.stdout.contains("vram_total: g-small"), "\(shown.stdout)")
        #expect(shown.stdout.contains("ETA unknown"), "\(shown.stdout)")

        // A fitting node joins: the job runs there.
        let big = try Self.worker("g-big", vramMB: 81_920, token: token, lead: lead, scratch: scratch)
        agents.append(big)
        try await big.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let done = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the job to run on g-big") {
            () async throws -> Job? in
            let job = try await http(lead.baseURL + Routes.gpuJob(id), headers: admin).decode(Job.self)
            return job.state == .succeeded ? job : nil
        }
        #expect(done.node == "g-big")
        #expect(done.waiting == nil)
    }

    @Test("drain: no new jobs on the node; its running job is handed back at the deadline and runs elsewhere")
    func drain() async throws {
        let scratch = try ScratchDirectory("drain")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        var agents = [lead]
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            scratch.remove()
        }
        try await lead.waitHealthy()
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        for name in ["d-1", "d-2"] {
            let worker = try Self.worker(name, vramMB: 24_000, token: token, lead: lead, scratch: scratch)
            agents.append(worker)
            try await worker.waitHealthy()
        }
        try await Self.waitAccepting(["d-1", "d-2"], lead: lead)
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]

        // A job that takes the whole GPU and runs until it is stopped, writing `attempt pid`.
        let beatFile = scratch.path + "/beats"
        let script = "while true; do echo \"$AURORA_JOB_ATTEMPT $$\" >> \(beatFile); sleep 0.1; done"
        let submitted = try await Self.cli(
            ["jobs", "submit", "--min-vram", "20000", "--", "/bin/sh", "-c", script], lead: lead, scratch: scratch)
        #expect(submitted.code == 0, "\(submitted.stderr)")
        let id = submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let running = try await poll(timeout: .seconds(10), every: .milliseconds(50), "attempt 1 running") {
            () async throws -> Job? in
            let job = try await http(lead.baseURL + Routes.gpuJob(id), headers: admin).decode(Job.self)
            return job.state == .running ? job : nil
        }
        let drained = try #require(running.node)
        let other = drained == "d-1" ? "d-2" : "d-1"

        let drain = try await Self.cli(["nodes", "drain", drained, "--deadline", "5s"], lead: lead, scratch: scratch)
        #expect(drain.code == 0, "\(drain.stderr)")
        #expect(drain.stdout.contains("draining"), "\(drain.stdout)")

        // Cordon the other node too: a new job then has nowhere to go now, and says so.
        let cordoned = try await Self.cli(["nodes", "cordon", other], lead: lead, scratch: scratch)
        #expect(cordoned.code == 0, "\(cordoned.stderr)")
        let blocked = try await Self.cli(
            ["jobs", "submit", "--min-vram", "1000", "--", "/bin/true"], lead: lead, scratch: scratch)
        #expect(blocked.code == 0, "\(blocked.stderr)")
        #expect(blocked.stderr.contains("warning: no node can run this job now"), "\(blocked.stderr)")
        #expect(blocked.stderr.contains("2 nodes cordoned"), "\(blocked.stderr)")
        let blockedID = blocked.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
        #expect(status.nodes.first { $0.name == drained }?.scheduling?.state == .draining)
        #expect(status.nodes.first { $0.name == other }?.scheduling?.state == .cordoned)
        let table = try await Self.cli(["status"], lead: lead, scratch: scratch)
        #expect(
            table.stdout.split(separator: "\n").contains { $0.hasPrefix(drained) && $0.contains("alive, draining") },
            "\(table.stdout)")
        #expect(
            table.stdout.split(separator: "\n").contains { $0.hasPrefix(other) && $0.contains("alive, cordoned") },
            "\(table.stdout)")
        let reopened = try await Self.cli(["nodes", "uncordon", other], lead: lead, scratch: scratch)
        #expect(reopened.code == 0, "\(reopened.stderr)")
        #expect(reopened.stdout.contains("open for new jobs"), "\(reopened.stdout)")

        // At the deadline attempt 1 is stopped on the drained node and attempt 2 runs on the other,
        // without using up an attempt.
        let handedBack = try await poll(timeout: .seconds(20), every: .milliseconds(100), "attempt 2 elsewhere") {
            () async throws -> Job? in
            let job = try await http(lead.baseURL + Routes.gpuJob(id), headers: admin).decode(Job.self)
            return job.state == .running && job.attempt == 2 ? job : nil
        }
        #expect(handedBack.node == other)
        #expect(handedBack.maxAttempts == running.maxAttempts + 1)
        let firstPIDs = Set(ExecIsolationTests.beats(beatFile).filter { $0.attempt == 1 }.map { pid_t($0.pid) })
        for pid in firstPIDs {
            #expect(try await waitGone(pid, timeout: .seconds(5)), "attempt 1 still runs on the drained node")
        }
        let events = try await Self.cli(
            ["events", "--type", "job.requeued", "--json"], lead: lead, scratch: scratch)
        #expect(events.stdout.contains("\"drained\""), "\(events.stdout)")

        // The job queued behind the cordon ran once the other node reopened; nothing ran on the
        // drained node after the drain.
        let blockedJob = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the blocked job") {
            () async throws -> Job? in
            let job = try await http(lead.baseURL + Routes.gpuJob(blockedID), headers: admin).decode(Job.self)
            return job.state.isTerminal ? job : nil
        }
        #expect(blockedJob.node == other)
        _ = try await http(lead.baseURL + Routes.gpuJob(id), method: "DELETE", headers: admin)
    }
}
