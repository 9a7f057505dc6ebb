import ArgumentParser
import AuroraAPI
import Foundation
import Logging
import Metrics
import NodeAgent
import Prometheus

/// `nodeagent`: the Aurora mesh daemon.
@main
struct Nodeagent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodeagent",
        abstract: "The Aurora mesh node agent: one daemon for the lead, compute and edge nodes.",
        discussion: """
            Start a lead on a fresh machine:    nodeagent --profile lead --data-dir ./data
            See the resolved configuration:    nodeagent config --profile compute

            Configuration precedence: flags > environment (NODE_NAME, NODE_ROLE, VPN_IP, AURORA_LEAD,
            AURORA_JOIN_TOKEN, AURORA_DATA_DIR, AURORA_LISTEN, AURORA_STORE, AURORA_LOG_LEVEL)
            > node file (--config) > profile (profiles/NAME.yaml) > built-in defaults.
            """,
        version: AuroraVersion.current,
        subcommands: [Run.self, Config.self],
        defaultSubcommand: Run.self)

    /// Parses and runs; every error is a single line on stderr and a non-zero exit code.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withOneLineError: error)
        }
    }

    static func exit(withOneLineError error: any Error) -> Never {
        if let error = error as? AgentError {
            FileHandle.standardError.write(Data("nodeagent: error: \(error.message)\n".utf8))
            Foundation.exit(1)
        }
        let code = exitCode(for: error)
        if code == .success {  // --help, --version
            print(fullMessage(for: error))
            Foundation.exit(0)
        }
        let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        FileHandle.standardError.write(Data("nodeagent: error: \(message) (see 'nodeagent --help')\n".utf8))
        Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
    }
}

/// Flags shared by the commands that resolve a configuration.
struct ConfigOptions: ParsableArguments {
    @Option(help: "Profile: lead, compute, edge, or a path to a YAML file. Env: NODE_ROLE picks one when omitted.")
    var profile: String?

    @Option(
        name: .customLong("profiles-dir"),
        help: "Directory of profile files (default: /etc/aurora/profiles, then next to the binary).")
    var profilesDir: String?

    @Option(help: "Node file (YAML) layered over the profile. Env: AURORA_CONFIG.")
    var config: String?

    @Option(
        name: .customLong("data-dir"),
        help: "Data directory (keys, tokens, managed PostgreSQL). Default /var/lib/aurora.")
    var dataDir: String?

    @Option(help: "HTTP listen address HOST:PORT. Default 127.0.0.1:9999.")
    var listen: String?

    @Option(help: "Node name in the mesh. Default: the host name.")
    var name: String?

    @Option(
        name: .customLong("tls-listen"),
        help: "TLS 1.3 listen address HOST:PORT for nodes and remote operators (self-signed; peers pin its key).")
    var tlsListen: String?

    @Option(help: "URL of the lead agent (compute and edge nodes).")
    var lead: String?

    @Option(
        name: .customLong("join-token"),
        help:
            "Join token for the first start. Visible in the process list: prefer --join-token-file or AURORA_JOIN_TOKEN."
    )
    var joinToken: String?

    @Option(
        name: .customLong("join-token-file"),
        help: "File holding the join token (first start); keep it 0600 and delete it after joining.")
    var joinTokenFile: String?

    @Option(help: "PostgreSQL URL for the lead's store; default: a managed cluster in DATA/postgres.")
    var store: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    @Flag(
        name: .customLong("leave-on-stop"),
        help: "On SIGTERM, tell the lead this node leaves (state 'left', not 'dead').")
    var leaveOnStop = false

    @Flag(
        help:
            "With --profile lead: join the lead given by --lead as a standby lead (--join-token-file from 'aurora-cli token create --profile standby')."
    )
    var standby = false

    @Option(
        name: .customLong("secrets-passphrase-file"),
        help:
            "Lead: derive the secrets master key from the passphrase in this file (Argon2id) instead of DATA/keys/secrets.master."
    )
    var secretsPassphraseFile: String?

    func validate() throws {
        if joinToken != nil, joinTokenFile != nil {
            throw ValidationError("give --join-token or --join-token-file, not both")
        }
    }

    var request: ConfigLoader.Request {
        get throws {
            var flags: [String: String] = [:]
            flags["data_dir"] = dataDir
            flags["listen"] = listen
            flags["tls.listen"] = tlsListen
            flags["name"] = name
            flags["lead"] = lead
            flags["join_token"] = joinToken
            if let joinTokenFile {
                guard let text = try? String(contentsOfFile: joinTokenFile, encoding: .utf8) else {
                    throw ValidationError("--join-token-file: cannot read '\(joinTokenFile)'")
                }
                let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty, !token.contains(where: { $0.isNewline || $0 == " " }) else {
                    throw ValidationError(
                        "--join-token-file: '\(joinTokenFile)' must hold one token (aurora-cli token create prints it)")
                }
                flags["join_token"] = token
            }
            flags["store.url"] = store
            flags["log.level"] = logLevel
            if leaveOnStop { flags["leave_on_stop"] = "true" }
            if standby { flags["standby"] = "true" }
            flags["secrets.passphrase_file"] = secretsPassphraseFile
            return ConfigLoader.Request(profile: profile, profilesDir: profilesDir, configFile: config, flags: flags)
        }
    }
}

extension Nodeagent {
    /// `nodeagent run`: the daemon (the default command).
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the agent until SIGTERM or SIGINT (the default command).")

        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let config = try ConfigLoader.load(options.request)
            let level = config.logLevel
            // stderr, and the ring of recent lines per subsystem that `aurora-cli logs` reads.
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                var ring = RingLogHandler(label: label)
                ring.logLevel = level
                return MultiplexLogHandler([handler, ring])
            }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(HelpfulMetricsFactory(registry: registry))
            if try await Agent.run(config: config, metrics: registry, logger: Logger(label: "nodeagent")) {
                // Promoted from standby: the same command line starts the lead.
                throw Reexec.now()
            }
        }
    }

    /// `nodeagent config`: the resolved configuration, redacted, with sources.
    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the resolved configuration with the source of each value; secrets are redacted.")

        @OptionGroup var options: ConfigOptions

        @Flag(help: "Print JSON: {key: {value, source, doc}}.")
        var json = false

        func run() async throws {
            let config = try ConfigLoader.load(options.request)
            if json {
                print(config.resolved.renderJSON())
            } else {
                print("# profile: \(config.profileFile)")
                print(config.resolved.renderTable())
            }
        }
    }
}
