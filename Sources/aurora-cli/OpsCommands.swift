import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli logs`: recent structured log lines of an agent, by subsystem.
struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Recent log lines of the local agent or of another node (the agent keeps the last lines of each subsystem).",
        discussion: """
            Examples: aurora-cli logs; aurora-cli logs gpu-worker --follow; aurora-cli logs checks --node gpu-1 --level warning.
            --node reads another node's agent through the lead (the lead signs the call).
            """)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI
    @Argument(
        help:
            "A subsystem (gpu-worker, membership, connectivity, checks, alerts, outbox, redis, store, ...); all when omitted."
    )
    var subsystem: String?
    @Option(help: "Read this node's logs (through the lead).") var node: String?
    @Flag(help: "Keep printing new lines (Ctrl-C stops).") var follow = false
    @Option(help: "How many recent lines to print first (1-10000).") var lines = 100
    @Option(help: "Least severe level: trace, debug, info, notice, warning, error, critical.") var level: String?
    @Flag(help: "One JSON line per log line.") var json = false

    func validate() throws {
        guard (1...10_000).contains(lines) else { throw ValidationError("--lines must be 1-10000, got \(lines)") }
        if let level, !["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) {
            throw ValidationError(
                "--level must be trace, debug, info, notice, warning, error or critical, got '\(level)'")
        }
    }

    func run() async throws {
        let options = localOptions.merged(with: root.options)
        let client = try options.client()
        var since: Int64 = 0
        var limit = lines
        repeat {
            let page = try await client.logs(limit: limit, since: since, subsystem: subsystem, node: node, level: level)
            for line in page.lines {
                if json {
                    print(String(decoding: try APICoding.encoder().encode(line), as: UTF8.self))
                } else {
                    let details = line.metadata.filter { $0.key != "node" }.sorted { $0.key < $1.key }.map {
                        "\($0.key)=\($0.value)"
                    }.joined(separator: " ")
                    print(
                        TerminalText.safe(
                            "\(line.at)  \(line.level.padding(toLength: 8, withPad: " ", startingAt: 0))\(line.subsystem.padding(toLength: 13, withPad: " ", startingAt: 0)) \(line.message)\(details.isEmpty ? "" : "  " + details)"
                        ))
                }
                since = max(since, line.seq)
            }
            fflush(nil)
            limit = 1000
            if follow { try await Task.sleep(for: .milliseconds(500)) }
        } while follow
    }
}

/// `aurora-cli restart SUBSYSTEM`: restarts one subsystem of the local agent in place.
struct Restart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Restart one subsystem of the local agent (gpu-worker, connectivity, checks, alerts, outbox, redis) without restarting the process.",
        discussion: """
            The subsystem stops as it would on SIGTERM (the GPU worker hands its running jobs back to the lead) and starts again.
            The names are those of `aurora-cli logs`; `gpu` is accepted for gpu-worker.
            Without a name it lists the agent's restartable subsystems.
            """)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI
    @Argument(help: "The subsystem to restart.") var subsystem: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let options = localOptions.merged(with: root.options)
        let client = try options.client()
        guard let subsystem else {
            let list = try await client.subsystems()
            guard !json else { return print(try encodePretty(list)) }
            let rows =
                [["SUBSYSTEM", "STATE", "RESTARTS", "STARTED"]]
                + list.subsystems.map { [$0.name, $0.state, String($0.restarts), $0.startedAt ?? "-"] }
            return print(Table.render(rows))
        }
        let state = try await client.restartSubsystem(subsystem)
        print(
            json
                ? try encodePretty(state)
                : "restarted \(state.name): \(state.state), \(state.restarts) restart\(state.restarts == 1 ? "" : "s") since the agent started"
        )
    }
}

/// `aurora-cli ssh NODE`: ssh to a node's mesh (VPN) address.
struct SSH: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh",
        abstract: "Run ssh to a node by its mesh name, or its mesh address (vpn_ip from the registry).",
        discussion: """
            The node's mesh name (NAME.aurora.internal, or --domain) is used when this machine resolves it to \
            the node's mesh address (the agent's dns.configure: hosts, or a resolver asking its DNS server); \
            otherwise the address itself.
            Example: aurora-cli ssh gpu-1 --user root -- -L 8080:127.0.0.1:8080. --dry-run prints the command instead.
            """
    )

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI
    @Argument(help: "The node's name.") var node: String
    @Option(help: "Remote user (ssh -l).") var user: String?
    @Flag(name: .customLong("dry-run"), help: "Print the ssh command line and exit.") var dryRun = false
    @Option(help: "The mesh's DNS domain (the agents' dns.domain).") var domain = "aurora.internal"
    @Argument(parsing: .postTerminator, help: "More arguments for ssh, after --.") var sshArguments: [String] = []

    func validate() throws {
        if let user, user.isEmpty || user.hasPrefix("-") || user.contains("@") {
            throw ValidationError("--user must be a user name, got '\(user)'")
        }
    }

    func run() async throws {
        let options = localOptions.merged(with: root.options)
        let record = try await options.client().node(node)
        guard !record.vpnIP.isEmpty else { throw CLIError("node '\(node)' has no mesh address yet") }
        let name = record.name.lowercased() + "." + domain.lowercased()
        let host = Self.resolvesIPv4(name) == record.vpnIP ? name : record.vpnIP
        let argv = ["ssh"] + (user.map { ["-l", $0] } ?? []) + sshArguments + [host]
        if dryRun {
            print(argv.map(Self.quote).joined(separator: " "))
            return
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        guard
            let ssh = path.split(separator: ":").map({ "\($0)/ssh" }).first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw CLIError("ssh is not installed (apt-get install openssh-client)")
        }
        fflush(nil)
        let arguments = argv.map { strdup($0) } + [nil]
        execv(ssh, arguments)
        throw CLIError("cannot run \(ssh): \(String(cString: strerror(errno)))")
    }

    /// The first IPv4 address the system's resolver gives `name` (hosts file, DNS), or nil.
    static func resolvesIPv4(_ name: String) -> String? {
        guard name.utf8.count <= 253, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let address = first.pointee.ai_addr else { return nil }
        return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            var raw = pointer.pointee.sin_addr
            guard inet_ntop(AF_INET, &raw, &text, socklen_t(text.count)) != nil else { return nil }
            return String(cString: text)
        }
    }

    /// Shell quoting for printing, only where needed.
    static func quote(_ word: String) -> String {
        let safe = CharacterSet(
            charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")
        if !word.isEmpty, word.unicodeScalars.allSatisfy(safe.contains) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
