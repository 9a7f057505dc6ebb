import ArgumentParser
import AuroraAPI
import Foundation

/// `aurora-cli status`: the local agent at a glance.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the local agent: role, health, store, uptime.",
        discussion: "Exit status: 0 healthy, 1 reachable but not healthy, 3 no agent answering.")

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    @Flag(help: "Print JSON: {agent, health, detail?, token_error?}.")
    var json = false

    /// What `--json` prints.
    struct Output: Codable {
        var agent: String
        var health: HealthResponse
        var detail: AgentStatus?
        var tokenError: String?

        enum CodingKeys: String, CodingKey {
            case agent, health, detail
            case tokenError = "token_error"
        }
    }

    func run() async throws {
        let url = options.agentURL
        let health = try await AgentClient(baseURL: url, token: nil).get(Routes.health, as: HealthResponse.self, acceptServiceUnavailable: true)
        var output = Output(agent: url, health: health)
        switch options.resolveToken() {
        case .success(let (token, _)):
            do {
                output.detail = try await AgentClient(baseURL: url, token: token).get(Routes.agent, as: AgentStatus.self)
            } catch let error as CLIError {
                output.tokenError = error.message
            }
        case .failure(let error):
            output.tokenError = error.message
        }
        if json {
            print(String(decoding: try APICoding.encoder(pretty: true).encode(output), as: UTF8.self))
        } else {
            print(render(output))
        }
        if health.status != .ok { throw ExitCode(1) }
    }

    func render(_ output: Output) -> String {
        let health = output.health
        var lines: [(String, String)] = [
            ("agent", output.agent + (output.detail.map { " (pid \($0.pid))" } ?? "")),
            ("node", "\(health.node)  role \(health.role.rawValue)  version \(health.version)"),
            ("health", health.status.rawValue),
            ("uptime", Self.duration(health.uptimeS)),
        ]
        var store = health.store.state.rawValue
        if health.store.mode != .none { store += " (\(health.store.mode.rawValue)" + (health.store.schemaVersion.map { ", schema \($0)" } ?? "") + ")" }
        if let message = health.store.message { store += ": \(message)" }
        lines.append(("store", store))
        if let detail = output.detail {
            if let mesh = detail.meshID { lines.append(("mesh", mesh)) }
            lines.append(("listen", detail.listen))
            lines.append(("data dir", detail.dataDir))
            lines.append(("wireguard key", detail.identity.wireguardPublicKey))
            lines.append(("signing key", detail.identity.signPublicKey))
        } else if let error = output.tokenError {
            lines.append(("detail", "not shown: \(error)"))
        }
        let width = lines.map(\.0.count).max()! + 2
        return lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + $0.1 }.joined(separator: "\n")
    }

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds)
        let (d, h, m, s) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60)
        if d > 0 { return "\(d)d \(h)h \(m)m" }
        if h > 0 { return "\(h)h \(m)m \(s)s" }
        if m > 0 { return "\(m)m \(s)s" }
        return String(format: "%.1fs", seconds)
    }
}
