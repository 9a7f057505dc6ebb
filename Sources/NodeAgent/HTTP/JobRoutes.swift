import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

extension HTTPServer {
    /// GPU job routes (docs/API.md). Client calls are answered by the lead (operator token or a
    /// node's signature) and forwarded by every other agent (local operator token) with that
    /// agent's signed identity. Worker calls are signed and served by the lead only.
    ///
    /// Clients prove themselves with `client`; which jobs a caller sees is ``JobAccess`` (another's
    /// job is 404):
    ///
    /// - `POST /api/gpu/jobs`: role `submit`, or a node's signature; 201 for a new job, 200 for the
    ///   job its idempotency key already names; exec jobs only from the mesh admin (403);
    /// - `POST /api/gpu/generate`: the same callers; a `generate` job built from the request and
    ///   waited on up to `wait_s` (0 to `JobCoordinator.Limits.maxWait`, else 400): 200 once it
    ///   finished, 202 while it is still open;
    /// - `GET /api/gpu/jobs` (`?state=`, `?limit=` 1-10000, default 100), `GET /api/gpu/jobs/{id}`
    ///   (`?wait=` seconds for it to finish), `GET /api/gpu/status`, `GET /api/gpu/queue`: role
    ///   `read`, or a node's signature;
    /// - `DELETE /api/gpu/jobs/{id}`: role `submit`, or a node's signature, for a job it may read;
    /// - `GET /api/gpu/assignments` (`?wait=` up to 60 s, default 20 s), `POST /api/gpu/jobs/{id}/result`:
    ///   a worker's signature; the assignments are the signing node's own, and a result is taken only
    ///   for a job on that node, at its current attempt (else 409).
    static func addJobRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, token = agent.token
        let jobs = lead.jobs, registry = lead.registry

        // MARK: Clients
        router.on(API.submitJob) { request, context -> Response in
            let (who, body) = try await client(
                request, context: context, token: token, registry: registry, maxBody: maxBody, role: .submit)
            let submission = try decode(JobSubmission.self, body, allowed: JobSubmission.fields)
            let (job, created) = try await jobs.submit(submission, by: who)
            return try json(job, status: created ? .created : .ok)
        }
        router.on(API.generate) { request, context -> Response in
            let (who, body) = try await client(
                request, context: context, token: token, registry: registry, maxBody: maxBody, role: .submit)
            let generate = try decode(GenerateRequest.self, body, allowed: GenerateRequest.fields)
            if let wait = generate.waitS, !(0...JobCoordinator.Limits.maxWait).contains(wait) {
                throw Refusal.badRequest("wait_s must be 0-\(Int(JobCoordinator.Limits.maxWait)) seconds")
            }
            var payload: [String: JSONValue] = ["model": .string(generate.model)]
            if let prompt = generate.prompt { payload["prompt"] = .string(prompt) }
            if let messages = generate.messages { payload["messages"] = .array(messages) }
            if let options = generate.options { payload["options"] = .object(options) }
            let submission = JobSubmission(
                kind: .generate, priority: generate.priority?.value,
                requirements: JobRequirements(
                    minVramMB: generate.minVramMB ?? 0, gpuModel: generate.gpuModel, labels: generate.labels),
                payload: payload, idempotencyKey: generate.idempotencyKey)
            var (job, _) = try await jobs.submit(submission, by: who)
            if let wait = generate.waitS, wait > 0, !job.state.isTerminal {
                job = try await jobs.job(job.id, wait: .milliseconds(Int64(wait * 1000)), for: who)
            }
            return try json(job, status: job.state.isTerminal ? .ok : .accepted)
        }
        router.on(API.listJobs) { request, context -> Response in
            let (who, _) = try await client(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            let (filter, limit) = try listParameters(request)
            return try json(try await jobs.list(state: filter, limit: limit, for: who), status: .ok)
        }
        router.on(API.getJob) { request, context -> Response in
            let wait = try waitParameter(request, limit: JobCoordinator.Limits.maxWait)
            let (who, _) = try await client(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await jobs.job(try context.parameters.decoded("id"), wait: wait, for: who), status: .ok)
        }
        router.on(API.cancelJob) { request, context -> Response in
            let (who, _) = try await client(
                request, context: context, token: token, registry: registry, maxBody: maxBody, role: .submit)
            return try json(try await jobs.cancel(try context.parameters.decoded("id"), by: who), status: .ok)
        }
        router.on(API.gpuStatus) { request, context -> Response in
            _ = try await client(request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await jobs.status(), status: .ok)
        }
        addJobLogRoutes(to: router, agent: agent, lead: lead)
        router.on(API.gpuQueue) { request, context -> Response in
            _ = try await client(request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await jobs.queue(), status: .ok)
        }

        // MARK: Workers (signed, lead)
        router.on(API.gpuAssignments) { request, context -> Response in
            let (node, _) = try await authenticateNode(request, context: context, registry: registry, maxBody: maxBody)
            let wait = try waitParameter(request, limit: 60) ?? .seconds(20)
            var batch = try await jobs.assignments(for: node, wait: wait)
            if let reason = lead.leadership?.refusalReason {
                // Fenced while the poll waited: what it holds is not this lead's to give.
                throw Refusal(.unavailable, code: "fenced", message: "this agent no longer leads the mesh: \(reason)")
            }
            batch.epoch = lead.leadership?.epoch
            return try json(batch, status: .ok)
        }
        router.on(API.jobResult) { request, context -> Response in
            let (node, body) = try await authenticateNode(
                request, context: context, registry: registry, maxBody: maxBody)
            let result = try decode(JobResult.self, body, allowed: JobResult.fields)
            return try json(
                try await jobs.result(try context.parameters.decoded("id"), from: node, result), status: .ok)
        }
    }

    /// The same routes on a compute or edge node: client calls are forwarded to the lead; worker
    /// calls are the lead's.
    ///
    /// The lead's status and body are relayed as they are, so its refusals reach the caller
    /// unchanged. With this node's own operator token the call runs on the lead as `node:NAME`
    /// (this node, signed): it sees only the jobs this node submitted and may not submit exec
    /// jobs. Any other bearer token goes to the lead as it is, and the lead decides what it may do
    /// and records its holder: the mesh admin token or an API token works through every agent,
    /// and its idempotency keys are its own wherever it retries (also against a new lead). Timeouts: 10 s; `generate` the longest wait plus 5 s;
    /// a job read its `?wait=` plus 10 s. Assignments and results: 421 `not_lead`. A standby lead
    /// answers the job list and a job read without `?wait=` from its own copy of the lead's store
    /// while it can (``standbyJobs(_:state:limit:token:node:reads:)``).
    static func addJobRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, node: NodeParts) {
        let maxBody = agent.maxBody, token = agent.token
        let membership = node.membership
        router.on(API.submitJob) { request, _ -> Response in
            try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: .seconds(10))
        }
        router.on(API.generate) { request, _ -> Response in
            try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody,
                timeout: .seconds(Int64(JobCoordinator.Limits.maxWait) + 5))
        }
        router.on(API.listJobs) { request, _ -> Response in
            if let reads = node.standbyReads {
                let (state, limit) = try listParameters(request)
                if let answer = try await standbyJobs(
                    request, state: state, limit: limit, token: token, node: node, reads: reads)
                {
                    return answer
                }
            }
            return try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: .seconds(10))
        }
        router.on(API.getJob) { request, context -> Response in
            let wait = try waitParameter(request, limit: JobCoordinator.Limits.maxWait)
            // Waiting on a job is the lead's: only it hears the job end.
            if let reads = node.standbyReads, wait == nil,
                let answer = try await standbyJob(
                    request, id: try context.parameters.decoded("id"), token: token, node: node, reads: reads)
            {
                return answer
            }
            return try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: (wait ?? .zero) + .seconds(10)
            )
        }
        router.on(API.cancelJob) { request, _ -> Response in
            try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: .seconds(10))
        }
        router.on(API.gpuStatus) { request, _ -> Response in
            try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: .seconds(10))
        }
        router.on(API.gpuQueue) { request, _ -> Response in
            try await forwardToLead(
                request, membership: membership, token: token, maxBody: maxBody, timeout: .seconds(10))
        }
        leadOnly(router, API.gpuAssignments, "GPU assignments", agent: agent)
        leadOnly(router, API.jobResult, "job results", agent: agent)
        addJobLogRoutes(to: router, agent: agent, node: node)
    }

    /// Who calls (`operator`, `api:ID[@COMPANY]` or `node:NAME`) and the body: a bearer token
    /// with at least `role` (reads need `read`, submitting and cancelling `submit`), or a node's signature.
    ///
    /// With an `Authorization` header the token decides (401, or 403 for too small a role) and no
    /// signature is tried; without one the request must be signed (401 otherwise). Lead only.
    static func client(
        _ request: Request, context: AgentRequestContext, token: AdminToken, registry: Registry,
        maxBody: Int, role: APIRole = .read
    ) async throws -> (String, [UInt8]) {
        if request.headers[.authorization] != nil {
            let caller = try authorize(request, token: token, role: role)
            var request = request
            return (caller, Array(try await request.collectBody(upTo: maxBody).readableBytesView))
        }
        let (node, body) = try await authenticateNode(request, context: context, registry: registry, maxBody: maxBody)
        return ("node:\(node)", body)
    }

    /// `GET /gpu/jobs`'s `?state=` (a job state) and `?limit=` (1-10000, default 100); 400
    /// `bad_request` naming the parameter otherwise.
    static func listParameters(_ request: Request) throws(Refusal) -> (state: JobState?, limit: Int) {
        let state = try request.uri.queryParameters.get("state").map { text throws(Refusal) -> JobState in
            guard let state = JobState(rawValue: text) else {
                throw Refusal.badRequest(
                    "state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return state
        }
        let limit =
            try request.uri.queryParameters.get("limit").map { text throws(Refusal) -> Int in
                guard let value = Int(text), (1...10_000).contains(value) else {
                    throw Refusal.badRequest("limit must be 1-10000")
                }
                return value
            } ?? 100
        return (state, limit)
    }

    /// `?wait=S`: seconds, 0 to `limit`.
    ///
    /// Fractions allowed, kept to the millisecond; nil when absent; 400 `bad_request` when it is not
    /// a number or out of range.
    static func waitParameter(_ request: Request, limit: Double) throws(Refusal) -> Duration? {
        guard let text = request.uri.queryParameters.get("wait") else { return nil }
        guard let seconds = Double(text), seconds >= 0, seconds <= limit else {
            throw Refusal.badRequest("wait must be 0-\(Int(limit)) seconds")
        }
        return .milliseconds(Int64(seconds * 1000))
    }

    /// The lead's answer headers a forwarding agent passes on: when to retry, and where a
    /// gateway call ran.
    static let relayedHeaders: Set<String> = ["retry-after", "x-aurora-served-by", "x-aurora-node"]

    /// Forwards a client call to the lead with this node's signed identity, and relays the
    /// lead's answer as it is.
    ///
    /// Needs this agent's operator token (401 otherwise). The body (up to `maxBody`) and the path
    /// with its query go as they came, signed by this node; the answer is labelled
    /// `application/json`. 503 `lead_unreachable` when the lead does not answer (no connection, or
    /// nothing within `timeout`).
    static func forwardToLead(
        _ request: Request, membership: MembershipService, token: AdminToken, maxBody: Int,
        timeout: Duration
    ) async throws -> Response {
        let bearer = try forwardedBearer(request, token: token)
        var request = request
        let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
        return try await relayToLead(request, body: body, bearer: bearer, membership: membership, timeout: timeout)
    }

    /// The caller's token to pass on to the lead: nil for this node's own operator token (the
    /// call goes out signed as this node), the token itself when it is not this node's (the lead
    /// checks it; invalid ones get the lead's 401, unchanged). 401 when there is none, or it is
    /// malformed.
    static func forwardedBearer(_ request: Request, token: AdminToken) throws -> String? {
        if let presented = bearerToken(request), !token.accepts(presented) {
            // A console session is this agent's own: one that ended is not passed on.
            guard !presented.hasPrefix(ConsoleWire.sessionPrefix) else {
                throw Refusal.unauthorized("the console session has ended; sign in again")
            }
            guard presented.utf8.count <= 256, presented.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
                throw Refusal.unauthorized("the bearer token is malformed")
            }
            return presented
        }
        try authorize(request, token: token)
        return nil
    }

    /// Sends a checked call with its collected body to the lead and answers with what it said.
    static func relayToLead(
        _ request: Request, body: [UInt8], bearer: String?, membership: MembershipService, timeout: Duration
    ) async throws -> Response {
        let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let answer: Result<(status: Int, body: [UInt8], headers: [(name: String, value: String)]), LeadCallError>
        do throws(LeadCallError) {
            answer = .success(
                try await membership.leadClient.relay(
                    NIOHTTP1.HTTPMethod(rawValue: request.method.rawValue), path, body: body,
                    timeout: timeout, bearer: bearer, keep: relayedHeaders))
        } catch {
            answer = .failure(error)
        }
        switch answer {
        case .success(let (status, bytes, headers)):
            var response = Response(
                status: .init(code: status), headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            for (name, value) in headers {
                if let field = HTTPField.Name(name) { response.headers[field] = value }
            }
            return response
        case .failure(let error):
            throw Refusal(
                .unavailable, code: "lead_unreachable", message: "\(error.message); GPU jobs are served by the lead")
        }
    }
}
