import AuroraAPI
import Foundation
import Hummingbird
import Mesh

extension HTTPServer {
    /// The longest `?wait=` of `GET /api/gpu/jobs/{id}/logs`, in seconds.
    static let maxLogWait = 30.0
    /// The most pieces one `POST /api/gpu/jobs/{id}/output` may carry.
    static let maxOutputPieces = 64

    /// Exec job output on the lead (docs/API.md, "Job output"):
    ///
    /// - `GET /api/gpu/jobs/{id}/logs?offset=N&wait=S`: the callers and rules of
    ///   `GET /api/gpu/jobs/{id}` (another's job is 404); the output tail from byte `offset`
    ///   (default 0, at most 2^53) as ``JobLogs``. With `wait` (0-30 s) the answer waits until there is
    ///   output past `offset` or the job ends: following a job is a chain of such calls, each
    ///   continuing at the last `next_offset`, so it resumes after any broken connection and passes
    ///   through forwarding agents unchanged.
    /// - `POST /api/gpu/jobs/{id}/output`: a worker's signature; taken only for a job running on
    ///   that node at the report's attempt (409 `not_assigned`, `stale_attempt`); at most 64 pieces,
    ///   each valid base64, offsets 0-2^53 (400).
    /// - `POST /api/gpu/jobs/{id}/stream`: a worker's signature; the next chunks of a streamed
    ///   gateway call running on that node at the push's attempt (409 `not_assigned`,
    ///   `stale_attempt`, `not_streaming`, `stream_gap`; 429 `stream_full` while the client lags);
    ///   at most 256 chunks, each a one-line JSON object of at most 64 KiB (400).
    static func addJobLogRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, token = agent.token
        let jobs = lead.jobs, registry = lead.registry, outputs = lead.outputs

        router.on(API.jobLogs) { request, context -> Response in
            let wait = try waitParameter(request, limit: maxLogWait)
            let offset = try offsetParameter(request)
            let (who, _) = try await client(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            let id = try context.parameters.decoded("id")
            let deadline = ContinuousClock.now + (wait ?? .zero)
            while true {
                // The state first: output read after a terminal state was seen is complete.
                let job = try await jobs.job(id, for: who)
                let page = await outputs.page(job, from: offset)
                if !page.chunks.isEmpty || page.done || job.state.isTerminal || ContinuousClock.now >= deadline {
                    return try json(page, status: .ok)
                }
                // New output arrives in pushes a quarter second apart: a tenth of a second is soon enough.
                do { try await Task.sleep(for: .milliseconds(100)) } catch { return try json(page, status: .ok) }
            }
        }
        router.on(API.jobOutput) { request, context -> Response in
            let (node, body) = try await authenticateNode(
                request, context: context, registry: registry, maxBody: maxBody)
            let report = try decode(JobOutputReport.self, body, allowed: JobOutputReport.fields)
            let pieces = try outputPieces(report)
            let id = try context.parameters.decoded("id")
            try await jobs.checkOutput(id, from: node, attempt: report.attempt)
            let next = await outputs.take(id, node: node, attempt: report.attempt, pieces)
            return try json(JobOutputAccepted(nextOffset: next), status: .ok)
        }
        router.on(API.jobStream) { request, context -> Response in
            let (node, body) = try await authenticateNode(
                request, context: context, registry: registry, maxBody: maxBody)
            let push = try decode(InferenceStreamPush.self, body, allowed: InferenceStreamPush.fields)
            try checkStreamPush(push)
            let id = try context.parameters.decoded("id")
            try await jobs.checkStream(id, from: node, attempt: push.attempt)
            switch jobs.streams.take(id, push) {
            case .ack(let ack):
                return try json(ack, status: .ok)
            case .gap(let expected):
                throw Refusal(
                    .conflict, code: "stream_gap",
                    message: "seq \(push.seq) is past \(expected), the index of the next chunk expected")
            case .full:
                throw Refusal(
                    .tooMany, code: "stream_full",
                    message: "the client has not read what came before; send these chunks again shortly",
                    retryAfterSeconds: 1)
            }
        }
    }

    /// A stream push's numbers, chunks and error within bounds (400 `bad_request`).
    static func checkStreamPush(_ push: InferenceStreamPush) throws(Refusal) {
        guard push.attempt >= 1, push.attempt <= 1_000_000 else {
            throw Refusal.badRequest("attempt must be 1-1000000")
        }
        guard (0...(1 << 53)).contains(push.seq) else { throw Refusal.badRequest("seq must be 0-\(1 << 53)") }
        guard push.chunks.count <= InferenceStreamPush.maxChunks else {
            throw Refusal.badRequest(
                "chunks has \(push.chunks.count) entries; at most \(InferenceStreamPush.maxChunks) are allowed")
        }
        for (index, chunk) in push.chunks.enumerated() {
            if let problem = InferenceStreamPush.problem(with: chunk) {
                throw Refusal.badRequest("chunks[\(index)] \(problem)")
            }
        }
        if let error = push.error {
            do throws(MeshError) { try InputRules.freeText(error, field: "error", maxBytes: 1000) } catch {
                throw Refusal.badRequest(error.message)
            }
            guard push.done else { throw Refusal.badRequest("error comes only with done: true") }
        }
    }

    /// On a compute or edge node: logs are forwarded to the lead like `GET /api/gpu/jobs/{id}`
    /// (this node's signed identity, its local operator token required; timeout the wait plus 10 s);
    /// output reports are the lead's (421 `not_lead`).
    static func addJobLogRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, node: NodeParts) {
        let maxBody = agent.maxBody, token = agent.token
        let membership = node.membership
        router.on(API.jobLogs) { request, _ -> Response in
            let wait = try waitParameter(request, limit: maxLogWait)
            _ = try offsetParameter(request)
            return try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: (wait ?? .zero) + .seconds(10)
            )
        }
        leadOnly(router, API.jobOutput, "job output", agent: agent)
        leadOnly(router, API.jobStream, "streamed chunks", agent: agent)
    }

    /// `?offset=N`: a byte offset, 0 to 2^53; 0 when absent; 400 `bad_request` otherwise.
    static func offsetParameter(_ request: Request) throws(Refusal) -> Int {
        guard let text = request.uri.queryParameters.get("offset") else { return 0 }
        guard text.utf8.count <= 16, let value = Int(text), (0...(1 << 53)).contains(value) else {
            throw Refusal.badRequest("offset must be a whole number of bytes, 0-\(1 << 53)")
        }
        return value
    }

    /// The report's pieces as bytes: at most ``maxOutputPieces``, offsets 0 to 2^53, data valid base64.
    static func outputPieces(_ report: JobOutputReport) throws(Refusal) -> [(JobOutputStream, Int, [UInt8])] {
        guard report.attempt >= 1, report.attempt <= 1_000_000 else {
            throw Refusal.badRequest("attempt must be 1-1000000")
        }
        guard report.pieces.count <= maxOutputPieces else {
            throw Refusal.badRequest(
                "pieces has \(report.pieces.count) entries; at most \(maxOutputPieces) are allowed")
        }
        var pieces: [(JobOutputStream, Int, [UInt8])] = []
        for (index, piece) in report.pieces.enumerated() {
            guard (0...(1 << 53)).contains(piece.offset) else {
                throw Refusal.badRequest("pieces[\(index)].offset must be 0-\(1 << 53)")
            }
            guard let bytes = Data(base64Encoded: piece.data) else {
                throw Refusal.badRequest("pieces[\(index)].data is not base64")
            }
            pieces.append((piece.stream, piece.offset, Array(bytes)))
        }
        return pieces
    }
}
