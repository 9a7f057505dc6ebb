import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The control channel across the internet: a node checks the lead's key against its token's
/// pin before the token leaves it, and everything after is TLS 1.3 to that key alone.
@Suite("Pinned TLS between node and lead (impostor, capture)", .serialized)
struct PinnedTLSTests {
    @Test(
        "an impostor with its own certificate never sees the token; the right pin joins; a capture shows no token, prompt, answer or secret"
    )
    func pinnedJoin() async throws {
        let scratch = try ScratchDirectory("tls-pin")
        defer { scratch.remove() }
        let tlsPort = try freePort()
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead",
            extraArguments: ["--name", "lead-1", "--tls-listen", "127.0.0.1:\(tlsPort)"], outputDirectory: scratch.path)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let created = try await http(
            lead.baseURL + Routes.tokens, method: "POST", headers: admin,
            body: Array(#"{"profile":"compute","reusable":true}"#.utf8)
        ).decode(TokenCreated.self)
        let pin = try #require(created.leadPin)
        #expect(created.token.hasSuffix(":" + pin) && created.joinCommand?.contains("--join-token-file") == true)
        #expect(created.leadURL == "https://127.0.0.1:\(tlsPort)")
        let secret = String(created.token.prefix { $0 != ":" })
        let tokenFile = scratch.path + "/join.token"
        try created.token.write(toFile: tokenFile, atomically: true, encoding: .utf8)

        // 1. An impostor (another agent's key, its own certificate) where the node expects the lead:
        //    the node stops with one line naming the URL and both keys; the impostor saw no byte of it.
        let other = scratch.path + "/other"
        let stranger = try AgentHarness(
            profile: "lead", dataDir: other, extraArguments: ["--name", "stranger"], outputDirectory: scratch.path)
        try await stranger.waitHealthy()
        stranger.process.signal(SIGTERM)
        _ = try await stranger.process.waitForExit(timeout: .seconds(15))
        let impostor = try await ImpostorTLSServer(
            certificatePath: other + "/keys/tls.crt", keyPath: other + "/keys/tls.key")
        let fooled = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/fooled",
            extraArguments: [
                "--name", "fooled", "--lead", "https://127.0.0.1:\(impostor.port)", "--join-token-file", tokenFile,
            ],
            outputDirectory: scratch.path)
        let code = try await fooled.process.waitForExit(timeout: .seconds(30))
        await impostor.stop()
        #expect(code != 0)
        let refusal = fooled.process.stderr
        #expect(
            refusal.contains("https://127.0.0.1:\(impostor.port)") && refusal.contains("but the pin is \(pin)")
                && refusal.contains("presents key sha256:"),
            "\(refusal.suffix(600))")
        // The node's probe completes a handshake (to read the key it checks) and sends nothing.
        #expect(
            impostor.handshakes >= 1 && impostor.received.isEmpty,
            "the impostor received \(impostor.received.count) bytes")
        #expect(try await http(lead.baseURL + Routes.node("fooled"), headers: admin).status == 404)

        // 2. The right lead: capture everything on its TLS port while a node joins, heartbeats,
        //    runs a generate job and reads a secret.
        let capture = scratch.path + "/tls.pcap"
        let nodeTLSPort = try freePort()
        let tcpdump = try ChildProcess(
            "/usr/bin/env",
            [
                "tcpdump", "-i", "lo", "-U", "-n", "-s", "0", "-w", capture,
                "tcp port \(tlsPort) or tcp port \(nodeTLSPort)",
            ],
            outputDirectory: scratch.path)
        defer { if tcpdump.isRunning { tcpdump.signal(SIGKILL) } }
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "tcpdump to listen") {
            () async throws -> Bool? in
            if let exit = tcpdump.exitCode { throw TestKitError("tcpdump exited with \(exit): \(tcpdump.stderr)") }
            return tcpdump.stderr.contains("listening on") ? true : nil
        }
        let backend = try await FakeInference()
        let nodeFile = scratch.path + "/gpu-1.yaml"
        try """
        gpu: {backend: "\(backend.url)"}
        gpus:
          - {index: 0, uuid: GPU-t, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 0}
        """.write(toFile: nodeFile, atomically: true, encoding: .utf8)
        let node = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1",
            extraArguments: [
                "--name", "gpu-1", "--lead", "https://127.0.0.1:\(tlsPort)", "--join-token-file", tokenFile,
                "--config", nodeFile, "--tls-listen", "127.0.0.1:\(nodeTLSPort)",
            ],
            outputDirectory: scratch.path)
        defer { if node.process.isRunning { node.process.signal(SIGKILL) } }
        try await node.waitHealthy()
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "gpu-1 alive and accepting") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.name == "gpu-1" && $0.accepting && $0.state == .alive } ? true : nil
        }
        let membership = try String(contentsOfFile: node.dataDir + "/membership.json", encoding: .utf8)
        #expect(membership.contains(pin) && membership.contains("BEGIN CERTIFICATE"))

        let prompt = "the launch code is tangerine-4471"
        let generate = GenerateRequest(model: "llama3", prompt: prompt, waitS: 20)
        let answer = try await http(
            lead.baseURL + Routes.gpuGenerate, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(generate)), timeout: .seconds(30))
        #expect(answer.status == 200, "\(answer.text)")
        let job = try answer.decode(Job.self)
        let resultText: String? = if case .object(let result)? = job.result { result["text"]?.string } else { nil }
        #expect(resultText == "echo: " + prompt)
        #expect(job.node == "gpu-1")

        let secretValue = "sk-pinned-9f3e71c2"
        let write = SecretWrite(service: "openai", keyName: "api_key", value: secretValue, scope: "global")
        #expect(
            try await http(
                lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(write))
            ).status == 201)
        let nodeAdmin = ["Authorization": "Bearer \(try node.adminToken)"]
        let read = try await http(node.baseURL + Routes.secret("openai", "api_key"), headers: nodeAdmin)
        #expect(read.status == 200 && read.text.contains(secretValue), "\(read.status) \(read.text)")

        // The lead reads the node's logs over TLS to the key the node joined with.
        let record = try await http(lead.baseURL + Routes.node("gpu-1"), headers: admin).decode(Node.self)
        #expect(
            record.tlsPin?.hasPrefix("sha256:") == true && record.tlsPort == nodeTLSPort,
            "\(String(describing: record.tlsPin)) \(String(describing: record.tlsPort))")
        let logs = try await http(lead.baseURL + Routes.logs + "?node=gpu-1&limit=50", headers: admin)
        #expect(logs.status == 200, "\(logs.status) \(logs.text)")
        let page = try logs.decode(LogPage.self)
        #expect(
            page.node == "gpu-1" && page.lines.contains { $0.message == "joined the mesh" },
            "\(page.lines.map(\.message))")

        // A restarted node needs no --lead: its membership holds the URL and the pinned certificate.
        node.process.signal(SIGTERM)
        _ = try await node.process.waitForExit(timeout: .seconds(15))
        let again = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1", port: node.port,
            extraArguments: ["--name", "gpu-1", "--config", nodeFile], outputDirectory: scratch.path)
        defer { if again.process.isRunning { again.process.signal(SIGKILL) } }
        try await again.waitHealthy()
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "the restarted node to heartbeat") {
            () async throws -> Bool? in
            let nodes = try await http(again.baseURL + Routes.nodes, headers: nodeAdmin).decode(NodeList.self)
            return !nodes.stale && nodes.nodes.contains { $0.name == "gpu-1" && $0.state == .alive } ? true : nil
        }

        tcpdump.signal(SIGINT)
        _ = try await tcpdump.waitForExit(timeout: .seconds(10))
        again.process.signal(SIGTERM)
        _ = try? await again.process.waitForExit(timeout: .seconds(15))
        await backend.stop()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: capture))
        #expect(bytes.count > 4096, "the capture holds \(bytes.count) bytes: the traffic went elsewhere")
        for (what, text) in [
            ("the token", secret), ("the prompt", prompt), ("the secret", secretValue),
            ("the answer", "echo: " + prompt),
            ("a heartbeat", "\"capabilities\""), ("a route", "/api/nodes/"), ("the lead's call for logs", "/api/logs"),
            ("a log line", "joined the mesh"),
        ] {
            #expect(bytes.range(of: Data(text.utf8)) == nil, "\(what) is readable in the capture")
        }
    }
}
