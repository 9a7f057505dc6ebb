import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The web console in a real headless Chromium (Debian's, driven by Selenium through its
/// chromedriver; Tests/console/check.py) against a lead with two compute agents: sign-in, every
/// page checked against the API, a job submitted and followed from the page, an event arriving
/// live, a read-only token that cannot cancel, sign-out, a node's console with the lead away,
/// 1440 and 375 px, and no error in the browser's log. Screenshots are kept in
/// .build/test-output/console.
@Suite("Web console in headless Chromium (lead + 2 compute agents)")
struct ConsoleBrowserTests {
    static let output = Binaries.repositoryRoot + "/.build/test-output/console"

    struct Report: Decodable {
        var pages: [String]
        var screenshots: [String]
        var nodes: Int
        var job: [String: String]
        var event_latency_s: Double
        var read_only: [String: Int]
        var browser_errors: Int
        var min_contrast: Double
    }

    @Test(
        "Chromium signs in, sees every page agree with the API, submits and follows a job, gets an event live within 2 s, a read token cannot cancel, signs out, and a node's console shows the lead-away banner"
    )
    func console() async throws {
        try Binaries.requireTool("/usr/bin/chromium", hint: "install chromium and chromium-driver (./bootstrap does)")
        try Binaries.requireTool("/usr/bin/chromedriver", hint: "install chromium-driver (./bootstrap does)")
        let scratch = try ScratchDirectory("console")
        defer { scratch.remove() }
        // gpu-2 watches a streaming replica (the PostgreSQL page's member).
        try await PostgresServer.withStreamingPair(in: scratch, slot: "console_replica") { _, standby, agents in
            try await Self.mesh(scratch: scratch, replica: standby, agents: &agents)
        }
    }

    static func mesh(scratch: ScratchDirectory, replica: PostgresServer, agents: inout [AgentHarness]) async throws {
        let timing = NodeFiles.fastHeartbeats
        let gpu = NodeFiles.execWorker(gpu: "GPU-console-0")
        let watcher = NodeFiles.replicaWatcher(replica.conninfo)
        let (lead, workers) = try await AgentHarness.leadWithWorkers(
            in: scratch, lead: "console-lead", workers: [("gpu-1", timing + gpu), ("gpu-2", timing + watcher)],
            agents: &agents)
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        // Both workers registered with the lead's GPU coordinator, gpu-1 with its GPU.
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "both workers and the GPU reported") {
            () async throws -> Bool? in
            let status = try await http(lead.baseURL + Routes.gpuStatus, headers: admin).decode(GPUStatus.self)
            return status.nodes.count == 2 && status.nodes.contains { !$0.gpus.isEmpty } ? true : nil
        }
        // A secret with two versions, and a node override (names and versions on the Secrets page).
        for (value, scope, scopeID) in [("v1", "global", nil), ("v2", "global", nil), ("v3", "node", "gpu-1")] {
            let request = SecretWrite(
                service: "openai", keyName: "api_key", value: value, scope: scope, scopeID: scopeID)
            let written = try await http(
                lead.baseURL + Routes.secrets, method: "POST",
                headers: admin.merging(["Content-Type": "application/json"]) { $1 },
                body: Array(try APICoding.encoder().encode(request)))
            #expect(written.status == 201, "\(written.text)")
        }
        // The replica reported through gpu-2's heartbeats (the PostgreSQL page's row).
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "gpu-2's replica on the lead") {
            () async throws -> Bool? in
            let nodes = try await http(lead.baseURL + Routes.nodes, headers: admin).decode(NodeList.self)
            return nodes.nodes.first { $0.name == "gpu-2" }?.postgres?.state == "streaming" ? true : nil
        }
        try? FileManager.default.removeItem(atPath: Self.output)
        let check = try await ChildProcess.run(
            Binaries.repositoryRoot + "/Tests/console/run",
            [
                "--lead", lead.baseURL, "--lead-token-file", lead.dataDir + "/admin.token",
                "--node", workers[0].baseURL,
                "--node-token-file", workers[0].dataDir + "/admin.token", "--lead-pid", String(lead.process.pid),
                "--out", Self.output,
            ],
            outputDirectory: scratch.path, timeout: .seconds(300))
        // The lead was stopped and resumed by the check: it must be running (and not stopped) now.
        kill(lead.process.pid, SIGCONT)
        #expect(check.code == 0, "\(check.stderr.suffix(3000))")
        let report = try JSONDecoder().decode(Report.self, from: Data(check.stdout.utf8))
        #expect(report.pages == ["mesh", "gpus", "secrets", "postgres", "health", "events", "lead-away"])
        #expect(report.nodes == 3)
        #expect(report.job["state"] == "succeeded")
        #expect(report.event_latency_s <= 2.0)
        #expect(report.read_only["cancel_status"] == 403 && report.read_only["no_csrf_status"] == 403)
        #expect(report.browser_errors == 0)
        #expect(report.min_contrast >= 4.5)
        for name in [
            "desktop-mesh", "desktop-gpus", "desktop-secrets", "narrow-mesh", "narrow-gpus", "desktop-lead-away",
        ] {
            let path = Self.output + "/" + name + ".png"
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            #expect(size > 10_000, "\(path): \(size) bytes")
        }
        #expect(lead.process.isRunning)
    }
}
