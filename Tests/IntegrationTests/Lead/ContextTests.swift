import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-cli context` against a real lead: after `context add` and `context use`, commands
/// need no `--agent` or `--data-dir`; token ids resolve from a prefix.
@Suite("aurora-cli contexts and token id prefixes")
struct ContextTests {
    /// The variables that would choose another agent or token, removed for the CLI.
    static let clean: [String: String?] = [
        "AURORA_AGENT": nil, "AURORA_TOKEN": nil, "AURORA_DATA_DIR": nil, "AURORA_PIN": nil, "AURORA_CONTEXT": nil,
        "XDG_CONFIG_HOME": nil,
    ]

    func mode(_ path: String) -> mode_t {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        return info.st_mode & 0o777
    }

    @Test("context add + use: status, nodes and jobs list work with no --agent or --data-dir; the token is never shown")
    func contexts() async throws {
        let scratch = try ScratchDirectory("contexts")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        defer {
            if lead.process.isRunning { lead.process.signal(SIGKILL) }
            scratch.remove()
        }
        let home = scratch.path + "/home"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        func cli(_ arguments: [String], _ environment: [String: String?] = [:]) async throws -> (
            code: Int32, stdout: String, stderr: String
        ) {
            try await ChildProcess.run(
                Binaries.auroraCLI, arguments,
                environment: Self.clean.merging(["HOME": home]) { $1 }.merging(environment) { $1 },
                outputDirectory: scratch.path)
        }
        try await lead.waitHealthy()
        let token = try lead.adminToken
        let tokenFile = scratch.path + "/lead.token"
        #expect(FileManager.default.createFile(atPath: tokenFile, contents: Data((token + "\n").utf8)))
        chmod(tokenFile, 0o600)

        // No context yet: the error names the data dir tried, where it came from, and the ways out.
        let nowhere = scratch.path + "/nowhere"
        let missing = try await cli(["jobs", "list", "--agent", lead.baseURL, "--data-dir", nowhere])
        #expect(missing.code == 1)
        #expect(missing.stderr.contains("\(nowhere)/admin.token does not exist"), "\(missing.stderr)")
        #expect(missing.stderr.contains("came from --data-dir"))
        for hint in ["AURORA_TOKEN", "aurora-cli context use"] { #expect(missing.stderr.contains(hint)) }
        let fromEnvironment = try await cli(["nodes", "--agent", lead.baseURL], ["AURORA_DATA_DIR": nowhere])
        #expect(fromEnvironment.code == 1)
        #expect(fromEnvironment.stderr.contains("came from AURORA_DATA_DIR"), "\(fromEnvironment.stderr)")
        if !FileManager.default.fileExists(atPath: Defaults.dataDir + "/" + Defaults.adminTokenFile) {
            let byDefault = try await cli(["nodes", "--agent", lead.baseURL])
            #expect(byDefault.code == 1)
            #expect(byDefault.stderr.contains("/var/lib/aurora is the default data dir"), "\(byDefault.stderr)")
        }

        // Invalid names, URLs and pins are refused at add, and nothing is written.
        for (arguments, expected) in [
            (["Bad/Name", "--agent", lead.baseURL], "not a context name"),
            (["x", "--agent", "ftp://127.0.0.1"], "http(s) URL"),
            (["x", "--agent", "https://127.0.0.1:1"], "--pin"),
            (["x", "--agent", "https://127.0.0.1:1", "--pin", "sha256:12"], "64 hex digits"),
        ] {
            let refused = try await cli(["context", "add"] + arguments + ["--token-file", tokenFile])
            #expect(refused.code != 0)
            #expect(refused.stderr.contains(expected), "\(refused.stderr)")
        }
        let inArgv = try await cli(["context", "add", "x", "--agent", lead.baseURL, "--token", token])
        #expect(inArgv.code != 0)
        #expect(inArgv.stderr.contains("never from the command line"), "\(inArgv.stderr)")
        #expect(!inArgv.stderr.contains(token))
        #expect(!FileManager.default.fileExists(atPath: home + "/.config/aurora/contexts/x.json"))
        // --data-dir copies DIR/admin.token.
        let fromDataDir = try await cli([
            "context", "add", "viadir", "--agent", lead.baseURL, "--data-dir", lead.dataDir,
        ])
        #expect(fromDataDir.code == 0, "\(fromDataDir.stderr)")
        #expect(try await cli(["context", "remove", "viadir"]).code == 0)

        let added = try await cli(["context", "add", "lead", "--agent", lead.baseURL + "/", "--token-file", tokenFile])
        #expect(added.code == 0, "\(added.stderr)")
        #expect(!added.stdout.contains(token))
        let directory = home + "/.config/aurora"
        #expect(mode(directory) == 0o700)
        #expect(mode(directory + "/contexts") == 0o700)
        #expect(mode(directory + "/contexts/lead.json") == 0o600)
        // A second context whose agent does not answer, for one-command selection.
        let other = try await cli([
            "context", "add", "other", "--agent", "http://127.0.0.1:\(try freePort())", "--token-file", tokenFile,
        ])
        #expect(other.code == 0, "\(other.stderr)")

        let used = try await cli(["context", "use", "lead"])
        #expect(used.code == 0, "\(used.stderr)")
        #expect(mode(directory + "/current-context") == 0o600)

        let status = try await cli(["status", "--json"])
        #expect(status.code == 0, "\(status.stderr)")
        let statusJSON = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        #expect(statusJSON?["agent"] as? String == lead.baseURL)
        #expect(statusJSON?["detail"] != nil, "the token from the context was not accepted: \(status.stdout)")
        #expect(statusJSON?["token_error"] == nil)
        let statusTable = try await cli(["status"])
        #expect(statusTable.code == 0, "\(statusTable.stderr)")
        #expect(statusTable.stdout.contains("lead-1"))
        let nodes = try await cli(["nodes", "--json"])
        #expect(nodes.code == 0, "\(nodes.stderr)")
        #expect(
            try APICoding.decoder().decode(NodeList.self, from: Data(nodes.stdout.utf8)).nodes.map(\.name) == ["lead-1"]
        )
        let jobs = try await cli(["jobs", "list"])
        #expect(jobs.code == 0, "\(jobs.stderr)")

        // --context and AURORA_CONTEXT choose another for one command (its agent is down: exit 3).
        let chosen = try await cli(["--context", "other", "nodes"])
        #expect(chosen.code == 3, "\(chosen.stderr)")
        let chosenByEnvironment = try await cli(["nodes"], ["AURORA_CONTEXT": "other"])
        #expect(chosenByEnvironment.code == 3, "\(chosenByEnvironment.stderr)")
        let unknown = try await cli(["nodes", "--context", "nope"])
        #expect(unknown.code == 1)
        #expect(unknown.stderr.contains("there is no context 'nope'"), "\(unknown.stderr)")
        // A flag still beats the context.
        let flagged = try await cli(["nodes", "--data-dir", nowhere])
        #expect(flagged.code == 1)
        #expect(flagged.stderr.contains("came from --data-dir"))

        let list = try await cli(["context", "list", "--json"])
        #expect(list.code == 0, "\(list.stderr)")
        let listed = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any]
        #expect(listed?["current"] as? String == "lead")
        #expect((listed?["contexts"] as? [[String: Any]])?.map { $0["name"] as? String } == ["lead", "other"])
        let table = try await cli(["context", "list"])
        #expect(table.stdout.split(separator: "\n").contains { $0.hasPrefix("*") && $0.contains("lead") })
        let shown = try await cli(["context", "show"])
        #expect(shown.code == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains(lead.baseURL))
        for output in [list.stdout, table.stdout, shown.stdout, status.stdout, status.stderr] {
            #expect(!output.contains(token))
        }

        // A damaged current context: a clear error naming the file, not a crash.
        #expect(
            FileManager.default.createFile(
                atPath: directory + "/contexts/lead.json", contents: Data("{\"version\":".utf8),
                attributes: [.posixPermissions: 0o600]))
        let damaged = try await cli(["nodes"])
        #expect(damaged.code == 1)
        #expect(damaged.stderr.contains("context 'lead' is damaged"), "\(damaged.stderr)")
        #expect(damaged.stderr.contains(directory + "/contexts/lead.json"))
        let removed = try await cli(["context", "remove", "lead"])
        #expect(removed.code == 0, "\(removed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/current-context"))
    }

    @Test("token revoke by a unique prefix; a shared prefix lists the candidates; an unknown one exits 3")
    func tokenPrefixes() async throws {
        let scratch = try ScratchDirectory("token-prefix")
        // Many tokens are made quickly below: lift the per-source request limit.
        let config = scratch.path + "/limits.yaml"
        try "limits:\n  requests_per_s: 100000\n  burst: 100000\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1", "--config", config],
            outputDirectory: scratch.path)
        defer {
            if lead.process.isRunning { lead.process.signal(SIGKILL) }
            scratch.remove()
        }
        try await lead.waitHealthy()
        let authorization = ["Authorization": "Bearer \(try lead.adminToken)"]
        func cli(_ arguments: [String]) async throws -> (code: Int32, stdout: String, stderr: String) {
            try await ChildProcess.run(
                Binaries.auroraCLI, arguments + ["--agent", lead.baseURL, "--data-dir", lead.dataDir],
                environment: Self.clean, outputDirectory: scratch.path)
        }

        // Join and API tokens until two share their first 4 hex digits (about 300 on average).
        var byDigits: [String: [String]] = [:]
        var shared: [String]?
        for index in 0..<4000 where shared == nil {
            let request =
                index % 2 == 0
                ? TokenCreateRequest(profile: .compute) : TokenCreateRequest(apiRole: .read)
            let answer = try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: authorization,
                body: Array(try APICoding.encoder().encode(request)))
            #expect(answer.status == 201, "\(answer.status)")
            let id =
                index % 2 == 0
                ? try answer.decode(TokenCreated.self).info.id : try answer.decode(APITokenCreated.self).info.id
            let digits = String(id.dropFirst(3).prefix(4))
            byDigits[digits, default: []].append(id)
            if byDigits[digits]!.count == 2 { shared = byDigits[digits] }
        }
        let pair = try #require(shared)
        let ambiguous = try await cli(["token", "revoke", String(pair[0].dropFirst(3).prefix(4))])
        #expect(ambiguous.code == 1)
        #expect(ambiguous.stderr.contains("names 2 tokens"), "\(ambiguous.stderr)")
        for id in pair { #expect(ambiguous.stderr.contains(id)) }

        // Revoke the first by its kind and 8 digits, the second by its digits in capitals.
        let first = try await cli(["token", "revoke", String(pair[0].prefix(11))])
        #expect(first.code == 0, "\(first.stderr)")
        #expect(first.stdout.contains("revoked \(pair[0])"))
        let second = try await cli(["token", "revoke", String(pair[1].dropFirst(3).prefix(8)).uppercased()])
        #expect(second.code == 0, "\(second.stderr)")
        #expect(second.stdout.contains("revoked \(pair[1])"))
        let list = try await cli(["token", "list", "--json"])
        #expect(list.code == 0, "\(list.stderr)")
        let tokens = try APICoding.decoder().decode(TokenList.self, from: Data(list.stdout.utf8))
        #expect(tokens.tokens.filter { pair.contains($0.id) }.allSatisfy { $0.state == .revoked })
        #expect((tokens.apiTokens ?? []).filter { pair.contains($0.id) }.allSatisfy { $0.state == .revoked })

        let unused = (0..<65536).lazy.map { String(format: "%04x", $0) }.first { byDigits[$0] == nil }!
        let none = try await cli(["token", "revoke", "jt_" + unused])
        #expect(none.code == 3)
        #expect(none.stderr.contains("no token with an id starting 'jt_\(unused)'"), "\(none.stderr)")
        let nonsense = try await cli(["token", "revoke", "x;1"])
        #expect(nonsense.code != 0)
        #expect(nonsense.stderr.contains("is not a token id or a prefix of one"), "\(nonsense.stderr)")
    }
}
