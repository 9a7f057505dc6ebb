import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-cli jobs logs`: an exec job's output while it runs and after, read through the lead
/// from a real worker; the job's working directory and environment follow `exec.*`; the routes'
/// refusals.
@Suite("Job logs (lead + exec worker)", .serialized)
struct JobLogsTests {
    /// The job: its settings as it sees them, then a line on stdout and one on stderr every 100 ms.
    /// After line 4 it waits for `gate` to exist, so "while it runs" does not depend on how fast a
    /// loaded machine starts the follower.
    static func script(gate: String) -> String {
        """
        echo "cwd=$(pwd)"; echo "home=$HOME"; echo "greeting=$GREETING"; echo "secret=${AGENT_SECRET:-none}"
        i=0; while [ $i -lt 25 ]; do
          echo "line $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.1
          if [ $i -eq 5 ]; then while [ ! -e '\(gate)' ]; do sleep 0.05; done; fi
        done
        """
    }

    @Test(
        "jobs logs --follow shows lines while the job runs and ends with it; afterwards jobs logs returns the tail; cwd and env follow exec.*; the routes refuse strangers"
    )
    func followAndTail() async throws {
        let scratch = try ScratchDirectory("job-logs")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        var agents = [lead]
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            scratch.remove()
        }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        let file = scratch.path + "/w-1.yaml"
        try """
        gpu:
          allow_exec: true
        exec:
          env: {GREETING: "hello world"}
          output_tail_kib: 64
        gpus:
          - {index: 0, uuid: GPU-w-1, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 0}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let workerData = scratch.path + "/w-1"
        let worker = try AgentHarness(
            profile: "compute", dataDir: workerData,
            extraArguments: ["--name", "w-1", "--lead", lead.baseURL, "--config", file, "--join-token", token],
            environment: ["AGENT_SECRET": "do-not-leak"], outputDirectory: scratch.path)
        agents.append(worker)
        try await worker.waitHealthy()
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "an accepting exec worker") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.accepting && $0.allowExec && $0.state == .alive } ? true : nil
        }

        let gate = scratch.path + "/gate"
        let submission = JobSubmission(
            kind: .exec,
            payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string(Self.script(gate: gate))])])
        let job = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(submission))
        ).decode(Job.self)

        // Followed from the lead's agent with a prefix of the id, as an operator types it.
        let follower = try ChildProcess(
            Binaries.auroraCLI,
            [
                "jobs", "logs", String(job.id.prefix(8)), "--follow", "--agent", lead.baseURL, "--data-dir",
                lead.dataDir,
            ],
            outputDirectory: scratch.path)
        // Lines arrive while the job still runs.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "followed lines while the job runs") {
            () async throws -> Bool? in
            guard follower.stdout.contains("line 3\n") else { return nil }
            let current = try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self)
            #expect(current.state == .running, "the lines came only after the job ended")
            #expect(!follower.stdout.contains("line 24"))
            return true
        }
        #expect(follower.isRunning)
        FileManager.default.createFile(atPath: gate, contents: nil)
        let code = try await follower.waitForExit(timeout: .seconds(30))
        #expect(code == 0, "stderr: \(follower.stderr.suffix(500))")
        let lines = follower.stdout.split(separator: "\n").filter { $0.hasPrefix("line ") }
        #expect(lines.map(String.init) == (0..<25).map { "line \($0)" })
        #expect(follower.stderr.contains("err 24\n"))
        #expect(follower.stderr.contains("job \(job.id) succeeded on w-1"))

        // After the end: the tail is still there, through the CLI and the API.
        let after = try await ChildProcess.run(
            Binaries.auroraCLI, ["jobs", "logs", job.id, "--agent", lead.baseURL, "--data-dir", lead.dataDir],
            outputDirectory: scratch.path)
        #expect(after.code == 0)
        let directory = workerData + "/jobs/\(job.id)-1"
        #expect(after.stdout.contains("cwd=\(directory)\n"))
        #expect(after.stdout.contains("home=\(directory)\n"))
        #expect(after.stdout.contains("greeting=hello world\n"))
        #expect(after.stdout.contains("secret=none\n"), "the agent's environment reached the job")
        #expect(after.stdout.contains("line 24\n"))
        #expect(!FileManager.default.fileExists(atPath: directory), "the job's fresh directory was kept")
        let page = try await http(lead.baseURL + Routes.gpuJobLogs(job.id), headers: admin).decode(JobLogs.self)
        #expect(page.done && page.state == .succeeded && page.attempt == 1 && page.node == "w-1")
        #expect(page.startOffset == 0)
        #expect(page.nextOffset == page.chunks.last.map { $0.offset + $0.bytes })
        let last = try #require(page.chunks.last)
        let resumed = try await http(
            lead.baseURL + API.jobLogs.path([job.id], query: [("offset", String(last.offset))]), headers: admin
        ).decode(JobLogs.self)
        #expect(resumed.chunks == [last] && resumed.done)
        let end = try await http(
            lead.baseURL + API.jobLogs.path([job.id], query: [("offset", String(page.nextOffset)), ("wait", "5")]),
            headers: admin
        ).decode(JobLogs.self)
        #expect(end.chunks.isEmpty && end.done && end.nextOffset == page.nextOffset)

        // Refusals: no credentials, a wrong token, another node's identity (the worker forwards
        // as itself and may not read the admin's job), malformed parameters, and worker output
        // that is not signed or too large.
        let logs = lead.baseURL + Routes.gpuJobLogs(job.id)
        #expect(try await http(logs).status == 401)
        #expect(try await http(logs, headers: ["Authorization": "Bearer not-a-token"]).status == 401)
        let forwarded = try await http(
            worker.baseURL + Routes.gpuJobLogs(job.id), headers: ["Authorization": "Bearer \(try worker.adminToken)"])
        #expect(forwarded.status == 404, "\(forwarded.text)")
        #expect(try await http(worker.baseURL + Routes.gpuJobLogs(job.id)).status == 401)
        for query in ["offset=-1", "offset=abc", "offset=99999999999999999999", "wait=31", "wait=x"] {
            #expect(try await http(logs + "?" + query, headers: admin).status == 400, "\(query)")
        }
        #expect(try await http(lead.baseURL + Routes.gpuJobLogs("no-such-job"), headers: admin).status == 404)
        let report = JobOutputReport(attempt: 1, pieces: [JobOutputPiece(offset: 0, stream: .stdout, data: "aGk=")])
        let body = Array(try APICoding.encoder().encode(report))
        let output = lead.baseURL + Routes.gpuJobOutput(job.id)
        #expect(try await http(output, method: "POST", body: body).status == 401)
        #expect(try await http(output, method: "POST", headers: admin, body: body).status == 401)
        let oversized = [UInt8](repeating: UInt8(ascii: "a"), count: 2 << 20)
        #expect(try await http(output, method: "POST", body: oversized).status == 413)
        #expect(
            try await http(worker.baseURL + Routes.gpuJobOutput(job.id), method: "POST", body: body).status == 421)
    }
}
