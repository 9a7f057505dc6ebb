import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

extension NodeRole: ExpressibleByArgument {}
extension TokenKind: ExpressibleByArgument {}
extension APIRole: ExpressibleByArgument {}

/// `aurora-cli nodes`: the registry.
struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, show, label, change, cordon, drain or remove mesh nodes.",
        subcommands: [
            List.self, Show.self, Label.self, Change.self, Cordon.self, Drain.self, Uncordon.self, Remove.self,
        ],
        defaultSubcommand: List.self)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One row per node (any agent; stale when the lead is away).",
            discussion: """
                The table fits 100 columns; --wide shows every column in full. When the lead is
                unreachable the agent answers from its cached copy: a STALE VIEW warning comes first
                (on stderr with --json), each state is marked with the copy's age, and the exit status is 4.
                Exit status 0; 3 when no agent answers; 4 when the view is a cached copy.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Flag(help: "Print the NodeList JSON: {nodes, stale, age_s?, reason?}.") var json = false
        @Flag(help: "Show every column (company, VPN IP, version, handshake) and cut no cell.") var wide = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let list = try await options.client().nodes()
            // Since when the lead is away: the agent's /health says.
            let lead = list.stale ? (try? await options.anonymousClient().health())?.lead : nil
            let warning = MeshTable.staleWarning(list, lead: lead, wide: wide)
            if json {
                if let warning { FileHandle.standardError.write(Data((warning.joined(separator: "\n") + "\n").utf8)) }
                print(try encodePretty(list))
            } else {
                print(
                    (warning.map { MeshTable.paintWarning($0) + "\n\n" } ?? "")
                        + MeshTable.render(list, wide: wide, colour: MeshTable.colour))
            }
            if list.stale { throw ExitCode(Status.staleExitCode) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One node's full record as JSON.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            print(try encodePretty(try await options.client().node(name)))
        }
    }

    struct Label: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set or remove a node's trusted labels (lead, operator token).",
            discussion: """
                Placement matches only trusted labels: those of the node's join token and those set here.
                What a node says of itself (its node file's labels) is shown as reported_labels, never trusted.
                Examples: aurora-cli nodes label gpu-1 zone=secure tier=a   ·   aurora-cli nodes label gpu-1 zone-
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String
        @Argument(help: "KEY=VALUE to set, KEY- to remove.") var changes: [String]
        @Flag(help: "Print the node's record as JSON.") var json = false

        func validate() throws {
            guard !changes.isEmpty else { throw ValidationError("give at least one KEY=VALUE or KEY-") }
            for change in changes
            where !(change.contains("=") && !change.hasPrefix("=")) && !(change.hasSuffix("-") && change.count > 1) {
                throw ValidationError("'\(change)' is neither KEY=VALUE nor KEY-")
            }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            var labels = try await client.node(name).labels
            for change in changes {
                if let equals = change.firstIndex(of: "=") {
                    labels[String(change[..<equals])] = String(change[change.index(after: equals)...])
                } else {
                    labels[String(change.dropLast())] = nil
                }
            }
            let node = try await client.setLabels(labels, of: name)
            print(
                json
                    ? try encodePretty(node)
                    : TerminalText.safe(
                        "\(node.name): "
                            + (node.labels.isEmpty
                                ? "no labels"
                                : node.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
                                    separator: " "))))
        }
    }

    struct Change: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Change what the operator decides of a node (lead, operator token): its company.",
            discussion: """
                A node's company comes from its join token or from here, never from its own node file; its
                secrets resolve through it (node > company > global). Records node.company_changed.
                Example: aurora-cli nodes set gpu-1 --company acme   ·   --company '' clears it
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String
        @Option(help: "The node's company ('' for none).") var company: String?
        @Flag(help: "Print the node's record as JSON.") var json = false

        func validate() throws {
            guard company != nil else { throw ValidationError("nothing to set: give --company C") }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let node = try await options.client().setCompany(company ?? "", of: name)
            print(
                json
                    ? try encodePretty(node)
                    : TerminalText.safe(
                        "\(node.name): " + (node.company.isEmpty ? "no company" : "company \(node.company)")))
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a node (lead, operator token): its record is deleted and its name and address are free.",
            discussion: """
                The node becomes 'left' (its jobs are requeued), then its record is deleted; its signed calls
                are refused, and it must join again with a token (it may then get another address). With
                --keep the record stays in the table as 'left' and holds its address for
                wireguard.reuse_after_s, so the same node joining again gets it back.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String
        @Flag(help: "Keep the record as 'left' instead of deleting it.") var keep = false
        @Flag(help: "Print the node's record (as it was removed) as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let node = try await options.client().removeNode(name, keep: keep)
            print(
                json
                    ? try encodePretty(node)
                    : keep ? "removed \(node.name) (kept as \(node.state.rawValue))" : "removed \(node.name)")
        }
    }
}

/// `aurora-cli token`: join tokens on the lead.
struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list or revoke join tokens (on the lead, with its operator token).",
        subcommands: [Create.self, List.self, Revoke.self])

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a join token, or a scoped API token; it is printed once and stored only as a hash.",
            discussion: """
                Join token:  aurora-cli token create --profile compute --ttl 1h --labels gpu=4090,zone=office
                API token:   aurora-cli token create --kind api --role submit [--company acme] [--ttl 30d]
                  read: nodes, topology, jobs, queue, GPU status, connectivity, replicas, events
                  submit: read, plus generate jobs (its own: submit, wait, cancel); never exec
                  admin: everything the mesh admin token may do
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Token
        @Option(help: "join (default) or api.") var kind: TokenKind = .join
        @Option(
            help: "Join tokens: the profile the joining node must run: compute, edge, or standby (a standby lead).")
        var profile: NodeRole?
        @Option(help: "API tokens: read, submit or admin.") var role: APIRole?
        @Option(
            help: "Company of the nodes that join with it (a node cannot choose its own), or of the API token's jobs.")
        var company: String?
        @Option(help: "Lifetime: 90s, 15m, 1h, 7d (join default 1h; API tokens default: until revoked).") var ttl:
            String?
        @Flag(help: "Allow many joins until it expires (default: single use).") var reusable = false
        @Option(help: "Trusted labels of the nodes that join with it (placement matches these): k=v[,k=v...].")
        var labels: String?
        @Flag(help: "Print JSON: {token, info}.") var json = false

        func validate() throws {
            if let ttl {
                guard TTL.seconds(ttl) != nil else {
                    throw ValidationError("--ttl must look like 90s, 15m, 1h or 7d, got '\(ttl)'")
                }
            }
            switch kind {
            case .join:
                guard let profile else {
                    throw ValidationError("--profile is required for a join token: compute, edge or standby")
                }
                guard profile != .lead else {
                    throw ValidationError("--profile must be compute or edge; a lead does not join")
                }
                guard role == nil else { throw ValidationError("--role is for API tokens (--kind api)") }
                if let labels { _ = try Labels.parse(labels) }
            case .api:
                guard role != nil else {
                    throw ValidationError("--role is required for an API token: read, submit or admin")
                }
                guard profile == nil, labels == nil, !reusable else {
                    throw ValidationError("--profile, --labels and --reusable are for join tokens")
                }
            }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            if kind == .api, let role {
                let created = try await options.client().createAPIToken(
                    TokenCreateRequest(apiRole: role, company: company, ttlS: ttl.flatMap(TTL.seconds)))
                if json { return print(try encodePretty(created)) }
                print(created.token)
                FileHandle.standardError.write(
                    Data(
                        "API token \(created.info.id): role \(created.info.role.rawValue)\(created.info.company.isEmpty ? "" : ", company \(created.info.company)"), expires \(created.info.expiresAt ?? "never"); use it as Authorization: Bearer TOKEN (or AURORA_TOKEN)\n"
                            .utf8))
                return
            }
            guard let profile else { return }
            let ttl = ttl ?? "1h"
            let request = TokenCreateRequest(
                profile: profile, company: company, ttlS: TTL.seconds(ttl), reusable: reusable,
                labels: try labels.map(Labels.parse))
            let created = try await options.client().createJoinToken(request)
            if json {
                print(try encodePretty(created))
            } else {
                print(created.token)
                var note =
                    "token \(created.info.id): \(created.info.profile.rawValue), \(created.info.reusable ? "reusable" : "single use"), expires \(created.info.expiresAt)\n"
                if let command = created.joinCommand, let pin = created.leadPin {
                    note +=
                        "the token pins the lead's key \(pin); save it in a 0600 file FILE on the new machine, then run:\n  \(command)\n"
                }
                FileHandle.standardError.write(Data(note.utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List join tokens (never the tokens themselves).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Token
        @Flag(help: "Print JSON: {tokens: [...]}.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let list = try await options.client().tokens()
            guard !json else { return print(try encodePretty(list)) }
            let rows =
                [["ID", "KIND", "PROFILE/ROLE", "COMPANY", "STATE", "USES", "REUSABLE", "EXPIRES"]]
                + list.tokens.map {
                    [
                        $0.id, "join", $0.profile.rawValue, $0.company.isEmpty ? "-" : $0.company, $0.state.rawValue,
                        String($0.uses),
                        $0.reusable ? "yes" : "no", $0.expiresAt,
                    ]
                }
                + (list.apiTokens ?? []).map {
                    [
                        $0.id, "api", $0.role.rawValue, $0.company.isEmpty ? "-" : $0.company, $0.state.rawValue, "-",
                        "-", $0.expiresAt ?? "never",
                    ]
                }
            print(Table.render(rows))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a join token (jt_...) or an API token (at_...) by id.",
            discussion: "Any unique prefix of the id will do: jt_3f2a, or 3f2a (4 or more hex digits).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Token
        @Argument(help: "The token's id, as 'token list' shows it, or a unique prefix of it.") var id: String
        @Flag(help: "Print the token's record as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let id = try await TokenID.resolve(self.id, with: client)
            if id.hasPrefix("at_") {
                let info = try await client.revokeAPIToken(id)
                return print(json ? try encodePretty(info) : "revoked \(info.id)")
            }
            let info = try await client.revokeJoinToken(id)
            print(json ? try encodePretty(info) : "revoked \(info.id)")
        }
    }
}

/// `aurora-cli events`: the event log, and with --follow the live stream.
struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print mesh events (node.joined, node.state_changed, node.left, ...) from the lead.",
        discussion: """
            Without --since it prints the last 50 events; --follow keeps streaming (Ctrl-C stops).
            When the stream ends or the lead stops answering, --follow says so on stderr, tries again
            (after 0.25 s, doubling up to 5 s) and resumes after the last event it printed
            (Last-Event-ID), so none is lost or printed twice. It exits only when told to give up:
            exit status 3 once the lead has been unreachable for --give-up-after.
            """)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI
    @Flag(help: "Keep streaming new events.") var follow = false
    @Option(help: "Start after this sequence number (0: from the beginning).") var since: Int64?
    @Flag(help: "One JSON event per line.") var json = false
    @Option(help: "Only these event types (comma-separated; job.* matches by prefix).") var type: String?
    @Option(help: "Only events of this node.") var node: String?
    @Option(
        name: .customLong("give-up-after"),
        help:
            "With --follow: exit (status 3) once no stream could be opened for this long: 30s, 5m, 1h (default: never)."
    )
    var giveUpAfter: String?

    func validate() throws {
        if let giveUpAfter {
            guard follow else { throw ValidationError("--give-up-after needs --follow") }
            guard TTL.seconds(giveUpAfter) != nil else {
                throw ValidationError("--give-up-after must look like 30s, 5m or 1h, got '\(giveUpAfter)'")
            }
        }
    }

    func run() async throws {
        let options = localOptions.merged(with: root.options)
        let client = try options.client()
        guard follow else {
            for try await received in try await client.events(
                since: since, tail: 50, follow: false, types: type, node: node)
            {
                show(received)
            }
            return
        }
        let reconnection = Reconnection(giveUpAfter: giveUpAfter.flatMap(TTL.seconds).map { .seconds($0) })
        var lastReason: String?
        do {
            for try await item in client.followEvents(
                since: since, tail: 50, types: type, node: node, reconnection: reconnection)
            {
                switch item {
                case .event(let received):
                    show(received)
                case .disconnected(let reason, let retryIn):
                    // Once per outage, and again only when the reason changes.
                    if reason != lastReason {
                        note(
                            "event stream from \(options.agentURL) lost (\(reason)); lead unreachable, reconnecting (next try in \(Self.seconds(retryIn)))…"
                        )
                    }
                    lastReason = reason
                case .reconnected(let after):
                    lastReason = nil
                    note("reconnected, resuming after event \(after.map(String.init) ?? "none")")
                }
            }
        } catch let error as AuroraClientError where error.code == .cannotConnect && lastReason != nil {
            throw CLIError(error.message, exitCode: 3)
        }
    }

    func show(_ received: ReceivedEvent) {
        let event = received.event
        if json {
            print(received.json)
        } else {
            let details = event.data.sorted { $0.key < $1.key }.map {
                "\($0.key)=\($0.value.string ?? String(decoding: (try? APICoding.encoder().encode($0.value)) ?? Data(), as: UTF8.self))"
            }
            print(
                TerminalText.safe(
                    "\(event.seq)  \(event.at)  \(event.type)  \(event.node ?? "-")  \(details.joined(separator: " "))"
                ))
        }
        fflush(nil)
    }

    /// One line on stderr: stdout carries only events.
    func note(_ text: String) {
        FileHandle.standardError.write(Data("aurora-cli: \(text)\n".utf8))
    }

    static func seconds(_ duration: Duration) -> String {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : String(format: "%.2fs", Double(ms) / 1000)
    }
}

// MARK: - Helpers

func encodePretty(_ value: some Encodable) throws -> String {
    String(decoding: try APICoding.encoder(pretty: true).encode(value), as: UTF8.self)
}

enum TTL {
    /// `90s`, `15m`, `1h`, `7d` or plain seconds.
    static func seconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let value = Int(text), value > 0 { return value }
        guard let unit = text.last, let scale = units[unit], let value = Int(text.dropLast()), value > 0 else {
            return nil
        }
        return value * scale
    }
}

enum Labels {
    static func parse(_ text: String) throws -> [String: String] {
        var labels: [String: String] = [:]
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("--labels must be k=v[,k=v...], got '\(pair)'")
            }
            labels[String(parts[0])] = String(parts[1])
        }
        return labels
    }
}

enum Table {
    static func render(_ rows: [[String]]) -> String {
        let rows = rows.map { $0.map { TerminalText.safe($0) } }
        guard let first = rows.first else { return "" }
        let widths = first.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            .joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
