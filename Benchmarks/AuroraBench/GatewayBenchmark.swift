import AsyncHTTPClient
import AuroraAPI
import AuroraTestKit
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench gateway`: one fake OpenAI-style backend that answers at once, called directly,
/// through the mesh (client → a compute agent → the lead → the worker → the backend) and, when
/// given, through LiteLLM's proxy configured with the same backend, in one run on loopback.
/// Each path gets the same load: `clients` concurrent clients, `requests` chat completions in all.
struct GatewayBenchmark {
    struct PathFigures: Codable, Sendable {
        var name: String
        var p50Ms: Double
        var p99Ms: Double
        var requestsPerSecond: Double
        var failed: Int
        /// Streamed (`"stream": true`): time to the first event.
        var ttftP50Ms: Double?
        var ttftP99Ms: Double?
        var streamFailed: Int?
    }

    struct Report: Codable, Sendable {
        var clients: Int
        var requests: Int
        var paths: [PathFigures]
        /// Mesh p50/p99 minus direct p50/p99.
        var meshAddedP50Ms: Double
        var meshAddedP99Ms: Double
        var liteLLMAddedP50Ms: Double?
        var liteLLMAddedP99Ms: Double?
        /// Added time to first token (mesh or LiteLLM TTFT minus direct TTFT).
        var meshAddedTTFTP50Ms: Double?
        var meshAddedTTFTP99Ms: Double?
        var liteLLMAddedTTFTP50Ms: Double?
        var liteLLMAddedTTFTP99Ms: Double?
    }

    let executable: String
    let clients: Int
    let requests: Int
    let nodes: Int
    let liteLLM: String?
    let progress: @Sendable (String) -> Void

    func run() async throws -> Report {
        let scratch = try ScratchDirectory("gateway", prefix: "aurora-bench")
        let backend = try await FakeInference(models: ["bench-model"], openAIOnly: true)
        var agents: [AgentHarness] = []
        var litellmProcess: ChildProcess?
        func cleanUp() async {
            for agent in agents where agent.process.isRunning {
                agent.process.signal(SIGTERM)
                _ = try? await agent.process.waitForExit(timeout: .seconds(20))
            }
            if let litellmProcess, litellmProcess.isRunning { litellmProcess.signal(SIGKILL) }
            await backend.stop()
            scratch.remove()
        }
        do {
            let quiet = ["--log-level", ProcessInfo.processInfo.environment["AURORA_BENCH_LOG_LEVEL"] ?? "error"]
            progress("starting a lead and \(nodes) compute agents with the fake backend…")
            let lead = try AgentHarness(
                profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead"] + quiet,
                outputDirectory: scratch.path, executable: executable)
            agents.append(lead)
            try await lead.waitHealthy(timeout: .seconds(60))
            let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
            let token = try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: admin,
                body: Array(#"{"profile":"compute","ttl_s":600,"reusable":true}"#.utf8)
            ).decode(TokenCreated.self).token
            // A gateway key without limits: the path a program takes (its usage is counted).
            let key = try await http(
                lead.baseURL + API.createKey.pattern, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(GatewayKeyCreateRequest(app: "bench")))
            ).decode(GatewayKeyCreated.self).key
            let file = scratch.path + "/gpu.yaml"
            try """
            gpu: {backend: "\(backend.url)"}
            gpus:
              - {index: 0, uuid: GPU-bench, name: NVIDIA L4, memory_total_mb: 24000}
            \(ProcessInfo.processInfo.environment["AURORA_BENCH_NODE_EXTRA"] ?? "")
            """.write(toFile: file, atomically: true, encoding: .utf8)
            var computes: [AgentHarness] = []
            for number in 1...nodes {
                let agent = try AgentHarness(
                    profile: "compute", dataDir: scratch.path + "/gpu-\(number)",
                    extraArguments: [
                        "--name", "gpu-\(number)", "--lead", lead.baseURL, "--join-token", token, "--config", file,
                    ] + quiet, outputDirectory: scratch.path, executable: executable)
                agents.append(agent)
                computes.append(agent)
            }
            for agent in computes { try await agent.waitHealthy(timeout: .seconds(60)) }
            _ = try await poll(timeout: .seconds(60), every: .milliseconds(200), "every node to serve bench-model") {
                () async throws -> Bool? in
                let list = try await http(lead.baseURL + API.listModels.pattern, headers: admin).decode(
                    ModelList.self)
                return list.data.first { $0.id == "bench-model" }?.nodes.count == nodes ? true : nil
            }

            // AURORA_BENCH_VIA=lead sends the mesh's calls to the lead itself (no forwarding agent).
            let via = ProcessInfo.processInfo.environment["AURORA_BENCH_VIA"]
            var targets: [(name: String, url: String, headers: [(String, String)])] = [
                ("direct", backend.url + "/v1/chat/completions", []),
                (
                    "mesh", (via == "lead" ? lead.baseURL : computes[0].baseURL) + API.chatCompletions.pattern,
                    [("Authorization", "Bearer \(key)")]
                ),
            ]
            if let liteLLM {
                let port = try freePort()
                let config = scratch.path + "/litellm.yaml"
                // Its proxy refuses to start without a master key; the clients present it.
                let master = "sk-bench-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
                try """
                general_settings:
                  master_key: \(master)
                model_list:
                  - model_name: bench-model
                    litellm_params:
                      model: openai/bench-model
                      api_base: \(backend.url)/v1
                      api_key: fake
                """.write(toFile: config, atomically: true, encoding: .utf8)
                progress("starting LiteLLM's proxy on port \(port)…")
                let process = try ChildProcess(
                    liteLLM, ["--config", config, "--port", String(port), "--num_workers", "1"],
                    outputDirectory: scratch.path)
                litellmProcess = process
                _ = try await poll(timeout: .seconds(180), every: .milliseconds(500), "LiteLLM to answer") {
                    () async throws -> Bool? in
                    if let code = process.exitCode { throw TestKitError("litellm exited with \(code)") }
                    let answer = try? await http("http://127.0.0.1:\(port)/health/liveliness")
                    return answer?.status == 200 ? true : nil
                }
                targets.append(
                    ("litellm", "http://127.0.0.1:\(port)/v1/chat/completions", [("Authorization", "Bearer \(master)")])
                )
            }

            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = clients * 2
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            var figures: [PathFigures] = []
            for target in targets {
                // A warm-up round (connections, caches), then the measured one.
                _ = try await load(client, target.url, target.headers, total: clients * 2)
                progress("\(target.name): \(requests) requests from \(clients) clients…")
                let started = ContinuousClock.now
                let (samples, failed) = try await load(client, target.url, target.headers, total: requests)
                let seconds = Measurements.ms(ContinuousClock.now - started) / 1000
                let sorted = samples.sorted()
                // Streamed: the time to the first event, same load.
                _ = try await load(client, target.url, target.headers, total: clients, stream: true)
                progress("\(target.name): \(requests) streamed requests from \(clients) clients…")
                let (firsts, streamFailed) = try await load(
                    client, target.url, target.headers, total: requests, stream: true)
                let ttft = firsts.sorted()
                figures.append(
                    PathFigures(
                        name: target.name, p50Ms: Samples.percentile(sorted, 0.5),
                        p99Ms: Samples.percentile(sorted, 0.99),
                        requestsPerSecond: Double(samples.count) / seconds, failed: failed,
                        ttftP50Ms: Samples.percentile(ttft, 0.5), ttftP99Ms: Samples.percentile(ttft, 0.99),
                        streamFailed: streamFailed))
            }
            try await client.shutdown()
            await cleanUp()
            let direct = figures[0], mesh = figures[1]
            let lite = figures.first { $0.name == "litellm" }
            return Report(
                clients: clients, requests: requests, paths: figures, meshAddedP50Ms: mesh.p50Ms - direct.p50Ms,
                meshAddedP99Ms: mesh.p99Ms - direct.p99Ms, liteLLMAddedP50Ms: lite.map { $0.p50Ms - direct.p50Ms },
                liteLLMAddedP99Ms: lite.map { $0.p99Ms - direct.p99Ms },
                meshAddedTTFTP50Ms: Self.minus(mesh.ttftP50Ms, direct.ttftP50Ms),
                meshAddedTTFTP99Ms: Self.minus(mesh.ttftP99Ms, direct.ttftP99Ms),
                liteLLMAddedTTFTP50Ms: Self.minus(lite?.ttftP50Ms, direct.ttftP50Ms),
                liteLLMAddedTTFTP99Ms: Self.minus(lite?.ttftP99Ms, direct.ttftP99Ms))
        } catch {
            await cleanUp()
            throw error
        }
    }

    static func minus(_ a: Double?, _ b: Double?) -> Double? {
        guard let a, let b else { return nil }
        return a - b
    }

    /// `total` chat completions from `clients` concurrent clients; each latency in ms (streamed:
    /// to the first piece of the body), and how many did not answer 200.
    private func load(
        _ client: HTTPClient, _ url: String, _ headers: [(String, String)], total: Int, stream: Bool = false
    ) async throws -> ([Double], Int) {
        let body = Array(
            #"{"model":"bench-model","stream":\#(stream),"messages":[{"role":"user","content":"hello"}]}"#.utf8)
        let next = ManagedCounter()
        return try await withThrowingTaskGroup(of: ([Double], Int).self) { group in
            for _ in 0..<clients {
                group.addTask {
                    var samples: [Double] = []
                    var failed = 0
                    while next.take() < total {
                        var request = HTTPClientRequest(url: url)
                        request.method = .POST
                        request.headers.add(name: "Content-Type", value: "application/json")
                        for (name, value) in headers { request.headers.add(name: name, value: value) }
                        request.body = .bytes(ByteBuffer(bytes: body))
                        let started = ContinuousClock.now
                        do {
                            let response = try await client.execute(request, timeout: .seconds(60))
                            var first: Duration?
                            var text = ""
                            for try await piece in response.body {
                                if first == nil, piece.readableBytes > 0 { first = ContinuousClock.now - started }
                                if stream || text.utf8.count < 4096 { text += String(buffer: piece) }
                            }
                            let whole = ContinuousClock.now - started
                            if response.status == .ok, !stream || text.contains("[DONE]") {
                                samples.append(Measurements.ms(stream ? (first ?? whole) : whole))
                            } else {
                                if failed == 0 {
                                    progress("a failed call: \(response.status.code) \(text.prefix(300))")
                                }
                                failed += 1
                            }
                        } catch {
                            if failed == 0 { progress("a failed call: \(error)") }
                            failed += 1
                        }
                    }
                    return (samples, failed)
                }
            }
            var samples: [Double] = []
            var failed = 0
            for try await (some, missed) in group {
                samples += some
                failed += missed
            }
            return (samples, failed)
        }
    }
}

/// A shared counter the clients draw request numbers from.
private final class ManagedCounter: Sendable {
    private let value = Mutex(0)

    func take() -> Int {
        value.withLock { value in
            defer { value += 1 }
            return value
        }
    }
}
