import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead and two compute agents, each with its own fake inference backend (one Ollama, one
/// OpenAI-style): the nodes find their backends' models, the profile renames and adds, and
/// `GET /v1/models` on every agent lists the mesh's models with where they live; a dead node's
/// models drop out.
@Suite("Model discovery (lead + 2 compute agents + fake Ollama and OpenAI backends)", .serialized)
struct ModelDiscoveryIntegrationTests {
    @Test("each node's backend models reach GET /v1/models on every agent; renamed, added, loaded; a dead node's go")
    func discovery() async throws {
        let scratch = try ScratchDirectory("models")
        let ollama = try await FakeInference(
            models: ["llama3:8b-instruct", "qwen2:7b"], loaded: ["llama3:8b-instruct"])
        let vllm = try await FakeInference(models: ["mistral-7b", "llama3:8b-instruct"], openAIOnly: true)
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead"],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        for (name, settings) in [
            (
                "gpu-a",
                "gpu: {backend: \"\(ollama.url)/api/generate\", models: {llama3: \"llama3:8b-instruct\", big: \"llama3:70b\"}}"
            ),
            ("gpu-b", "gpu: {backend: \"\(vllm.url)\"}"),
        ] {
            let file = scratch.path + "/\(name).yaml"
            let gpus = "gpus:\n  - {index: 0, uuid: GPU-\(name), name: NVIDIA L4, memory_total_mb: 24000}\n"
            try (settings + "\n" + gpus).write(toFile: file, atomically: true, encoding: .utf8)
            let node = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/" + name,
                extraArguments: ["--name", name, "--lead", lead.baseURL, "--join-token", token, "--config", file],
                outputDirectory: scratch.path)
            agents.append(node)
            try await node.waitHealthy()
        }
        let (gpuA, gpuB) = (agents[1], agents[2])

        let expected = [
            "big": [ModelList.Placement(node: "gpu-a", loaded: false)],
            "llama3": [ModelList.Placement(node: "gpu-a", loaded: true)],
            "llama3:8b-instruct": [ModelList.Placement(node: "gpu-b", loaded: true)],
            "mistral-7b": [ModelList.Placement(node: "gpu-b", loaded: true)],
            "qwen2:7b": [ModelList.Placement(node: "gpu-a", loaded: false)],
        ]
        func models(_ agent: AgentHarness, _ headers: [String: String]) async throws -> [String: [ModelList.Placement]]
        {
            let list = try await http(agent.baseURL + API.listModels.pattern, headers: headers).decode(ModelList.self)
            #expect(list.object == "list" && list.data.allSatisfy { $0.object == "model" })
            return Dictionary(uniqueKeysWithValues: list.data.map { ($0.id, $0.nodes) })
        }
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(200), "both nodes' models at the lead") {
            () async throws -> Bool? in try await models(lead, admin) == expected ? true : nil
        }
        // Any agent answers, with its own operator token; the CLI prints the same.
        let headersB = ["Authorization": "Bearer \(try gpuB.adminToken)"]
        #expect(try await models(gpuB, headersB) == expected)
        let cli = try await ChildProcess.run(
            Binaries.auroraCLI, ["models", "--json", "--agent", gpuA.baseURL, "--data-dir", gpuA.dataDir],
            outputDirectory: scratch.path)
        #expect(cli.code == 0, "\(cli.stderr)")
        let printed = try APICoding.decoder().decode(ModelList.self, from: Data(cli.stdout.utf8))
        #expect(Set(printed.data.map(\.id)) == Set(expected.keys))
        let table = try await ChildProcess.run(
            Binaries.auroraCLI, ["models", "--agent", gpuA.baseURL, "--data-dir", gpuA.dataDir],
            outputDirectory: scratch.path)
        #expect(table.code == 0 && table.stdout.contains("llama3") && table.stdout.contains("gpu-a*"))

        // Routing by model: each generate job runs where its model is, under the backend's own
        // name; a model no node serves is refused with the reason.
        for (model, backend, expectedNode, expectedBackendModel) in [
            ("mistral-7b", vllm, "gpu-b", "mistral-7b"), ("llama3", ollama, "gpu-a", "llama3:8b-instruct"),
            ("qwen2:7b", ollama, "gpu-a", "qwen2:7b"), ("llama3:8b-instruct", vllm, "gpu-b", "llama3:8b-instruct"),
        ] {
            let before = backend.requests.count
            let answer = try await http(
                lead.baseURL + Routes.gpuGenerate, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(GenerateRequest(model: model, prompt: "hi", waitS: 30))),
                timeout: .seconds(40))
            let job = try answer.decode(Job.self)
            #expect(job.state == .succeeded && job.node == expectedNode, "\(model): \(answer.text)")
            let sent = backend.requests.dropFirst(before)
            #expect(sent.count == 1, "\(model): \(sent.map(\.path))")
            #expect(sent.last?.body["model"] as? String == expectedBackendModel, "\(model): \(sent.map(\.body))")
        }
        let unknown = try await http(
            lead.baseURL + Routes.gpuGenerate, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(GenerateRequest(model: "phi3", prompt: "hi", waitS: 1))))
        #expect(unknown.status == 422 && unknown.text.contains("not serving the model 'phi3'"), "\(unknown.text)")

        // The official openai client (PyPI) through a compute agent: chat and a completion on
        // gpu-a (renamed model), embeddings on gpu-b; the backends' exact content; an unknown
        // model is OpenAI's 404 listing what exists; a streamed chat (with its usage chunk) and a
        // streamed completion come in the backend's pieces, in order, naming the mesh's model.
        // A gateway key made with the CLI: for /v1/ only.
        let made = try await ChildProcess.run(
            Binaries.auroraCLI,
            [
                "keys", "create", "--app", "pytest", "--rpm", "1000", "--json",
                "--agent", lead.baseURL, "--data-dir", lead.dataDir,
            ], outputDirectory: scratch.path)
        #expect(made.code == 0, "\(made.stderr)")
        let created = try APICoding.decoder().decode(GatewayKeyCreated.self, from: Data(made.stdout.utf8))
        let key = created.key
        let storedBefore = try await http(lead.baseURL + Routes.gpuJobs + "?limit=1000", headers: admin)
            .decode(JobList.self).jobs.count
        let python = try await ChildProcess.run(
            Binaries.repositoryRoot + "/Tests/openai/run", [gpuB.baseURL + "/v1", key, "llama3", "mistral-7b"],
            outputDirectory: scratch.path, timeout: .seconds(240))
        #expect(python.code == 0, "\(python.stderr.suffix(2000))")
        struct Seen: Decodable {
            struct Missing: Decodable {
                var status: Int
                var message: String?
                var type: String?
            }
            var chat: String
            var chat_model: String
            var chat_tokens: Int
            var completion: String
            var embeddings: [[Double]]
            var missing: Missing?
            struct Streamed: Decodable {
                var pieces: [String]
                var usage: Int?
                var text_pieces: [String]
            }
            var streamed: Streamed
        }
        let seen = try JSONDecoder().decode(Seen.self, from: Data(python.stdout.utf8))
        #expect(seen.chat == "echo: hello mesh" && seen.chat_model == "llama3" && seen.chat_tokens == 26)
        #expect(seen.completion == "echo: complete me")
        #expect(seen.embeddings == [[3, 0.5, -0.25], [5, 0.5, -0.25]])
        #expect(seen.missing?.status == 404 && seen.missing?.type == "invalid_request_error")
        #expect(seen.missing?.message?.contains("mistral-7b") == true, "\(String(describing: seen.missing))")
        #expect(seen.streamed.pieces == FakeInference.streamPieces("stream me please"), "\(seen.streamed)")
        #expect(seen.streamed.usage == 16 + FakeInference.streamPieces("stream me please").count)
        #expect(seen.streamed.text_pieces == FakeInference.streamPieces("text stream"), "\(seen.streamed)")
        #expect(
            ollama.requests.contains {
                $0.path == "/v1/chat/completions" && $0.body["model"] as? String == "llama3:8b-instruct"
            })
        #expect(vllm.requests.contains { $0.path == "/v1/embeddings" })
        // The key's usage is what the backends reported (chat 26 tokens, the completion 11+17,
        // the streamed chat's usage chunk 16+4; embeddings 8) and what the streamed completion's
        // chunks counted (3 pieces and the finish chunk); the unknown model was refused, uncounted.
        let usage = try await ChildProcess.run(
            Binaries.auroraCLI, ["keys", "usage", "--json", "--agent", lead.baseURL, "--data-dir", lead.dataDir],
            outputDirectory: scratch.path)
        #expect(usage.code == 0, "\(usage.stderr)")
        let rows = try APICoding.decoder().decode(GatewayUsageList.self, from: Data(usage.stdout.utf8)).usage
        let mine = Dictionary(uniqueKeysWithValues: rows.filter { $0.key == created.info.id }.map { ($0.model, $0) })
        #expect(mine["llama3"]?.requests == 4, "\(rows)")
        let llama = try #require(mine["llama3"], "\(rows)")
        #expect(llama.promptTokens == Int64(10 + 11 + 16), "\(rows)")
        #expect(llama.completionTokens == Int64(16 + 17 + 4 + 4), "\(rows)")
        #expect(mine["mistral-7b"]?.requests == 1 && mine["mistral-7b"]?.promptTokens == 8, "\(rows)")
        #expect(mine["llama3"]?.app == "pytest")
        // A key for one model: another is refused in OpenAI's shape; a key opens nothing else.
        let narrow = try await http(
            lead.baseURL + API.createKey.pattern, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(GatewayKeyCreateRequest(app: "narrow", models: ["llama3"])))
        ).decode(GatewayKeyCreated.self).key
        let notMine = try await http(
            gpuB.baseURL + API.chatCompletions.pattern, method: "POST", headers: ["Authorization": "Bearer \(narrow)"],
            body: Array(#"{"model":"qwen2:7b","messages":[]}"#.utf8))
        #expect(notMine.status == 403 && notMine.text.contains("model_not_allowed"), "\(notMine.text)")
        #expect(try await http(lead.baseURL + "/nodes", headers: ["Authorization": "Bearer \(key)"]).status == 401)
        let metrics = try await http(lead.baseURL + "/metrics").text
        #expect(metrics.contains("aurora_gateway_tokens_total"), "no gateway metrics")
        // A forwarding agent passes on where the call ran.
        let relayed = try await http(
            gpuB.baseURL + API.chatCompletions.pattern, method: "POST", headers: ["Authorization": "Bearer \(key)"],
            body: Array(#"{"model":"llama3","messages":[{"role":"user","content":"where"}]}"#.utf8))
        #expect(relayed.status == 200, "\(relayed.text)")
        #expect(relayed.headers["x-aurora-served-by"] == "node" && relayed.headers["x-aurora-node"] == "gpu-a")
        // Gateway calls are ephemeral jobs: nothing of them is written to the store.
        let storedAfter = try await http(lead.baseURL + Routes.gpuJobs + "?limit=1000", headers: admin)
            .decode(JobList.self).jobs.count
        #expect(storedAfter == storedBefore)

        // Attacks on the gateway: OpenAI-shaped refusals, nothing queued.
        let readToken = try await http(
            lead.baseURL + Routes.tokens, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(TokenCreateRequest(apiRole: .read)))
        ).decode(APITokenCreated.self).token
        let chatPath = API.chatCompletions.pattern
        let jobsBefore = try await http(lead.baseURL + Routes.gpuJobs + "?limit=1000", headers: admin)
            .decode(JobList.self).jobs.count
        let withKey = ["Authorization": "Bearer \(key)"]
        for (label, agent, headers, body, status, type) in [
            ("no token", lead, [String: String](), #"{"model":"llama3"}"#, 401, "authentication_error"),
            ("no token at a node", gpuA, [:], #"{"model":"llama3"}"#, 401, "authentication_error"),
            (
                "a read-only token", lead, ["Authorization": "Bearer \(readToken)"], #"{"model":"llama3"}"#, 403,
                "permission_error"
            ),
            ("not JSON", lead, withKey, "model=llama3", 400, "invalid_request_error"),
            ("an array", lead, withKey, #"[{"model":"llama3"}]"#, 400, "invalid_request_error"),
            ("no model", lead, withKey, #"{"messages":[]}"#, 400, "invalid_request_error"),
            ("a model that is a number", lead, withKey, #"{"model":7}"#, 400, "invalid_request_error"),
            ("an escape in the model", lead, withKey, #"{"model":"a\u001b[2J"}"#, 400, "invalid_request_error"),
            (
                "a 300-byte model", lead, withKey, "{\"model\":\"" + String(repeating: "m", count: 300) + "\"}", 400,
                "invalid_request_error"
            ),
            (
                "oversized", lead, withKey,
                "{\"model\":\"llama3\",\"pad\":\"" + String(repeating: "x", count: 2 << 20) + "\"}",
                413, "invalid_request_error"
            ),
        ] {
            let answer = try await http(
                agent.baseURL + chatPath, method: "POST", headers: headers, body: Array(body.utf8))
            #expect(answer.status == status, "\(label): \(answer.status) \(answer.text.prefix(300))")
            let error = try? answer.decode(ErrorResponse.self).error
            #expect(error?.type == type, "\(label): \(answer.text.prefix(300))")
        }
        for wait in ["0", "301", "abc", "1e999"] {
            let answer = try await http(
                lead.baseURL + chatPath, method: "POST", headers: withKey.merging(["X-Aurora-Wait": wait]) { $1 },
                body: Array(#"{"model":"llama3","messages":[]}"#.utf8))
            #expect(answer.status == 400, "X-Aurora-Wait \(wait): \(answer.text)")
        }
        let jobsAfter = try await http(lead.baseURL + Routes.gpuJobs + "?limit=1000", headers: admin)
            .decode(JobList.self).jobs.count
        #expect(jobsAfter == jobsBefore, "a refused gateway call queued a job")

        // Attacks: no token, a wrong one, another agent's operator token at a node (401).
        for (agent, headers) in [
            (lead, [String: String]()), (lead, ["Authorization": "Bearer aur_" + String(repeating: "0", count: 64)]),
            (gpuA, [:]), (gpuA, headersB),
        ] {
            let refused = try await http(agent.baseURL + API.listModels.pattern, headers: headers)
            #expect(refused.status == 401, "\(refused.status) \(refused.text)")
            #expect(!refused.text.contains("mistral"))
        }

        // gpu-b dies: its models leave the list once the lead counts it dead.
        gpuB.process.signal(SIGKILL)
        _ = try await poll(timeout: .seconds(40), every: .milliseconds(200), "gpu-b's models to go") {
            () async throws -> Bool? in
            let now = try await models(lead, admin)
            return now["mistral-7b"] == nil && now["llama3"] != nil ? true : nil
        }
        #expect(try await models(lead, admin)["llama3:8b-instruct"] == nil)

        await ollama.stop()
        await vllm.stop()
        for agent in agents where agent.process.isRunning {
            agent.process.signal(SIGTERM)
            _ = try? await agent.process.waitForExit(timeout: .seconds(20))
        }
        scratch.remove()
    }
}
