import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `nodeagent config`, `aurora-cli doctor` and the systemd unit.
@Suite("Operator tooling")
struct ToolingTests {
    @Test("nodeagent config shows every value with its source and redacts secrets")
    func configCommand() async throws {
        let scratch = try ScratchDirectory("config")
        defer { scratch.remove() }
        let result = try await ChildProcess.run(
            Binaries.nodeagent,
            ["config", "--profile", "edge", "--json", "--listen", "127.0.0.1:7777"],
            environment: [
                "NODE_NAME": "laptop-3", "AURORA_JOIN_TOKEN": "jt_very_secret",
                "AURORA_STORE": "postgres://u:pw-secret@h/db",
            ],
            outputDirectory: scratch.path)
        #expect(result.code == 0, "\(result.stderr)")
        #expect(!result.stdout.contains("jt_very_secret"))
        #expect(!result.stdout.contains("pw-secret"))
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: [String: Any]])
        #expect(object["listen"]?["value"] as? String == "127.0.0.1:7777")
        #expect(object["listen"]?["source"] as? String == "flag --listen")
        #expect(object["name"]?["value"] as? String == "laptop-3")
        #expect(object["name"]?["source"] as? String == "env NODE_NAME")
        #expect(object["join_token"]?["value"] as? String == "<redacted>")
        #expect(object["role"]?["value"] as? String == "edge")
        #expect((object["role"]?["source"] as? String)?.hasPrefix("profile ") == true)
        #expect(object["heartbeat.interval_s"]?["value"] as? Double == 5)

        let table = try await ChildProcess.run(
            Binaries.nodeagent, ["config", "--profile", "lead"], outputDirectory: scratch.path)
        #expect(table.code == 0)
        #expect(table.stdout.contains("wireguard.cidr"))
    }

    @Test("aurora-cli doctor gives a verdict per check against a running agent")
    func doctor() async throws {
        let scratch = try ScratchDirectory("doctor")
        defer { scratch.remove() }
        let agent = try AgentHarness(
            profile: "edge", dataDir: scratch.path + "/data",
            extraArguments: ["--lead", "http://127.0.0.1:9", "--join-token", "aurjoin_unused"],
            outputDirectory: scratch.path)
        try await agent.waitHealthy(timeout: .seconds(30))
        let result = try await ChildProcess.run(
            Binaries.auroraCLI, ["doctor", "--json", "--agent", agent.baseURL, "--data-dir", agent.dataDir],
            outputDirectory: scratch.path)
        // Its lead (port 9) never answers: that check fails, so doctor exits 1; the rest is fine.
        #expect(result.code == 1, "\(result.stdout) \(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let checks = try #require(report["checks"] as? [[String: String]])
        func verdict(_ name: String) -> String? { checks.first { $0["name"] == name }?["verdict"] }
        #expect(verdict("lead") == "fail")
        #expect(checks.filter { $0["verdict"] == "fail" }.map { $0["name"] } == ["lead"])
        #expect(verdict("nodeagent binary") == "ok")
        #expect(verdict("shared libraries") == "ok")
        #expect(verdict("data dir") == "ok")
        #expect(verdict("key files") == "ok")
        #expect(verdict("agent") == "ok")
        #expect(verdict("operator token") == "ok")
        #expect(verdict("listen port") == "ok")
        #expect(verdict("store") == "skip")

        // A key file opened up to others is a failure with the fix.
        chmod(agent.dataDir + "/keys/sign.key", 0o644)
        let loose = try await ChildProcess.run(
            Binaries.auroraCLI, ["doctor", "--agent", agent.baseURL, "--data-dir", agent.dataDir],
            outputDirectory: scratch.path)
        #expect(loose.code == 1)
        #expect(loose.stdout.contains("fail  key files"))
        #expect(loose.stdout.contains("chmod 600"))
        agent.process.signal(SIGTERM)
        #expect(try await agent.process.waitForExit(timeout: .seconds(5)) == 0)
    }

    @Test("the systemd unit passes systemd-analyze verify", arguments: ["lead", "compute", "edge"])
    func systemdUnit(_ profile: String) async throws {
        try Binaries.requireTool("/usr/bin/systemd-analyze", hint: "install systemd")
        let scratch = try ScratchDirectory("unit")
        defer { scratch.remove() }
        let render = try await ChildProcess.run(
            Binaries.repositoryRoot + "/bootstrap",
            ["unit", "--profile", profile, "--bin-dir", Binaries.directory, "--lead", "http://127.0.0.1:9999"],
            outputDirectory: scratch.path)
        #expect(render.code == 0, "\(render.stderr)")
        #expect(
            render.stdout.contains(
                "ExecStart=\(Binaries.directory)/nodeagent run --profile \(profile) --data-dir /var/lib/aurora"))
        #expect(render.stdout.contains("Restart=on-failure"))
        #expect(render.stdout.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE"))
        let unit = scratch.path + "/nodeagent.service"
        try render.stdout.write(toFile: unit, atomically: true, encoding: .utf8)
        let verify = try await ChildProcess.run(
            "/usr/bin/systemd-analyze", ["verify", unit], outputDirectory: scratch.path)
        #expect(verify.code == 0, "\(verify.stderr)")
        // verify only warns (exit 0) about bad directives: no line may mention the unit.
        #expect(!verify.stderr.contains("nodeagent.service"), "\(verify.stderr)")
        let bad = try await ChildProcess.run(
            Binaries.repositoryRoot + "/bootstrap", ["unit", "--profile", "gpu"], outputDirectory: scratch.path)
        #expect(bad.code != 0)
        #expect(bad.stderr.contains("--profile must be lead, compute or edge, got 'gpu'"))
    }

    @Test("./bootstrap --help prints the usage and nothing of the script")
    func bootstrapHelp() async throws {
        let scratch = try ScratchDirectory("bootstrap-help")
        defer { scratch.remove() }
        for flag in ["--help", "-h", "help"] {
            let help = try await ChildProcess.run(
                Binaries.repositoryRoot + "/bootstrap", [flag], outputDirectory: scratch.path)
            #expect(help.code == 0, "\(help.stderr)")
            let lines = help.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.first?.hasPrefix("Aurora mesh: set up, build, run, test and install.") == true)
            #expect(help.stdout.contains("./bootstrap test "))
            #expect(!help.stdout.contains("set -euo pipefail") && !help.stdout.contains("cd \"$(dirname"))
            #expect(!help.stdout.contains("#"), "comment markers left in: \(help.stdout)")
        }
    }
}
