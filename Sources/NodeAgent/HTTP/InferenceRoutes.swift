import AsyncHTTPClient
import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Mesh
import NIOCore
import NIOHTTP1

/// The OpenAI-compatible gateway's routes (docs/API.md, "Inference gateway").
///
/// - `GET /v1/models` (every agent): the mesh's models in OpenAI's list shape, each with the
///   alive nodes whose backend serves it (those with it loaded first), from the nodes'
///   `capabilities.models`. On the lead: the operator token, an API token (any role) or a node's
///   signature, from the registry. On any other agent: its operator token, from the lead's node
///   list, or from its cached copy marked `"stale": true` while the lead is away.
/// - `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` (every agent; other agents
///   forward to the lead with the caller's token): a token with role `submit` (or a node's
///   signature). The body is a JSON object with a `model`; it becomes a `generate` job routed
///   to a node that serves the model (loaded first), through the queue like every job, and goes
///   to that node's backend unchanged but for the model's name there. The answer is the
///   backend's, unchanged, with `X-Aurora-Served-By: node` and `X-Aurora-Node`. Errors follow
///   OpenAI's shape (`{"error": {"message", "type", "code"}}`): 400 for a body that is not an
///   object, a bad `model` or `stream`; 404 `model_not_found` listing
///   the mesh's models; 502 when the backend failed on every attempt; 504 when no node finished
///   within `X-Aurora-Wait` seconds (default and most 300; the job is cancelled).
/// - With `"stream": true` (chat and completions) the answer is `text/event-stream`: the
///   backend's events as its worker posts them (``InferenceStreams``), each `data:` unchanged but
///   for the model's name, then `data: [DONE]`. The status waits for the first chunk, so a call
///   that never starts still gets an error status; a node lost before it (or a backend that
///   fails before it) sends the call to another node. After it, a lost node or a failing backend
///   ends the stream with one `data: {"error": …}` event, never silently. A client that goes
///   away cancels the job, and its worker the backend's request.
extension HTTPServer {
    static let servedByHeader = HTTPField.Name("X-Aurora-Served-By")!
    static let servedNodeHeader = HTTPField.Name("X-Aurora-Node")!
    static let waitHeader = HTTPField.Name("X-Aurora-Wait")!

    static func addInferenceRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, role: RoleParts) {
        let token = agent.token, maxBody = agent.maxBody
        let calls = [API.chatCompletions, API.completions, API.embeddings]
        switch role {
        case .lead(let lead):
            let registry = lead.registry
            router.on(API.listModels) { request, context -> Response in
                var allowed: Set<String>?
                if let presented = bearerToken(request), GatewayKeys.looksLikeKey(presented) {
                    // A key sees the models it may call.
                    allowed = try lead.gatewayKeys.grant(for: presented).models
                } else {
                    try await authorizeOperatorOrNode(
                        request, context: context, token: token, registry: registry, maxBody: maxBody)
                }
                var list = ModelList.mesh(try await registry.list().nodes)
                if let allowed { list.data.removeAll { !allowed.contains($0.id) } }
                return try json(list, status: .ok)
            }
            for endpoint in calls {
                router.on(endpoint) { request, context -> Response in
                    let wait = try gatewayWait(request)
                    if let presented = bearerToken(request), GatewayKeys.looksLikeKey(presented) {
                        let grant = try lead.gatewayKeys.grant(for: presented)
                        var request = request
                        let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
                        return try await gateway(
                            path: endpoint.pattern, body: body, caller: grant.caller, grant: grant, wait: wait,
                            lead: lead)
                    }
                    let (who, body) = try await client(
                        request, context: context, token: token, registry: registry, maxBody: maxBody,
                        role: .submit)
                    return try await gateway(
                        path: endpoint.pattern, body: body, caller: who, grant: nil, wait: wait, lead: lead)
                }
            }
        case .node(let node):
            router.on(API.listModels) { request, _ -> Response in
                if let bearer = try forwardedBearer(request, token: token) {
                    // Not this agent's token (a gateway key, an API token): the lead decides.
                    return try await relayToLead(
                        request, body: [], bearer: bearer, membership: node.membership, timeout: .seconds(10))
                }
                let list = try await forwardedList(node: node)
                return try json(ModelList.mesh(list.nodes, stale: list.stale ? true : nil), status: .ok)
            }
            for endpoint in calls {
                router.on(endpoint) { request, _ -> Response in
                    let wait = try gatewayWait(request)
                    let bearer = try forwardedBearer(request, token: token)
                    var request = request
                    let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
                    guard asksToStream(body) else {
                        return try await relayToLead(
                            request, body: body, bearer: bearer, membership: node.membership,
                            timeout: .seconds(Int64(wait) + 10))
                    }
                    return try await relayStream(
                        request, body: body, bearer: bearer, membership: node.membership,
                        timeout: .seconds(Int64(wait + streamLifetime) + 10))
                }
            }
        }
    }

    /// `X-Aurora-Wait: S`: how long the caller waits for a node to answer, 1-300 s (default 300).
    static func gatewayWait(_ request: Request) throws(Refusal) -> Double {
        guard let text = request.headers[waitHeader] else { return JobCoordinator.Limits.maxWait }
        guard let seconds = Double(text), seconds >= 1, seconds <= JobCoordinator.Limits.maxWait else {
            throw Refusal.badRequest("X-Aurora-Wait must be 1-\(Int(JobCoordinator.Limits.maxWait)) seconds")
        }
        return seconds
    }

    /// One OpenAI-style call on the lead: checked, queued as a `generate` job for a node that
    /// serves the model, waited for, and answered with what the backend said.
    static func gateway(
        path: String, body: [UInt8], caller: String, grant: GatewayKeys.Grant?, wait: Double, lead: LeadParts
    ) async throws -> Response {
        guard case .object(let object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(body)) else {
            throw Refusal.badRequest("the body must be a JSON object")
        }
        guard case .string(let model)? = object["model"] else {
            throw Refusal.badRequest("model: a string naming the model is required (GET /v1/models lists them)")
        }
        do throws(MeshError) { try ModelDiscovery.checkName(model, field: "model") } catch {
            throw Refusal.badRequest(error.message)
        }
        let streaming: Bool
        switch object["stream"] {
        case nil, .null?, .bool(false)?: streaming = false
        case .bool(true)?: streaming = true
        default: throw Refusal.badRequest("stream must be true or false")
        }
        if streaming && path == API.embeddings.pattern {
            throw Refusal.badRequest("stream: embeddings are not streamed")
        }
        // A key's models and budgets first: a refused call queues nothing.
        if let grant { try lead.gatewayKeys.admit(grant, model: model) }
        let fallback = lead.fallback?.route(for: model)
        let call = ProviderCall(
            path: path, body: object, model: model, streaming: streaming, caller: caller, grant: grant, wait: wait)
        // A model no node serves (every node with a backend says what it serves): its fallback, or 404.
        if !(await lead.jobs.couldServe(model: model)) {
            if let fallback { return try await viaProvider(fallback, call, lead: lead) }
            let names = ModelList.mesh(try await lead.registry.list().nodes).data.map(\.id)
            throw Refusal(
                .notFound, code: "model_not_found",
                message: "the model '\(InputRules.printable(model))' does not exist in this mesh; "
                    + (names.isEmpty ? "no node serves a model" : "it serves: \(names.joined(separator: ", "))"))
        }
        let submission = JobSubmission(
            kind: .generate,
            payload: [
                "model": .string(model), "openai": .object(["path": .string(path), "body": .object(object)]),
                // A stream may run long after its first chunk: the wait bounds only that.
                "timeout_s": .number(streaming ? max(wait, streamLifetime) : wait),
            ])
        let (submitted, _) = try await lead.jobs.submit(submission, by: caller, ephemeral: true)
        let fallbackAt = fallback == nil ? nil : lead.fallback.map { ContinuousClock.now + $0.after }
        if streaming {
            let answer = try await stream(
                submitted.id, model: model, caller: caller, wait: wait, jobs: lead.jobs, fallbackAt: fallbackAt,
                usage: { prompt, completion in
                    lead.gatewayKeys.record(
                        caller: caller, grant: grant, model: model, prompt: prompt, completion: completion)
                })
            // Nil only when a fallback's time came before any GPU node started the call.
            guard let answer else { return try await viaProvider(route(fallback), call, lead: lead) }
            return answer
        }
        let deadline = ContinuousClock.now + .milliseconds(Int64(wait * 1000))
        if let fallback, let fallbackAt {
            let early = try await lead.jobs.job(submitted.id, wait: fallbackAt - .now, for: caller)
            if early.state == .queued, let cancelled = try? await lead.jobs.cancel(early.id, by: caller),
                cancelled.state == .cancelled
            {
                return try await viaProvider(fallback, call, lead: lead)
            }
        }
        var job = try await lead.jobs.job(submitted.id, wait: max(.zero, deadline - .now), for: caller)
        if !job.state.isTerminal {
            job = (try? await lead.jobs.cancel(job.id, by: caller)) ?? job
            throw Refusal(
                .timedOut, code: "timeout",
                message: "no node answered within \(Int(wait)) s (job \(job.id) was cancelled)")
        }
        guard job.state == .succeeded, var result = job.result else {
            throw Refusal(
                .upstreamFailed, code: "backend_failed",
                message:
                    "the model's backend failed: \(InputRules.printable(String((job.error ?? "no answer").prefix(300))))"
            )
        }
        // The backend names the model as it knows it; the caller asked by the mesh's name.
        if case .object(var answer) = result, answer["model"] != nil {
            answer["model"] = .string(model)
            result = .object(answer)
        }
        let (prompt, completion) = Self.tokens(in: result)
        lead.gatewayKeys.record(caller: caller, grant: grant, model: model, prompt: prompt, completion: completion)
        var response = try json(result, status: .ok)
        response.headers[servedByHeader] = "node"
        if let node = job.node { response.headers[servedNodeHeader] = node }
        return response
    }

    /// How long a streamed call may run after its first chunk, in seconds.
    static let streamLifetime = 3600.0

    /// A streamed call's answer: waits up to `wait` seconds for the first chunk of job `id`
    /// (from whichever attempt gets that far), then relays the stream as server-sent events.
    static func stream(
        _ id: String, model: String, caller: String, wait: Double, jobs: JobCoordinator,
        fallbackAt: ContinuousClock.Instant? = nil,
        usage: @escaping @Sendable (_ prompt: Int64, _ completion: Int64) -> Void
    ) async throws -> Response? {
        let streams = jobs.streams
        streams.open(id)
        let deadline = ContinuousClock.now + .milliseconds(Int64(wait * 1000))
        // Attempts before `minAttempt` were requeued before they sent anything: ignored.
        var minAttempt = 1
        var attempt = 0
        var first: [InferenceStreams.Event] = []
        var fallbackAt = fallbackAt
        waiting: while true {
            let until = min(deadline, fallbackAt ?? deadline)
            let left = until - ContinuousClock.now
            let events = left > .zero ? await streams.next(id, timeout: left) : []
            if events.isEmpty, let at = fallbackAt, ContinuousClock.now >= at, !Task.isCancelled {
                // Its fallback's time: a call no node has taken goes to the provider instead.
                fallbackAt = nil
                if (try? await jobs.job(id, for: caller))?.state == .queued,
                    (try? await jobs.cancel(id, by: caller))?.state == .cancelled
                {
                    streams.close(id)
                    return nil
                }
                continue waiting
            }
            if events.isEmpty {
                streams.close(id)
                _ = try? await jobs.cancel(id, by: caller)
                if Task.isCancelled { throw CancellationError() }
                throw Refusal(
                    .timedOut, code: "timeout",
                    message: "no node began the answer within \(Int(wait)) s (job \(id) was cancelled)")
            }
            for (index, event) in events.enumerated() {
                switch event {
                case .chunks(let from, _) where from >= minAttempt, .done(let from, nil) where from >= minAttempt:
                    attempt = from
                    first = Array(events[index...])
                    break waiting
                case .done(let from, let error?) where from >= minAttempt:
                    // It failed before its first chunk, and said so.
                    streams.close(id)
                    _ = try? await jobs.cancel(id, by: caller)
                    throw Refusal(
                        .upstreamFailed, code: "backend_failed",
                        message: "the model's backend failed: \(InputRules.printable(String(error.prefix(300))))")
                case .requeued(let next):
                    minAttempt = next
                case .ended:
                    streams.close(id)
                    let job = try? await jobs.job(id, for: caller)
                    let reason = job?.state == .cancelled ? "the call was cancelled" : (job?.error ?? "no answer")
                    throw Refusal(
                        .upstreamFailed, code: "backend_failed",
                        message:
                            "the model's backend failed: \(InputRules.printable(String(reason.prefix(300))))")
                case .chunks, .done:
                    continue
                }
            }
        }
        let relayed = attempt, opening = first
        let body = ResponseBody { writer in
            var events = opening
            var open = true
            // Tokens: the backend's last `usage`, else one per content chunk relayed.
            var reported: (Int64, Int64)?
            var counted: Int64 = 0
            defer { usage(reported?.0 ?? 0, reported?.1 ?? counted) }
            // Only a backend's own clean end leaves the job to finish by itself.
            var clean = false
            do {
                relay: while true {
                    var out = ByteBuffer()
                    for event in events {
                        switch event {
                        case .chunks(let from, let chunks) where from == relayed:
                            for chunk in chunks {
                                if chunk.contains(#""usage""#), let tokens = Self.usage(inChunk: chunk) {
                                    reported = tokens
                                } else if chunk.contains(#""choices""#) {
                                    counted += 1
                                }
                                out.writeStaticString("data: ")
                                out.writeString(chunk)
                                out.writeStaticString("\n\n")
                            }
                        case .done(let from, let error) where from == relayed:
                            if let error {
                                out.writeString(streamError("the model's backend failed: \(error)"))
                            } else {
                                out.writeStaticString("data: [DONE]\n\n")
                                clean = true
                            }
                            open = false
                        case .requeued:
                            out.writeString(
                                streamError("the node serving this answer was lost after it began; ask again"))
                            open = false
                        case .ended:
                            out.writeString(streamError("the call ended before its answer did"))
                            open = false
                        case .chunks, .done:
                            continue
                        }
                        if !open { break }
                    }
                    if out.readableBytes > 0 { try await writer.write(out) }
                    if !open { break relay }
                    events = await streams.next(id, timeout: .seconds(Int64(streamLifetime)))
                    if events.isEmpty {
                        if Task.isCancelled { throw CancellationError() }
                        try await writer.write(ByteBuffer(string: streamError("the answer took longer than an hour")))
                        open = false
                        break relay
                    }
                }
            } catch {
                // The client went away (or the request was cancelled): stop the worker's backend call.
                streams.cancel(id)
                streams.close(id)
                _ = try? await jobs.cancel(id, by: caller)
                throw error
            }
            streams.close(id)
            // Interrupted: the job is not run again for a client that has had its error.
            if !clean { _ = try? await jobs.cancel(id, by: caller) }
            try await writer.finish(nil)
        }
        var response = Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
        response.headers[servedByHeader] = "node"
        if let node = try? await jobs.job(id, for: caller).node { response.headers[servedNodeHeader] = node }
        return response
    }

    /// One server-sent event in OpenAI's error shape (`type` `server_error`, `code`
    /// `stream_interrupted`): how a stream that began ends when it cannot finish.
    static func streamError(_ message: String) -> String {
        let detail: JSONValue = .object([
            "error": .object([
                "message": .string(InputRules.printable(String(message.prefix(500)))),
                "type": .string("server_error"), "code": .string("stream_interrupted"),
            ])
        ])
        let text = (try? APICoding.encoder().encode(detail)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return "data: \(text)\n\n"
    }

    /// Whether a gateway call's body asks for `"stream": true` (the lead checks the rest).
    static func asksToStream(_ body: [UInt8]) -> Bool {
        guard case .object(let object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(body)),
            case .bool(true)? = object["stream"]
        else { return false }
        return true
    }

    /// A streamed gateway call forwarded to the lead: its events are passed on as they come; any
    /// other answer (an error) as it is. The client going away ends the lead's request, which
    /// cancels the call.
    static func relayStream(
        _ request: Request, body: [UInt8], bearer: String?, membership: MembershipService, timeout: Duration
    ) async throws -> Response {
        let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let answer: (status: Int, headers: [(name: String, value: String)], body: HTTPClientResponse.Body)
        do throws(LeadCallError) {
            answer = try await membership.leadClient.open(
                NIOHTTP1.HTTPMethod(rawValue: request.method.rawValue), path, body: body, timeout: timeout,
                bearer: bearer, keep: relayedHeaders.union(["content-type"]))
        } catch {
            throw Refusal(
                .unavailable, code: "lead_unreachable", message: "\(error.message); GPU jobs are served by the lead")
        }
        var headers: HTTPFields = [:]
        for (name, value) in answer.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        guard answer.status == 200 else {
            let bytes = try await answer.body.collect(upTo: 1 << 20)
            headers[.contentType] = "application/json"
            return Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: bytes))
        }
        return passOn(answer.body, headers: headers)
    }

    /// A 200 answer whose body is `upstream`'s, passed on as it comes (an event stream from the
    /// lead or a provider). The client going away ends `upstream`'s request.
    static func passOn(_ upstream: HTTPClientResponse.Body, headers: HTTPFields) -> Response {
        var headers = headers
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                for try await piece in upstream { try await writer.write(piece) }
                try await writer.finish(nil)
            })
    }

    /// `usage.prompt_tokens` and `usage.completion_tokens` of a backend's answer (an embedding's
    /// `total_tokens` beyond its prompt counts as completion); zero for what it does not say.
    static func tokens(in answer: JSONValue) -> (Int64, Int64) {
        guard case .object(let object) = answer, case .object(let usage)? = object["usage"] else { return (0, 0) }
        func number(_ key: String) -> Int64 {
            guard case .number(let value)? = usage[key], value.isFinite, value >= 0, value < 1e12 else { return 0 }
            return Int64(value)
        }
        let prompt = number("prompt_tokens")
        let completion =
            usage["completion_tokens"] != nil ? number("completion_tokens") : max(0, number("total_tokens") - prompt)
        return (prompt, completion)
    }

    /// The tokens of a stream chunk's non-null `usage` (OpenAI's last chunk with
    /// `stream_options.include_usage`); nil when it has none.
    static func usage(inChunk chunk: String) -> (Int64, Int64)? {
        guard case .object(let object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(chunk.utf8)),
            case .object? = object["usage"]
        else { return nil }
        return tokens(in: .object(object))
    }

    /// A gateway call as the provider gets it.
    struct ProviderCall: Sendable {
        var path: String
        var body: [String: JSONValue]
        var model: String
        var streaming: Bool
        var caller: String
        var grant: GatewayKeys.Grant?
        var wait: Double
    }

    /// Serves `call` through its cloud provider: the provider's answer with `model` the mesh's
    /// name (a stream as it comes), `X-Aurora-Served-By: provider` and `X-Aurora-Provider`; its
    /// refusal as 502 `provider_failed` with its message (the key cut out).
    static func viaProvider(_ route: CloudFallback.Route, _ call: ProviderCall, lead: LeadParts) async throws
        -> Response
    {
        let key = try await CloudFallback.key(for: route, secrets: lead.secrets, lead: lead.jobs.leadName)
        let timeout: Duration = .milliseconds(Int64((call.streaming ? call.wait + streamLifetime : call.wait) * 1000))
        let answer = try await CloudFallback.send(route, path: call.path, body: call.body, key: key, timeout: timeout)
        var headers: HTTPFields = [servedByHeader: "provider", providerHeader: route.provider]
        let status = Int(answer.status.code)
        guard (200..<300).contains(status) else {
            let text = (try? await answer.body.collect(upTo: 64 * 1024)).map { String(buffer: $0) } ?? ""
            var message = text
            if case .object(let object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(text.utf8)),
                case .object(let error)? = object["error"], case .string(let said)? = error["message"]
            {
                message = said
            }
            throw Refusal(
                .upstreamFailed, code: "provider_failed",
                message: CloudFallback.redact(
                    "the fallback provider '\(route.provider)' answered \(status): \(InputRules.printable(String(message.prefix(300))))",
                    key: key))
        }
        if call.streaming {
            headers[.contentType] = answer.headers.first(name: "content-type") ?? "text/event-stream"
            lead.gatewayKeys.record(caller: call.caller, grant: call.grant, model: call.model, prompt: 0, completion: 0)
            return passOn(answer.body, headers: headers)
        }
        let bytes = try await answer.body.collect(upTo: 16 << 20)
        guard
            case .object(var object)? = try? APICoding.decoder().decode(
                JSONValue.self, from: Data(bytes.readableBytesView))
        else {
            throw Refusal(
                .upstreamFailed, code: "provider_failed",
                message: "the fallback provider '\(route.provider)' answered with something that is not JSON")
        }
        if object["model"] != nil { object["model"] = .string(call.model) }
        let (prompt, completion) = tokens(in: .object(object))
        lead.gatewayKeys.record(
            caller: call.caller, grant: call.grant, model: call.model, prompt: prompt, completion: completion)
        var response = try json(JSONValue.object(object), status: .ok)
        for field in headers { response.headers[field.name] = field.value }
        return response
    }

    static let providerHeader = HTTPField.Name("X-Aurora-Provider")!

    /// The route a call fell back on (set whenever the stream gave way to it).
    private static func route(_ route: CloudFallback.Route?) throws(Refusal) -> CloudFallback.Route {
        guard let route else { throw Refusal(.internalFailure, code: "internal", message: "no fallback route") }
        return route
    }
}
