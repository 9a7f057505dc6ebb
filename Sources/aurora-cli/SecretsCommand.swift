import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli secrets`: the secrets manager.
struct Secrets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, get, list secrets, see their history, roll back, read the audit log.",
        discussion: """
            Values are sealed at rest on the lead and resolve node > company > global.
            set, list, history, rollback and audit go to the lead (its operator token);
            get works on any agent: on a node it returns what resolves for that node.
            """,
        subcommands: [Set.self, Get.self, List.self, History.self, Rollback.self, Audit.self, RotateKey.self])

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    /// `--scope` and `--scope-id`, shared by the commands that name one scope.
    struct ScopeOptions: ParsableArguments {
        @Option(help: "global, company or node.") var scope: String = "global"
        @Option(name: .customLong("scope-id"), help: "The company or node name (not for global).") var scopeID: String?
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store a new version; the value comes from stdin or --file, never from the command line.",
            discussion:
                "Example: printf %s \"$KEY\" | aurora-cli secrets set openai api_key --scope company --scope-id acme")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Argument(help: "Service, e.g. openai.") var service: String
        @Argument(help: "Key name, e.g. api_key.") var keyName: String
        @OptionGroup var scope: ScopeOptions
        @Option(help: "Read the value from this file instead of stdin.") var file: String?
        @Flag(help: "Print the new version as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            var data: Data
            if let file {
                guard let contents = FileManager.default.contents(atPath: file) else {
                    throw CLIError("cannot read \(file)")
                }
                data = contents
            } else {
                data = FileHandle.standardInput.readDataToEndOfFile()
            }
            if data.last == 0x0A { data.removeLast() }  // one trailing newline from `echo`
            guard !data.isEmpty else { throw CLIError("the value is empty: pipe it on stdin or give --file") }
            let write = SecretWrite(
                service: service, keyName: keyName, value: String(decoding: data, as: UTF8.self), scope: scope.scope,
                scopeID: scope.scopeID)
            let info = try await options.client().writeSecret(write)
            print(
                json
                    ? try encodePretty(info)
                    : "\(info.service)/\(info.keyName) at \(info.scope)\(info.scopeID.isEmpty ? "" : ":" + info.scopeID): version \(info.version)"
            )
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the value that resolves (on a node: for that node; on the lead: --node or --company).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Argument(help: "Service.") var service: String
        @Argument(help: "Key name.") var keyName: String
        @Option(help: "Lead: preview what resolves for this node.") var node: String?
        @Option(help: "Lead: preview what resolves for this company.") var company: String?
        @Flag(help: "Print JSON with the winning scope and version.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let read = try await options.client().readSecret(
                service: service, key: keyName, node: node, company: company)
            print(json ? try encodePretty(read) : read.value ?? "")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Names, scopes and current versions; never values.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let list = try await options.client().secrets()
            if json { return print(try encodePretty(list)) }
            print(
                JobTable.table(
                    ["SERVICE", "KEY", "SCOPE", "VERSION", "UPDATED"],
                    list.secrets.map { secret in
                        [
                            secret.service, secret.keyName,
                            secret.scopeID.isEmpty ? secret.scope : "\(secret.scope):\(secret.scopeID)",
                            String(secret.version),
                            secret.updatedAt.map { MeshTable.lastSeen($0) } ?? "-",
                        ]
                    }))
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every version of a secret at one scope.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Argument(help: "Service.") var service: String
        @Argument(help: "Key name.") var keyName: String
        @OptionGroup var scope: ScopeOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let versions = try await options.client().secretVersions(
                service: service, key: keyName, scope: scope.scope, scopeID: scope.scopeID)
            if json { return print(try encodePretty(versions)) }
            print(
                JobTable.table(
                    ["VERSION", "CREATED", "BY", "CURRENT", "RESTORED FROM"],
                    versions.versions.map { version in
                        [
                            String(version.version), version.createdAt, version.createdBy, version.current ? "yes" : "",
                            version.restoredFrom.map(String.init) ?? "",
                        ]
                    }))
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an earlier version's value current again (as a new version).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Argument(help: "Service.") var service: String
        @Argument(help: "Key name.") var keyName: String
        @OptionGroup var scope: ScopeOptions
        @Option(help: "The version to restore.") var version: Int
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let info = try await options.client().rollbackSecret(
                service: service, key: keyName,
                SecretRollback(scope: scope.scope, scopeID: scope.scopeID, version: version))
            print(
                json
                    ? try encodePretty(info)
                    : "\(info.service)/\(info.keyName): version \(info.version) now holds version \(version)'s value")
        }
    }

    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The audit log of every secret read and write; --verify checks its hash chain.",
            discussion: "Exit status 1 when --verify finds the log changed, cut or reordered.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Flag(help: "Check the whole hash chain.") var verify = false
        @Option(help: "How many of the newest entries to print.") var limit = 50
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let log = try await options.client().audit(limit: limit, verify: verify)
            if json {
                print(try encodePretty(log))
            } else {
                print(
                    JobTable.table(
                        ["SEQ", "AT", "ACTOR", "ACTION", "SECRET", "NODE", "SCOPE", "VERSION", "RESULT"],
                        log.entries.map { entry in
                            [
                                String(entry.seq), entry.at, entry.actor, entry.action,
                                "\(entry.service)/\(entry.keyName)", entry.node ?? "-", entry.scope ?? "-",
                                entry.version.map(String.init) ?? "-", entry.result,
                            ]
                        }))
                if verify {
                    print(log.verified == true ? "chain verified" : "CHAIN BROKEN: \(log.problem ?? "unknown")")
                }
            }
            if verify && log.verified != true { throw ExitCode(1) }
        }
    }

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-key",
            abstract: "Re-wrap every data key under a new key-encryption key, online (values are not re-encrypted).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Secrets
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let rotation = try await options.client().rotateSecretsKey()
            print(
                json
                    ? try encodePretty(rotation)
                    : "key-encryption key \(rotation.fromVersion) → \(rotation.toVersion): \(rotation.rewrapped) data keys re-wrapped in \(rotation.seconds) s"
            )
        }
    }
}

/// `aurora-cli connectivity`: every node's view of the external APIs their profiles probe.
struct Connectivity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Node × service connectivity (healthy, degraded, down) and per-service health.",
        discussion: "Exit status 0 when everything is healthy, 1 otherwise.")

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI
    @Flag(help: "Print {status, health} as JSON.") var json = false

    struct Output: Codable {
        var status: ConnectivityMatrix
        var health: ConnectivityHealth
    }

    func run() async throws {
        let options = localOptions.merged(with: root.options)
        let client = try options.client()
        let status = try await client.connectivityStatus()
        let health = try await client.connectivityHealth()
        if json {
            print(try encodePretty(Output(status: status, health: health)))
        } else {
            var rows: [[String]] = []
            for node in status.nodes.keys.sorted() {
                for (service, result) in status.nodes[node]!.sorted(by: { $0.key < $1.key }) {
                    rows.append([
                        node, service, result.state.rawValue,
                        result.latencyMs.map { String(format: "%.1f ms", $0) } ?? "-",
                        result.status.map(String.init) ?? "-", result.error ?? "",
                    ])
                }
            }
            print(JobTable.table(["NODE", "SERVICE", "STATE", "LATENCY", "STATUS", "ERROR"], rows))
            let services = health.services.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.state.rawValue)" }
                .joined(separator: ", ")
            print("overall \(health.state.rawValue)" + (services.isEmpty ? "" : "  ·  \(services)"))
        }
        if health.state != .healthy { throw ExitCode(1) }
    }
}
