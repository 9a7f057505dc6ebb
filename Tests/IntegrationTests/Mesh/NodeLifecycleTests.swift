import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A joined node's later life with real agents: restarts that need no `--lead`, removal by the
/// operator (deleted or kept), and a company only the operator may change.
@Suite("Node lifecycle (real agents on loopback)", .serialized)
struct NodeLifecycleTests {
    /// `aurora-cli ARGS` against `agent`, with its exit status and output.
    static func cli(_ arguments: [String], agent: AgentHarness, scratch: ScratchDirectory) async throws -> (
        code: Int32, stdout: String, stderr: String
    ) {
        try await ChildProcess.run(
            Binaries.auroraCLI, arguments + ["--agent", agent.baseURL, "--data-dir", agent.dataDir],
            outputDirectory: scratch.path)
    }

    static func state(_ name: String, lead: AgentHarness) async throws -> NodeState? {
        let answer = try await http(
            lead.baseURL + Routes.node(name), headers: ["Authorization": "Bearer \(try lead.adminToken)"])
        return answer.status == 404 ? nil : try answer.decode(Node.self).state
    }

    static func waitAlive(_ name: String, lead: AgentHarness) async throws {
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "\(name) alive") {
            () async throws -> Bool? in
            try await state(name, lead: lead) == .alive ? true : nil
        }
    }

    @Test(
        "restart without --lead comes back alive; nodes remove deletes the record and frees the name; --keep keeps it left"
    )
    func restartAndRemove() async throws {
        let scratch = try ScratchDirectory("lifecycle")
        defer { scratch.remove() }
        var agents: [AgentHarness] = []
        defer { for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) } }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        func member(_ name: String, dataDir: String? = nil, joining: Bool) throws -> AgentHarness {
            let arguments =
                joining ? ["--name", name, "--lead", lead.baseURL, "--join-token", token] : ["--name", name]
            let agent = try AgentHarness(
                profile: "compute", dataDir: dataDir ?? scratch.path + "/" + name, extraArguments: arguments,
                environment: ["AURORA_LEAD": nil, "AURORA_JOIN_TOKEN": nil], outputDirectory: scratch.path)
            agents.append(agent)
            return agent
        }
        let gpu1 = try member("gpu-1", joining: true)
        let gpu2 = try member("gpu-2", joining: true)
        for agent in [gpu1, gpu2] { try await agent.waitHealthy() }
        for name in ["gpu-1", "gpu-2"] { try await Self.waitAlive(name, lead: lead) }

        // Restart with neither --lead nor a token: membership.json knows the lead.
        gpu1.process.signal(SIGTERM)
        #expect(try await gpu1.process.waitForExit(timeout: .seconds(10)) == 0)
        let gpu1Again = try member("gpu-1", joining: false)
        try await gpu1Again.waitHealthy()
        try await Self.waitAlive("gpu-1", lead: lead)
        let beating = try await Self.cli(["status", "--json"], agent: gpu1Again, scratch: scratch)
        #expect(beating.code == 0, "\(beating.stderr)")
        #expect(!beating.stdout.contains("\"stale\" : true"), "gpu-1 reaches its lead: \(beating.stdout.prefix(400))")

        // Its not_lead answers still name the lead it saved.
        let notLead = try await http(
            gpu1Again.baseURL + Routes.tokens, headers: ["Authorization": "Bearer \(try gpu1Again.adminToken)"])
        #expect(notLead.status == 421)
        #expect(notLead.text.contains(lead.baseURL), "\(notLead.text)")

        // --keep: the record stays, left.
        let kept = try await Self.cli(["nodes", "remove", "gpu-2", "--keep"], agent: lead, scratch: scratch)
        #expect(kept.code == 0, "\(kept.stderr)")
        #expect(kept.stdout.contains("removed gpu-2 (kept as left)"), "\(kept.stdout)")
        #expect(try await Self.state("gpu-2", lead: lead) == .left)

        // Without: the record is gone from every view, with node.left then node.removed.
        let removed = try await Self.cli(["nodes", "remove", "gpu-1"], agent: lead, scratch: scratch)
        #expect(removed.code == 0, "\(removed.stderr)")
        #expect(removed.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "removed gpu-1")
        #expect(try await Self.state("gpu-1", lead: lead) == nil)
        let list = try await Self.cli(["nodes", "--json"], agent: lead, scratch: scratch)
        let names = try APICoding.decoder().decode(NodeList.self, from: Data(list.stdout.utf8)).nodes.map(\.name)
        #expect(Set(names) == ["lead-1", "gpu-2"])
        let events = try await Self.cli(["events", "--since", "0", "--json"], agent: lead, scratch: scratch).stdout
            .split(separator: "\n").compactMap {
                try? APICoding.decoder().decode(MeshEvent.self, from: Data($0.utf8))
            }
        #expect(
            events.filter { $0.node == "gpu-1" }.map(\.type).suffix(2) == [EventType.nodeLeft, EventType.nodeRemoved])
        let again = try await Self.cli(["nodes", "remove", "gpu-1"], agent: lead, scratch: scratch)
        #expect(again.code != 0)
        #expect(again.stderr.contains("no node named 'gpu-1'"), "\(again.stderr)")

        // The removed agent's calls are refused: it stays out of the registry.
        let outside = try await poll(timeout: .seconds(10), every: .milliseconds(100), "gpu-1 to see itself refused") {
            () async throws -> Bool? in
            gpu1Again.process.stderr.contains("unknown node 'gpu-1'") ? true : nil
        }
        #expect(outside)
        #expect(try await Self.state("gpu-1", lead: lead) == nil)

        // The name is free: a new machine (new keys) joins as gpu-1.
        gpu1Again.process.signal(SIGTERM)
        #expect(try await gpu1Again.process.waitForExit(timeout: .seconds(10)) == 0)
        let newcomer = try member("gpu-1", dataDir: scratch.path + "/gpu-1-new", joining: true)
        try await newcomer.waitHealthy()
        try await Self.waitAlive("gpu-1", lead: lead)

        for agent in [newcomer, gpu2, lead] {
            agent.process.signal(SIGTERM)
            #expect(try await agent.process.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    @Test(
        "a company in a joined node's file that is not its own stops it with both values; nodes set --company changes it and its secrets follow"
    )
    func company() async throws {
        let scratch = try ScratchDirectory("company")
        defer { scratch.remove() }
        var agents: [AgentHarness] = []
        defer { for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) } }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)", "Content-Type": "application/json"]
        for (company, value) in [("acme", "for-acme"), ("globex", "for-globex")] {
            let write = SecretWrite(
                service: "db", keyName: "password", value: value, scope: "company", scopeID: company)
            let answer = try await http(
                lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(write)))
            #expect(answer.status == 201, "\(answer.text)")
        }
        let created = try await Self.cli(
            ["token", "create", "--profile", "compute", "--company", "acme", "--reusable"], agent: lead,
            scratch: scratch)
        #expect(created.code == 0, "\(created.stderr)")
        let token = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let dataDir = scratch.path + "/gpu-1"
        let nodeFile = scratch.path + "/gpu-1.yaml"
        try "labels: {zone: a}\n".write(toFile: nodeFile, atomically: true, encoding: .utf8)
        func start(_ arguments: [String]) throws -> AgentHarness {
            let agent = try AgentHarness(
                profile: "compute", dataDir: dataDir,
                extraArguments: ["--name", "gpu-1", "--config", nodeFile] + arguments,
                environment: ["AURORA_LEAD": nil, "AURORA_JOIN_TOKEN": nil, "AURORA_COMPANY": nil],
                outputDirectory: scratch.path)
            agents.append(agent)
            return agent
        }
        let gpu1 = try start(["--lead", lead.baseURL, "--join-token", token])
        try await gpu1.waitHealthy()
        try await Self.waitAlive("gpu-1", lead: lead)
        gpu1.process.signal(SIGTERM)
        #expect(try await gpu1.process.waitForExit(timeout: .seconds(10)) == 0)

        // The node file now claims another company: the agent stops and says how to change it.
        try "labels: {zone: a}\ncompany: globex\n".write(toFile: nodeFile, atomically: true, encoding: .utf8)
        let refused = try start([])
        let code = try await refused.process.waitForExit(timeout: .seconds(30))
        #expect(code != 0)
        let stderr = refused.process.stderr
        #expect(stderr.contains("company 'globex'"), "\(stderr.suffix(800))")
        #expect(stderr.contains("'acme'"), "\(stderr.suffix(800))")
        #expect(stderr.contains("aurora-cli nodes set gpu-1 --company globex"), "\(stderr.suffix(800))")
        #expect(try await http(lead.baseURL + Routes.node("gpu-1"), headers: admin).decode(Node.self).company == "acme")

        // Only the operator changes it; the node then starts with the same file, and its secrets follow.
        let set = try await Self.cli(["nodes", "set", "gpu-1", "--company", "globex"], agent: lead, scratch: scratch)
        #expect(set.code == 0, "\(set.stderr)")
        #expect(set.stdout.contains("gpu-1: company globex"), "\(set.stdout)")
        let bad = try await Self.cli(["nodes", "set", "gpu-1", "--company", "a\tb"], agent: lead, scratch: scratch)
        #expect(bad.code != 0)
        #expect(bad.stderr.contains("company contains a control character"), "\(bad.stderr)")
        let preview = try await Self.cli(
            ["secrets", "get", "db", "password", "--node", "gpu-1"], agent: lead, scratch: scratch)
        #expect(preview.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "for-globex", "\(preview.stderr)")
        let events = try await Self.cli(["events", "--since", "0", "--json"], agent: lead, scratch: scratch).stdout
            .split(separator: "\n").compactMap {
                try? APICoding.decoder().decode(MeshEvent.self, from: Data($0.utf8))
            }
        let change = try #require(events.first { $0.type == EventType.nodeCompanyChanged })
        #expect(change.node == "gpu-1")
        #expect(change.data["from"]?.string == "acme")
        #expect(change.data["to"]?.string == "globex")

        let restarted = try start([])
        try await restarted.waitHealthy()
        try await Self.waitAlive("gpu-1", lead: lead)
        let read = try await poll(timeout: .seconds(20), every: .milliseconds(200), "gpu-1 to read globex's value") {
            () async throws -> String? in
            let answer = try await Self.cli(["secrets", "get", "db", "password"], agent: restarted, scratch: scratch)
            let value = answer.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            return value == "for-globex" ? value : nil
        }
        #expect(read == "for-globex")
        let membership = try String(contentsOfFile: dataDir + "/membership.json", encoding: .utf8)
        #expect(membership.contains("\"company\":\"globex\"") || membership.contains("\"company\" : \"globex\""))

        for agent in [restarted, lead] {
            agent.process.signal(SIGTERM)
            #expect(try await agent.process.waitForExit(timeout: .seconds(10)) == 0)
        }
    }
}
