import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Mesh
import NIOCore

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
///   object or a bad `model`, or `stream: true` (not yet supported); 404 `model_not_found` listing
///   the mesh's models; 502 when the backend failed on every attempt; 504 when no node finished
///   within `X-Aurora-Wait` seconds (default and most 300; the job is cancelled).
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
                try await authorizeOperatorOrNode(
                    request, context: context, token: token, registry: registry, maxBody: maxBody)
                return try json(ModelList.mesh(try await registry.list().nodes), status: .ok)
            }
            for endpoint in calls {
                router.on(endpoint) { request, context -> Response in
                    let (who, body) = try await client(
                        request, context: context, token: token, registry: registry, maxBody: maxBody,
                        role: .submit)
                    return try await gateway(
                        path: endpoint.pattern, body: body, caller: who, wait: try gatewayWait(request), lead: lead)
                }
            }
        case .node(let node):
            router.on(API.listModels) { request, _ -> Response in
                try authorize(request, token: token)
                let list = try await forwardedList(node: node)
                return try json(ModelList.mesh(list.nodes, stale: list.stale ? true : nil), status: .ok)
            }
            for endpoint in calls {
                router.on(endpoint) { request, _ -> Response in
                    let wait = try gatewayWait(request)
                    return try await forwardToLead(
                        request, membership: node.membership, token: token, maxBody: maxBody,
                        timeout: .seconds(Int64(wait) + 10))
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
    static func gateway(path: String, body: [UInt8], caller: String, wait: Double, lead: LeadParts)
        async throws -> Response
    {
        guard case .object(let object)? = try? APICoding.decoder().decode(JSONValue.self, from: Data(body)) else {
            throw Refusal.badRequest("the body must be a JSON object")
        }
        guard case .string(let model)? = object["model"] else {
            throw Refusal.badRequest("model: a string naming the model is required (GET /v1/models lists them)")
        }
        do throws(MeshError) { try ModelDiscovery.checkName(model, field: "model") } catch {
            throw Refusal.badRequest(error.message)
        }
        if case .bool(true)? = object["stream"] {
            throw Refusal(
                .invalid, code: "streaming_unsupported",
                message: "stream: true is not supported by this mesh yet; ask without stream")
        }
        // A model no node serves (every node with a backend says what it serves): 404.
        if !(await lead.jobs.couldServe(model: model)) {
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
                "timeout_s": .number(wait),
            ])
        let (submitted, _) = try await lead.jobs.submit(submission, by: caller, ephemeral: true)
        var job = try await lead.jobs.job(submitted.id, wait: .milliseconds(Int64(wait * 1000)), for: caller)
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
        var response = try json(result, status: .ok)
        response.headers[servedByHeader] = "node"
        if let node = job.node { response.headers[servedNodeHeader] = node }
        return response
    }
}
