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
            Which agent, token and pin: each setting comes from the first of
              1. its flag: --agent, --token, --data-dir (token in DATA/admin.token), --pin
              2. the environment: AURORA_AGENT, AURORA_TOKEN, AURORA_DATA_DIR, AURORA_PIN
              3. the selected context: --context NAME, else AURORA_CONTEXT, else the
                 current one ('aurora-cli context use NAME'; see 'aurora-cli context')
              4. the defaults: http://127.0.0.1:9999, token in /var/lib/aurora/admin.token
            A context's token and pin go only to its own agent.
            Ids (jobs, tokens, backups) may be shortened to any unique prefix.
            """,
        version: AuroraVersion.current,
        subcommands: [
            Status.self, Nodes.self, Jobs.self, Secrets.self, Connectivity.self, Token.self, Events.self, Backup.self,
            WG.self, Doctor.self, ContextCommand.self, Lead.self,
            Logs.self, Restart.self, SSH.self, Models.self, Keys.self,
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

/// Where the agent is and how to authenticate; shared by every command. Each setting comes
/// from the first of: its flag, its environment variable, the selected context, the default
/// (``AgentSettings``).
struct AgentOptions: ParsableArguments {
    @Option(help: "Agent URL (env AURORA_AGENT; else the context's; default http://127.0.0.1:9999).")
    var agent: String?

    @Option(
        name: .customLong("data-dir"),
        help:
            "The agent's data directory, for DATA/admin.token (env AURORA_DATA_DIR; else the context's token; default /var/lib/aurora)."
    )
    var dataDir: String?

    @Option(help: "Operator token (env AURORA_TOKEN); prefer AURORA_TOKEN or a context: argv is visible to others.")
    var token: String?

    @Option(
        help:
            "Pin of an https agent's TLS key, sha256:<hex> (env AURORA_PIN; else the context's); checked before the token is sent."
    )
    var pin: String?

    @Option(help: "Use this saved context for this command (env AURORA_CONTEXT; default: the one 'context use' chose).")
    var context: String?

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// These options, with any left unset taken from `outer` (the ones given before the command).
    func merged(with outer: AgentOptions) -> AgentOptions {
        var merged = self
        merged.agent = agent ?? outer.agent
        merged.dataDir = dataDir ?? outer.dataDir
        merged.token = token ?? outer.token
        merged.pin = pin ?? outer.pin
        merged.context = context ?? outer.context
        return merged
    }

    /// Agent, pin and token source after flags, environment, context and defaults.
    func settings() throws(AuroraClientError) -> AgentSettings {
        let environment = environment
        return try AgentSettings.resolve(
            AgentSettings.Choice(agent: agent, token: token, dataDir: dataDir, pin: pin, context: context),
            environment: environment
        ) { () throws(AuroraClientError) in try ContextStore(environment: environment) }
    }

    /// The agent's URL; when the context cannot be read, what flags, environment and default say
    /// (the call that needs the context reports why).
    var agentURL: String {
        if let settings = try? settings() { return settings.agentURL }
        let url = agent ?? environment["AURORA_AGENT"].flatMap { $0.isEmpty ? nil : $0 } ?? Defaults.agentURL
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    /// The pin, from --pin, AURORA_PIN or the context.
    var resolvedPin: TLSPin? { (try? settings())?.pin }

    /// --data-dir, AURORA_DATA_DIR or the default: the local agent's data directory.
    var resolvedDataDir: String {
        dataDir ?? environment["AURORA_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? Defaults.dataDir
    }

    /// The token and where it came from, or why there is none (which data dir or context was
    /// tried, what chose it, and how to choose another).
    func resolveToken() -> Result<(token: String, source: String), CLIError> {
        do {
            return .success(try settings().token())
        } catch {
            return .failure(CLIError(error.message))
        }
    }

    func validate() throws {
        if let text = agent ?? environment["AURORA_AGENT"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let url = URL(string: text), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil
            else {
                throw ValidationError(
                    "\(agent == nil ? "AURORA_AGENT" : "--agent") must be an http(s) URL such as http://127.0.0.1:9999, got '\(text)'"
                )
            }
        }
        if let pin, TLSPin(parsing: pin) == nil {
            throw ValidationError("--pin must be sha256: and 64 hex digits, got '\(pin)'")
        }
        if let text = environment["AURORA_PIN"], !text.isEmpty, TLSPin(parsing: text) == nil {
            throw ValidationError("AURORA_PIN must be sha256: and 64 hex digits")
        }
        if let context {
            do { try AgentContext.validateName(context) } catch { throw ValidationError("--context: \(error.message)") }
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
