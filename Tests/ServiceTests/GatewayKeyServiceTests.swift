import AuroraAPI
import Foundation
import HTTPTypes
import HummingbirdTesting
import Mesh
import NIOCore
import Testing

@testable import NodeAgent

/// Gateway keys on the lead, in process: created by the admin only, good for `/v1/` only,
/// limited to models, requests and tokens per minute; usage counted as the backends report it.
@Suite("Gateway keys on the lead (in process)")
struct GatewayKeyServiceTests {
    /// A chat call with `key`: status, body, and the Retry-After header.
    static func chat(_ session: Session, key: String, model: String = "m") async throws -> (Int, String, String?) {
        try await session.client.execute(
            uri: "/v1/chat/completions", method: .post,
            headers: [.authorization: "Bearer \(key)", .contentType: "application/json"],
            body: ByteBuffer(string: #"{"model":"\#(model)","messages":[{"role":"user","content":"hi"}]}"#)
        ) { response in
            (Int(response.status.code), String(buffer: response.body), response.headers[.retryAfter])
        }
    }

    /// Plays the worker for the next gateway call: answers it with `usage`.
    static func answer(_ session: Session, _ nodes: [TestNode], prompt: Int, completion: Int) async throws {
        let (node, assignment) = try await GatewayStreamServiceTests.assignment(session, nodes)
        let result = JobResult(
            attempt: assignment.attempt, outcome: .succeeded,
            result: .object([
                "model": .string("m"), "choices": .array([]),
                "usage": .object([
                    "prompt_tokens": .number(Double(prompt)), "completion_tokens": .number(Double(completion)),
                    "total_tokens": .number(Double(prompt + completion)),
                ]),
            ]))
        let reported = try await session.call(
            .post, "/api/gpu/jobs/\(assignment.id)/result", signer: node.signer, body: result)
        #expect(reported.status == 200, "\(reported.body)")
    }

    @Test("keys: the admin creates, lists and revokes them; bad requests are 400; a key opens /v1/ and nothing else")
    func lifecycle() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let created = try await session.call(
                .post, "/api/keys", body: GatewayKeyCreateRequest(app: "chatbot", company: "acme", models: ["m"]))
            #expect(created.status == 201, "\(created.body)")
            let key = try created.decode(GatewayKeyCreated.self)
            #expect(key.key.hasPrefix("aurk_") && key.key.count == 53 && key.info.models == ["m"])
            let listed = try await session.call(.get, "/api/keys")
            #expect(try listed.decode(GatewayKeyList.self).keys == [key.info])
            #expect(!listed.body.contains(key.key))

            // Only the admin manages keys; bad fields change nothing.
            let read = try await session.call(
                .post, "/api/tokens", body: TokenCreateRequest(apiRole: .read)
            ).decode(APITokenCreated.self).token
            for credential in ["", read, key.key] {
                let refused = try await session.call(
                    .post, "/api/keys", token: credential, body: GatewayKeyCreateRequest(app: "x"))
                #expect(refused.status == 401, "\(refused.body)")
                #expect(try await session.call(.get, "/api/keys/usage", token: credential).status == 401)
            }
            for body in [
                #"{"app":"a b"}"#, #"{"app":""}"#, #"{"app":"x","models":[]}"#, #"{"app":"x","models":["\u001b"]}"#,
                #"{"app":"x","rpm":0}"#, #"{"app":"x","tpm":2000000000}"#, #"{"app":"x","ttl_s":0}"#,
                #"{"app":"x","role":"admin"}"#, #"{"app":"x","rpm":1e99}"#, #"{"app":"x","company":"a/b"}"#,
            ] {
                let refused = try await session.call(.post, "/api/keys", body: RawJSON(body))
                #expect(refused.status == 400, "\(body): \(refused.body)")
            }
            let oversized = try await session.call(
                .post, "/api/keys", body: RawJSON(#"{"app":""# + String(repeating: "a", count: 2 << 20) + #""}"#))
            #expect(oversized.status == 413)
            #expect(try await session.call(.get, "/api/keys").decode(GatewayKeyList.self).keys.count == 1)

            // A key is nothing outside /v1/.
            for (method, path) in [
                (HTTPRequest.Method.get, "/nodes"), (.get, "/api/gpu/jobs"), (.get, "/api/agent"), (.get, "/api/keys"),
                (.get, "/api/events?follow=false"), (.get, "/api/secrets"),
            ] {
                let refused = try await session.call(method, path, token: key.key)
                #expect(refused.status == 401, "\(path): \(refused.status)")
            }
            let job = try await session.call(
                .post, "/api/gpu/jobs", token: key.key,
                body: JobSubmission(kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")]))
            #expect(job.status == 401)

            // Revoked: refused at once; an unknown id is 404.
            let revoked = try await session.call(.delete, "/api/keys/\(key.info.id)")
            #expect(try revoked.decode(GatewayKeyInfo.self).state == .revoked)
            let (status, body, _) = try await Self.chat(session, key: key.key)
            #expect(status == 401 && body.contains("authentication_error"), "\(body)")
            #expect(try await session.call(.delete, "/api/keys/gk_000000000000").status == 404)
            #expect(try await session.call(.delete, "/api/keys/" + String(repeating: "g", count: 300)).status == 404)
            let wrong = try await Self.chat(session, key: "aurk_" + String(repeating: "0", count: 48))
            #expect(wrong.0 == 401)
        }
    }

    @Test("limits: another model is 403; rpm and tpm answer 429 with Retry-After; usage is what the backends reported")
    func limitsAndUsage() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (gpu1, gpu2) = try await GatewayStreamServiceTests.twoWorkers(session)
            let nodes = [gpu1, gpu2]
            let limited = try await session.call(
                .post, "/api/keys", body: GatewayKeyCreateRequest(app: "bot", models: ["m"], rpm: 2)
            ).decode(GatewayKeyCreated.self)
            let other = try await Self.chat(session, key: limited.key, model: "other")
            #expect(other.0 == 403 && other.1.contains("model_not_allowed") && other.1.contains("permission_error"))

            async let first = Self.chat(session, key: limited.key)
            try await Self.answer(session, nodes, prompt: 3, completion: 7)
            #expect(try await first.0 == 200)
            async let second = Self.chat(session, key: limited.key)
            try await Self.answer(session, nodes, prompt: 5, completion: 11)
            #expect(try await second.0 == 200)
            let third = try await Self.chat(session, key: limited.key)
            #expect(third.0 == 429 && third.1.contains("rate_limit_exceeded"), "\(third.1)")
            #expect(
                third.2.flatMap(Int.init).map { (1...30).contains($0) } == true,
                "Retry-After \(String(describing: third.2))")

            // Tokens per minute: one answer over the budget leaves a debt; the next call waits.
            let thrifty = try await session.call(
                .post, "/api/keys", body: GatewayKeyCreateRequest(app: "batch", tpm: 30)
            ).decode(GatewayKeyCreated.self)
            async let big = Self.chat(session, key: thrifty.key)
            try await Self.answer(session, nodes, prompt: 20, completion: 25)
            #expect(try await big.0 == 200)
            let over = try await Self.chat(session, key: thrifty.key)
            #expect(over.0 == 429 && over.1.contains("tokens per minute"), "\(over.1)")
            #expect(over.2.flatMap(Int.init).map { $0 >= 30 } == true, "Retry-After \(String(describing: over.2))")

            // Usage: per key and model, as reported; the same after it was written to the store.
            let expected = [
                GatewayUsage(
                    key: limited.info.id, app: "bot", model: "m", requests: 2, promptTokens: 8, completionTokens: 18),
                GatewayUsage(
                    key: thrifty.info.id, app: "batch", model: "m", requests: 1, promptTokens: 20,
                    completionTokens: 25),
            ].sorted { $0.key < $1.key }
            let usage = try await session.call(.get, "/api/keys/usage").decode(GatewayUsageList.self).usage
            #expect(usage == expected)
            try await lead.parts.gatewayKeys.flush()
            #expect(try await lead.store.gatewayUsage().sorted { $0.key < $1.key } == expected)
            #expect(try await session.call(.get, "/api/keys/usage").decode(GatewayUsageList.self).usage == expected)
            let text = try await session.call(.get, "/api/keys/usage").body
            #expect(text.contains(#""total_tokens":26"#), "\(text)")
        }
    }

    @Test("gateway traffic skips the per-identity bucket (a key on /v1/, a worker's stream push); the rest runs out")
    func ownBudget() throws {
        let limits = RequestLimits(
            .init(
                requests: .init(ratePerSecond: 0.001, burst: 3), joins: .init(ratePerSecond: 1, burst: 1),
                authFailures: .init(ratePerSecond: 1, burst: 10)))
        for _ in 0..<3 {
            try limits.admit(source: "10.0.0.9", identity: "token:1", isJoin: false, needsAuthentication: true)
        }
        #expect(throws: Refusal.self) {
            try limits.admit(source: "10.0.0.9", identity: "token:1", isJoin: false, needsAuthentication: true)
        }
        for _ in 0..<100 {
            try limits.admit(
                source: "10.0.0.9", identity: "token:1", isJoin: false, needsAuthentication: true, ownBudget: true)
        }
        let key = "Bearer aurk_" + String(repeating: "0", count: 48)
        let own = RequestLimitMiddleware.hasOwnBudget
        #expect(own("POST", "/v1/chat/completions", key, false))
        #expect(own("GET", "/v1/models", "bearer AURK_x", false))
        #expect(!own("GET", "/nodes", key, false))
        #expect(!own("POST", "/v1/chat/completions", "Bearer aurapi_0", false))
        #expect(own("POST", "/api/gpu/jobs/x/stream", nil, true))
        #expect(!own("POST", "/api/gpu/jobs/x/stream", nil, false))
        #expect(!own("POST", "/api/gpu/jobs/x/result", nil, true))
        // A worker's polls, results and report batches take a tenth each: ten times as many fit.
        let worker = RequestLimitMiddleware.isWorkerCall
        #expect(worker("GET", "/api/gpu/assignments", true) && !worker("GET", "/api/gpu/assignments", false))
        #expect(worker("POST", "/api/gpu/jobs/x/result", true) && worker("POST", "/api/nodes/gpu-1/reports", true))
        #expect(!worker("GET", "/api/gpu/jobs", true) && !worker("POST", "/api/nodes/gpu-1/heartbeat", true))
        let tenth = RequestLimits(
            .init(
                requests: .init(ratePerSecond: 0.001, burst: 3), joins: .init(ratePerSecond: 1, burst: 1),
                authFailures: .init(ratePerSecond: 1, burst: 10)))
        for _ in 0..<29 {
            try tenth.admit(
                source: "10.0.0.9", identity: "node 'gpu-1'", isJoin: false, needsAuthentication: true,
                cost: RequestLimits.workerCallCost)
        }
        #expect(throws: Refusal.self) {
            for _ in 0..<3 {
                try tenth.admit(
                    source: "10.0.0.9", identity: "node 'gpu-1'", isJoin: false, needsAuthentication: true,
                    cost: RequestLimits.workerCallCost)
            }
        }
    }
}
