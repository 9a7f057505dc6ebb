import AuroraAPI
import Foundation
import Mesh
import Testing

@testable import NodeAgent

@Suite("Configuration layering and errors")
struct ConfigTests {
    let profileYAML = """
        role: compute
        listen: 127.0.0.1:7000
        company: acme
        heartbeat:
          interval_s: 2
        store:
          url: postgres://aurora:hunter2@db.example:5432/aurora
        """

    func inputs(nodeFile: String? = nil, environment: [String: String] = [:], flags: [String: String] = [:]) throws
        -> ConfigInputs
    {
        ConfigInputs(
            profile: try ConfigFile.parse(profileYAML, file: "profiles/compute.yaml", kind: .profile),
            nodeFile: try nodeFile.map { try ConfigFile.parse($0, file: "/etc/aurora/node.yaml", kind: .nodeFile) },
            environment: environment, flags: flags, hostName: "Box-7.example.net", workingDirectory: "/srv")
    }

    @Test("flags beat environment beat node file beat profile beat defaults, each with its source")
    func precedence() throws {
        let resolved = try ResolvedConfig.resolve(
            inputs(
                nodeFile: "listen: 127.0.0.1:7001\ncompany: globex\nname: from-file\n",
                environment: ["AURORA_LISTEN": "127.0.0.1:7002", "NODE_NAME": "from-env"],
                flags: ["listen": "127.0.0.1:7003"]))
        #expect(resolved["listen"] == .string("127.0.0.1:7003"))
        #expect(resolved.source(of: "listen") == .flag("--listen"))
        #expect(resolved["name"] == .string("from-env"))
        #expect(resolved.source(of: "name") == .environment("NODE_NAME"))
        #expect(resolved["company"] == .string("globex"))
        #expect(resolved.source(of: "company") == .nodeFile(file: "/etc/aurora/node.yaml", line: 2))
        #expect(resolved["heartbeat.interval_s"] == .string("2") || resolved["heartbeat.interval_s"] == .double(2))
        #expect(resolved.source(of: "heartbeat.interval_s") == .profile(file: "profiles/compute.yaml", line: 5))
        #expect(resolved["wireguard.mode"] == .string("off"))
        #expect(resolved.source(of: "wireguard.mode") == .defaultValue)
    }

    @Test("the node name defaults to the host name's first label, lower-cased")
    func hostNameDefault() throws {
        let resolved = try ResolvedConfig.resolve(inputs())
        #expect(resolved["name"] == .string("box-7"))
        #expect(resolved.source(of: "name") == .computed("host name"))
    }

    @Test("relative data dirs from flags resolve against the working directory")
    func relativePath() throws {
        let resolved = try ResolvedConfig.resolve(inputs(flags: ["data_dir": "state/../data"]))
        #expect(resolved["data_dir"] == .string("/srv/data"))
    }

    @Test("an unknown key names the file, the line and the key, with a suggestion")
    func unknownKey() {
        let error = #expect(throws: AgentError.self) {
            try ConfigFile.parse("role: lead\nwireguard:\n  mod: apply\n", file: "p.yaml", kind: .profile)
        }
        #expect(error?.message == "p.yaml:3: unknown key 'wireguard.mod'; did you mean 'wireguard.mode'?")
    }

    @Test("a bad value names the file, line, key, expectation and value")
    func badValue() {
        let error = #expect(throws: AgentError.self) {
            try ConfigFile.parse("role: lead\nwireguard:\n  listen_port: 99999\n", file: "p.yaml", kind: .profile)
        }
        #expect(error?.message == "p.yaml:3: 'wireguard.listen_port' must be an integer in 1...65535, got '99999'")
        let role = #expect(throws: AgentError.self) {
            try ConfigFile.parse("role: boss\n", file: "p.yaml", kind: .profile)
        }
        #expect(role?.message == "p.yaml:1: 'role' must be one of lead, compute, edge, got 'boss'")
    }

    @Test("a bad environment value names the variable")
    func badEnvironment() throws {
        let error = #expect(throws: AgentError.self) {
            try ResolvedConfig.resolve(inputs(environment: ["AURORA_LISTEN": "nowhere"]))
        }
        #expect(error?.message == "environment AURORA_LISTEN: 'listen' must be HOST:PORT, got 'nowhere'")
    }

    @Test("malformed YAML is one line with the position")
    func malformedYAML() {
        let error = #expect(throws: AgentError.self) {
            try ConfigFile.parse("role: lead\n  listen: [oops\n", file: "bad.yaml", kind: .profile)
        }
        let message = error?.message ?? ""
        #expect(message.hasPrefix("bad.yaml: invalid YAML: line "))
        #expect(!message.contains("\n"))
    }

    @Test("a list where a value belongs, and a scalar where a section belongs, are errors")
    func wrongShapes() {
        let list = #expect(throws: AgentError.self) {
            try ConfigFile.parse("listen: [a, b]\n", file: "p.yaml", kind: .profile)
        }
        #expect(list?.message == "p.yaml:1: 'listen' must be HOST:PORT, got a list")
        let section = #expect(throws: AgentError.self) {
            try ConfigFile.parse("gpu: yes\n", file: "p.yaml", kind: .profile)
        }
        #expect(section?.message.hasPrefix("p.yaml:1: 'gpu' is a section") == true)
    }

    @Test("dead_after must exceed suspect_after, naming both sources")
    func crossKey() throws {
        let error = #expect(throws: AgentError.self) {
            try ResolvedConfig.resolve(
                ConfigInputs(
                    profile: try ConfigFile.parse(
                        "role: lead\nheartbeat:\n  suspect_after: 5\n  dead_after: 5\n", file: "p.yaml", kind: .profile),
                    hostName: "h", workingDirectory: "/"))
        }
        #expect(error?.message.contains("'heartbeat.dead_after' (5, profile p.yaml:4)") == true)
    }

    @Test("exec settings: a fresh directory by default, exec.env on a clean base; bad paths and names are refused")
    func execSettings() throws {
        func resolve(_ yaml: String) throws -> ResolvedConfig {
            try ResolvedConfig.resolve(
                ConfigInputs(
                    profile: try ConfigFile.parse(
                        "role: compute\ndata_dir: /d\n" + yaml, file: "p.yaml", kind: .profile),
                    hostName: "h", workingDirectory: "/"))
        }
        let plain = NodeConfig(resolved: try resolve(""), profileFile: "p.yaml")
        #expect(plain.execWorkdir == nil && !plain.execKeepWorkdir && plain.execOutputTailBytes == 65_536)
        let settings = ExecSettings(config: plain)
        #expect(settings.directory(job: "j", attempt: 2) == ("/d/jobs/j-2", true))
        let configured = NodeConfig(
            resolved: try resolve("exec:\n  workdir: /srv/jobs\n  env: {HF_HOME: /cache}\n"),
            profileFile: "p.yaml")
        let fixed = ExecSettings(config: configured)
        #expect(fixed.directory(job: "j", attempt: 1) == ("/srv/jobs", false))
        let environment = fixed.environment(directory: "/srv/jobs", job: ["AURORA_JOB_ID": "j"])
        #expect(environment["HF_HOME"] == "/cache" && environment["HOME"] == "/srv/jobs")
        #expect(environment["TMPDIR"] == "/srv/jobs" && environment["LANG"] == "C.UTF-8")
        #expect(environment["AURORA_JOB_ID"] == "j" && environment["PATH"] != nil)
        #expect(Set(environment.keys) == ["PATH", "HOME", "TMPDIR", "LANG", "HF_HOME", "AURORA_JOB_ID"])
        let refused: [(String, String)] = [
            ("exec:\n  workdir: relative/dir\n", "absolute"),
            ("exec:\n  workdir: /a/../b\n", "'..'"),
            ("exec:\n  env: {AURORA_TOKEN: x}\n", "AURORA_TOKEN"),
            ("exec:\n  env: {CUDA_VISIBLE_DEVICES: \"0\"}\n", "CUDA_VISIBLE_DEVICES"),
            ("exec:\n  env: {\"1ABC\": x}\n", "not a variable name"),
            ("exec:\n  env: {\"A-B\": x}\n", "not a variable name"),
            ("exec:\n  env: {A: \"x\\u001by\"}\n", "control character"),
            ("exec:\n  output_tail_kib: 0\n", "output_tail_kib"),
        ]
        for (yaml, expected) in refused {
            let error = #expect(throws: AgentError.self, "\(yaml)") { try resolve(yaml) }
            #expect(error?.message.contains(expected) == true, "\(yaml): \(error?.message ?? "")")
        }
    }

    @Test("the GPU inventory parses and rejects incomplete entries")
    func gpus() throws {
        let layer = try ConfigFile.parse(
            """
            gpus:
              - {index: 0, name: RTX 4090, memory_total_mb: 24564, memory_used_mb: 512}
              - index: 1
                name: RTX 4090
                memory_total_mb: 24564
            """, file: "g.yaml", kind: .profile)
        guard case .gpus(let gpus) = layer.values["gpus"]?.value else {
            Issue.record("gpus did not parse")
            return
        }
        #expect(gpus.map(\.index) == [0, 1])
        #expect(gpus[0].memoryUsedMB == 512)
        #expect(gpus[1].uuid == "GPU-static-1")
        let missing = #expect(throws: AgentError.self) {
            try ConfigFile.parse("gpus:\n  - {index: 0, name: A100}\n", file: "g.yaml", kind: .profile)
        }
        #expect(missing?.message == "g.yaml:2: gpus[0] needs 'memory_total_mb'")
    }

    @Test("secrets are redacted: tokens whole, passwords inside URLs and libpq strings")
    func redaction() throws {
        let resolved = try ResolvedConfig.resolve(inputs(environment: ["AURORA_JOIN_TOKEN": "tok_supersecret"]))
        let table = resolved.renderTable()
        #expect(!table.contains("tok_supersecret"))
        #expect(!table.contains("hunter2"))
        #expect(table.contains("postgres://aurora:<redacted>@db.example:5432/aurora"))
        #expect(!resolved.renderJSON().contains("hunter2"))
        #expect(
            Redaction.redact("host=/tmp user=a password='x y' dbname=b")
                == "host=/tmp user=a password=<redacted> dbname=b")
        #expect(Redaction.redact("redis://:pw@127.0.0.1:6379") == "redis://:<redacted>@127.0.0.1:6379")
        #expect(Redaction.redact("tok") == "<redacted>")
    }

    @Test("the shipped profiles parse and set their role", arguments: ["lead", "compute", "edge"])
    func shippedProfiles(_ name: String) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("profiles/\(name).yaml").path
        let config = NodeConfig(
            resolved: try ResolvedConfig.resolve(
                ConfigInputs(
                    profile: try ConfigFile.load(path: path, kind: .profile), hostName: "h", workingDirectory: "/")),
            profileFile: path)
        #expect(config.role.rawValue == name)
        #expect(config.listen.description == "127.0.0.1:9999")
        // Every schema key is documented in every profile.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for key in ConfigSchema.keys {
            let leaf = key.path.split(separator: ".").last!
            #expect(text.contains("\(leaf):"), "\(name).yaml does not mention \(key.path)")
        }
    }

    @Test("a missing profile lists where it looked")
    func missingProfile() {
        let error = #expect(throws: AgentError.self) {
            try ProfileLocator.locate(
                "gpu-box", profilesDir: "/nonexistent", environment: [:], executable: "/usr/bin/true")
        }
        #expect(error?.code == .profileNotFound)
        #expect(
            error?.message.hasPrefix(
                "profile 'gpu-box' not found; looked for gpu-box.yaml in /nonexistent, /etc/aurora/profiles") == true)
    }
}
