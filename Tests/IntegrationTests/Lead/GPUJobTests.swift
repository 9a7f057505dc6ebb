import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead and three compute agents with fake GPU inventories, each worker pointed at a fake
/// inference server from the test kit.
///
/// - gpu-1: 2 × RTX 4090 (24 GB), exec allowed, zone a, OpenAI-style backend
/// - gpu-2: 1 × A100 (80 GB), zone b, OpenAI-style backend
/// - gpu-3: 1 × RTX 4090 with 4 GB used by another process, zone c, Ollama-style backend
final class JobMesh: Sendable {
    let scratch: ScratchDirectory
    let lead: AgentHarness
    let workers: [String: AgentHarness]
    let backend: FakeInference
    let adminToken: String

    /// Per worker: zone label, exec allowed, GPUs (YAML flow entries).
    static let specs: [String: (zone: String, exec: Bool, gpus: [String])] = [
        "gpu-1": (
            "a", true,
            [
                "{index: 0, uuid: GPU-1a, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 0}",
                "{index: 1, uuid: GPU-1b, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 0}",
            ]
        ),
        "gpu-2": (
            "b", false,
            ["{index: 0, uuid: GPU-2a, name: NVIDIA A100-SXM4-80GB, memory_total_mb: 81920, memory_used_mb: 0}"]
        ),
        "gpu-3": (
            "c", false,
            ["{index: 0, uuid: GPU-3a, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 4000}"]
        ),
    ]

    init(_ label: String) async throws {
        let scratch = try ScratchDirectory(label)
        self.scratch = scratch
        backend = try await FakeInference()
        lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        try await lead.waitHealthy()
        adminToken = try lead.adminToken
        // Placement trusts only the labels of a node's join token (or an operator's): one token per zone.
        var workers: [String: AgentHarness] = [:]
        for name in Self.specs.keys.sorted() {
            let token = try await Self.cli(
                ["token", "create", "--profile", "compute", "--labels", "zone=\(Self.specs[name]!.zone)"],
                agent: lead, scratch: scratch
            ).trimmingCharacters(in: .whitespacesAndNewlines)
            workers[name] = try Self.worker(name, token: token, lead: lead, backend: backend, scratch: scratch)
        }
        self.workers = workers
        for worker in workers.values { try await worker.waitHealthy() }
        // Every worker is alive and accepting.
        let admin = adminToken
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "three accepting workers") {
            () async throws -> Bool? in
            let status = try await http(
                self.lead.baseURL + Routes.gpuStatus, headers: ["Authorization": "Bearer \(admin)"]
            ).decode(GPUStatus.self)
            return status.nodes.filter { $0.accepting && $0.state == .alive }.count == 3 ? true : nil
        }
    }

    /// A compute agent with the node file for `name` from ``specs``.
    static func worker(
        _ name: String, token: String?, lead: AgentHarness, backend: FakeInference, scratch: ScratchDirectory
    ) throws -> AgentHarness {
        let spec = specs[name]!
        let file = scratch.path + "/\(name).yaml"
        try """
        labels: {zone: \(spec.zone)}
        gpu:
          allow_exec: \(spec.exec)
          backend: \(name == "gpu-3" ? backend.url + "/api/generate" : backend.url)
        gpus:
        \(spec.gpus.map { "  - " + $0 }.joined(separator: "\n"))
        """.write(toFile: file, atomically: true, encoding: .utf8)
        var arguments = ["--name", name, "--lead", lead.baseURL, "--config", file]
        if let token { arguments += ["--join-token", token] }
        return try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/" + name, extraArguments: arguments,
            outputDirectory: scratch.path)
    }

    static func cli(_ arguments: [String], agent: AgentHarness, scratch: ScratchDirectory) async throws -> String {
        let result = try await ChildProcess.run(
            Binaries.auroraCLI, arguments + ["--agent", agent.baseURL, "--data-dir", agent.dataDir],
            outputDirectory: scratch.path)
        guard result.code == 0 else {
            throw TestKitError("aurora-cli \(arguments.joined(separator: " ")) exited \(result.code): \(result.stderr)")
        }
        return result.stdout
    }

    var admin: [String: String] { ["Authorization": "Bearer \(adminToken)"] }

    /// `POST /api/gpu/jobs` on the lead (or `agent`).
    func submit(_ submission: JobSubmission, via agent: AgentHarness? = nil) async throws -> HTTPAnswer {
        let target = agent ?? lead
        let headers = agent == nil ? admin : ["Authorization": "Bearer \(try target.adminToken)"]
        return try await http(
            target.baseURL + Routes.gpuJobs, method: "POST", headers: headers,
            body: Array(try APICoding.encoder().encode(submission)))
    }

    func submitted(_ submission: JobSubmission) async throws -> Job {
        let answer = try await submit(submission)
        guard answer.status == 201 || answer.status == 200 else {
            throw TestKitError("submit answered \(answer.status): \(answer.text)")
        }
        return try answer.decode(Job.self)
    }

    func job(_ id: String, wait: Int? = nil) async throws -> Job {
        try await http(
            lead.baseURL + Routes.gpuJob(id) + (wait.map { "?wait=\($0)" } ?? ""), headers: admin,
            timeout: .seconds(Int64(wait ?? 0) + 10)
        ).decode(Job.self)
    }

    func events(since: Int64 = 0) async throws -> [MeshEvent] {
        let answer = try await http(lead.baseURL + Routes.events + "?since=\(since)&follow=false", headers: admin)
        return answer.text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("data: ") else { return nil }
            return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
        }
    }

    /// Waits until every job in `ids` is terminal; returns them.
    func finished(_ ids: [String], timeout: Duration) async throws -> [String: Job] {
        try await poll(timeout: timeout, every: .milliseconds(100), "\(ids.count) jobs to finish") {
            () async throws -> [String: Job]? in
            let list = try await http(self.lead.baseURL + Routes.gpuJobs + "?limit=10000", headers: self.admin).decode(
                JobList.self)
            let byID = Dictionary(uniqueKeysWithValues: list.jobs.map { ($0.id, $0) })
            return ids.allSatisfy({ byID[$0]?.state.isTerminal == true }) ? byID.filter { ids.contains($0.key) } : nil
        }
    }

    /// Stops everything it started: SIGTERM (the lead stops its PostgreSQL), SIGKILL after 10 s.
    func stop(also others: [AgentHarness] = []) async {
        let agents = others + Array(workers.values) + [lead]
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGTERM) }
        for agent in agents where agent.process.isRunning {
            if (try? await agent.process.waitForExit(timeout: .seconds(10))) == nil { agent.process.signal(SIGKILL) }
        }
        await backend.stop()
        scratch.remove()
    }

    /// Runs `body` with a fresh mesh and always stops it, also when `body` throws.
    static func with(_ label: String, _ body: (JobMesh) async throws -> Void) async throws {
        let mesh = try await JobMesh(label)
        do {
            try await body(mesh)
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }

    static func generate(
        _ prompt: String, priority: Int = 5, vram: Int = 0, delayMs: Int = 0, labels: [String: String]? = nil,
        key: String? = nil
    ) -> JobSubmission {
        JobSubmission(
            kind: .generate, priority: priority, requirements: JobRequirements(minVramMB: vram, labels: labels),
            payload: [
                "model": .string("llama3"), "prompt": .string(prompt),
                "options": .object(["delay_ms": .number(Double(delayMs))]),
            ],
            idempotencyKey: key)
    }

    static func exec(_ script: String, vram: Int = 0, count: Int? = nil, labels: [String: String]? = nil)
        -> JobSubmission
    {
        JobSubmission(
            kind: .exec, requirements: JobRequirements(minVramMB: vram, gpuCount: count, labels: labels),
            payload: ["argv": .array([.string("/bin/sh"), .string("-c"), .string(script)])])
    }
}

@Suite("GPU job routing (lead + three workers + fake inference)", .serialized)
struct GPUJobTests {
    @Test("200 mixed jobs succeed exactly once; high priority starts before low; exec sees CUDA_VISIBLE_DEVICES")
    func mixedJobs() async throws {
        try await JobMesh.with("jobs-mixed") { mesh in
            let execLog = mesh.scratch.path + "/exec.log"

            // 200 jobs: generate on any node, exec only where allowed (gpu-1), various sizes.
            var ids: [String] = []
            var prompts: [String: String] = [:]
            var execIDs = Set<String>()
            for chunk in stride(from: 0, to: 200, by: 20) {
                let submitted = try await withThrowingTaskGroup(of: (Job, String?).self) { group in
                    for i in chunk..<chunk + 20 {
                        group.addTask {
                            if i % 5 == 0 {
                                let script =
                                    "echo \"$AURORA_JOB_ID $CUDA_VISIBLE_DEVICES\" >> \(execLog); echo devices=$CUDA_VISIBLE_DEVICES"
                                return (
                                    try await mesh.submitted(
                                        JobMesh.exec(script, vram: [0, 4000, 12000][i % 3], count: i % 10 == 0 ? 2 : 1)),
                                    nil
                                )
                            }
                            let prompt = "prompt-\(i)"
                            let submission = JobMesh.generate(
                                prompt, priority: i % 10, vram: [0, 6000, 16000, 30000][i % 4], delayMs: 20 + i % 40)
                            return (try await mesh.submitted(submission), prompt)
                        }
                    }
                    return try await group.reduce(into: [(Job, String?)]()) { $0.append($1) }
                }
                for (job, prompt) in submitted {
                    ids.append(job.id)
                    if let prompt { prompts[job.id] = prompt } else { execIDs.insert(job.id) }
                }
            }
            #expect(Set(ids).count == 200)
            let jobs = try await mesh.finished(ids, timeout: .seconds(90))
            let failed = jobs.values.filter { $0.state != .succeeded }
            #expect(failed.isEmpty, "failed: \(failed.prefix(3).map { "\($0.id) \($0.error ?? "")" })")

            // Exactly once: one job.succeeded per job, each prompt served once, each exec ran once.
            let events = try await mesh.events()
            let succeeded = events.filter { $0.type == EventType.jobSucceeded }.compactMap { $0.data["id"]?.string }
            #expect(succeeded.count == 200 && Set(succeeded) == Set(ids))
            let served = mesh.backend.requests.map(\.prompt)
            #expect(served.count == prompts.count)
            #expect(Set(served) == Set(prompts.values))
            let execLines = try String(contentsOfFile: execLog, encoding: .utf8).split(separator: "\n")
            #expect(execLines.count == execIDs.count)
            for line in execLines {
                let parts = line.split(separator: " ")
                let job = try #require(jobs[String(parts[0])])
                #expect(job.node == "gpu-1", "exec only where allowed")
                #expect(
                    String(parts.dropFirst().first ?? "") == (job.gpus ?? []).map(String.init).joined(separator: ","))
                if job.requirements.gpuCount == 2 { #expect(parts.count == 2 && parts[1] == "0,1") }
                if case .object(let result)? = job.result {
                    #expect(result["stdout"]?.string == "devices=\(parts[1])\n")
                }
            }
            // Placement honoured VRAM: 30 GB jobs only fit the A100.
            for job in jobs.values where job.requirements.minVramMB == 30000 { #expect(job.node == "gpu-2") }
            // Ollama-style and OpenAI-style backends both answered.
            for job in jobs.values where job.kind == .generate {
                guard case .object(let result)? = job.result else { Issue.record("no result for \(job.id)"); continue }
                #expect(result["text"]?.string == "echo: \(prompts[job.id] ?? "?")")
                #expect(result["backend"]?.string == (job.node == "gpu-3" ? "ollama" : "openai"))
            }

            // Priority: one GPU (the A100, zone b) busy with a filler (8 s: long enough for the 20
            // submissions on a loaded machine); then 10 low and 10 high jobs
            // that each need most of it queue up together. They start one at a time: every high
            // one before any low one.
            let filler = try await mesh.submitted(
                JobMesh.generate("filler", vram: 70000, delayMs: 8000, labels: ["zone": "b"]))
            #expect(filler.node == "gpu-2")
            var low: [String] = [], high: [String] = []
            for i in 0..<10 {
                low.append(
                    try await mesh.submitted(
                        JobMesh.generate("low-\(i)", priority: 1, vram: 60000, delayMs: 20, labels: ["zone": "b"])
                    ).id)
                high.append(
                    try await mesh.submitted(
                        JobMesh.generate("high-\(i)", priority: 8, vram: 60000, delayMs: 20, labels: ["zone": "b"])
                    ).id)
            }
            let queue = try await http(mesh.lead.baseURL + Routes.gpuQueue, headers: mesh.admin).decode(QueueView.self)
            #expect(queue.queued.prefix(10).map(\.id) == high, "the queue shows high first, FIFO")
            #expect(queue.queued.map(\.position) == Array(1...20))
            #expect(queue.byPriority == ["1": 10, "8": 10])
            _ = try await mesh.finished(low + high + [filler.id], timeout: .seconds(60))
            let started = try await mesh.events().filter { $0.type == EventType.jobStarted }.compactMap {
                $0.data["id"]?.string
            }
            let order = started.filter { low.contains($0) || high.contains($0) }
            #expect(order == high + low, "start order: high FIFO, then low FIFO")
        }
    }

    @Test("kill -9 of a worker: its jobs finish on another node within 5 s; a restarted lead loses no job")
    func failover() async throws {
        try await JobMesh.with("jobs-failover") { mesh in

            // Jobs that fit gpu-1 or gpu-2 (not gpu-3, 20 GB free); binpack fills gpu-1 first.
            var ids: [String] = []
            for i in 0..<4 {
                ids.append(try await mesh.submitted(JobMesh.generate("long-\(i)", vram: 22000, delayMs: 1200)).id)
            }
            let placed = try await poll(timeout: .seconds(10), every: .milliseconds(20), "jobs running on gpu-1") {
                () async throws -> [Job]? in
                var jobs: [Job] = []
                for id in ids { jobs.append(try await mesh.job(id)) }
                let onVictim = jobs.filter { $0.node == "gpu-1" && $0.state == .running }
                return onVictim.count == 2 ? onVictim : nil
            }
            let victim = try #require(mesh.workers["gpu-1"])
            victim.process.signal(SIGKILL)
            let killed = ContinuousClock.now
            let moved = try await mesh.finished(placed.map(\.id), timeout: .seconds(15))
            let elapsed = killed.duration(to: .now)
            #expect(elapsed <= .seconds(5), "finished elsewhere \(elapsed) after the kill")
            for job in moved.values {
                #expect(job.state == .succeeded)
                #expect(job.node != "gpu-1")
                #expect(job.attempt == 2)
            }
            let requeues = try await mesh.events().filter { $0.type == EventType.jobRequeued }
            #expect(Set(requeues.compactMap { $0.data["id"]?.string }) == Set(placed.map(\.id)))
            #expect(
                requeues.allSatisfy {
                    $0.data["reason"]?.string == "node_dead" && $0.data["from_node"]?.string == "gpu-1"
                })
            _ = try await mesh.finished(ids, timeout: .seconds(20))

            // Fencing: a result for an attempt that is not current, or from a node the job is not
            // on, is refused with 409 and changes nothing; the real result then lands.
            let fenced = try await mesh.submitted(
                JobMesh.generate("fenced", vram: 60000, delayMs: 1500, labels: ["zone": "b"]))
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(20), "the fenced job to run") {
                () async throws -> Bool? in
                try await mesh.job(fenced.id).state == .running ? true : nil
            }
            func forge(as name: String, attempt: Int) async throws -> HTTPAnswer {
                let worker = try #require(mesh.workers[name])
                let seed = try String(contentsOfFile: worker.dataDir + "/keys/sign.key", encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                let body = Array(
                    try APICoding.encoder().encode(
                        JobResult(attempt: attempt, outcome: .succeeded, result: .object(["text": .string("forged")]))))
                let path = Routes.gpuJobResult(fenced.id)
                let headers = SimulatedNode(name: name).headers(
                    path: path, body: body, key: try SigningKey(base64Seed: seed))
                return try await http(mesh.lead.baseURL + path, method: "POST", headers: headers, body: body)
            }
            let stale = try await forge(as: "gpu-2", attempt: 2)
            #expect(stale.status == 409 && stale.text.contains("stale_attempt"))
            let elsewhere = try await forge(as: "gpu-3", attempt: 1)
            #expect(elsewhere.status == 409 && elsewhere.text.contains("not_assigned"))
            #expect(try await mesh.job(fenced.id).state == .running, "refused results change nothing")
            let waitStarted = ContinuousClock.now
            let landed = try await mesh.job(fenced.id, wait: 10)
            #expect(
                landed.state == .succeeded && landed.attempt == 1,
                "\(landed) after \(waitStarted.duration(to: .now)); \(mesh.workers["gpu-2"]!.process.stderr.suffix(3000))"
            )
            if case .object(let result)? = landed.result { #expect(result["text"]?.string == "echo: fenced") }

            // The lead is killed while jobs are queued and running, and started again: every job
            // still finishes, once.
            var batch: [String] = []
            for i in 0..<12 {
                batch.append(try await mesh.submitted(JobMesh.generate("restart-\(i)", vram: 12000, delayMs: 800)).id)
            }
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(20), "some jobs running") {
                () async throws -> Bool? in
                try await mesh.job(batch[0]).state == .running ? true : nil
            }
            mesh.lead.process.signal(SIGKILL)
            _ = try await mesh.lead.process.waitForExit(timeout: .seconds(5))
            let lead = try AgentHarness(
                profile: "lead", dataDir: mesh.lead.dataDir, port: mesh.lead.port,
                extraArguments: ["--name", "lead-1"],
                outputDirectory: mesh.scratch.path)
            // only if a check below threw: SIGTERM comes first
            defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
            try await lead.waitHealthy()
            let after = try await mesh.finished(batch, timeout: .seconds(40))
            #expect(
                after.values.allSatisfy { $0.state == .succeeded },
                "\(after.values.filter { $0.state != .succeeded }.map { "\($0.id): \($0.error ?? "")" })")
            let succeeded = try await mesh.events().filter { $0.type == EventType.jobSucceeded }.compactMap {
                $0.data["id"]?.string
            }
            for id in batch { #expect(succeeded.filter { $0 == id }.count == 1, "job \(id) succeeded once") }
            lead.process.signal(SIGTERM)
            #expect(
                try await lead.process.waitForExit(timeout: .seconds(10)) == 0,
                "the restarted lead stops cleanly (and its PostgreSQL)")
        }
    }

    @Test(
        "one idempotency key under 100 concurrent POSTs is one job; cancel queued and running; exec refused where not allowed; bad input changes nothing"
    )
    func submissionRules() async throws {
        try await JobMesh.with("jobs-rules") { mesh in

            // 100 concurrent submissions with one key: one job.
            let key = "order-\(UUID().uuidString)"
            let answers = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                for _ in 0..<100 {
                    group.addTask { try await mesh.submit(JobMesh.generate("same", delayMs: 10, key: key)) }
                }
                return try await group.reduce(into: [HTTPAnswer]()) { $0.append($1) }
            }
            let jobIDs = Set(try answers.map { try $0.decode(Job.self).id })
            #expect(jobIDs.count == 1)
            #expect(answers.filter { $0.status == 201 }.count == 1 && answers.filter { $0.status == 200 }.count == 99)
            _ = try await mesh.finished(Array(jobIDs), timeout: .seconds(20))
            #expect(mesh.backend.requests.filter { $0.prompt == "same" }.count == 1)
            // The same key later still names that job.
            let again = try await mesh.submit(JobMesh.generate("same", key: key))
            let againJob = try again.decode(Job.self)
            #expect(again.status == 200 && againJob.id == jobIDs.first)

            // A job no node could ever run is refused with the reasons, and queues nothing.
            var nowhere = JobMesh.generate("nowhere", labels: ["zone": "mars"])
            let unplaceable = try await mesh.submit(nowhere)
            #expect(
                unplaceable.status == 422 && unplaceable.text.contains("without the labels zone=mars"),
                "\(unplaceable.text)")
            // Cancel a queued job (allowed to wait, nothing matches its label).
            nowhere.allowUnplaceable = true
            let stuck = try await mesh.submitted(nowhere)
            #expect(stuck.state == .queued && stuck.position == 1)
            #expect(stuck.waiting?.reasons.first?.code == "labels")
            let cancelled = try await http(
                mesh.lead.baseURL + Routes.gpuJob(stuck.id), method: "DELETE", headers: mesh.admin
            ).decode(Job.self)
            #expect(cancelled.state == .cancelled)
            let twice = try await http(
                mesh.lead.baseURL + Routes.gpuJob(stuck.id), method: "DELETE", headers: mesh.admin)
            #expect(twice.status == 409)

            // Cancel a running exec job: its process is killed on the worker.
            let pidFile = mesh.scratch.path + "/sleeper.pid"
            let sleeper = try await mesh.submitted(JobMesh.exec("echo $$ > \(pidFile); exec sleep 60"))
            let pid = try await poll(timeout: .seconds(10), every: .milliseconds(20), "the sleeper to start") {
                () async throws -> pid_t? in
                (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap {
                    pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
            #expect(try await mesh.job(sleeper.id).state == .running)
            let stopped = try await http(
                mesh.lead.baseURL + Routes.gpuJob(sleeper.id), method: "DELETE", headers: mesh.admin
            ).decode(Job.self)
            #expect(stopped.state == .cancelled)
            #expect(try await waitGone(pid, timeout: .seconds(5)), "the cancelled command was killed")
            #expect(try await mesh.job(sleeper.id).state == .cancelled)
            let kinds = try await mesh.events().filter { $0.type == EventType.jobCancelled }.compactMap {
                $0.data["from"]?.string
            }
            #expect(kinds.sorted() == ["queued", "running"])

            // exec where no node allows it: 403 naming the kind; nothing queued.
            let before = try await http(mesh.lead.baseURL + Routes.gpuJobs + "?limit=10000", headers: mesh.admin)
                .decode(JobList.self).jobs.count
            let refused = try await mesh.submit(JobMesh.exec("true", labels: ["zone": "b"]))
            #expect(refused.status == 403)
            #expect(refused.text.contains("exec_not_allowed") && refused.text.contains("kind: exec"))

            // Bad input: 400 or 413 naming the field.
            func raw(_ body: String) async throws -> HTTPAnswer {
                try await http(
                    mesh.lead.baseURL + Routes.gpuJobs, method: "POST", headers: mesh.admin, body: Array(body.utf8))
            }
            let unknownKind = try await raw(#"{"kind": "train", "payload": {}}"#)
            #expect(unknownKind.status == 400 && unknownKind.text.contains("kind"))
            let negative = try await raw(
                #"{"kind": "generate", "requirements": {"min_vram_mb": -1}, "payload": {"model": "m", "prompt": "p"}}"#)
            #expect(negative.status == 400 && negative.text.contains("min_vram_mb"))
            let badPriority = try await raw(
                #"{"kind": "generate", "priority": 12, "payload": {"model": "m", "prompt": "p"}}"#)
            #expect(badPriority.status == 400 && badPriority.text.contains("priority"))
            let unknownField = try await raw(
                #"{"kind": "generate", "payload": {"model": "m", "prompt": "p"}, "gpu": 1}"#)
            #expect(unknownField.status == 400 && unknownField.text.contains("'gpu'"))
            let noPrompt = try await raw(#"{"kind": "generate", "payload": {"model": "m"}}"#)
            #expect(noPrompt.status == 400 && noPrompt.text.contains("prompt"))
            let big = String(repeating: "x", count: 300_000)
            let oversized = try await raw(#"{"kind": "generate", "payload": {"model": "m", "prompt": "\#(big)"}}"#)
            #expect(oversized.status == 413 && oversized.text.contains("payload"))
            let after = try await http(mesh.lead.baseURL + Routes.gpuJobs + "?limit=10000", headers: mesh.admin).decode(
                JobList.self
            ).jobs.count
            #expect(after == before, "refused submissions queued nothing")

            // Any agent accepts a submission (its own operator token) and forwards it to the lead.
            let worker = try #require(mesh.workers["gpu-3"])
            let forwarded = try await mesh.submit(JobMesh.generate("via gpu-3"), via: worker)
            #expect(forwarded.status == 201)
            let job = try forwarded.decode(Job.self)
            #expect(job.submittedBy == "node:gpu-3")
            let done = try await http(
                worker.baseURL + Routes.gpuJob(job.id) + "?wait=10",
                headers: ["Authorization": "Bearer \(try worker.adminToken)"],
                timeout: .seconds(20)
            ).decode(Job.self)
            #expect(done.state == .succeeded)

            // POST /api/gpu/generate with wait_s: 200 with the answer.
            let generate = GenerateRequest(model: "llama3", prompt: "hello there", waitS: 10)
            let answer = try await http(
                mesh.lead.baseURL + Routes.gpuGenerate, method: "POST", headers: mesh.admin,
                body: Array(try APICoding.encoder().encode(generate)), timeout: .seconds(20))
            #expect(answer.status == 200)
            if case .object(let result)? = try answer.decode(Job.self).result {
                #expect(result["text"]?.string == "echo: hello there")
            } else {
                Issue.record("no result: \(answer.text)")
            }

            // The CLI: submit, show, queue, list.
            let cliJob = try await JobMesh.cli(
                ["jobs", "submit", "--model", "llama3", "--prompt", "from the cli", "--wait", "10", "--json"],
                agent: mesh.lead, scratch: mesh.scratch)
            let shown = try APICoding.decoder().decode(Job.self, from: Data(cliJob.utf8))
            #expect(shown.state == .succeeded)
            let list = try await JobMesh.cli(["jobs", "list"], agent: mesh.lead, scratch: mesh.scratch)
            #expect(list.contains(shown.id.prefix(8)) && list.contains("succeeded"))
            let status = try await JobMesh.cli(["status"], agent: mesh.lead, scratch: mesh.scratch)
            #expect(status.contains("/80.0"), "status shows free/total VRAM: \(status)")

            // A worker stopped gracefully hands its running job back: requeued at once, for the
            // worker's reason, not when the node is found dead.
            let handed = try await mesh.submitted(JobMesh.exec("exec sleep 60"))
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(20), "the job to run") {
                () async throws -> Bool? in
                try await mesh.job(handed.id).state == .running ? true : nil
            }
            let gpu1 = try #require(mesh.workers["gpu-1"])
            gpu1.process.signal(SIGTERM)
            #expect(try await gpu1.process.waitForExit(timeout: .seconds(10)) == 0)
            let handBack = try await poll(
                timeout: .seconds(5), every: .milliseconds(50), "the hand-back's requeue event"
            ) { () async throws -> MeshEvent? in
                try await mesh.events().first { $0.type == EventType.jobRequeued && $0.data["id"]?.string == handed.id }
            }
            #expect(
                handBack.data["reason"]?.string == "worker: the worker on gpu-1 stopped",
                "worker log: \(gpu1.process.stderr.suffix(1500))")
            #expect(try await mesh.job(handed.id).state == .queued, "exec runs only on gpu-1: it waits")
        }
    }

    @Test(
        "a job whose lease runs out (its worker stops naming it) is requeued; that attempt's result is refused and its worker told to stop"
    )
    func leaseExpiry() async throws {
        let scratch = try ScratchDirectory("jobs-lease")
        defer { scratch.remove() }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await JobMesh.cli(
            ["token", "create", "--profile", "compute", "--labels", "sim=yes"], agent: lead, scratch: scratch
        )
        .trimmingCharacters(in: .whitespacesAndNewlines)

        // A worker the test plays itself: joins with a GPU, heartbeats, pulls, reports.
        let sim = SimulatedNode(name: "sim-1")
        let timing = HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600)
        let join = JoinRequest(
            token: token, name: sim.name, profile: .compute, company: nil, labels: ["sim": "yes"],
            wireguard: .init(publicKey: sim.wireguard.publicKey.base64, endpoint: nil, listenPort: 51820),
            signPublicKey: sim.signing.publicKey.base64, boxPublicKey: sim.box.publicKey.base64, vpnIP: nil,
            capabilities: Capabilities(
                cpuCores: 4, memoryMB: 1024, os: "test", arch: "x86_64",
                gpus: [
                    GPU(
                        index: 0, uuid: "GPU-sim", name: "RTX 4090", memoryTotalMB: 24000, memoryUsedMB: 0,
                        utilizationPct: 0)
                ]),
            address: nil, version: "test", timing: timing)
        #expect(
            try await http(
                lead.baseURL + Routes.join, method: "POST", body: Array(try APICoding.encoder().encode(join))
            ).status == 201)
        func signed(_ method: String, _ path: String, _ body: [UInt8] = [], timeout: Duration = .seconds(5))
            async throws -> HTTPAnswer
        {
            try await http(
                lead.baseURL + path, method: method, headers: sim.headers(method: method, path: path, body: body),
                body: body.isEmpty ? nil : body,
                timeout: timeout)
        }
        func beat(_ jobs: [JobLease]) async throws {
            let beat = HeartbeatRequest(
                capabilities: nil, version: "test", labels: nil, checks: [], peers: [], address: nil, timing: timing,
                worker: WorkerReport(accepting: true, allowExec: false, generate: true, jobs: jobs))
            let answer = try await signed(
                "POST", Routes.heartbeat(sim.name), Array(try APICoding.encoder().encode(beat)))
            #expect(answer.status == 200, "\(answer.text)")
        }
        func pull() async throws -> AssignmentBatch {
            try await signed("GET", Routes.gpuAssignments + "?wait=5", timeout: .seconds(15)).decode(
                AssignmentBatch.self)
        }
        try await beat([])

        let submission = JobMesh.generate("leased", labels: ["sim": "yes"])
        let job = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(submission))
        )
        .decode(Job.self)
        let first = try await pull()
        #expect(first.assignments.map(\.id) == [job.id] && first.assignments.first?.attempt == 1)

        // Heartbeats that do not name the job: after the 10 s lease it is requeued, attempt 2,
        // and placed on the only matching worker again.
        let started = ContinuousClock.now
        let requeued = try await poll(timeout: .seconds(20), every: .milliseconds(500), "the lease to run out") {
            () async throws -> Job? in
            try await beat([])
            let current = try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self)
            // Requeued and placed are two steps: a read between them sees attempt 2 still queued.
            return current.attempt == 2 && current.state != .queued ? current : nil
        }
        #expect(started.duration(to: .now) >= .seconds(8), "not before the lease ran out")
        #expect(requeued.state == .assigned && requeued.node == sim.name)
        let events = try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text
        #expect(events.contains("job.requeued") && events.contains("lease_expired"))

        // The old attempt's result is refused and changes nothing.
        let late = Array(
            try APICoding.encoder().encode(
                JobResult(attempt: 1, outcome: .succeeded, result: .object(["text": .string("late")]))))
        let refused = try await signed("POST", Routes.gpuJobResult(job.id), late)
        #expect(refused.status == 409 && refused.text.contains("stale_attempt"))
        // The next pull hands over attempt 2 and tells the worker to stop attempt 1.
        let second = try await pull()
        #expect(second.assignments.map(\.attempt) == [2])
        #expect(second.cancel.contains(JobLease(id: job.id, attempt: 1)))
        let result = Array(
            try APICoding.encoder().encode(
                JobResult(attempt: 2, outcome: .succeeded, result: .object(["text": .string("done")]))))
        #expect(try await signed("POST", Routes.gpuJobResult(job.id), result).status == 200)
        #expect(
            try await http(lead.baseURL + Routes.gpuJob(job.id), headers: admin).decode(Job.self).state == .succeeded)

        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(10)) == 0)
    }
}
