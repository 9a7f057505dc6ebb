import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli lead status|promote`: the mesh's leads and their epoch, and promoting a standby.
struct Lead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lead",
        abstract: "The mesh's leads: who leads at which epoch, the standbys, and promoting a standby.",
        discussion: """
            A standby lead joins with a token from 'aurora-cli token create --profile standby':
              nodeagent --profile lead --standby --lead URL --join-token-file F --store URL
            Both leads use the same PostgreSQL (--store). 'aurora-cli lead promote' on the standby makes it
            the lead: the old lead is fenced (it acknowledges nothing more) and every node follows the new
            one by itself. When the old lead comes back it rejoins the new lead as its standby by itself
            (election.rejoin_as_standby), and can be promoted again later.
            """,
        subcommands: [Status.self, Promote.self], defaultSubcommand: Status.self)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "This agent's view of the leads: its role, the epoch, the lead and the standbys.",
            discussion: "Exit status 0; 1 when this agent is a fenced lead.")

        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Lead
        @Flag(help: "Print the status as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let status: LeadStatus
            do { status = try await options.client().leadStatus() } catch let error as AuroraClientError {
                throw CLIError(error)
            }
            if json {
                print(try encodePretty(status))
            } else {
                var lines = [
                    "agent    \(status.agent) (\(status.role.rawValue))",
                    "lead     \(status.lead ?? "-")  \(status.leadURL ?? "")",
                    "epoch    \(status.epoch.map(String.init) ?? "-")",
                    "store    \(status.store ?? "-")",
                ]
                if let reason = status.fencedReason { lines.append("FENCED   \(reason)") }
                if let election = status.election { lines.append("etcd     " + Self.electionText(election)) }
                if status.standbys.isEmpty {
                    lines.append("standbys none (create one: aurora-cli token create --profile standby)")
                } else {
                    for standby in status.standbys {
                        var line =
                            "standby  \(standby.name)  \(standby.state.rawValue)  \(standby.url ?? "-")  last seen \(standby.lastSeen)"
                        if let replication = standby.replication {
                            line += "  replica \(replication)"
                            if let lag = standby.lagBytes { line += " (lag \(lag) B)" }
                            if let sync = standby.sync { line += sync ? "  sync" : "  async" }
                            if standby.eligible == false { line += "  INELIGIBLE: promotion needs --accept-data-loss" }
                        }
                        lines.append(line)
                    }
                }
                print(TerminalText.safe(lines.joined(separator: "\n")))
            }
            if status.role == .fenced { throw ExitCode(1) }
        }

        /// `leading (fences in 3.2 s unless renewed; ttl 5 s)`, `FAILSAFE: etcd silent, …`.
        static func electionText(_ election: LeadStatus.Election) -> String {
            let fence = election.fenceInMs.map {
                String(format: "fences in %.1f s unless renewed; ", Double($0) / 1000)
            }
            switch election.state {
            case "failsafe":
                return "FAILSAFE: etcd silent; serving on the standbys' promises (\(fence ?? "")ttl \(election.ttlS) s)"
            case "follower":
                return "follower (key held by \(election.holder ?? "nobody"); ttl \(election.ttlS) s)"
            default:
                return "\(election.state) (\(fence ?? "")ttl \(election.ttlS) s)"
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make this standby the lead (run it against the standby's own agent).",
            discussion: """
                Asks the lead to step down, fences it through the store's lead lock whether it answers or
                not, begins the next epoch and restarts the standby's agent as the lead. Nodes follow within
                a few heartbeats. Prints the new term.
                """)

        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Lead
        @Flag(help: "Promote even when the standby cannot show it holds everything the lead acknowledged.")
        var acceptDataLoss = false
        @Flag(help: "Print the answer as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let answer: PromoteResponse
            do { answer = try await options.client().promoteLead(acceptDataLoss: acceptDataLoss) } catch let error
                as AuroraClientError
            {
                throw CLIError(error)
            }
            if json {
                print(try encodePretty(answer))
            } else {
                let term = answer.term
                print(
                    TerminalText.safe(
                        "\(term.lead) leads the mesh from epoch \(term.epoch) (\(term.url)); the old lead "
                            + (answer.oldLeadSteppedDown
                                ? "stepped down" : "did not answer and is fenced through the store")
                            + "; the agent restarts as the lead now"))
            }
        }
    }
}
