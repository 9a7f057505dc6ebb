import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Streamed gateway calls across real processes: a lead and three compute agents, each with a
/// fake OpenAI-style backend that streams its answer in pieces 250 ms apart. The client reads
/// server-sent events through a forwarding agent and through the lead; compute agents are
/// killed with SIGKILL before and after their first chunk.
@Suite("Streaming through the gateway (lead + 3 compute agents + streaming fake backends)", .serialized)
struct GatewayStreamingTests {
    /// The content pieces of a stream's chat chunks, in order; the events that were no chunk.
    static func pieces(_ events: [String]) -> (pieces: [String], others: [String]) {
        var pieces: [String] = []
        var others: [String] = []
        for event in events {
            guard let object = try? JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any],
                let choices = object["choices"] as? [[String: Any]]
            else {
                others.append(event)
                continue
            }
            for choice in choices {
                if let content = (choice["delta"] as? [String: Any])?["content"] as? String { pieces.append(content) }
            }
        }
        return (pieces, others)
    }

    static func body(_ prompt: String, firstDelayMs: Int = 0) -> [UInt8] {
        Array(
            #"{"model":"m","stream":true,"delay_ms":\#(firstDelayMs),"messages":[{"role":"user","content":"\#(prompt)"}]}"#
                .utf8)
    }

    @Test(
        "first chunk before the backend is done; disconnect cancels the backend; kill -9 before the first chunk: another node; after it: an error event"
    )
    func streaming() async throws {
        let scratch = try ScratchDirectory("gw-stream")
        var backends: [String: FakeInference] = [:]
        var agents: [String: AgentHarness] = [:]
        defer {
            for agent in agents.values where agent.process.isRunning { agent.process.signal(SIGKILL) }
        }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead"],
            outputDirectory: scratch.path)
        agents["lead"] = lead
        try await lead.waitHealthy()
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        let names = ["gpu-a", "gpu-b", "gpu-c"]
        for name in names {
            let backend = try await FakeInference(models: ["m"], openAIOnly: true, chunkDelay: .milliseconds(250))
            backends[name] = backend
            let file = scratch.path + "/\(name).yaml"
            try """
            gpu: {backend: "\(backend.url)"}
            gpus:
              - {index: 0, uuid: GPU-\(name), name: NVIDIA L4, memory_total_mb: 24000}
            heartbeat: {interval_s: 0.5, suspect_after: 2, dead_after: 4}
            """.write(toFile: file, atomically: true, encoding: .utf8)
            let node = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/" + name,
                extraArguments: ["--name", name, "--lead", lead.baseURL, "--join-token", token, "--config", file],
                outputDirectory: scratch.path)
            agents[name] = node
            try await node.waitHealthy()
        }
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(200), "every node serving m") {
            () async throws -> Bool? in
            let list = try await http(lead.baseURL + API.listModels.pattern, headers: admin).decode(ModelList.self)
            return list.data.first { $0.id == "m" }?.nodes.count == 3 ? true : nil
        }
        let key = try await http(
            lead.baseURL + Routes.tokens, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(TokenCreateRequest(apiRole: .submit)))
        ).decode(APITokenCreated.self).token
        let withKey = ["Authorization": "Bearer \(key)"]
        let chat = API.chatCompletions.pattern
        /// The node whose backend got `prompt`.
        func server(of prompt: String) -> String? {
            backends.first { $0.value.requests.contains { $0.prompt == prompt } }?.key
        }

        // 1. Through a forwarding agent: the first chunk arrives while the backend is still
        //    streaming; then every piece, in order, and [DONE].
        let forwarder = try #require(agents["gpu-c"])
        let first = "alpha beta gamma delta epsilon " + (1...15).map { "w\($0)" }.joined(separator: " ")
        let stream = try await EventStream(forwarder.baseURL + chat, headers: withKey, body: Self.body(first))
        #expect(stream.status == 200, "\(stream.errorBody)")
        #expect(stream.headers["content-type"]?.hasPrefix("text/event-stream") == true)
        #expect(stream.headers["x-aurora-served-by"] == "node" && stream.headers["x-aurora-node"] != nil)
        var events = [try #require(try await stream.next())]
        #expect(!backends.values.contains { $0.finishedStreams.contains(first) }, "the backend had already finished")
        while let event = try await stream.next() { events.append(event) }
        #expect(Self.pieces(events).pieces == FakeInference.streamPieces(first), "\(events)")
        #expect(events.last == "[DONE]")
        #expect(server(of: first) == stream.headers["x-aurora-node"])

        // 2. The client goes away after the first chunk: the backend sees its request closed.
        // (40 pieces, 10 s: time for the close to travel client → agent → lead → worker under load.)
        let leaving = "leave now " + (1...38).map { "w\($0)" }.joined(separator: " ")
        let abandoned = try await EventStream(forwarder.baseURL + chat, headers: withKey, body: Self.body(leaving))
        #expect(abandoned.status == 200, "\(abandoned.errorBody)")
        _ = try #require(try await abandoned.next())
        abandoned.close()
        let cancelledAt = try await poll(timeout: .seconds(15), every: .milliseconds(50), "the backend's cancellation")
        {
            server(of: leaving).flatMap { backends[$0]?.cancelledStreams.contains(leaving) == true ? $0 : nil }
        }
        #expect(backends[cancelledAt]?.finishedStreams.contains(leaving) == false)

        // 3. The serving agent is killed after its first chunk: one error event, then the end.
        let cut = "cut short one two three four five six seven eight nine ten eleven twelve"
        let interrupted = try await EventStream(lead.baseURL + chat, headers: withKey, body: Self.body(cut))
        #expect(interrupted.status == 200, "\(interrupted.errorBody)")
        var got = [try #require(try await interrupted.next())]
        let victim = try #require(server(of: cut))
        agents[victim]?.process.signal(SIGKILL)
        while let event = try await interrupted.next() { got.append(event) }
        let (cutPieces, others) = Self.pieces(got)
        #expect(!got.contains("[DONE]"), "\(got)")
        #expect(cutPieces.count < FakeInference.streamPieces(cut).count)
        #expect(cutPieces == Array(FakeInference.streamPieces(cut).prefix(cutPieces.count)))
        let error = try #require(
            others.last.flatMap { try? JSONDecoder().decode(ErrorResponse.self, from: Data($0.utf8)) })
        #expect(error.error.code == "stream_interrupted" && error.error.type == "server_error", "\(others)")
        #expect(backends.filter { $0.key != victim }.allSatisfy { !$0.value.requests.contains { $0.prompt == cut } })

        // 4. The serving agent is killed before its first chunk (its backend waits 4 s): the call
        //    goes to the other node left, and the client gets all of it from there.
        let moved = "moved along one two three"
        async let relocated = EventStream(
            lead.baseURL + chat, headers: withKey, body: Self.body(moved, firstDelayMs: 4000))
        let doomed = try await poll(timeout: .seconds(15), every: .milliseconds(20), "a node to take the call") {
            server(of: moved)
        }
        agents[doomed]?.process.signal(SIGKILL)
        let survivor = try #require(names.first { $0 != doomed && $0 != victim })
        let answer = try await relocated
        #expect(answer.status == 200, "\(answer.errorBody)")
        #expect(answer.headers["x-aurora-node"] == survivor)
        var all: [String] = []
        while let event = try await answer.next() { all.append(event) }
        #expect(Self.pieces(all).pieces == FakeInference.streamPieces(moved), "\(all)")
        #expect(all.last == "[DONE]")

        for backend in backends.values { await backend.stop() }
        for agent in agents.values where agent.process.isRunning {
            agent.process.signal(SIGTERM)
            _ = try? await agent.process.waitForExit(timeout: .seconds(20))
        }
        scratch.remove()
    }
}
