import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Testing

@testable import NodeAgent

/// A role's router built from parts that are never started: registering routes touches no
/// store and no network.
enum RouterFixture {
    /// The operator token the fixture's agent wrote to its data directory.
    static func adminToken(in directory: URL) throws -> String {
        try String(contentsOf: directory.appendingPathComponent("admin.token"), encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
    }

    /// A role's router from parts that are never started.
    static func router(role: String, in directory: URL, logger: Logger) throws -> Router<AgentRequestContext> {
        // Only the lead has a store (never connected here).
        let store: Store? = role == "lead" ? Store(conninfo: "host=/nonexistent") : nil
        let (agent, config, identity, keys) = try agent(
            role: role, in: directory, apiTokens: store.map { APITokens(store: $0) }, logger: logger)
        let parts: RoleParts
        if let store {
            parts = .lead(
                try leadParts(
                    rows: store, agent: agent, config: config, identity: identity, keys: keys, in: directory,
                    logger: logger))
        } else {
            let cache = RegistryCache(dataDir: directory.path)
            let membership = try MembershipService(
                config: config, identity: identity, state: agent.state,
                inventory: Inventory(config: config, logger: logger),
                cache: cache, worker: nil,
                link: try LeadLink.forNode(config: config, saved: nil), tlsPin: nil, onSecretsChanged: nil,
                logger: logger)
            parts = .node(
                NodeParts(
                    membership: membership, cache: cache,
                    secretCache: SecretCache(
                        dataDir: directory.path, node: config.name, box: identity.box, leadSignKey: nil,
                        logger: logger)))
        }
        return HTTPServer.router(agent: agent, role: parts, metrics: nil, logger: logger)
    }

    /// The lead's parts over `rows` (registry, jobs, tokens, events, reports, secrets); backups
    /// (pg_dump) over a PostgreSQL store that is never connected.
    static func leadParts(
        rows: some NodeStore & JobStore & TokenStore & ReportStore & SecretStore & GatewayKeyStore, agent: AgentParts,
        config: NodeConfig,
        identity: NodeIdentity, keys: String, in directory: URL, logger: Logger
    ) throws -> LeadParts {
        let hub = agent.hub
        let unconnected = Store(conninfo: "host=/nonexistent")
        let registry = try Registry(store: rows, hub: hub, config: config, identity: identity, logger: logger)
        let jobs = JobCoordinator(store: rows, hub: hub, leadName: config.name, logger: logger)
        let master = try SecretsMasterKey.loadOrCreate(in: keys, passphraseFile: nil, logger: logger)
        let secrets = SecretsManager(
            store: rows, hub: hub, master: master, signing: identity.signing, generation: SecretsGeneration(),
            logger: logger)
        let board = ConnectivityBoard(store: rows, hub: hub, logger: logger)
        guard let apiTokens = agent.token.scoped else { throw AgentError(.config, "the lead's agent needs API tokens") }
        return LeadParts(
            registry: registry, jobs: jobs, secrets: secrets, connectivity: board, tokens: rows, events: rows,
            inbox: ReportInbox(store: rows, hub: hub, jobs: jobs, board: board, logger: logger),
            backups: BackupArchive(
                dataDir: directory.path, store: unconnected, source: .init(conninfo: "", binDirectory: nil),
                logger: logger),
            apiTokens: apiTokens, gatewayKeys: GatewayKeys(store: rows), leadTLS: nil)
    }

    /// The parts every role has, from a profile for `role` in `directory`.
    static func agent(role: String, in directory: URL, apiTokens: APITokens?, logger: Logger) throws -> (
        AgentParts, NodeConfig, NodeIdentity, String
    ) {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let text = role == "lead" ? "role: lead\n" : "role: \(role)\n"
        var inputs = ConfigInputs(
            profile: try ConfigFile.parse(text, file: "p.yaml", kind: .profile), hostName: "h",
            workingDirectory: directory.path)
        // Nothing listens on port 9: a node's forwarded calls find the lead away at once.
        if role != "lead" { inputs.flags["lead"] = "http://127.0.0.1:9" }
        // Route tests make many refused calls from one (unknown) source.
        for key in ["limits.requests_per_s", "limits.burst", "limits.auth_failures_per_min", "limits.joins_per_min"] {
            inputs.flags[key] = "1000000"
        }
        let config = NodeConfig(resolved: try ResolvedConfig.resolve(inputs), profileFile: "p.yaml")
        let keys = directory.appendingPathComponent("keys").path
        let identity = try NodeIdentity.loadOrCreate(in: keys, logger: logger)
        var token = try AdminToken.loadOrCreate(dataDir: directory.path, keysDir: keys, logger: logger)
        token.scoped = apiTokens
        let state = AgentState(config: config, identity: identity)
        let hub = EventHub()
        let wireguard = WireGuardService(
            config: config, identity: identity, agent: state, dataDir: directory.path, logger: logger,
            network: { nil }
        ) { nil }
        let agent = AgentParts(state: state, token: token, hub: hub, subsystems: Subsystems(), wireguard: wireguard)
        return (agent, config, identity, keys)
    }
}
