import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-cli status`: the local agent and the whole mesh at a glance.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the local agent and one table for the whole mesh.",
        discussion: """
            Works on any node: a compute or edge agent forwards to the lead. When the lead is
            unreachable the agent shows its cached copy: a STALE VIEW warning comes first, each
            row's state is marked with the copy's age ("alive (8s ago)": alive then, not now), and
            the exit status is 4 (JSON: "stale": true, "lead_unreachable_since", mesh.age_s; the
            warning goes to stderr).
            The table fits 100 columns (long cells are cut with …); --wide shows every column in full.
            GPUS: free/total and the model (a GPU with a job placed on it is not free); VRAM GB:
            free/total as placement counts it; JOBS: placed jobs ("off": not accepting new ones).
            Exit status: 0 healthy, 1 reachable but not healthy, 3 no agent answering,
            4 the lead is unreachable (cached view shown).
            """)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    @Flag(
        help:
            "Print JSON: {agent, health, stale, lead_unreachable_since?, detail?, mesh?: {nodes, stale, age_s?}, gpu?: {nodes, queued}, paths?, mesh_error?, token_error?}."
    )
    var json = false

    @Flag(help: "Show every column (company, VPN IP, version, handshake) and cut no cell.")
    var wide = false

    @Flag(help: "Redraw every --interval seconds until interrupted (with --json: one JSON document per line).")
    var watch = false

    @Option(help: "Seconds between redraws with --watch.")
    var interval: Double = 1

    /// What `--json` prints.
    struct Output: Codable {
        var agent: String
        var health: HealthResponse
        /// The mesh table is the agent's cached copy: its lead did not answer.
        var stale = false
        /// When this node's lead stopped answering (its `/health`), while it does not.
        var leadUnreachableSince: String?
        var detail: AgentStatus?
        var mesh: NodeList?
        /// GPU placement's view: free VRAM and jobs per node, the queue length.
        var gpu: GPUStatus?
        var meshError: String?
        var tokenError: String?
        /// The mesh's leads as this agent knows them (epoch, lead, standbys).
        var leads: LeadStatus?
        /// How each pair of nodes behind NAT reaches each other (relayed, trying, direct).
        var paths: [MeshPath]?

        enum CodingKeys: String, CodingKey {
            case agent, health, stale, detail, mesh, gpu, leads, paths
            case leadUnreachableSince = "lead_unreachable_since"
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
            if json {
                if let warning = output.mesh.flatMap({ MeshTable.staleWarning($0, lead: output.health.lead) }) {
                    FileHandle.standardError.write(Data((warning.joined(separator: "\n") + "\n").utf8))
                }
                print(String(decoding: try APICoding.encoder(pretty: true).encode(output), as: UTF8.self))
            } else {
                print(render(output))
            }
            if output.stale { throw ExitCode(Self.staleExitCode) }
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
            output.leads = try? await client.leadStatus()
            if let paths = try? await client.topology().paths, !paths.isEmpty { output.paths = paths }
            output.stale = output.mesh?.stale == true
        } catch let error as CLIError {
            output.tokenError = error.message
        }
        if output.health.lead?.state == .unreachable {
            output.leadUnreachableSince = output.health.lead?.since
        }
        return output
    }

    func render(_ output: Output) -> String {
        let health = output.health
        var lines: [(String, String)] = []
        if let leads = output.leads {
            // The leads first: who leads at which epoch, and who can take over.
            var lead = "\(leads.lead ?? "-")  epoch \(leads.epoch.map(String.init) ?? "-")"
            if let reason = leads.fencedReason { lead += "  FENCED: \(reason)" }
            lines.append(("lead", lead))
            if let election = leads.election {
                lines.append(("etcd", Lead.Status.electionText(election)))
            }
            let standbys = leads.standbys.map { standby in
                var facts = [standby.state.rawValue]
                if let sync = standby.sync { facts.append(sync ? "sync" : "async") }
                if standby.eligible == false { facts.append("ineligible") }
                return "\(standby.name) (\(facts.joined(separator: ", ")))"
            }
            lines.append(("standbys", standbys.isEmpty ? "none" : standbys.joined(separator: ", ")))
        }
        lines += [
            ("agent", output.agent + (output.detail.map { " (pid \($0.pid))" } ?? "")),
            ("node", "\(health.node)  role \(health.role.rawValue)  version \(health.version)"),
            ("health", Self.healthText(health)),
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
            text += "\n\n" + MeshTable.render(mesh, gpu: output.gpu, wide: wide, colour: MeshTable.colour)
            // The warning goes first: a table of rows that say `alive` must not come before it.
            if let warning = MeshTable.staleWarning(mesh, lead: health.lead, wide: wide) {
                text = MeshTable.paintWarning(warning) + "\n\n" + text
            }
        } else if let error = output.meshError {
            text += "\n\nmesh: not shown: \(error)"
        }
        if let paths = output.paths {
            text += "\n\n" + Self.pathsText(paths)
        }
        return text
    }

    /// One line per pair of nodes behind NAT: `gpu-a ↔ gpu-b  relayed via relay-1 (41012, 41013)  why`.
    static func pathsText(_ paths: [MeshPath]) -> String {
        let pairs = paths.map { "\($0.a) ↔ \($0.b)" }
        let width = (pairs.map(\.count).max() ?? 0) + 2
        return
            (["PATHS (pairs behind NAT)"]
            + zip(pairs, paths).map { pair, path in
                var how = path.mode.rawValue
                if path.mode != .direct, let relay = path.relay {
                    let ports = [path.relayA, path.relayB].compactMap { $0?.split(separator: ":").last }
                    how += " via \(relay) (\(ports.joined(separator: ", ")))"
                }
                return pair.padding(toLength: width, withPad: " ", startingAt: 0) + how + "  " + path.reason
            }).joined(separator: "\n")
    }

    /// `ok`, or e.g. `degraded (lead unreachable since 2026-11-21T20:22:39.318Z)`.
    static func healthText(_ health: HealthResponse) -> String {
        guard let lead = health.lead, lead.state == .unreachable else { return health.status.rawValue }
        return health.status.rawValue + " (lead unreachable" + (lead.since.map { " since \($0)" } ?? "") + ")"
    }

    /// The exit status when the mesh shown is a cached copy because the lead is unreachable.
    static let staleExitCode: Int32 = 4

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds)
        let (d, h, m, s) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60)
        if d > 0 { return "\(d)d \(h)h \(m)m" }
        if h > 0 { return "\(h)h \(m)m \(s)s" }
        if m > 0 { return "\(m)m \(s)s" }
        return String(format: "%.1fs", seconds)
    }
}

extension MeshTable {
    /// Whether to colour: a terminal, and NO_COLOR unset.
    static var colour: Bool {
        isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
    }

    /// The stale-view warning as printed: yellow on a terminal.
    static func paintWarning(_ lines: [String]) -> String {
        lines.map { colour ? "\u{1B}[33m\($0)\u{1B}[0m" : $0 }.joined(separator: "\n")
    }
}
