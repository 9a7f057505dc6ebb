import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli wg show|config`: the local agent's WireGuard interface and rendered configuration.
struct WG: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wg",
        abstract:
            "The local WireGuard interface: peers with handshake age and transfer, and the rendered configuration.",
        subcommands: [Show.self, Config.self], defaultSubcommand: Show.self)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The interface and its peers (from `wg show IF dump`, taken by the agent each heartbeat).",
            discussion:
                "Exit status 0 when the interface is up (or wireguard.mode is render), 1 when it should be up and is not."
        )

        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: WG
        @Flag(help: "Print the status as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let status: WireGuardStatus
            do { status = try await options.client().wireguard() } catch let error as AuroraClientError {
                throw CLIError(error, style: .check)
            }
            if json {
                print(try encodePretty(status))
            } else {
                print(
                    "interface \(status.interface)  mode \(status.mode)  \(status.up ? "up" : "down")  address \(status.address ?? "-")  "
                        + "listen \(status.listenPort)  public key \(status.publicKey)")
                if let error = status.lastError { print("last error: \(error)") }
                let rows = status.peers.map { peer in
                    [
                        peer.name ?? "?", peer.publicKey, peer.endpoint ?? "-",
                        (peer.allowedIPs ?? []).joined(separator: ","),
                        peer.handshakeAgeS.map { String(format: "%.0fs ago", $0) } ?? "never",
                        MeshTable.bytes(peer.rxBytes), MeshTable.bytes(peer.txBytes),
                    ]
                }
                print(JobTable.table(["PEER", "PUBLIC KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX", "TX"], rows))
            }
            if status.mode == "apply", !status.up { throw ExitCode(1) }
        }
    }

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "The rendered configuration (wg-quick form, as in DATA/wireguard/IF.conf); the private key is hidden unless --show-private."
        )

        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: WG
        @Flag(help: "Show the private key (it gives control of this node's tunnels).") var showPrivate = false
        @Flag(help: "The `wg setconf` form (no Address line).") var setconf = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            print(
                try await options.client().wireguardConfig(showPrivate: showPrivate, setconf: setconf), terminator: "")
        }
    }
}
