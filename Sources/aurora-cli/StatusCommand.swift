import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

/// `aurora-cli status`: the local agent and the whole mesh at a glance.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the local agent and one table for the whole mesh.",
        discussion: """
            Works on any node: a compute or edge agent forwards to the lead, or shows its cached
            copy marked STALE (JSON: "stale": true, "age_s") when the lead is away.
            Exit status: 0 healthy, 1 reachable but not healthy, 3 no agent answering.
            """)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    @Flag(
        help:
            "Print JSON: {agent, health, detail?, mesh?: {nodes, stale, age_s?}, gpu?: {nodes, queued}, mesh_error?, token_error?}."
    )
    var json = false

    @Flag(help: "Redraw every --interval seconds until interrupted (with --json: one JSON document per line).")
    var watch = false

    @Option(help: "Seconds between redraws with --watch.")
    var interval: Double = 1

    /// What `--json` prints.
    struct Output: Codable {
        var agent: String
        var health: HealthResponse
        var detail: AgentStatus?
        var mesh: NodeList?
        /// GPU placement's view: free VRAM and jobs per node, the queue length.
        var gpu: GPUStatus?
        var meshError: String?
        var tokenError: String?

        enum CodingKeys: String, CodingKey {
            case agent, health, detail, mesh, gpu
            case meshError = "mesh_error"
            case tokenError = "token_error"
        }
    }

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
    }

    func run() async throws {
        guard watch else {
            let output = try await collect()
            print(
                json
                    ? String(decoding: try APICoding.encoder(pretty: true).encode(output), as: UTF8.self)
                    : render(output))
            if output.health.status != .ok { throw ExitCode(1) }
            return
        }
        while true {
            let output = try await collect()
            if json {
                print(String(decoding: try APICoding.encoder().encode(output), as: UTF8.self))
            } else {
                print("\u{1B}[H\u{1B}[2J" + render(output))
            }
            fflush(nil)
            try await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
        }
    }

    func collect() async throws -> Output {
        let health: HealthResponse
        do { health = try await options.anonymousClient().health() } catch { throw CLIError(error, style: .check) }
        var output = Output(agent: options.agentURL, health: health)
        do {
            let client = try options.client()
            do {
                output.detail = try await client.agentStatus()
            } catch {
                output.tokenError = CLIError(error, style: .check).message
            }
            do {
                output.mesh = try await client.nodes()
            } catch {
                output.meshError = CLIError(error).message
            }
            if output.mesh?.stale == false {
                output.gpu = try? await client.gpuStatus()
            }
        } catch let error as CLIError {
            output.tokenError = error.message
        }
        return output
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
        if health.store.mode != .none {
            store +=
                " (\(health.store.mode.rawValue)" + (health.store.schemaVersion.map { ", schema \($0)" } ?? "") + ")"
        }
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
        var text = lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + $0.1 }.joined(
            separator: "\n")
        if let mesh = output.mesh {
            text += "\n\n" + MeshTable.render(mesh, gpu: output.gpu, colour: MeshTable.colour)
        } else if let error = output.meshError {
            text += "\n\nmesh: not shown: \(error)"
        }
        return text
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
