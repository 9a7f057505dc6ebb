import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real Prometheus (Debian's) on the shipped configuration (deploy/prometheus) finds a lead and
/// two compute agents through the lead's service discovery, scrapes them, answers every query of
/// the shipped Grafana dashboards (deploy/grafana), evaluates the shipped alert rules, and fires
/// the node-dead alert when a compute agent is killed.
@Suite("Prometheus discovers, scrapes and alerts on a mesh (real Prometheus, lead + 2 compute agents)")
struct PrometheusDiscoveryTests {
    static let deploy = Binaries.repositoryRoot + "/deploy/prometheus"

    @Test("promtool accepts the shipped rules and configuration")
    func promtool() async throws {
        let scratch = try ScratchDirectory("promtool")
        defer { scratch.remove() }
        try Binaries.requireTool(PrometheusServer.toolPath, hint: "install prometheus (./bootstrap does)")
        let rules = try await ChildProcess.run(
            PrometheusServer.toolPath, ["check", "rules", Self.deploy + "/aurora-rules.yml"],
            outputDirectory: scratch.path)
        #expect(rules.code == 0, "\(rules.stdout) \(rules.stderr)")
        // The configuration names a token file next to it: check a copy with one there.
        for name in ["prometheus.yml", "aurora-rules.yml"] {
            try FileManager.default.copyItem(atPath: Self.deploy + "/" + name, toPath: scratch.path + "/" + name)
        }
        try "aur_example".write(toFile: scratch.path + "/aurora-read-token", atomically: true, encoding: .utf8)
        let config = try await ChildProcess.run(
            PrometheusServer.toolPath, ["check", "config", scratch.path + "/prometheus.yml"],
            outputDirectory: scratch.path)
        #expect(config.code == 0, "\(config.stdout) \(config.stderr)")
    }

    @Test(
        "discovery lists the three agents with their labels, every target is scraped, the lead's per-node series keep their node, every dashboard panel's query returns data; kill -9 of a compute agent fires AuroraNodeDead and AuroraAgentDown goes pending"
    )
    func discoverAndAlert() async throws {
        let scratch = try ScratchDirectory("prometheus")
        defer { scratch.remove() }
        // gpu-2 watches a streaming replica (the PostgreSQL dashboard's series).
        try await PostgresServer.withStreamingPair(in: scratch, slot: "prom_replica") { _, standby, agents in
            try await Self.mesh(scratch: scratch, replica: standby, agents: &agents)
        }
    }

    static func mesh(scratch: ScratchDirectory, replica: PostgresServer, agents: inout [AgentHarness]) async throws {
        let timing = NodeFiles.fastHeartbeats
        let gpu = NodeFiles.execWorker(gpu: "GPU-prom-0")
        let watcher = NodeFiles.replicaWatcher(replica.conninfo)
        // gpu-1 also serves /metrics alone on a listener of its own (metrics.listen): discovery
        // lists that one for it.
        let metricsPort = try freePort()
        let scrapeOnly = "metrics:\n  listen: \"127.0.0.1:\(metricsPort)\"\n"
        let (lead, workers) = try await AgentHarness.leadWithWorkers(
            in: scratch, lead: "prom-lead",
            workers: [("gpu-1", timing + gpu + scrapeOnly), ("gpu-2", timing + watcher)],
            agents: &agents)
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        // A read-only API token is what the shipped configuration expects.
        let readToken = try await http(
            lead.baseURL + Routes.tokens, method: "POST", headers: admin,
            body: Array(try APICoding.encoder().encode(TokenCreateRequest(apiRole: .read)))
        ).decode(APITokenCreated.self).token

        // The endpoint itself: every agent, by name; a read token suffices, none is refused.
        let listed = try await poll(timeout: .seconds(20), every: .milliseconds(100), "three agents with addresses") {
            () async throws -> [PrometheusTargetGroup]? in
            let groups = try await http(
                lead.baseURL + API.prometheusTargets.pattern, headers: ["Authorization": "Bearer \(readToken)"]
            ).decode([PrometheusTargetGroup].self)
            return groups.count == 3 && groups[0].targets == ["127.0.0.1:\(metricsPort)"] ? groups : nil
        }
        // The metrics listener serves /metrics and nothing else.
        let scraped = try await http("http://127.0.0.1:\(metricsPort)/metrics")
        #expect(scraped.status == 200 && scraped.text.contains("aurora_uptime_seconds"))
        for path in ["/api/agent", "/health", "/nodes", "/ui"] {
            let answer = try await http("http://127.0.0.1:\(metricsPort)" + path, headers: admin)
            #expect(answer.status == 404, "\(path) on the metrics listener: \(answer.status)")
        }
        #expect(listed.map { $0.labels["node"] } == ["gpu-1", "gpu-2", "prom-lead"])
        #expect(listed.map { $0.labels["role"] } == ["compute", "compute", "lead"])
        #expect(listed[2].targets == [lead.baseURL.replacingOccurrences(of: "http://", with: "")])
        #expect(try await http(lead.baseURL + API.prometheusTargets.pattern).status == 401)
        // A compute agent answers the same list (the lead's, or its cache).
        let workerAdmin = ["Authorization": "Bearer \(try workers[0].adminToken)"]
        let fromWorker = try await http(workers[0].baseURL + API.prometheusTargets.pattern, headers: workerAdmin)
            .decode([PrometheusTargetGroup].self)
        #expect(fromWorker.map(\.targets) == listed.map(\.targets))

        // The shipped configuration, pointed at this lead, with test-speed intervals.
        let shipped = try String(contentsOfFile: Self.deploy + "/prometheus.yml", encoding: .utf8)
        let config =
            shipped
            .replacingOccurrences(of: "http://lead.example:9999", with: lead.baseURL)
            .replacingOccurrences(of: "scrape_interval: 15s", with: "scrape_interval: 1s")
            .replacingOccurrences(of: "evaluation_interval: 15s", with: "evaluation_interval: 1s")
            .replacingOccurrences(of: "refresh_interval: 30s", with: "refresh_interval: 1s")
        #expect(config.contains(lead.baseURL) && config.contains("scrape_interval: 1s"), "the shipped file changed")
        let server = try await PrometheusServer(
            in: scratch, config: config,
            files: [
                "aurora-read-token": readToken,
                "aurora-rules.yml": try String(contentsOfFile: Self.deploy + "/aurora-rules.yml", encoding: .utf8),
            ])
        do {
            try await Self.scrapeAndAlert(server, lead: lead, admin: admin, victim: workers[1], listed: listed)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// Every PromQL expression of every panel of deploy/grafana/dashboards, with its dashboard's file.
    static func dashboardExpressions() throws -> [(String, String)] {
        let folder = Binaries.repositoryRoot + "/deploy/grafana/dashboards"
        var found: [(String, String)] = []
        func walk(_ panels: [[String: Any]], board: String) {
            for panel in panels {
                for target in panel["targets"] as? [[String: Any]] ?? [] {
                    if let expression = target["expr"] as? String { found.append((board, expression)) }
                }
                walk(panel["panels"] as? [[String: Any]] ?? [], board: board)
            }
        }
        for file in try FileManager.default.contentsOfDirectory(atPath: folder).sorted() where file.hasSuffix(".json") {
            let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + file))
            let board = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(file)")
            #expect(board["uid"] is String && board["title"] is String, "\(file) has a uid and a title")
            walk(board["panels"] as? [[String: Any]] ?? [], board: file)
        }
        return found
    }

    static func scrapeAndAlert(
        _ server: PrometheusServer, lead: AgentHarness, admin: [String: String], victim: AgentHarness,
        listed: [PrometheusTargetGroup]
    ) async throws {
        let targets = try await poll(timeout: .seconds(30), every: .milliseconds(250), "three targets up") {
            () async throws -> [(labels: [String: String], health: String)]? in
            let targets = try await server.activeTargets()
            return targets.count == 3 && targets.allSatisfy({ $0.health == "up" }) ? targets : nil
        }
        #expect(Set(targets.compactMap { $0.labels["node"] }) == ["gpu-1", "gpu-2", "prom-lead"])
        #expect(targets.allSatisfy { $0.labels["job"] == "aurora" })
        // Each agent's own series carry its node and role; the lead's per-node series keep theirs.
        let uptime = try await server.query("aurora_uptime_seconds")
        #expect(Set(uptime.compactMap { $0.labels["node"] }) == ["gpu-1", "gpu-2", "prom-lead"])
        #expect(Set(uptime.compactMap { $0.labels["role"] }) == ["compute", "lead"])
        let states = try await poll(timeout: .seconds(20), every: .milliseconds(250), "the lead's node states") {
            () async throws -> [(labels: [String: String], value: Double)]? in
            let alive = try await server.query(#"aurora_node_state{state="alive"} == 1"#)
            return Set(alive.compactMap { $0.labels["node"] }).isSuperset(of: ["gpu-1", "gpu-2"]) ? alive : nil
        }
        #expect(states.allSatisfy { $0.labels["instance"] == listed[2].targets[0] })

        // A job runs to its end on gpu-1 (the job dashboard's series), then every panel of every
        // shipped dashboard must return data.
        let submitted = try await TwoLeadsTests.submit("prom-job", to: lead, headers: admin)
        #expect(submitted.status == 201, "\(submitted.text)")
        let id = try submitted.decode(Job.self).id
        let ran = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the job to finish") {
            () async throws -> Job? in
            let job = try await http(lead.baseURL + Routes.gpuJob(id), headers: admin).decode(Job.self)
            return job.state == .succeeded || job.state == .failed ? job : nil
        }
        #expect(ran.state == .succeeded)
        let expressions = try Self.dashboardExpressions()
        #expect(expressions.count >= 25, "the dashboards' queries were found: \(expressions.count)")
        var empty: [String] = []
        _ = try? await poll(timeout: .seconds(30), every: .milliseconds(500), "every dashboard query to return data") {
            () async throws -> Bool? in
            empty = []
            for (board, expression) in expressions where try await server.query(expression).isEmpty {
                empty.append("\(board): \(expression)")
            }
            return empty.isEmpty ? true : nil
        }
        #expect(empty.isEmpty, "dashboard queries without data: \(empty)")

        // kill -9 of gpu-2: the lead's failure detector calls it dead, and the alert fires.
        victim.process.signal(SIGKILL)
        let fired = try await poll(timeout: .seconds(45), every: .milliseconds(250), "AuroraNodeDead to fire") {
            () async throws -> [(labels: [String: String], state: String)]? in
            let alerts = try await server.alerts()
            return alerts.contains { $0.labels["alertname"] == "AuroraNodeDead" && $0.state == "firing" }
                ? alerts : nil
        }
        let dead = fired.filter { $0.labels["alertname"] == "AuroraNodeDead" }
        #expect(dead.map { $0.labels["node"] } == ["gpu-2"] && dead.first?.labels["severity"] == "critical")
        // Its scrapes fail too: AuroraAgentDown waits its minute (pending), for gpu-2 only.
        let down = try await poll(timeout: .seconds(20), every: .milliseconds(250), "AuroraAgentDown pending") {
            () async throws -> [String]? in
            let names = try await server.alerts().filter { $0.labels["alertname"] == "AuroraAgentDown" }
                .compactMap { $0.labels["node"] }
            return names.isEmpty ? nil : names
        }
        #expect(down == ["gpu-2"])
        #expect(try await server.query(#"up{node="gpu-1"}"#).first?.value == 1)
    }
}
