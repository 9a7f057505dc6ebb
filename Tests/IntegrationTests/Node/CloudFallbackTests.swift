import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The gateway's cloud fallback across real processes: a lead whose profile routes model `m`
/// to a fake cloud provider (which wants its own key) when no GPU node takes a call in time,
/// one compute agent serving `m`, and the provider's key in the mesh's secrets.
@Suite("Cloud fallback (lead + compute agent + fake cloud provider, key from the secrets manager)", .serialized)
struct CloudFallbackTests {
    static func chat(_ prompt: String, model: String = "m", stream: Bool = false) -> [UInt8] {
        Array(
            #"{"model":"\#(model)","stream":\#(stream),"messages":[{"role":"user","content":"\#(prompt)"}]}"#.utf8)
    }

    @Test(
        "busy (cordoned) or gone: the provider answers with the stored key; back to the node when it can; the key is in no log, event or error"
    )
    func fallback() async throws {
        let scratch = try ScratchDirectory("fallback")
        let providerKey = "sk-cloud-SECRET-1234", wrongKey = "sk-wrong-SECRET-9999"
        let cloud = try await FakeInference(chunkDelay: .milliseconds(20), requiredKey: providerKey)
        let gpu = try await FakeInference(models: ["m"], openAIOnly: true)
        var agents: [AgentHarness] = []
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        }
        let leadFile = scratch.path + "/lead.yaml"
        try """
        gateway:
          providers: {cloud: "\(cloud.url)/v1", broken: "\(cloud.url)/v1/"}
          fallback: {m: cloud/cloud-m, m2: broken}
          fallback_after_s: 1
        """.write(toFile: leadFile, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead", "--config", leadFile],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        for (service, value) in [("cloud", providerKey), ("broken", wrongKey)] {
            let stored = try await http(
                lead.baseURL + "/api/secrets", method: "POST", headers: admin,
                body: Array(
                    try APICoding.encoder().encode(
                        SecretWrite(service: service, keyName: "api_key", value: value, scope: "global"))))
            #expect(stored.status == 201 || stored.status == 200, "\(stored.text)")
        }
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        let file = scratch.path + "/gpu-a.yaml"
        try """
        gpu: {backend: "\(gpu.url)"}
        gpus:
          - {index: 0, uuid: GPU-a, name: NVIDIA L4, memory_total_mb: 24000}
        heartbeat: {interval_s: 0.5, suspect_after: 2, dead_after: 4}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let node = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-a",
            extraArguments: ["--name", "gpu-a", "--lead", lead.baseURL, "--join-token", token, "--config", file],
            outputDirectory: scratch.path)
        agents.append(node)
        try await node.waitHealthy()
        func served(_ model: String) async throws -> Bool {
            let list = try await http(lead.baseURL + API.listModels.pattern, headers: admin).decode(ModelList.self)
            return list.data.contains { $0.id == model }
        }
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "gpu-a serving m") {
            try await served("m") ? true : nil
        }
        let chat = lead.baseURL + API.chatCompletions.pattern

        // Busy: the only node is cordoned; after fallback_after_s the provider answers.
        let cordon = try await http(
            lead.baseURL + "/nodes/gpu-a/scheduling", method: "PUT", headers: admin,
            body: Array(#"{"state":"cordoned"}"#.utf8))
        #expect(cordon.status == 200, "\(cordon.text)")
        let started = ContinuousClock.now
        let busy = try await http(
            chat, method: "POST", headers: admin, body: Self.chat("busy now"), timeout: .seconds(30))
        #expect(busy.status == 200, "\(busy.text)")
        #expect(started.duration(to: .now) >= .seconds(1))
        #expect(busy.headers["x-aurora-served-by"] == "provider" && busy.headers["x-aurora-provider"] == "cloud")
        let answer = try JSONSerialization.jsonObject(with: busy.body) as? [String: Any]
        #expect(answer?["model"] as? String == "m")
        let content = ((answer?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"]
        #expect(content as? String == "echo: busy now")
        let sent = try #require(cloud.requests.last)
        #expect(sent.body["model"] as? String == "cloud-m" && sent.authorization == "Bearer \(providerKey)")
        #expect(!gpu.requests.contains { $0.prompt == "busy now" })

        // Streamed, the same: the provider's events as they come.
        let stream = try await EventStream(chat, headers: admin, body: Self.chat("stream from the cloud", stream: true))
        #expect(stream.status == 200 && stream.headers["x-aurora-served-by"] == "provider", "\(stream.errorBody)")
        var events: [String] = []
        while let event = try await stream.next() { events.append(event) }
        #expect(GatewayStreamingTests.pieces(events).pieces == FakeInference.streamPieces("stream from the cloud"))
        #expect(events.last == "[DONE]")

        // Open again: the node serves it, at once.
        _ = try await http(
            lead.baseURL + "/nodes/gpu-a/scheduling", method: "PUT", headers: admin,
            body: Array(#"{"state":"open"}"#.utf8))
        let local = try await http(
            chat, method: "POST", headers: admin, body: Self.chat("on the node"), timeout: .seconds(30))
        #expect(local.status == 200 && local.headers["x-aurora-served-by"] == "node", "\(local.text)")
        #expect(gpu.requests.contains { $0.prompt == "on the node" })

        // Gone: once the lead counts gpu-a dead, the provider answers (within fallback_after_s).
        node.process.signal(SIGKILL)
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "gpu-a's models to go") {
            try await served("m") ? nil : true
        }
        let quick = ContinuousClock.now
        let gone = try await http(
            chat, method: "POST", headers: admin, body: Self.chat("nobody home"), timeout: .seconds(30))
        #expect(gone.status == 200 && gone.headers["x-aurora-served-by"] == "provider", "\(gone.text)")
        #expect(quick.duration(to: .now) < .seconds(5))
        #expect(!gpu.requests.contains { $0.prompt == "nobody home" })

        // A provider that refuses its key: 502 in OpenAI's shape, its message without the key.
        let refused = try await http(chat, method: "POST", headers: admin, body: Self.chat("x", model: "m2"))
        #expect(refused.status == 502 && refused.text.contains("provider_failed") && refused.text.contains("401"))
        #expect(!refused.text.contains(wrongKey) && refused.text.contains("[redacted]"), "\(refused.text)")
        // A model with neither a node nor a route is still 404.
        let missing = try await http(chat, method: "POST", headers: admin, body: Self.chat("x", model: "m3"))
        #expect(missing.status == 404)

        // The keys were read for the lead, audited, and appear in no log, event or answer.
        let audit = try await http(lead.baseURL + "/api/audit", headers: admin).text
        #expect(audit.contains("gateway") && audit.contains("cloud"), "\(audit.prefix(500))")
        let events_ = try await http(lead.baseURL + "/api/events?follow=false&limit=1000", headers: admin).text
        for text in [
            lead.process.stdout, lead.process.stderr, node.process.stdout, node.process.stderr, events_, audit,
        ] {
            #expect(!text.contains("SECRET-1234") && !text.contains("SECRET-9999"))
        }

        await cloud.stop()
        await gpu.stop()
        for agent in agents where agent.process.isRunning {
            agent.process.signal(SIGTERM)
            _ = try? await agent.process.waitForExit(timeout: .seconds(20))
        }
        scratch.remove()
    }
}
