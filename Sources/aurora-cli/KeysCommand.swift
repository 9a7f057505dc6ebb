import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli keys`: keys for the OpenAI-compatible gateway, their limits and usage.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list or revoke gateway keys (for /v1/ only), and show their usage (on the lead).",
        discussion: """
            A gateway key (aurk_...) is what a program puts in OpenAI's client as api_key:
              OpenAI(base_url="http://AGENT:9999/v1", api_key="aurk_...")
            It is good for /v1/models, /v1/chat/completions, /v1/completions and /v1/embeddings
            only, and may be limited to some models and to requests and tokens per minute (over
            them: 429 with Retry-After).
            """,
        subcommands: [Create.self, List.self, Revoke.self, Usage.self])

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a gateway key; it is printed once and stored only as a hash.",
            discussion:
                "aurora-cli keys create --app chatbot --company acme --models llama3,qwen2:7b --rpm 60 --tpm 100000")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Keys
        @Option(help: "The program that uses it (letters, digits, . _ -).") var app: String
        @Option(help: "The company its usage is counted under.") var company: String?
        @Option(help: "The only models it may call (mesh names, comma-separated); default: every model.")
        var models: String?
        @Option(help: "Requests per minute (1-1000000); default: no limit.") var rpm: Int?
        @Option(help: "Tokens per minute, prompt and completion (1-1000000000); default: no limit.") var tpm: Int?
        @Option(help: "Lifetime: 90s, 15m, 1h, 7d; default: until revoked.") var ttl: String?
        @Flag(help: "Print JSON: {key, info}.") var json = false

        var modelList: [String]? {
            models.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        }

        func validate() throws {
            if let ttl, TTL.seconds(ttl) == nil {
                throw ValidationError("--ttl must look like 90s, 15m, 1h or 7d, got '\(ttl)'")
            }
            if let rpm, !(1...1_000_000).contains(rpm) { throw ValidationError("--rpm must be 1-1000000") }
            if let tpm, !(1...1_000_000_000).contains(tpm) { throw ValidationError("--tpm must be 1-1000000000") }
            if let modelList, modelList.isEmpty || modelList.contains(where: \.isEmpty) {
                throw ValidationError("--models must be model names separated by commas")
            }
        }

        func run() async throws {
            let created = try await localOptions.merged(with: parent.options).client().createGatewayKey(
                GatewayKeyCreateRequest(
                    app: app, company: company, models: modelList, rpm: rpm, tpm: tpm, ttlS: ttl.flatMap(TTL.seconds)))
            if json { return print(try encodePretty(created)) }
            print(created.key)
            let info = created.info
            let limits = [
                info.models.map { "models " + $0.joined(separator: ",") }, info.rpm.map { "\($0) requests/min" },
                info.tpm.map { "\($0) tokens/min" },
            ].compactMap { $0 }
            FileHandle.standardError.write(
                Data(
                    "gateway key \(info.id) for \(TerminalText.safe(info.app)): \(limits.isEmpty ? "no limits" : limits.joined(separator: ", ")), expires \(info.expiresAt ?? "never"); use it as the OpenAI client's api_key\n"
                        .utf8))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List gateway keys (never the keys themselves).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Keys
        @Flag(help: "Print JSON: {keys: [...]}.") var json = false

        func run() async throws {
            let list = try await localOptions.merged(with: parent.options).client().gatewayKeys()
            guard !json else { return print(try encodePretty(list)) }
            let rows =
                [["ID", "APP", "COMPANY", "MODELS", "RPM", "TPM", "STATE", "EXPIRES"]]
                + list.keys.map {
                    [
                        $0.id, TerminalText.safe($0.app), $0.company.isEmpty ? "-" : TerminalText.safe($0.company),
                        $0.models.map { TerminalText.safe($0.joined(separator: ",")) } ?? "all",
                        $0.rpm.map(String.init) ?? "-", $0.tpm.map(String.init) ?? "-", $0.state.rawValue,
                        $0.expiresAt ?? "never",
                    ]
                }
            print(Table.render(rows))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a gateway key (gk_...) by id: refused from the next call on.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Keys
        @Argument(help: "The key's id, as 'keys list' shows it.") var id: String
        @Flag(help: "Print the key's record as JSON.") var json = false

        func validate() throws {
            guard id.hasPrefix("gk_"), id.utf8.count <= 64 else {
                throw ValidationError("a gateway key's id looks like gk_1a2b3c4d5e6f ('keys list' shows them)")
            }
        }

        func run() async throws {
            let info = try await localOptions.merged(with: parent.options).client().revokeGatewayKey(id)
            print(json ? try encodePretty(info) : "revoked \(info.id)")
        }
    }

    struct Usage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Requests and tokens per key and model, as the backends reported them.",
            discussion: """
                Every gateway call is counted: a key by its id, another credential by its caller
                (operator, api:ID, node:NAME). Tokens are the backends' usage; a stream that reported
                none counts one completion token per chunk.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Keys
        @Flag(help: "Print JSON: {usage: [...]}.") var json = false

        func run() async throws {
            let list = try await localOptions.merged(with: parent.options).client().gatewayUsage()
            guard !json else { return print(try encodePretty(list)) }
            guard !list.usage.isEmpty else { return print("no gateway calls yet") }
            let rows =
                [["KEY", "APP", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL"]]
                + list.usage.map {
                    [
                        TerminalText.safe($0.key), $0.app.map { TerminalText.safe($0) } ?? "-",
                        TerminalText.safe($0.model),
                        String($0.requests), String($0.promptTokens), String($0.completionTokens),
                        String($0.totalTokens),
                    ]
                }
            print(Table.render(rows))
        }
    }
}
