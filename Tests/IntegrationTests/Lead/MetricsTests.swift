import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The lead's `/metrics` scraped as Prometheus would: help for every metric, and the per-node
/// state and VRAM series with the values the registry and the job coordinator hold.
@Suite("Lead metrics (lead + one exec worker)", .serialized)
struct MetricsTests {
    /// `# TYPE` names without a `# HELP` line, and every sample as `name{labels}` → value.
    static func parse(_ text: String) -> (missingHelp: [String], samples: [String: Double]) {
        var typed: [String] = [], helped = Set<String>(), samples: [String: Double] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("# TYPE "), words.count >= 3 { typed.append(String(words[2])) }
            if line.hasPrefix("# HELP "), words.count >= 4 { helped.insert(String(words[2])) }
            if !line.hasPrefix("#"), words.count == 2, let value = Double(words[1]) {
                samples[String(words[0])] = value
            }
        }
        return (typed.filter { !helped.contains($0) }, samples)
    }

    @Test("every metric has # HELP; node state and VRAM total/used/reserved per GPU; a removed node's series go")
    func scrape() async throws {
        let scratch = try ScratchDirectory("metrics")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        var agents = [lead]
        defer {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            scratch.remove()
        }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let token = try await lead.joinToken(outputDirectory: scratch.path)
        let file = scratch.path + "/gpu-1.yaml"
        try """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: GPU-m0, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24564, memory_used_mb: 300}
          - {index: 1, uuid: GPU-m1, name: NVIDIA GeForce RTX 4090, memory_total_mb: 24564, memory_used_mb: 0}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let worker = try AgentHarness(
            profile: "compute", dataDir: scratch.path + "/gpu-1",
            extraArguments: ["--name", "gpu-1", "--lead", lead.baseURL, "--config", file, "--join-token", token],
            outputDirectory: scratch.path)
        agents.append(worker)
        try await worker.waitHealthy()
        func metrics() async throws -> (missingHelp: [String], samples: [String: Double]) {
            Self.parse(try await http(lead.baseURL + Routes.metrics).text)
        }
        let alive = #"aurora_node_state{node="gpu-1",state="alive"}"#
        let first = try await poll(timeout: .seconds(20), every: .milliseconds(100), "gpu-1 alive in /metrics") {
            () async throws -> [String: Double]? in
            let scraped = try await metrics()
            return scraped.samples[alive] == 1 ? scraped.samples : nil
        }
        for state in ["suspect", "away", "dead", "left"] {
            #expect(first[#"aurora_node_state{node="gpu-1",state="\#(state)"}"#] == 0, "\(state)")
        }
        #expect(first[#"aurora_node_state{node="lead-1",state="alive"}"#] == 1)
        #expect(first[#"aurora_gpu_vram_total_mb{node="gpu-1",gpu="0"}"#] == 24564)
        #expect(first[#"aurora_gpu_vram_used_mb{node="gpu-1",gpu="0"}"#] == 300)
        #expect(first[#"aurora_gpu_vram_reserved_mb{node="gpu-1",gpu="0"}"#] == 0)
        #expect(first[#"aurora_gpu_vram_total_mb{node="gpu-1",gpu="1"}"#] == 24564)

        // A running exec job reserves its VRAM on the GPU it was placed on.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "an accepting exec worker") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.contains { $0.accepting && $0.allowExec && $0.state == .alive } ? true : nil
        }
        let submission = JobSubmission(
            kind: .exec, requirements: JobRequirements(minVramMB: 24400),
            payload: ["argv": .array([.string("/bin/sleep"), .string("60")])])
        let submitted = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(submission)))
        #expect(submitted.status == 201, "\(submitted.text)")
        let job = try submitted.decode(Job.self)
        let reserved = try await poll(timeout: .seconds(20), every: .milliseconds(100), "a VRAM reservation") {
            () async throws -> [String: Double]? in
            let samples = try await metrics().samples
            return samples[#"aurora_gpu_vram_reserved_mb{node="gpu-1",gpu="1"}"#] == 24400 ? samples : nil
        }
        #expect(reserved[#"aurora_gpu_vram_reserved_mb{node="gpu-1",gpu="0"}"#] == 0, "GPU 0 has only 24264 MB free")
        _ = try await http(lead.baseURL + Routes.gpuJob(job.id), method: "DELETE", headers: admin)

        // Every exported metric has its help text.
        let scraped = try await metrics()
        #expect(scraped.missingHelp.isEmpty, "no # HELP: \(scraped.missingHelp)")
        for name in ["aurora_node_state", "aurora_gpu_vram_total_mb", "aurora_uptime_seconds"] {
            #expect(scraped.samples.keys.contains { $0.hasPrefix(name) }, "\(name)")
        }

        // Removed: its series are gone at the next scrape.
        let removed = try await http(lead.baseURL + Routes.node("gpu-1"), method: "DELETE", headers: admin)
        #expect(removed.status == 200)
        let after = try await metrics().samples
        #expect(!after.keys.contains { $0.contains(#"node="gpu-1""#) }, "\(after.keys.sorted())")
        #expect(after[#"aurora_node_state{node="lead-1",state="alive"}"#] == 1)

        for agent in [worker, lead] {
            agent.process.signal(SIGTERM)
            #expect(try await agent.process.waitForExit(timeout: .seconds(10)) == 0)
        }
    }
}
