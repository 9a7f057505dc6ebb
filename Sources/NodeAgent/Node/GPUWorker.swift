import AsyncAlgorithms
import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import Foundation
import Logging
import Mesh
import Metrics
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// A compute node's GPU worker: pulls assignments from the lead (a signed long-poll, so it
/// works behind NAT), runs each job — `generate` against the local inference server, `exec` as
/// a command with `CUDA_VISIBLE_DEVICES` — and reports the result with the attempt as fencing
/// token, retrying while the lead is away. The jobs it holds travel in every heartbeat, which
/// extends their leases.
final class GPUWorker: Service {
    /// Why a running job's task was cancelled.
    private enum Stop: Sendable {
        /// The lead cancelled or moved it: report nothing.
        case lead
        /// The agent is stopping: hand it back so the lead requeues it at once.
        case shutdown
    }

    /// A job this worker holds: the attempt it was given (the fencing token its result carries),
    /// its task, and why the task was stopped, if it was.
    private struct Running: Sendable {
        var attempt: Int
        /// Why the job is being stopped (nil: it runs to its end).
        var stop: Stop?
        /// Ends the job's run early: yielded once by ``stop(_:because:)`` or at shutdown.
        let stopSignal: AsyncStream<Void>.Continuation
    }

    let config: NodeConfig
    let state: AgentState
    let lead: LeadClient
    let groups: JobGroups
    let logger: Logger
    /// Results go through the node's durable outbox (nil: posted directly).
    let outbox: Outbox?
    /// Held jobs by id; an entry lives from the assignment until its result was handed on.
    private let running = Mutex<[String: Running]>([:])
    /// True while the long-poll loop runs; heartbeats report it as `accepting`.
    private let polling = Atomic<Bool>(false)
    private let completed = Counter(label: "aurora_worker_jobs_total")
    /// When this worker was made (before it can receive any job), for ``WorkerReport/startedAt``.
    private let startedAt = ISOTime.string(Date())
    /// Gateway calls' results, batched in memory.
    private let gatewayResults: ResultBatcher

    init(
        config: NodeConfig, state: AgentState, lead: LeadClient, groups: JobGroups, outbox: Outbox? = nil,
        logger: Logger
    ) {
        self.outbox = outbox
        self.gatewayResults = ResultBatcher(node: config.name, lead: lead, logger: logger)
        self.config = config
        self.state = state
        self.lead = lead
        self.groups = groups
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "gpu-worker"
        self.logger = logger
    }

    /// What the heartbeat says about this worker: the jobs it runs, and the jobs whose results
    /// wait in the outbox (their leases hold until the lead has the results).
    func report() -> WorkerReport {
        var jobs = Set(running.withLock { $0.map { JobLease(id: $0.key, attempt: $0.value.attempt) } })
        jobs.formUnion(outbox?.pendingJobLeases ?? [])
        return WorkerReport(
            accepting: config.acceptJobs && polling.load(ordering: .relaxed), allowExec: config.allowExec,
            generate: config.gpuBackend != nil, jobs: jobs.sorted { $0.id < $1.id }, startedAt: startedAt)
    }

    /// The service: waits until the node has joined, then long-polls `GET /api/gpu/assignments`
    /// (20 s wait, 25 s timeout) and starts or cancels jobs as the lead says; while the lead is away
    /// it retries after 100 ms doubling to 2 s. On graceful shutdown it first tells the lead (a
    /// heartbeat with `accepting: false`) that it takes nothing more, then stops every running job
    /// and hands each back for an immediate requeue.
    func run() async throws {
        guard config.acceptJobs else { return }
        // Before any work: job processes an earlier run of this agent left behind end now.
        let tag = LeftoverJobs.tag(dataDir: config.dataDir)
        let groups = JobCgroup.sweep(tag: tag)
        let leftovers = LeftoverJobs.end(tag: tag)
        if !leftovers.isEmpty || groups > 0 {
            logger.notice(
                "ended job processes an earlier run left behind",
                metadata: [
                    "nodeagent.pids": "\(leftovers.map(String.init).joined(separator: ","))",
                    "nodeagent.cgroups": "\(groups)",
                ])
        }
        if config.allowExec && !JobCgroup.available(tag: tag) {
            logger.notice(
                "exec jobs run in a process group only: no writable cgroup v2 here (under systemd set Delegate=yes)")
        }
        // Pull once the node has joined.
        try? await cancelWhenGracefulShutdown { await self.state.joinedGate.wait() }
        guard state.joined else { return }  // stopped before it joined
        polling.store(true, ordering: .relaxed)
        logger.info(
            "taking GPU jobs",
            metadata: ["nodeagent.exec": "\(config.allowExec)", "nodeagent.backend": "\(config.gpuBackend ?? "none")"])
        // Every job runs as a child task of this service: the loop below adds them, and the
        // group ends only when the last one has delivered or handed back its result.
        await withDiscardingTaskGroup { group in
            var delay = Duration.milliseconds(100)
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let answer: Result<AssignmentBatch, LeadCallError>
                do {
                    answer = try await cancelWhenGracefulShutdown {
                        () async throws -> Result<AssignmentBatch, LeadCallError> in
                        do throws(LeadCallError) {
                            return .success(
                                try await self.lead.call(
                                    API.gpuAssignments, query: [("wait", "20")], as: AssignmentBatch.self,
                                    timeout: .seconds(25)))
                        } catch {
                            return .failure(error)
                        }
                    }
                } catch {
                    break  // shutting down
                }
                switch answer {
                case .success(let batch) where (batch.epoch ?? 0) < (self.lead.link.epoch ?? 0):
                    // A lead older than one this node has followed: nothing it assigns or cancels counts.
                    logger.warning(
                        "refused assignments from a superseded lead",
                        metadata: [
                            "nodeagent.epoch": "\(batch.epoch ?? 0)",
                            "nodeagent.known_epoch": "\(self.lead.link.epoch ?? 0)",
                        ])
                    try? await Task.sleep(for: delay)
                case .success(let batch):
                    delay = .milliseconds(100)
                    for lease in batch.cancel { stop(lease, because: .lead) }
                    for assignment in batch.assignments {
                        guard let signal = admit(assignment) else { continue }
                        group.addTask { await self.run(assignment, until: signal) }
                    }
                case .failure(let error):
                    if Task.isShuttingDownGracefully { break }
                    logger.debug("cannot fetch assignments", metadata: ["nodeagent.error": "\(error.message)"])
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(2))
                }
            }
            polling.store(false, ordering: .relaxed)
            // Tell the lead first that this worker takes nothing more, so what it hands back is not
            // placed here again; then stop what still runs and hand it back: the lead requeues it
            // at once. The jobs' children are not cancelled, so their hand-backs go out.
            let stopping = HeartbeatRequest(
                capabilities: nil, version: AuroraVersion.current, labels: nil, checks: [], peers: [],
                address: config.listen.description, timing: config.heartbeatTiming, worker: report())
            if state.leadReachable != false {
                _ = try? await lead.send(API.heartbeat, config.name, body: stopping, timeout: .seconds(2))
            }
            let signals = running.withLock { jobs in
                jobs.keys.compactMap { id -> AsyncStream<Void>.Continuation? in
                    jobs[id]?.stop = .shutdown
                    return jobs[id]?.stopSignal
                }
            }
            for signal in signals { signal.yield() }
        }
    }

    // MARK: Jobs

    /// Records a new assignment (a repeated one is ignored: nil) and returns the stream that
    /// stops its run early.
    private func admit(_ assignment: Assignment) -> AsyncStream<Void>? {
        let (signal, stopSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let fresh = running.withLock { jobs -> Bool in
            guard jobs[assignment.id] == nil else { return false }
            jobs[assignment.id] = Running(attempt: assignment.attempt, stop: nil, stopSignal: stopSignal)
            return true
        }
        return fresh ? signal : nil
    }

    /// Runs an assignment (a child task of ``run()``) until it ends or `signal` stops it; then
    /// the result is delivered, or handed back on shutdown, or dropped if the lead stopped it.
    private func run(_ assignment: Assignment, until signal: AsyncStream<Void>) async {
        logger.info(
            "job started",
            metadata: [
                "nodeagent.job": "\(assignment.id)", "nodeagent.kind": "\(assignment.kind.rawValue)",
                "nodeagent.gpus": "\(assignment.gpus)",
            ])
        // The job and a watcher of its stop signal race; a stop cancels the job's process (its
        // result still comes, and is then handed back or dropped below).
        let finished = await withTaskGroup(of: JobResult?.self) { group -> JobResult? in
            group.addTask { await self.execute(assignment) }
            group.addTask {
                for await _ in signal { return nil }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if let first { return first }
            while let next = await group.next() { if let next { return next } }
            return nil
        }
        let result =
            finished ?? JobResult(attempt: assignment.attempt, outcome: .failed, error: "stopped", retry: true)
        let stop = running.withLock { $0[assignment.id]?.stop }
        switch stop {
        case .lead?:
            logger.info("job stopped by the lead", metadata: ["nodeagent.job": "\(assignment.id)"])
        case .shutdown?:
            let handBack = JobResult(
                attempt: assignment.attempt, outcome: .failed, error: "the worker on \(config.name) stopped",
                retry: true)
            await send(assignment, handBack, attempts: 1)
        case nil:
            await deliver(assignment, result)
        }
        completed.increment()
        running.withLock { _ = $0.removeValue(forKey: assignment.id) }
    }

    /// Cancels a running job when the lead's cancel names the attempt running here; an older
    /// attempt's cancel does nothing.
    private func stop(_ lease: JobLease, because reason: Stop) {
        let signal = running.withLock { jobs -> AsyncStream<Void>.Continuation? in
            guard jobs[lease.id]?.attempt == lease.attempt else { return nil }
            jobs[lease.id]?.stop = reason
            return jobs[lease.id]?.stopSignal
        }
        signal?.yield()
    }

    /// Hands a result to the outbox (durable; it replays until the lead takes it), or posts it
    /// directly when there is no outbox or it cannot take the result, or it is a gateway call's.
    private func deliver(_ assignment: Assignment, _ result: JobResult) async {
        // What a program or a backend printed crosses the mesh without control characters.
        let result = result.sanitized()
        // A gateway call's client waits on its connection to the lead, which keeps the call in
        // memory only: its result goes to the lead from memory, batched with the others that
        // come meanwhile (``ResultBatcher``), without the outbox's fsync.
        if assignment.payload["openai"] != nil {
            return await gatewayResults.deliver(result, for: assignment.id)
        }
        if let outbox {
            do {
                try await outbox.append(.make(.jobResult, job: assignment.id, result: result))
                logger.info(
                    "job finished; result in the outbox",
                    metadata: [
                        "nodeagent.job": "\(assignment.id)",
                        "nodeagent.outcome": "\(result.outcome.rawValue)",
                    ])
                return
            } catch {
                logger.error(
                    "cannot put a job result in the outbox; posting it directly",
                    metadata: ["nodeagent.error": "\(error.message)"])
            }
        }
        await send(assignment, result, attempts: nil)
    }

    /// Posts a result until the lead takes or refuses it (`attempts` nil: until the task is cancelled).
    private func send(_ assignment: Assignment, _ result: JobResult, attempts: Int?) async {
        var delay = Duration.milliseconds(250)
        var tries = 0
        while true {
            tries += 1
            do throws(LeadCallError) {
                _ = try await lead.send(API.jobResult, assignment.id, body: result, timeout: .seconds(5))
                logger.info(
                    "job reported",
                    metadata: ["nodeagent.job": "\(assignment.id)", "nodeagent.outcome": "\(result.outcome.rawValue)"])
                return
            } catch {
                if case .refused(let status, let answer) = error, status < 500, status != 429 {
                    logger.notice(
                        "job result refused",
                        metadata: ["nodeagent.job": "\(assignment.id)", "nodeagent.reason": "\(answer.error.message)"])
                    return
                }
                if let attempts, tries >= attempts { return }
                logger.warning(
                    "cannot report a job result; retrying",
                    metadata: ["nodeagent.job": "\(assignment.id)", "nodeagent.error": "\(error.message)"])
            }
            // Stopped by the lead, or the agent is stopping: the lead requeues it when its lease runs out.
            if Task.isCancelled || running.withLock({ $0[assignment.id]?.stop }) != nil { return }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }

    /// Never throws: every failure is a failed ``JobResult``, with `retry` set when another node
    /// might succeed (this node's backend or settings are at fault, not the job).
    private func execute(_ assignment: Assignment) async -> JobResult {
        switch assignment.kind {
        case .generate: await generate(assignment)
        case .exec: await exec(assignment)
        }
    }

    // MARK: generate

    /// A `generate` job: one request to `gpu.backend` with the payload's model, prompt or messages
    /// and options, `timeout_s` (default 600 s, at most 7 days); the answer is normalised by
    /// ``InferenceCall/result(from:)``. A backend that is down or answers 5xx fails with `retry`.
    private func generate(_ assignment: Assignment) async -> JobResult {
        let attempt = assignment.attempt
        guard let backend = config.gpuBackend else {
            return JobResult(
                attempt: attempt, outcome: .failed, error: "node \(config.name) has no gpu.backend", retry: true)
        }
        // The mesh's name for a model the profile renamed is not the backend's (`gpu.models`).
        var payload = assignment.payload
        if case .string(let model)? = payload["model"], let own = config.gpuModelNames[model] {
            payload["model"] = .string(own)
        }
        let call = InferenceCall(backend: backend, payload: payload)
        var request = HTTPClientRequest(url: call.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: call.body))
        let timeout = Double(
            CheckedNumber.clamped(
                assignment.payload["timeout_s"].flatMap { if case .number(let n) = $0 { n } else { nil } } ?? 600,
                to: 1...(7 * 86_400)))
        if call.streams {
            let own = payload["model"], mesh = assignment.payload["model"]
            return await generateStream(
                assignment, request: request, timeout: timeout, rename: own == mesh ? nil : mesh)
        }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
            bytes = try await response.body.collect(upTo: 16 << 20)
        } catch is CancellationError {
            return JobResult(attempt: attempt, outcome: .failed, error: "cancelled")
        } catch {
            // The backend is this node's problem, not the job's: run it elsewhere.
            return JobResult(
                attempt: attempt, outcome: .failed, error: "inference backend: \(AuroraClientError.reason(error))",
                retry: true
            )
        }
        let status = Int(response.status.code)
        let text = String(buffer: bytes)
        guard (200..<300).contains(status) else {
            return JobResult(
                attempt: attempt, outcome: .failed, error: "inference backend answered \(status): \(text.prefix(300))",
                retry: status >= 500)
        }
        guard let answer = try? APICoding.decoder().decode(JSONValue.self, from: Data(buffer: bytes)) else {
            return JobResult(attempt: attempt, outcome: .failed, error: "the inference backend's answer is not JSON")
        }
        return JobResult(attempt: attempt, outcome: .succeeded, result: call.result(from: answer))
    }

    /// A streamed gateway call: the backend's server-sent events go to the lead as they come
    /// (``StreamPusher``), each `data:` a one-line JSON object (re-encoded when the backend split
    /// it over lines, or named the model otherwise: `rename`). A failure before the first chunk
    /// reached the lead is retried elsewhere; after it, the lead is told (its client gets an error
    /// event) and the job fails. The lead saying stop (the client went away) ends the backend's
    /// request. The result counts the chunks and keeps the last `usage` a chunk carried.
    private func generateStream(
        _ assignment: Assignment, request: HTTPClientRequest, timeout: Double, rename: JSONValue?
    ) async -> JobResult {
        let attempt = assignment.attempt
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
        } catch is CancellationError {
            return JobResult(attempt: attempt, outcome: .failed, error: "cancelled")
        } catch {
            return JobResult(
                attempt: attempt, outcome: .failed, error: "inference backend: \(AuroraClientError.reason(error))",
                retry: true)
        }
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            let text = (try? await response.body.collect(upTo: 64 * 1024)).map { String(buffer: $0) } ?? ""
            return JobResult(
                attempt: attempt, outcome: .failed, error: "inference backend answered \(status): \(text.prefix(300))",
                retry: status >= 500)
        }
        let pusher = StreamPusher(attempt: attempt)
        let lead = self.lead, id = assignment.id
        enum Part: Sendable {
            case read
            case pushed(StreamPusher.End)
        }
        let end = await withTaskGroup(of: Part.self) { group -> StreamPusher.End in
            group.addTask {
                await .pushed(
                    pusher.run { push async throws(LeadCallError) -> InferenceStreamAck in
                        try await lead.call(
                            API.jobStream, id, body: push, as: InferenceStreamAck.self, timeout: .seconds(5))
                    })
            }
            group.addTask {
                do {
                    let events = ServerSentEvents(
                        response.body, maxLineBytes: InferenceStreamPush.maxChunkBytes + 16,
                        maxEventBytes: InferenceStreamPush.maxChunkBytes)
                    for try await event in events {
                        let data = event.data.trimmingCharacters(in: .whitespaces)
                        if data == "[DONE]" { break }
                        guard let chunk = Self.streamChunk(data, rename: rename) else {
                            pusher.finish(error: "the backend sent an event that is not a one-line JSON object")
                            return .read
                        }
                        pusher.add(chunk, usage: chunk.contains(#""usage""#) ? Self.usage(in: chunk) : nil)
                    }
                    pusher.finish(error: nil)
                } catch {
                    pusher.finish(error: "inference backend: \(AuroraClientError.reason(error))")
                }
                return .read
            }
            var result = StreamPusher.End.stopped
            while let part = await group.next() {
                guard case .pushed(let end) = part else { continue }
                result = end
                // The lead has it all, or wants no more: the backend's request ends here.
                group.cancelAll()
            }
            return result
        }
        let (chunks, usage) = pusher.counted
        switch end {
        case .delivered:
            var result: [String: JSONValue] = ["streamed": .bool(true), "chunks": .number(Double(chunks))]
            if let usage { result["usage"] = usage }
            return JobResult(attempt: attempt, outcome: .succeeded, result: .object(result))
        case .stopped:
            return JobResult(attempt: attempt, outcome: .failed, error: "cancelled")
        case .failed(let reason):
            // Nothing reached the client yet: another node may do better.
            return JobResult(
                attempt: attempt, outcome: .failed, error: "stream: \(reason)", retry: pusher.acknowledged == 0)
        }
    }

    /// A backend event's data as the chunk the lead relays: a JSON object on one line (re-encoded
    /// when it was not, or when the model's name changes); nil when it is no JSON object or
    /// cannot be one line of at most ``InferenceStreamPush/maxChunkBytes``.
    static func streamChunk(_ data: String, rename: JSONValue?) -> String? {
        if rename == nil, InferenceStreamPush.problem(with: data) == nil { return data }
        guard case .object(var object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(data.utf8))
        else { return nil }
        if let rename, object["model"] != nil { object["model"] = rename }
        guard let encoded = try? APICoding.encoder().encode(JSONValue.object(object)) else { return nil }
        let chunk = String(decoding: encoded, as: UTF8.self)
        return InferenceStreamPush.problem(with: chunk) == nil ? chunk : nil
    }

    /// The `usage` object of a chunk (OpenAI sends it in the last one when asked with
    /// `stream_options.include_usage`); nil when it has none.
    static func usage(in chunk: String) -> JSONValue? {
        guard case .object(let object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(chunk.utf8)),
            case .object(let usage)? = object["usage"]
        else { return nil }
        return .object(usage)
    }

    // MARK: exec

    /// An `exec` job: only with `gpu.allow_exec` and only when the mesh admin submitted it. Runs
    /// `payload.argv` with `CUDA_VISIBLE_DEVICES` set to the assigned GPUs, the job's id and
    /// attempt in `AURORA_JOB_ID`/`AURORA_JOB_ATTEMPT` and its agent in `AURORA_JOB_AGENT`
    /// (``LeftoverJobs``), in the working directory and clean environment of ``ExecSettings``, for at
    /// most `timeout_s` (default 3600 s), keeping up to `max_output_bytes` (default 64 KiB) of each
    /// output in the result; the last `exec.output_tail_kib` KiB also go to the lead as they come.
    private func exec(_ assignment: Assignment) async -> JobResult {
        let attempt = assignment.attempt
        guard config.allowExec else {
            return JobResult(
                attempt: attempt, outcome: .failed,
                error: "exec jobs are not allowed on \(config.name) (gpu.allow_exec)", retry: true)
        }
        // The worker's own check, beside the lead's: a command runs only for the mesh admin.
        guard assignment.submittedBy == JobAccess.admin else {
            logger.warning(
                "exec job refused: not submitted by the mesh admin",
                metadata: [
                    "nodeagent.job": "\(assignment.id)",
                    "nodeagent.submitter": "\(InputRules.printable(assignment.submittedBy ?? "unknown"))",
                ])
            return JobResult(
                attempt: attempt, outcome: .failed,
                error: "exec jobs run on \(config.name) only when the mesh admin submits them")
        }
        guard case .array(let items)? = assignment.payload["argv"] else {
            return JobResult(attempt: attempt, outcome: .failed, error: "payload.argv is missing")
        }
        let argv = items.compactMap(\.string)
        // The lead checked these at submission; ranges again before any conversion.
        let timeout = Double(
            CheckedNumber.clamped(
                assignment.payload["timeout_s"].flatMap { if case .number(let n) = $0 { n } else { nil } } ?? 3600,
                to: 1...(7 * 86_400)))
        let maxOutput = CheckedNumber.clamped(
            assignment.payload["max_output_bytes"].flatMap { if case .number(let n) = $0 { n } else { nil } } ?? 65_536,
            to: 0...262_144)
        let devices = assignment.gpus.map(String.init).joined(separator: ",")
        let settings = ExecSettings(config: config)
        let (directory, fresh) = settings.directory(job: assignment.id, attempt: attempt)
        do { try settings.prepare(directory) } catch {
            return JobResult(attempt: attempt, outcome: .failed, error: error.message, retry: true)
        }
        defer { settings.finish(directory, fresh: fresh) }
        let environment = settings.environment(
            directory: directory,
            job: [
                "CUDA_VISIBLE_DEVICES": devices, "AURORA_JOB_ID": assignment.id, "AURORA_JOB_ATTEMPT": String(attempt),
                LeftoverJobs.variable: LeftoverJobs.tag(dataDir: config.dataDir),
            ])
        // The output tail fills while the command runs and goes to the lead every quarter second
        // (`jobs logs`), and once more before the result, so the lead has all of it when the job ends.
        let tail = JobOutputTail(capacity: config.execOutputTailBytes)
        let groups = self.groups
        let ran = await withTaskGroup(of: Result<ExecRunner.Outcome, AgentError>?.self) { group in
            group.addTask {
                while (try? await Task.sleep(for: .milliseconds(250))) != nil {
                    await self.pushOutput(assignment, tail)
                }
                return nil
            }
            group.addTask {
                do throws(AgentError) {
                    return .success(
                        try await ExecRunner.run(
                            argv, environment: environment, timeout: .milliseconds(Int64(timeout * 1000)),
                            maxOutput: maxOutput, groups: groups, directory: directory, outputTail: tail.capacity,
                            onOutput: { stream, skipped, bytes in tail.append(stream, bytes, skipping: skipped) }))
                } catch {
                    return .failure(error)
                }
            }
            var ran: Result<ExecRunner.Outcome, AgentError>?
            while let next = await group.next() {
                if let next {
                    ran = next
                    group.cancelAll()
                }
            }
            return ran ?? .failure(AgentError(.process, "the job was stopped"))
        }
        await pushOutput(assignment, tail)
        let outcome: ExecRunner.Outcome
        switch ran {
        case .success(let done): outcome = done
        case .failure(let error): return JobResult(attempt: attempt, outcome: .failed, error: error.message)
        }
        var result: [String: JSONValue] = [
            "stdout": .string(String(decoding: outcome.stdout, as: UTF8.self)),
            "stderr": .string(String(decoding: outcome.stderr, as: UTF8.self)),
            "stdout_truncated": .bool(outcome.stdoutTruncated), "stderr_truncated": .bool(outcome.stderrTruncated),
            "duration_s": .number(outcome.duration.seconds.rounded(toPlaces: 3)),
            "cuda_visible_devices": .string(devices),
        ]
        result["exit_code"] = outcome.exitCode.map { .number(Double($0)) } ?? .null
        if let signal = outcome.signal { result["signal"] = .number(Double(signal)) }
        Self.fit(&result, within: Self.maxResultBytes)
        if outcome.timedOut {
            return JobResult(
                attempt: attempt, outcome: .failed, result: .object(result),
                error: "timed out after \(timeout) s; killed")
        }
        if outcome.cancelled {
            return JobResult(attempt: attempt, outcome: .failed, result: .object(result), error: "cancelled")
        }
        guard outcome.exitCode == 0 else {
            let reason = outcome.exitCode.map { "exit code \($0)" } ?? "killed by signal \(outcome.signal ?? 0)"
            return JobResult(attempt: attempt, outcome: .failed, result: .object(result), error: reason)
        }
        return JobResult(attempt: attempt, outcome: .succeeded, result: .object(result))
    }
}

extension GPUWorker {
    /// Sends the output `tail` holds beyond what the lead has (at most 64 pieces, 256 KiB, in one
    /// signed `POST /api/gpu/jobs/{id}/output`, 2 s timeout). A lead that is away gets it with a
    /// later push; one that refuses it (the job moved or ended) gets nothing more of this job.
    func pushOutput(_ assignment: Assignment, _ tail: JobOutputTail) async {
        guard let (pieces, next) = tail.unsent(maxBytes: 256 * 1024, maxPieces: HTTPServer.maxOutputPieces) else {
            return
        }
        let report = JobOutputReport(attempt: assignment.attempt, pieces: pieces)
        do throws(LeadCallError) {
            _ = try await lead.send(API.jobOutput, assignment.id, body: report, timeout: .seconds(2))
            tail.sent(through: next)
        } catch {
            if case .refused(let status, let answer) = error, status < 500 {
                tail.stop()
                logger.debug(
                    "job output refused",
                    metadata: ["nodeagent.job": "\(assignment.id)", "nodeagent.reason": "\(answer.error.message)"])
            }
        }
    }

    /// A result must fit in the lead's request body limit (`http.max_body_bytes`, 1 MiB by
    /// default) with room to spare: output that escapes badly in JSON is cut further.
    static let maxResultBytes = 768 * 1024

    /// Halves `stdout` and `stderr` (marking them truncated) until the encoded result fits in
    /// `limit` bytes, or nothing is left to cut.
    static func fit(_ result: inout [String: JSONValue], within limit: Int) {
        while (try? APICoding.encoder().encode(result).count) ?? 0 > limit {
            var shrunk = false
            for (key, flag) in [("stdout", "stdout_truncated"), ("stderr", "stderr_truncated")] {
                guard case .string(let text)? = result[key], !text.isEmpty else { continue }
                result[key] = .string(String(text.prefix(text.count / 2)))
                result[flag] = .bool(true)
                shrunk = true
            }
            if !shrunk { return }
        }
    }
}

/// One call to a local inference server: an OpenAI-compatible `/v1/chat/completions` or an
/// Ollama `/api/generate` (or `/api/chat`) URL, chosen by the path of `gpu.backend`.
struct InferenceCall {
    /// The server's API: OpenAI chat completions, Ollama generate, or Ollama chat (also for an
    /// Ollama URL when the payload has `messages`).
    enum Flavor: String {
        case openAI = "openai", ollamaGenerate = "ollama", ollamaChat = "ollama-chat"
        /// The gateway's OpenAI-style call (`payload.openai`), passed to the server's own path as it is.
        case passthrough = "openai-passthrough"
    }

    let url: String
    let flavor: Flavor
    let body: [UInt8]
    /// A gateway call with `"stream": true`: the answer is server-sent events.
    var streams = false

    /// Builds the URL and the JSON body (never streaming) from `gpu.backend` and the job's payload.
    init(backend: String, payload: [String: JSONValue]) {
        let base = backend.hasSuffix("/") ? String(backend.dropLast()) : backend
        if case .object(let call)? = payload["openai"], case .string(let path)? = call["path"],
            OpenAIPassthrough.paths.contains(path), case .object(var body)? = call["body"]
        {
            // Ollama serves the same OpenAI-compatible paths; only the model's name is ours to set.
            flavor = .passthrough
            url = (Self.origin(of: base) ?? base) + path
            body["model"] = payload["model"]
            streams = body["stream"] == .bool(true)
            self.body = Array((try? APICoding.encoder().encode(body)) ?? Data())
            return
        }
        var options: [String: JSONValue] = [:]
        if case .object(let given)? = payload["options"] { options = given }
        var body: [String: JSONValue] = ["model": payload["model"] ?? .null, "stream": .bool(false)]
        if base.hasSuffix("/api/generate") || base.hasSuffix("/api/chat") {
            if case .array(let messages)? = payload["messages"] {
                flavor = .ollamaChat
                url = base.hasSuffix("/api/chat") ? base : String(base.dropLast("/api/generate".count)) + "/api/chat"
                body["messages"] = .array(messages)
            } else {
                flavor = base.hasSuffix("/api/chat") ? .ollamaChat : .ollamaGenerate
                url = base
                if flavor == .ollamaChat {
                    body["messages"] = .array([
                        .object(["role": .string("user"), "content": payload["prompt"] ?? .string("")])
                    ])
                } else {
                    body["prompt"] = payload["prompt"] ?? .string("")
                }
            }
            if !options.isEmpty { body["options"] = .object(options) }
        } else {
            flavor = .openAI
            url = base.hasSuffix("/chat/completions") ? base : base + "/v1/chat/completions"
            for (key, value) in options where key != "model" && key != "messages" { body[key] = value }
            if case .array(let messages)? = payload["messages"] {
                body["messages"] = .array(messages)
            } else {
                body["messages"] = .array([
                    .object(["role": .string("user"), "content": payload["prompt"] ?? .string("")])
                ])
            }
        }
        self.body = Array((try? APICoding.encoder().encode(body)) ?? Data())
    }

    /// `scheme://host[:port]` of a backend URL; nil when it does not parse.
    static func origin(of url: String) -> String? {
        guard let parsed = URL(string: url), let scheme = parsed.scheme, let host = parsed.host else { return nil }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(hostPart)" + (parsed.port.map { ":\($0)" } ?? "")
    }

    /// `{"text", "model", "backend", "usage"?}` from the server's answer.
    func result(from answer: JSONValue) -> JSONValue {
        guard case .object(let object) = answer else { return .object(["raw": answer]) }
        var text: JSONValue = .null
        switch flavor {
        case .openAI:
            if case .array(let choices)? = object["choices"], case .object(let first)? = choices.first {
                if case .object(let message)? = first["message"] {
                    text = message["content"] ?? .null
                } else {
                    text = first["text"] ?? .null
                }
            }
        case .ollamaGenerate:
            text = object["response"] ?? .null
        case .ollamaChat:
            if case .object(let message)? = object["message"] { text = message["content"] ?? .null }
        case .passthrough:
            return answer
        }
        var result: [String: JSONValue] = [
            "text": text, "backend": .string(flavor == .openAI ? "openai" : "ollama"),
            "model": object["model"] ?? .null,
        ]
        if let usage = object["usage"] { result["usage"] = usage }
        if let count = object["eval_count"] { result["usage"] = .object(["completion_tokens": count]) }
        return .object(result)
    }
}

extension JobResult {
    /// The result with every string (and object key) free of control characters other than
    /// tab, newline and carriage return: they become `\u{XX}` (InputRules.sanitizedFreeText).
    func sanitized() -> JobResult {
        var copy = self
        copy.result = result.map(Self.sanitize)
        copy.error = error.map(InputRules.sanitizedFreeText)
        return copy
    }

    /// Applies ``InputRules/sanitizedFreeText(_:)`` to every string and key, recursively.
    private static func sanitize(_ value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text): .string(InputRules.sanitizedFreeText(text))
        case .array(let items): .array(items.map(sanitize))
        case .object(let fields):
            .object(
                Dictionary(
                    fields.map { (InputRules.sanitizedFreeText($0.key), sanitize($0.value)) },
                    uniquingKeysWith: { first, _ in first }))
        default: value
        }
    }
}

/// A running exec job's output tail on its worker: the ring the command's output fills, and how
/// far the lead's copy reaches.
final class JobOutputTail: Sendable {
    private struct State {
        var ring: JobOutputRing
        var sent = 0
        var stopped = false
    }

    let capacity: Int
    private let state: Mutex<State>

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        state = Mutex(State(ring: JobOutputRing(capacity: max(1, capacity))))
    }

    /// What the command wrote, after `skipping` bytes that were never read.
    func append(_ stream: JobOutputStream, _ bytes: [UInt8], skipping: Int) {
        state.withLock { $0.ring.append(stream == .stdout ? .stdout : .stderr, bytes, skipping: skipping) }
    }

    /// The pieces the lead does not have yet (nil: none, or pushing stopped), and the offset
    /// they reach.
    func unsent(maxBytes: Int, maxPieces: Int) -> ([JobOutputPiece], Int)? {
        state.withLock { state in
            guard !state.stopped else { return nil }
            let (segments, next) = state.ring.read(from: state.sent, limit: maxBytes, maxSegments: maxPieces)
            guard !segments.isEmpty else { return nil }
            let pieces = segments.map {
                JobOutputPiece(
                    offset: $0.offset, stream: $0.stream == .stdout ? .stdout : .stderr,
                    data: Data($0.bytes).base64EncodedString())
            }
            return (pieces, next)
        }
    }

    /// The lead has everything before `offset`.
    func sent(through offset: Int) { state.withLock { $0.sent = max($0.sent, offset) } }

    /// The lead refuses this job's output: send nothing more.
    func stop() { state.withLock { $0.stopped = true } }
}
