import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli models`: the models the mesh's inference backends serve, and where.
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The models the mesh serves and the nodes that serve each (GET /v1/models).",
        discussion: """
            Nodes find their backend's models by asking it (gpu.backend; Ollama or OpenAI-style)
            and rename or add models with gpu.models in their profile. A node marked * has the model
            loaded. Exit status 0; 3 when no agent answers; 4 when the list comes from a cached copy
            (the lead is away).
            """)
    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI
    @Flag(help: "Print the ModelList JSON (OpenAI's list shape, each model with its nodes).") var json = false

    func run() async throws {
        let list = try await localOptions.merged(with: root.options).client().models()
        if json {
            print(try encodePretty(list))
        } else {
            print(Self.render(list))
        }
        if list.stale == true { throw ExitCode(Status.staleExitCode) }
    }

    static func render(_ list: ModelList) -> String {
        guard !list.data.isEmpty else { return "no node serves a model (set gpu.backend on a GPU node)" }
        let rows = list.data.map { model in
            (
                TerminalText.safe(model.id),
                model.nodes.map { TerminalText.safe($0.node) + ($0.loaded ? "*" : "") }.joined(separator: ", ")
            )
        }
        let width = max(5, rows.map(\.0.count).max() ?? 0)
        var lines = ["MODEL".padding(toLength: width, withPad: " ", startingAt: 0) + "  NODES (* loaded)"]
        for (name, nodes) in rows {
            lines.append(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + nodes)
        }
        if list.stale == true { lines.insert("STALE VIEW: the lead is away; this is the agent's cached copy", at: 0) }
        return lines.joined(separator: "\n")
    }
}
