import AsyncAlgorithms
import Logging
import Mesh
import ServiceLifecycle

/// `dns.configure: resolved`: systemd-resolved sends the mesh's domain, and only it, to this
/// agent's DNS server: on the WireGuard interface, `resolvectl dns IF SERVER`, `resolvectl domain
/// IF ~DOMAIN` (a routing-only domain) and `resolvectl default-route IF false` (no other name
/// goes there). Applied once the interface exists and again every 10 s (resolved forgets a link's
/// settings when the link goes and comes back); a failure is logged when its reason changes and
/// retried. `resolvectl revert IF` at the agent's graceful stop undoes it all.
struct ResolvedLinkService: Service {
    let resolvectl: String
    let interface: String
    let domain: String
    /// `IP` or `IP:PORT` of this agent's DNS server: `dns.listen` (a wildcard host is loopback),
    /// else its mesh address with `dns.mesh_port`; nil until known.
    let server: @Sendable () async -> String?
    let logger: Logger

    /// The three calls that wire the link, in order.
    static func commands(interface: String, server: String, domain: String) -> [[String]] {
        [["dns", interface, server], ["domain", interface, "~" + domain], ["default-route", interface, "false"]]
    }

    /// `resolvectl`'s form of a server: `IP` for port 53, else `IP:PORT`.
    static func server(host: String, port: Int) -> String {
        let ip = host == "0.0.0.0" || host.isEmpty ? "127.0.0.1" : host
        return port == 53 ? ip : "\(ip):\(port)"
    }

    func run() async throws {
        var lastFailure: String?
        var applied = false
        var ticks = 0
        func apply() async {
            guard let server = await server() else { return }
            for arguments in Self.commands(interface: interface, server: server, domain: domain) {
                let failure: String?
                do {
                    let result = try await ProcessRunner.run(resolvectl, arguments, timeout: .seconds(10))
                    failure =
                        result.status == 0 ? nil : "resolvectl \(arguments.joined(separator: " ")): \(result.lastLine)"
                } catch {
                    failure = error.message
                }
                if let failure {
                    if failure != lastFailure {
                        logger.warning(
                            "cannot route the mesh's domain through systemd-resolved; will retry",
                            metadata: ["nodeagent.error": "\(failure)"])
                    }
                    lastFailure = failure
                    return
                }
            }
            if !applied || lastFailure != nil {
                logger.info(
                    "systemd-resolved routes the mesh's domain to this agent",
                    metadata: [
                        "nodeagent.interface": "\(interface)", "nodeagent.domain": "~\(domain)",
                        "nodeagent.server": "\(server)",
                    ])
            }
            applied = true
            lastFailure = nil
        }
        await apply()
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            ticks += 1
            // Until it worked, every 2 s; then every 10 s, for a link that came back.
            if ticks % (applied && lastFailure == nil ? 10 : 2) == 0 { await apply() }
        }
        guard applied else { return }
        do {
            let result = try await ProcessRunner.run(resolvectl, ["revert", interface], timeout: .seconds(10))
            if result.status != 0 {
                logger.warning(
                    "cannot undo the mesh's domain in systemd-resolved",
                    metadata: ["nodeagent.error": "\(result.lastLine)"])
            } else {
                logger.info("systemd-resolved no longer routes the mesh's domain here")
            }
        } catch {
            logger.warning(
                "cannot undo the mesh's domain in systemd-resolved", metadata: ["nodeagent.error": "\(error.message)"])
        }
    }
}
