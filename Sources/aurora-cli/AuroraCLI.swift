import ArgumentParser
import AuroraAPI
import AuroraClient
import AuroraTLS
import Foundation

/// `aurora-cli`: the operator's tool. It talks to agents only through AuroraClient (typed calls
/// over the AuroraAPI route table); it links no C library and not the daemon.
@main
struct AuroraCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aurora-cli",
        abstract: "Operate an Aurora mesh through the local nodeagent.",
        discussion: """
            The agent is http://127.0.0.1:9999 unless --agent or AURORA_AGENT says otherwise.
            The operator token comes from --token, AURORA_TOKEN, or DATA/admin.token
            (DATA: --data-dir, AURORA_DATA_DIR, default /var/lib/aurora).
            """,
        version: AuroraVersion.current,
        subcommands: [
            Status.self, Nodes.self, Jobs.self, Secrets.self, Connectivity.self, Token.self, Events.self, Backup.self,
            WG.self, Doctor.self,
            Logs.self, Restart.self, SSH.self,
        ])

    /// Accepted before the command too: `aurora-cli --data-dir D status`.
    @OptionGroup var options: AgentOptions

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as ExitCode {
            // A command's chosen exit status (status: 4 for a stale view): nothing more to say.
            Foundation.exit(error.rawValue)
        } catch let error as CLIError {
            fail(error)
        } catch let error as AuroraClientError {
            fail(CLIError(error))
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("aurora-cli: error: \(message) (see 'aurora-cli --help')\n".utf8))
            Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }

    private static func fail(_ error: CLIError) -> Never {
        FileHandle.standardError.write(Data("aurora-cli: error: \(error.message)\n".utf8))
        Foundation.exit(error.exitCode)
    }
}

/// Where the agent is and how to authenticate; shared by every command.
struct AgentOptions: ParsableArguments {
    @Option(help: "Agent URL (env AURORA_AGENT; default http://127.0.0.1:9999).")
    var agent: String?

    @Option(
        name: .customLong("data-dir"),
        help: "The agent's data directory, for the token (env AURORA_DATA_DIR; default /var/lib/aurora).")
    var dataDir: String?

    @Option(help: "Operator token (env AURORA_TOKEN; default: DATA/admin.token).")
    var token: String?

    @Option(help: "Pin of an https agent's TLS key, sha256:<hex> (env AURORA_PIN); checked before the token is sent.")
    var pin: String?

    /// `AURORA_PIN`, when it parses.
    static var environmentPin: TLSPin? {
        ProcessInfo.processInfo.environment["AURORA_PIN"].flatMap { TLSPin(parsing: $0) }
    }

    /// `--pin`, else `AURORA_PIN`.
    var resolvedPin: TLSPin? { pin.flatMap { TLSPin(parsing: $0) } ?? Self.environmentPin }

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// These options, with any left unset taken from `outer` (the ones given before the command).
    func merged(with outer: AgentOptions) -> AgentOptions {
        var merged = self
        merged.agent = agent ?? outer.agent
        merged.dataDir = dataDir ?? outer.dataDir
        merged.token = token ?? outer.token
        merged.pin = pin ?? outer.pin
        return merged
    }

    var agentURL: String {
        let url = agent ?? environment["AURORA_AGENT"].flatMap { $0.isEmpty ? nil : $0 } ?? Defaults.agentURL
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    var resolvedDataDir: String {
        dataDir ?? environment["AURORA_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? Defaults.dataDir
    }

    /// The token and where it came from, or why there is none.
    func resolveToken() -> Result<(token: String, source: String), CLIError> {
        if let token, !token.isEmpty { return .success((token, "--token")) }
        if let token = environment["AURORA_TOKEN"], !token.isEmpty { return .success((token, "AURORA_TOKEN")) }
        let path = resolvedDataDir + "/" + Defaults.adminTokenFile
        guard FileManager.default.fileExists(atPath: path) else {
            return .failure(CLIError("no operator token: \(path) does not exist; pass --token or set AURORA_TOKEN"))
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            return .failure(
                CLIError(
                    "no operator token: cannot read \(path) (run as the agent's user or root, or set AURORA_TOKEN)"))
        }
        return .success((text.trimmingCharacters(in: .whitespacesAndNewlines), path))
    }

    func validate() throws {
        guard let url = URL(string: agentURL), let scheme = url.scheme, ["http", "https"].contains(scheme),
            url.host != nil
        else {
            throw ValidationError("--agent must be an http(s) URL such as http://127.0.0.1:9999, got '\(agentURL)'")
        }
        if let pin, TLSPin(parsing: pin) == nil {
            throw ValidationError("--pin must be sha256: and 64 hex digits, got '\(pin)'")
        }
        if let text = environment["AURORA_PIN"], !text.isEmpty, TLSPin(parsing: text) == nil {
            throw ValidationError("AURORA_PIN must be sha256: and 64 hex digits")
        }
    }
}

/// A CLI failure: one line, and the exit code scripts can test.
struct CLIError: Error {
    var message: String
    var exitCode: Int32

    init(_ message: String, exitCode: Int32 = 1) {
        self.message = message
        self.exitCode = exitCode
    }

    /// Exit code 3: no agent answers (like `systemctl status` for a stopped unit).
    static func notRunning(_ url: String, _ reason: String) -> CLIError {
        CLIError(
            "no nodeagent is answering at \(url) (\(reason)); start it with './bootstrap run', 'nodeagent --profile lead' or 'systemctl start nodeagent'",
            exitCode: 3)
    }
}
