import ArgumentParser
import AuroraAPI
import AuroraClient
import AuroraTLS
import Foundation

/// `aurora-cli context`: saved agents, so that commands need no `--agent`, `--data-dir` or
/// token each time.
struct ContextCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "context",
        abstract: "Save agents (URL, pin, token) under a name and pick the one commands use.",
        discussion: """
            aurora-cli context add prod --agent https://lead.example:9443 \\
                --pin sha256:... --token-file ~/prod.token
            aurora-cli context use prod          # status, nodes, jobs ... go to prod
            aurora-cli --context local jobs list # one command elsewhere
                                                 # (or AURORA_CONTEXT=local)

            The token is copied into the context (the file it came from may go)
            and is never printed. Contexts live in $XDG_CONFIG_HOME/aurora
            (default ~/.config/aurora): contexts/NAME.json and current-context;
            the directories are 0700, the files 0600.

            Flags (--agent, --token, --data-dir, --pin), then AURORA_AGENT,
            AURORA_TOKEN, AURORA_DATA_DIR and AURORA_PIN beat the context. A
            context's token and pin go only to its own agent.
            """,
        subcommands: [Add.self, Use.self, List.self, Show.self, Remove.self])

    /// `--agent` and `--pin` of `context add` are the shared options' (the root command takes
    /// them too, wherever they are written).
    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    /// The store of the user running the command.
    static func store() throws(AuroraClientError) -> ContextStore {
        try ContextStore(environment: ProcessInfo.processInfo.environment)
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save an agent's URL, the pin of its TLS key (https) and a copy of an operator token.",
            discussion: """
                Required: --agent URL (http or https) and the token, from either
                  --token-file FILE  one token: an agent's admin.token, or one from
                                     'aurora-cli token create --kind api' ('-': stdin)
                  --data-dir DIR     copies DIR/admin.token
                An https agent needs --pin sha256:<64 hex>: the agent logs it at
                start, and 'token create' on the lead prints it.
                NAME: 1-32 of a-z, 0-9, '.', '_' and '-'.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: ContextCommand
        @Argument(help: "The context's name.") var name: String
        @Option(name: .customLong("token-file"), help: "A file holding the operator token ('-': stdin).")
        var tokenFile: String?
        @Flag(help: "Replace a context of the same name.") var force = false
        @Flag(help: "Make it the current context as well.") var use = false

        func validate() throws {
            do { try AgentContext.validateName(name) } catch { throw ValidationError(error.message) }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            guard let agent = options.agent else {
                throw ValidationError("--agent URL is required: the agent this context talks to")
            }
            guard options.token == nil else {
                throw ValidationError(
                    "context add takes the token from --token-file (or --data-dir), never from the command line")
            }
            guard options.context == nil else { throw ValidationError("--context is not for context add") }
            let source: String
            switch (tokenFile, options.dataDir) {
            case (let file?, nil): source = file
            case (nil, let directory?): source = directory + "/" + Defaults.adminTokenFile
            default: throw ValidationError("give the token with --token-file FILE or --data-dir DIR (one of them)")
            }
            let token = try readToken(source, shown: tokenFile == nil ? "--data-dir" : "--token-file")
            let context: AgentContext
            do {
                context = try AgentContext(name: name, agent: agent, pin: options.pin, token: token)
            } catch {
                throw ValidationError(error.message)
            }
            let store = try ContextCommand.store()
            try store.add(context, replace: force)
            if use { try store.use(name) }
            print(
                "saved context '\(name)' (\(context.agent)) in \(store.path(of: name))"
                    + (use ? "; it is the current context" : "; 'aurora-cli context use \(name)' makes it current"))
        }

        /// The token in `path` (`-`: stdin), trimmed; at most 64 KiB is read.
        func readToken(_ path: String, shown option: String) throws -> String {
            let shownPath = TerminalText.safe(path)
            let data: Data?
            if path == "-" {
                data = try? FileHandle.standardInput.read(upToCount: 64 * 1024)
            } else {
                guard let handle = FileHandle(forReadingAtPath: path) else {
                    let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
                    throw CLIError("\(option): \(shownPath) \(reason)")
                }
                defer { try? handle.close() }
                data = try? handle.read(upToCount: 64 * 1024)
            }
            let token = String(decoding: data ?? Data(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            do {
                try AgentContext.validateToken(token)
            } catch {
                throw CLIError("\(option): \(shownPath): \(error.message)")
            }
            return token
        }
    }

    struct Use: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a saved context the current one (commands use it when no flag or variable says otherwise).")
        @Argument(help: "The context's name.") var name: String?
        @Flag(name: .customLong("none"), help: "Forget the current context: commands fall back to their defaults.")
        var clear = false

        func validate() throws {
            guard (name == nil) == clear else { throw ValidationError("give a context's NAME, or --none") }
        }

        func run() async throws {
            let store = try ContextCommand.store()
            guard let name else {
                try store.clearCurrent()
                return print("no current context: commands use their flags, AURORA_* variables and defaults")
            }
            try store.use(name)
            print("current context: \(name)")
        }
    }

    /// One line of `context list --json`.
    struct Entry: Codable {
        var name: String
        var agent: String?
        var pin: String?
        var current: Bool
        /// Why the context cannot be used, when its file is damaged.
        var error: String?
    }

    struct ListOutput: Codable {
        var current: String?
        var contexts: [Entry]
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the saved contexts; * marks the current one (never the tokens).")
        @Flag(help: "Print {current, contexts: [{name, agent, pin, current, error}]} as JSON.") var json = false

        func run() async throws {
            let store = try ContextCommand.store()
            let current = try? store.current()
            let entries = try store.names().map { name -> Entry in
                do {
                    let context = try store.context(name)
                    return Entry(
                        name: name, agent: context.agent, pin: context.pin?.description, current: name == current)
                } catch {
                    return Entry(
                        name: name, current: name == current,
                        error: (error as? AuroraClientError)?.message ?? "\(error)")
                }
            }
            if json { return print(try encodePretty(ListOutput(current: current, contexts: entries))) }
            guard !entries.isEmpty else {
                return print("no saved contexts; add one with 'aurora-cli context add NAME --agent URL --token-file F'")
            }
            let rows = entries.map { entry -> [String] in
                let agent = entry.agent ?? "(damaged: see 'context show \(entry.name)')"
                let pin = entry.pin.map { String($0.prefix(19)) + "…" } ?? "-"
                return [entry.current ? "*" : "", entry.name, agent, pin]
            }
            print(Table.render([["CURRENT", "NAME", "AGENT", "PIN"]] + rows))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a context (default: AURORA_CONTEXT, else the current one) without its token.")
        @Argument(help: "The context's name.") var name: String?
        @Flag(help: "Print {name, agent, pin, current, file} as JSON.") var json = false

        struct Output: Codable {
            var name: String
            var agent: String
            var pin: String?
            var current: Bool
            var file: String
        }

        func run() async throws {
            let store = try ContextCommand.store()
            let environment = ProcessInfo.processInfo.environment["AURORA_CONTEXT"].flatMap { $0.isEmpty ? nil : $0 }
            // A damaged pointer matters only when it is what names the context.
            let current: String?
            if name == nil && environment == nil {
                current = try store.current()
            } else {
                current = try? store.current()
            }
            guard let name = name ?? environment ?? current else {
                throw CLIError(
                    "no current context; name one ('aurora-cli context show NAME') or pick one with 'aurora-cli context use NAME'"
                )
            }
            let context = try store.context(name)
            let output = Output(
                name: name, agent: context.agent, pin: context.pin?.description, current: name == current,
                file: store.path(of: name))
            if json { return print(try encodePretty(output)) }
            print(
                """
                name:    \(output.name)
                agent:   \(output.agent)
                pin:     \(output.pin ?? "-")
                token:   saved (not shown)
                current: \(output.current ? "yes" : "no")
                file:    \(output.file)
                """)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a saved context (and its copy of the token); damaged ones too.")
        @Argument(help: "The context's name.") var name: String

        func run() async throws {
            let wasCurrent = try ContextCommand.store().remove(name)
            print(
                "removed context '\(name)'"
                    + (wasCurrent
                        ? "; it was the current one: commands now use their flags, AURORA_* and defaults" : ""))
        }
    }
}
