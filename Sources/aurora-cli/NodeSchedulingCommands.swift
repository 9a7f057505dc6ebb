import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

// `aurora-cli nodes cordon|drain|uncordon`: whether the lead places new jobs on a node.

extension Nodes {
    struct Cordon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Place no new jobs on a node; running ones go on (lead, operator token).",
            discussion: "Undo with 'aurora-cli nodes uncordon NAME'. The node shows as cordoned in status and nodes.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String
        @Flag(help: "Print the node's record as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let node = try await options.client().setScheduling(.cordoned, of: name)
            print(json ? try encodePretty(node) : TerminalText.safe("\(node.name): cordoned (no new jobs)"))
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Place no new jobs on a node and hand its running jobs back at a deadline (lead, operator token).",
            discussion: """
                Running jobs may finish until the deadline; those still running then are stopped on the node
                and queued again for other nodes (a drain does not use up a job's attempts).
                Examples: aurora-cli nodes drain gpu-1   ·   aurora-cli nodes drain gpu-1 --deadline 10m
                Undo with 'aurora-cli nodes uncordon NAME'.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String
        @Option(help: "How long running jobs may go on: 90s, 10m, 2h or 0 (at once); default 1h, at most 7 days.")
        var deadline: String = "1h"
        @Flag(help: "Print the node's record as JSON.") var json = false

        func validate() throws {
            guard DrainDeadline.seconds(deadline) != nil else {
                throw ValidationError("--deadline must be a duration such as 0, 90s, 10m or 2h, at most 7 days")
            }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let seconds = DrainDeadline.seconds(deadline) ?? NodeSchedulingUpdate.defaultDeadlineS
            let node = try await options.client().setScheduling(.draining, deadlineS: seconds, of: name)
            if json { return print(try encodePretty(node)) }
            let running = "running jobs are handed back at \(node.scheduling?.deadline ?? "the deadline")"
            print(TerminalText.safe("\(node.name): draining (no new jobs; \(running))"))
        }
    }

    struct Uncordon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Let the lead place new jobs on a cordoned or draining node again (lead, operator token).")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Nodes
        @Argument(help: "The node's name.") var name: String
        @Flag(help: "Print the node's record as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let node = try await options.client().setScheduling(.open, of: name)
            print(json ? try encodePretty(node) : TerminalText.safe("\(node.name): open for new jobs"))
        }
    }
}

/// A drain deadline as people type it: `0`, `90`, `90s`, `10m`, `2h`, `1d`.
enum DrainDeadline {
    static func seconds(_ text: String) -> Double? {
        guard (1...12).contains(text.count) else { return nil }
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var digits = Substring(text), unit = 1.0
        if let last = text.last, let factor = units[last] {
            digits = text.dropLast()
            unit = factor
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Double(digits) else {
            return nil
        }
        let seconds = value * unit
        return seconds <= NodeSchedulingUpdate.maxDeadlineS ? seconds : nil
    }
}
