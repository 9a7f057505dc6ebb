import AuroraAPI
import AuroraTestKit
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench failover`: a lead and a standby on one external PostgreSQL, and `nodes` compute
/// agents. Each run kills the lead with SIGKILL and promotes the standby at once (as an
/// operator, or a future etcd watcher, would), then times until the standby acknowledges a write
/// and until every node heartbeats to it. Detection is not part of it: without an arbiter the
/// promotion is manual.
struct FailoverBenchmark: Sendable {
    struct Report: Codable, Sendable {
        var runs: Int
        var nodes: Int
        /// SIGKILL of the lead → the promoted standby answers a store write (a join token) with 201.
        var toWritesMs: [Double]
        /// SIGKILL of the lead → every node's latest heartbeat reached the new lead.
        var toAllNodesMs: [Double]
        /// The promotion call alone (step-down attempt, lock, term, answer).
        var promoteCallMs: [Double]

        enum CodingKeys: String, CodingKey {
            case runs, nodes
            case toWritesMs = "to_writes_ms", toAllNodesMs = "to_all_nodes_ms", promoteCallMs = "promote_call_ms"
        }
    }

    var executable: String
    var runs: Int
    var nodes: Int
    /// With a 3-member etcd: nobody promotes, the standby takes over by itself (detection counted).
    var etcd: Bool = false
    var progress: @Sendable (String) -> Void

    func run() async throws -> Report {
        var report = Report(runs: runs, nodes: nodes, toWritesMs: [], toAllNodesMs: [], promoteCallMs: [])
        for index in 1...runs {
            progress("run \(index)/\(runs)")
            let (writes, nodesMs, call) = try await once(index)
            report.toWritesMs.append(writes)
            report.toAllNodesMs.append(nodesMs)
            report.promoteCallMs.append(call)
        }
        return report
    }

    private func once(_ index: Int) async throws -> (Double, Double, Double) {
        let scratch = try ScratchDirectory("failover-\(index)", prefix: "aurora-bench")
        let server = try await PostgresServer(in: scratch)
        let cluster = etcd ? try await EtcdCluster.start(in: scratch) : nil
        var agents: [AgentHarness] = []
        func cleanUp() async {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            await cluster?.stopAll()
            try? await server.stop()
            scratch.remove()
        }
        do {
            var election: [String] = []
            if let cluster {
                let file = scratch.path + "/election.yaml"
                try "election:\n  etcd: \"\(cluster.endpoints.joined(separator: ","))\"\n  ttl_s: 5\n"
                    .write(toFile: file, atomically: true, encoding: .utf8)
                election = ["--config", file]
            }
            let result = try await measure(
                server: server, scratch: scratch, election: election, agents: &agents)
            await cleanUp()
            return result
        } catch {
            await cleanUp()
            throw error
        }
    }

    private func measure(
        server: PostgresServer, scratch: ScratchDirectory, election: [String], agents: inout [AgentHarness]
    ) async throws -> (Double, Double, Double) {
        let quiet = ["--log-level", "error"] + election
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-a",
            extraArguments: ["--name", "lead-a", "--store", server.url] + quiet, outputDirectory: scratch.path,
            executable: executable)
        agents.append(lead)
        try await lead.waitHealthy(timeout: .seconds(60))
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let standbyToken = try await joinToken(lead, admin: admin, profile: "standby")
        let standby = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead-b",
            extraArguments: [
                "--name", "lead-b", "--standby", "--lead", lead.baseURL, "--join-token", standbyToken, "--store",
                server.url,
            ] + quiet, outputDirectory: scratch.path, executable: executable)
        agents.append(standby)
        try await standby.waitHealthy(timeout: .seconds(60))
        let computeToken = try await joinToken(lead, admin: admin, profile: "compute", reusable: true)
        var workers: [AgentHarness] = []
        for number in 1...nodes {
            let worker = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/node-\(number)",
                extraArguments: ["--name", "node-\(number)", "--lead", lead.baseURL, "--join-token", computeToken]
                    + quiet, outputDirectory: scratch.path, executable: executable)
            agents.append(worker)
            workers.append(worker)
        }
        for worker in workers { try await worker.waitHealthy(timeout: .seconds(60)) }
        // Every node must know the standby (its cached registry) before the lead goes.
        for worker in workers {
            let headers = ["Authorization": "Bearer \(try worker.adminToken)"]
            _ = try await poll(timeout: .seconds(30), every: .milliseconds(50), "\(worker.dataDir) to know the standby")
            {
                () async throws -> Bool? in
                let answer = try await http(worker.baseURL + API.leadStatus.pattern, headers: headers)
                guard answer.status == 200 else { return nil }
                let status = try answer.decode(LeadStatus.self)
                return status.standbys.contains { $0.name == "lead-b" } ? true : nil
            }
        }

        lead.process.signal(SIGKILL)
        let killed = ContinuousClock.now
        let killedAt = Date()
        var promoteCall = 0.0
        if !etcd {
            let promoteStarted = ContinuousClock.now
            let promoted = try await http(
                standby.baseURL + API.promoteLead.pattern, method: "POST",
                headers: ["Authorization": "Bearer \(try standby.adminToken)"], body: Array("{}".utf8),
                timeout: .seconds(30))
            guard promoted.status == 200 else { throw TestKitError("promote: \(promoted.status) \(promoted.text)") }
            promoteCall = Measurements.ms(promoteStarted.duration(to: .now))
        }
        let body = Array(#"{"profile":"compute","ttl_s":60}"#.utf8)
        let writes = try await poll(timeout: .seconds(60), every: .milliseconds(5), "a write on the new lead") {
            () async throws -> Duration? in
            let answer = try? await http(
                standby.baseURL + Routes.tokens, method: "POST", headers: admin, body: body, timeout: .seconds(2))
            return answer?.status == 201 ? killed.duration(to: .now) : nil
        }
        let all = try await poll(timeout: .seconds(60), every: .milliseconds(10), "every node to heartbeat to it") {
            () async throws -> Duration? in
            guard
                let answer = try? await http(standby.baseURL + Routes.nodes, headers: admin, timeout: .seconds(2)),
                answer.status == 200, let list = try? answer.decode(NodeList.self)
            else { return nil }
            let fresh = list.nodes.filter { node in
                node.name.hasPrefix("node-") && (Self.parse(node.lastSeen).map { $0 > killedAt } ?? false)
            }
            return fresh.count == nodes ? killed.duration(to: .now) : nil
        }
        return (Measurements.ms(writes), Measurements.ms(all), promoteCall)
    }

    /// An ISO 8601 time with or without fractional seconds.
    static func parse(_ text: String) -> Date? {
        let precise = ISO8601DateFormatter()
        precise.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return precise.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }

    private func joinToken(_ lead: AgentHarness, admin: [String: String], profile: String, reusable: Bool = false)
        async throws -> String
    {
        let body = Array(#"{"profile":"\#(profile)","ttl_s":600\#(reusable ? #","reusable":true"# : "")}"#.utf8)
        let answer = try await http(lead.baseURL + Routes.tokens, method: "POST", headers: admin, body: body)
        guard answer.status == 201 else { throw TestKitError("token create: \(answer.status) \(answer.text)") }
        return try answer.decode(TokenCreated.self).token
    }
}
