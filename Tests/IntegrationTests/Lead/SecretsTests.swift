import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The secrets manager with real agents: a lead and nodes of two companies.
@Suite("Secrets (lead + nodes of two companies)", .serialized)
struct SecretsTests {
    static let global = "sk-global-5d1c0a"
    static let acme = "sk-acme-company-93be"
    static let nodeOverride = "sk-node-a1-override-7f3a"

    @Test(
        "node > company > global for each node; cross reads refused and audited; sealed only for its node; no plaintext in store, logs or events"
    )
    func resolution() async throws {
        let scratch = try ScratchDirectory("secrets")
        defer { scratch.remove() }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        var agents = [lead]
        defer { for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        func cli(_ arguments: [String], agent: AgentHarness, stdin: String? = nil) async throws -> String {
            var input: String?
            if let stdin {
                input = scratch.path + "/stdin-\(UUID().uuidString)"
                try stdin.write(toFile: input!, atomically: true, encoding: .utf8)
            }
            defer { if let input { try? FileManager.default.removeItem(atPath: input) } }
            let arguments =
                arguments + ["--agent", agent.baseURL, "--data-dir", agent.dataDir]
                + (input.map { ["--file", $0] } ?? [])
            let result = try await ChildProcess.run(
                Binaries.auroraCLI, arguments, outputDirectory: scratch.path + "/cli")
            guard result.code == 0 else {
                throw TestKitError(
                    "aurora-cli \(arguments.joined(separator: " ")) exited \(result.code): \(result.stderr)")
            }
            return result.stdout
        }
        try FileManager.default.createDirectory(atPath: scratch.path + "/cli", withIntermediateDirectories: true)

        // Nodes: two of company acme, one of globex.
        var nodes: [String: AgentHarness] = [:]
        for (name, company) in [("gpu-a1", "acme"), ("gpu-a2", "acme"), ("gpu-g1", "globex")] {
            let token = try await cli(["token", "create", "--profile", "compute", "--company", company], agent: lead)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let node = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/" + name,
                extraArguments: ["--name", name, "--lead", lead.baseURL, "--join-token", token],
                outputDirectory: scratch.path)
            nodes[name] = node
            agents.append(node)
        }
        for node in nodes.values { try await node.waitHealthy() }
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(100), "three nodes joined") {
            () async throws -> Bool? in
            let list = try await http(lead.baseURL + Routes.nodes, headers: admin).decode(NodeList.self)
            return list.nodes.filter { $0.state == .alive }.count == 4 ? true : nil
        }

        // Values at each scope; the value goes in on stdin (a file here), never in argv.
        _ = try await cli(
            ["secrets", "set", "openai", "api_key", "--scope", "global"], agent: lead, stdin: Self.global + "\n")
        _ = try await cli(
            ["secrets", "set", "openai", "api_key", "--scope", "company", "--scope-id", "acme"], agent: lead,
            stdin: Self.acme)
        _ = try await cli(
            ["secrets", "set", "openai", "api_key", "--scope", "node", "--scope-id", "gpu-a1"], agent: lead,
            stdin: Self.nodeOverride)

        // Each node's agent returns what resolves for it, saying which scope won.
        for (name, value, scope) in [
            ("gpu-a1", Self.nodeOverride, "node"), ("gpu-a2", Self.acme, "company"), ("gpu-g1", Self.global, "global"),
        ] {
            let text = try await cli(["secrets", "get", "openai", "api_key", "--json"], agent: nodes[name]!)
            let read = try APICoding.decoder().decode(SecretRead.self, from: Data(text.utf8))
            #expect(read.value == value && read.scope == scope, "\(name): \(read.scope)")
        }
        // The operator previews the same resolution on the lead.
        #expect(
            try await cli(["secrets", "get", "openai", "api_key", "--company", "globex"], agent: lead) == Self.global
                + "\n")
        #expect(
            try await cli(["secrets", "get", "openai", "api_key", "--node", "gpu-a2"], agent: lead) == Self.acme + "\n")

        // Signed reads as the nodes themselves, with their own keys.
        func signed(as name: String, _ path: String) async throws -> HTTPAnswer {
            let node = nodes[name]!
            let seed = try String(contentsOfFile: node.dataDir + "/keys/sign.key", encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)
            return try await http(
                lead.baseURL + path,
                headers: SimulatedNode(name: name).headers(
                    method: "GET", path: path, body: [],
                    key: try SigningKey(base64Seed: seed)))
        }
        func boxKey(_ name: String) throws -> BoxKey {
            try BoxKey(
                base64: try String(contentsOfFile: nodes[name]!.dataDir + "/keys/box.key", encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines))
        }
        // Another node's override, another company's value: 403.
        let crossNode = try await signed(as: "gpu-a2", Routes.secret("openai", "api_key") + "?node=gpu-a1")
        #expect(crossNode.status == 403 && !crossNode.text.contains(Self.nodeOverride))
        let crossCompany = try await signed(as: "gpu-g1", Routes.secret("openai", "api_key") + "?company=acme")
        #expect(crossCompany.status == 403 && !crossCompany.text.contains(Self.acme))
        // The sealed answer opens only with the node's own box key.
        let sealed = try await signed(as: "gpu-a1", Routes.secret("openai", "api_key")).decode(SecretRead.self)
        #expect(sealed.value == nil && sealed.signature != nil)
        let sealedText = try #require(sealed.sealedValue)
        let box = [UInt8](try #require(Data(base64Encoded: sealedText)))
        #expect(
            try boxKey("gpu-a1").open(sealed: box).withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
                == Self.nodeOverride)
        #expect(throws: SecretsError.self) { try boxKey("gpu-a2").open(sealed: box) }

        // The audit: every write and read, refusals included, and a chain that verifies.
        let audit = try await http(lead.baseURL + Routes.audit + "?verify=true", headers: admin).decode(AuditLog.self)
        #expect(audit.verified == true, "\(audit.problem ?? "")")
        #expect(audit.entries.filter { $0.action == "write" }.count == 3)
        #expect(
            audit.entries.contains {
                $0.actor == "node:gpu-a2" && $0.result.hasPrefix("refused") && $0.scope == "node:gpu-a1"
            })
        #expect(
            audit.entries.contains {
                $0.actor == "node:gpu-g1" && $0.result.hasPrefix("refused") && $0.scope == "company:acme"
            })
        #expect(
            audit.entries.contains {
                $0.actor == "node:gpu-a1" && $0.action == "read" && $0.scope == "node:gpu-a1" && $0.version == 1
            })
        _ = try await cli(["secrets", "audit", "--verify"], agent: lead)

        // History and rollback: a new version with the old value.
        _ = try await cli(
            ["secrets", "set", "openai", "api_key", "--scope", "company", "--scope-id", "acme"], agent: lead,
            stdin: "sk-acme-second-11aa")
        #expect(
            try await cli(["secrets", "get", "openai", "api_key"], agent: nodes["gpu-a2"]!) == "sk-acme-second-11aa\n")
        _ = try await cli(
            ["secrets", "rollback", "openai", "api_key", "--scope", "company", "--scope-id", "acme", "--version", "1"],
            agent: lead)
        let history = try APICoding.decoder().decode(
            SecretVersions.self,
            from: Data(
                try await cli(
                    ["secrets", "history", "openai", "api_key", "--scope", "company", "--scope-id", "acme", "--json"],
                    agent: lead
                ).utf8))
        #expect(
            history.versions.map(\.version) == [1, 2, 3] && history.versions.last?.restoredFrom == 1
                && history.versions.last?.current == true)
        #expect(try await cli(["secrets", "get", "openai", "api_key"], agent: nodes["gpu-a2"]!) == Self.acme + "\n")
        let list = try await http(lead.baseURL + Routes.secrets, headers: admin)
        #expect(list.status == 200 && !list.text.contains("sk-"), "the list names secrets, never values")

        // Bad input: 400 naming the field; nothing written.
        let badScope = try await http(
            lead.baseURL + Routes.secrets, method: "POST", headers: admin,
            body: Array(#"{"service": "openai", "key_name": "k", "value": "v", "scope": "team"}"#.utf8))
        #expect(badScope.status == 400 && badScope.text.contains("scope"))
        let badName = try await http(
            lead.baseURL + Routes.secrets, method: "POST", headers: admin,
            body: Array(#"{"service": "open ai", "key_name": "k", "value": "v", "scope": "global"}"#.utf8))
        #expect(badName.status == 400 && badName.text.contains("service"))
        // A version past PostgreSQL's integer is not found, not a store failure
        // (schemathesis: POST /api/secrets/{service}/{key}/rollback {"version": 4205021247}).
        let farVersion = try await http(
            lead.baseURL + Routes.secretRollback("openai", "api_key"), method: "POST", headers: admin,
            body: Array(#"{"scope": "company", "scope_id": "acme", "version": 4205021247}"#.utf8))
        #expect(farVersion.status == 404 && farVersion.text.contains("no version 4205021247"), "\(farVersion.text)")

        // Key rotation while nodes read: every read succeeds, and the values are unchanged after.
        let a1 = nodes["gpu-a1"]!
        let a1Token = try a1.adminToken
        let (reads, rotation) = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            group.addTask {
                var failures: [String] = []
                for _ in 0..<150 {
                    let answer = try await http(
                        a1.baseURL + Routes.secret("openai", "api_key"), headers: ["Authorization": "Bearer \(a1Token)"]
                    )
                    if answer.status != 200 || !answer.text.contains(Self.nodeOverride) {
                        failures.append("\(answer.status)")
                    }
                }
                return (failures.count, nil)
            }
            group.addTask { (0, try await cli(["secrets", "rotate-key", "--json"], agent: lead)) }
            var failures = 0, output: String?
            for try await (count, text) in group {
                failures += count
                if let text { output = text }
            }
            return (failures, output)
        }
        #expect(reads == 0, "reads failed during rotation")
        let rotated = try APICoding.decoder().decode(SecretRotation.self, from: Data(try #require(rotation).utf8))
        #expect(rotated.fromVersion == 1 && rotated.toVersion == 2 && rotated.rewrapped == 5)
        #expect(
            try await cli(["secrets", "get", "openai", "api_key", "--node", "gpu-a1"], agent: lead) == Self.nodeOverride
                + "\n")
        let rotatedAudit = try await http(lead.baseURL + Routes.audit + "?verify=true", headers: admin).decode(
            AuditLog.self)
        #expect(rotatedAudit.verified == true && rotatedAudit.entries.contains { $0.action == "rotate" })

        // A changed value reaches the cache of a node that read it within 2 s (heartbeats carry
        // the lead's secrets version; the node refreshes what it holds).
        let changedAt = ContinuousClock.now
        _ = try await cli(
            ["secrets", "set", "openai", "api_key", "--scope", "company", "--scope-id", "acme"], agent: lead,
            stdin: "sk-acme-third-22bb")
        let cacheFile = nodes["gpu-a2"]!.dataDir + "/cache/secrets.json"
        _ = try await poll(timeout: .seconds(5), every: .milliseconds(20), "the new version in gpu-a2's cache") {
            () async throws -> Bool? in
            let data = try Data(contentsOf: URL(fileURLWithPath: cacheFile))
            let entries = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
            return entries.contains { (($0["read"] as? [String: Any])?["version"] as? Int) == 4 } ? true : nil
        }
        let propagation = changedAt.duration(to: .now)
        #expect(propagation < .seconds(2), "reached the cache after \(propagation)")
        #expect(
            try !Self.filesContain(nodes["gpu-a2"]!.dataDir + "/cache", Array("sk-acme-third-22bb".utf8)),
            "the cache holds it sealed")

        // No plaintext anywhere it must not be: the event stream, the agents' logs, the store's files.
        let events = try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text
        #expect(events.contains("secret.changed"))
        lead.process.signal(SIGTERM)  // flushes PostgreSQL's files
        #expect(try await lead.process.waitForExit(timeout: .seconds(15)) == 0)

        // The lead is away: the node answers from its cache, with its age, also after a restart.
        func cachedRead(_ agent: AgentHarness) async throws -> SecretRead {
            try APICoding.decoder().decode(
                SecretRead.self,
                from: Data(try await cli(["secrets", "get", "openai", "api_key", "--json"], agent: agent).utf8))
        }
        let cached = try await cachedRead(nodes["gpu-a2"]!)
        #expect(cached.value == "sk-acme-third-22bb" && cached.version == 4 && cached.cachedAgeS != nil)
        nodes["gpu-a2"]!.process.signal(SIGTERM)
        _ = try await nodes["gpu-a2"]!.process.waitForExit(timeout: .seconds(10))
        let restarted = try AgentHarness(
            profile: "compute", dataDir: nodes["gpu-a2"]!.dataDir,
            extraArguments: ["--name", "gpu-a2", "--lead", lead.baseURL], outputDirectory: scratch.path)
        agents.append(restarted)
        try await restarted.waitHealthy()
        let afterRestart = try await cachedRead(restarted)
        #expect(
            afterRestart.value == "sk-acme-third-22bb" && afterRestart.scope == "company"
                && afterRestart.cachedAgeS != nil)
        // Never fetched here: no cached copy, a clear 503.
        let missing = try await http(
            restarted.baseURL + Routes.secret("anthropic", "api_key"),
            headers: ["Authorization": "Bearer \(try restarted.adminToken)"])
        #expect(missing.status == 503 && missing.text.contains("not cached"))
        var haystack = [events]
        for agent in agents { haystack += [agent.process.stdout, agent.process.stderr] }
        #expect(
            try Self.filesContain(scratch.path + "/lead", Array("gpu-a1".utf8)),
            "the search finds what the store does hold")
        for value in [Self.global, Self.acme, Self.nodeOverride, "sk-acme-second-11aa", "sk-acme-third-22bb"] {
            #expect(!haystack.contains { $0.contains(value) }, "\(value) in an event or a log")
            #expect(
                try !Self.filesContain(scratch.path + "/lead", Array(value.utf8)),
                "\(value) in the lead's data directory")
        }
    }

    @Test(
        "a passphrase-derived master key: secrets survive a restart with it; a wrong passphrase stops the start with a clear error"
    )
    func passphrase() async throws {
        let scratch = try ScratchDirectory("secrets-pass")
        defer { scratch.remove() }
        let good = scratch.path + "/pass", bad = scratch.path + "/wrong"
        try "correct horse battery staple\n".write(toFile: good, atomically: true, encoding: .utf8)
        try "incorrect donkey battery staple\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let dataDir = scratch.path + "/lead"
        func start(_ passphrase: String) throws -> AgentHarness {
            try AgentHarness(
                profile: "lead", dataDir: dataDir,
                extraArguments: ["--name", "lead-1", "--secrets-passphrase-file", passphrase],
                outputDirectory: scratch.path)
        }
        var lead = try start(good)
        try await lead.waitHealthy()
        #expect(
            !FileManager.default.fileExists(atPath: dataDir + "/keys/secrets.master"), "no key file with a passphrase")
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let write = SecretWrite(service: "db", keyName: "password", value: "pass-derived-value-31", scope: "global")
        #expect(
            try await http(
                lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(write))
            ).status == 201)
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(15)) == 0)

        let wrong = try start(bad)
        #expect(try await wrong.process.waitForExit(timeout: .seconds(30)) != 0)
        #expect(wrong.process.stderr.contains("passphrase does not match"))

        lead = try start(good)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let preview = try await http(lead.baseURL + Routes.secret("db", "password") + "?company=any", headers: admin)
            .decode(SecretRead.self)
        #expect(preview.value == "pass-derived-value-31")
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(15)) == 0)
    }

    @Test("fail closed: when the audit cannot be written the read is refused at once, never served unaudited")
    func failClosed() async throws {
        let scratch = try ScratchDirectory("secrets-closed")
        defer { scratch.remove() }
        let server = try await PostgresServer(in: scratch)
        do {
            try await failClosed(server: server, scratch: scratch)
        } catch {
            try? await server.stop()
            throw error
        }
    }

    func failClosed(server: PostgresServer, scratch: ScratchDirectory) async throws {
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead",
            extraArguments: ["--name", "lead-1", "--store", server.url],
            outputDirectory: scratch.path)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        let write = SecretWrite(service: "db", keyName: "password", value: "closed-value-77", scope: "global")
        #expect(
            try await http(
                lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                body: Array(try APICoding.encoder().encode(write))
            ).status == 201)
        let path = Routes.secret("db", "password") + "?company=any"
        #expect(try await http(lead.baseURL + path, headers: admin).status == 200)

        // A store that hangs (every PostgreSQL process stopped): the read is refused after the
        // 2 s audit deadline, not held (a slow store below it still serves reads).
        let postmaster = try #require(
            (try? String(contentsOfFile: server.directory + "/postmaster.pid", encoding: .utf8))?
                .split(separator: "\n").first.flatMap { pid_t($0) })
        let family = [postmaster] + Self.children(of: postmaster)
        for pid in family { kill(pid, SIGSTOP) }
        let hungStart = ContinuousClock.now
        let hungAnswer: Result<HTTPAnswer, any Error>
        do { hungAnswer = .success(try await http(lead.baseURL + path, headers: admin)) } catch {
            hungAnswer = .failure(error)
        }
        let hungElapsed = hungStart.duration(to: .now)
        for pid in family { kill(pid, SIGCONT) }  // before anything can throw
        let hung = try hungAnswer.get()
        #expect(hung.status == 503 && hung.text.contains("audit_unavailable"), "\(hung.status) \(hung.text)")
        #expect(hungElapsed >= .milliseconds(1900) && hungElapsed < .seconds(4), "refused after \(hungElapsed)")
        // Once the store answers again, reads are served (and audited) again.
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(50), "reads to work again") {
            () async throws -> Bool? in
            try await http(lead.baseURL + path, headers: admin).status == 200 ? true : nil
        }
        let audit = try await http(lead.baseURL + Routes.audit + "?verify=true", headers: admin).decode(AuditLog.self)
        #expect(audit.verified == true, "\(audit.problem ?? "")")

        try await server.stop()  // the store (and so the audit log) is gone
        let started = ContinuousClock.now
        let refused = try await http(lead.baseURL + path, headers: admin)
        let elapsed = started.duration(to: .now)
        #expect(
            refused.status == 503 && refused.text.contains("audit_unavailable"), "\(refused.status) \(refused.text)")
        #expect(!refused.text.contains("closed-value-77"))
        #expect(elapsed < .milliseconds(500), "refused after \(elapsed)")
        lead.process.signal(SIGTERM)
        _ = try await lead.process.waitForExit(timeout: .seconds(15))
    }

    /// PIDs whose parent is `parent` (the postmaster's backends and workers).
    static func children(of parent: pid_t) -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == parent ? pid : nil
        }
    }

    /// Whether any file under `directory` contains `needle` (binary-safe).
    static func filesContain(_ directory: String, _ needle: [UInt8]) throws -> Bool {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return false }
        for case let path as String in walker {
            guard let data = FileManager.default.contents(atPath: directory + "/" + path), data.count >= needle.count
            else { continue }
            if data.range(of: Data(needle)) != nil { return true }
        }
        return false
    }
}
