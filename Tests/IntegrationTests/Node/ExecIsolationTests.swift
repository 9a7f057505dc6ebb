import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// An exec job never runs twice at once because its agent died: a lead and two exec workers,
/// the worker running the job killed with SIGKILL.
@Suite("Exec isolation (lead + two exec workers)", .serialized)
struct ExecIsolationTests {
    /// A compute agent that runs exec jobs on one fake GPU.
    static func worker(
        _ name: String, token: String?, lead: AgentHarness, scratch: ScratchDirectory, port: Int? = nil
    ) throws -> AgentHarness {
        let file = scratch.path + "/\(name).yaml"
        try """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: GPU-\(name), name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 0}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        var arguments = ["--name", name, "--lead", lead.baseURL, "--config", file]
        if let token { arguments += ["--join-token", token] }
        return try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/" + name, port: port, extraArguments: arguments,
            outputDirectory: scratch.path)
    }

    /// Whether this machine lets the agent make job cgroups (cgroup v2 mounted, root): the CI
    /// machine does; elsewhere a job that leaves its process group is not expected to end.
    static var cgroupsWritable: Bool {
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return getuid() == 0 && mounts.contains(" - cgroup2 ")
    }

    /// The lines `attempt pid` the job wrote, in order.
    static func beats(_ path: String) -> [(attempt: Int, pid: Int)] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 2, let attempt = Int(parts[0]), let pid = Int(parts[1]) else { return nil }
            return (attempt, pid)
        }
    }

    @Test(
        "kill -9 of the worker running an exec job: within 2 s none of its processes remain; attempt 2 runs elsewhere, never beside attempt 1; a restarted agent ends a planted leftover"
    )
    func killedWorker() async throws {
        let scratch = try ScratchDirectory("exec-isolation")
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
        var workers: [String: AgentHarness] = [:]
        for name in ["x-1", "x-2"] {
            let worker = try Self.worker(name, token: token, lead: lead, scratch: scratch)
            agents.append(worker)
            workers[name] = worker
        }
        for worker in workers.values { try await worker.waitHealthy() }
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "two accepting exec workers") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.filter { $0.accepting && $0.allowExec && $0.state == .alive }.count == 2 ? true : nil
        }

        // The job writes `attempt pid` every 100 ms and keeps a child of its own (a sleep in the
        // background) whose pid it records: both must end with the agent.
        // A third process escapes the group and the tag: a new session and an empty environment.
        // Only the job's cgroup still holds it.
        let beatFile = scratch.path + "/beats", pidFile = scratch.path + "/pids", escapeFile = scratch.path + "/escaped"
        let script = """
            sleep 1000 & echo "$AURORA_JOB_ATTEMPT $!" >> \(pidFile); echo "$AURORA_JOB_ATTEMPT $$" >> \(pidFile)
            setsid env -i /bin/sleep 1001 & echo "$AURORA_JOB_ATTEMPT $!" >> \(escapeFile)
            while true; do echo "$AURORA_JOB_ATTEMPT $$" >> \(beatFile); sleep 0.1; done
            """
        let submission = JobSubmission(
            kind: .exec, payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string(script)])])
        let job = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(submission))
        ).decode(Job.self)
        let running = try await poll(timeout: .seconds(10), every: .milliseconds(20), "attempt 1 to beat") {
            () async throws -> Job? in
            let current = try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self)
            return current.state == .running && Self.beats(beatFile).contains { $0.attempt == 1 } ? current : nil
        }
        let victimName = try #require(running.node)
        let victim = try #require(workers[victimName])
        let firstPIDs = Self.beats(pidFile).filter { $0.attempt == 1 }.map { pid_t($0.pid) }
        #expect(firstPIDs.count == 2)
        #expect(firstPIDs.allSatisfy(processExists))

        let escaped = Self.beats(escapeFile).filter { $0.attempt == 1 }.map { pid_t($0.pid) }
        #expect(escaped.count == 1 && escaped.allSatisfy(processExists))

        // Each process is watched by a thread of its own (goneAt), so the instants are when they
        // ended, not when this test next got a turn on a busy machine.
        let killed = ContinuousClock.now
        victim.process.signal(SIGKILL)
        let watched = Self.cgroupsWritable ? firstPIDs + escaped : firstPIDs
        if !Self.cgroupsWritable { for pid in escaped { kill(pid, SIGKILL) } }
        let ends = await withTaskGroup(of: (pid_t, ContinuousClock.Instant?).self) { group in
            for pid in watched { group.addTask { (pid, await goneAt(pid, timeout: .seconds(10))) } }
            return await group.reduce(into: [pid_t: ContinuousClock.Instant?]()) { $0[$1.0] = $1.1 }
        }
        for pid in watched {
            let what = escaped.contains(pid) ? "setsid process (the job's cgroup did not end it)" : "process"
            let end = ends[pid] ?? nil
            #expect(end != nil, "attempt 1's \(what) \(pid) outlived its agent")
            if let end {
                #expect(
                    killed.duration(to: end) <= .seconds(2),
                    "attempt 1's \(what) \(pid) ended after \(killed.duration(to: end))")
            }
        }

        // Attempt 2 runs on the other worker, and its beats never interleave with attempt 1's.
        let second = try await poll(timeout: .seconds(20), every: .milliseconds(50), "attempt 2 to beat") {
            () async throws -> Job? in
            let current = try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self)
            let twice = Self.beats(beatFile).filter { $0.attempt == 2 }.count >= 5
            return current.state == .running && current.attempt == 2 && twice ? current : nil
        }
        #expect(second.node != victimName)
        let beats = Self.beats(beatFile)
        let firstSecond = try #require(beats.firstIndex { $0.attempt == 2 })
        #expect(beats[firstSecond...].allSatisfy { $0.attempt == 2 }, "attempt 1 wrote after attempt 2 started")
        _ = try await http(lead.baseURL + Routes.gpuJob(job.id), method: "DELETE", headers: admin)

        // A leftover tagged with the killed agent's data directory, in a process group of its
        // own, as a job whose shepherd was killed would be: the restarted agent ends it before
        // it takes work.
        let tag = URL(fileURLWithPath: victim.dataDir).standardizedFileURL.path
        let planted = try ChildProcess(
            "/usr/bin/setsid", ["/bin/sleep", "1000"], environment: ["AURORA_JOB_AGENT": tag],
            outputDirectory: scratch.path)
        let plantedPID = try await poll(timeout: .seconds(5), every: .milliseconds(10), "the planted sleep") {
            () async throws -> pid_t? in
            processes(mentioning: "/bin/sleep 1000").first { pid in
                (FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data()).split(separator: 0)
                    .contains { String(decoding: $0, as: UTF8.self) == "AURORA_JOB_AGENT=\(tag)" }
            }
        }
        let restarted = try Self.worker(victimName, token: nil, lead: lead, scratch: scratch)
        agents.append(restarted)
        try await restarted.waitHealthy()
        #expect(try await waitGone(plantedPID, timeout: .seconds(10)), "the restarted agent left the leftover running")
        planted.signal(SIGKILL)
    }
}
