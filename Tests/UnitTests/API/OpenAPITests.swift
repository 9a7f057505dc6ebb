import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
@testable import NodeAgent
import Testing

/// docs/openapi.yaml is the API's contract: it must be what the binary serves, and it must list
/// exactly the routes the router registers.
@Suite("OpenAPI document")
struct OpenAPITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("the built-in OpenAPI document is docs/openapi.yaml (else run Tests/contract/embed-openapi)")
    func embeddedDocumentIsCurrent() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
        #expect(OpenAPIDocument.yaml == text, "Sources/NodeAgent/HTTP/OpenAPIDocument.swift is stale: run Tests/contract/embed-openapi")
    }

    @Test("the served document is JSON and keeps what the YAML says")
    func servedDocumentIsJSON() throws {
        let bytes = try #require(OpenAPIDocument.served)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let info = try #require(document["info"] as? [String: Any])
        #expect(info["version"] as? String == AuroraVersion.current)
        // Quoted YAML scalars stay strings; numbers, booleans and escapes convert.
        let converted = try OpenAPIDocument.json(fromYAML: "a: '200'\nb: 200\nc: true\nd: 1.5\ne: ~\nf: \"x\\\"y\\n\"\ng: [1, 'two']\n")
        #expect(converted == #"{"a":"200","b":200,"c":true,"d":1.5,"e":null,"f":"x\"y\n","g":[1,"two"]}"#)
    }

    @Test("each role's router serves the same routes, and they are the document's operations")
    func routesMatchDocument() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-openapi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

        let bytes = try #require(OpenAPIDocument.served)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
        let documented = Set(paths.flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } })

        // Routes are the same on every agent; the role's parts only decide how they answer.
        for role in ["lead", "compute"] {
            let router = try RouterFixture.router(role: role, in: scratch.appendingPathComponent(role), logger: logger)
            let registered = Set(router.routes.map { "\($0.method.rawValue) \($0.path)" })
            #expect(registered.count > 40)
            #expect(registered.subtracting(documented).sorted() == [], "\(role): routes missing from docs/openapi.yaml")
            #expect(documented.subtracting(registered).sorted() == [], "\(role): operations in docs/openapi.yaml that the router does not serve")
        }
    }
}

/// A role's router built from parts that are never started: registering routes touches no
/// store and no network.
enum RouterFixture {
    static func router(role: String, in directory: URL, logger: Logger) throws -> Router<AgentRequestContext> {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let text = role == "lead" ? "role: lead\n" : "role: \(role)\n"
        var inputs = ConfigInputs(profile: try ConfigFile.parse(text, file: "p.yaml", kind: .profile), hostName: "h",
                                  workingDirectory: directory.path)
        if role != "lead" { inputs.flags["lead"] = "http://127.0.0.1:9" }
        let config = NodeConfig(resolved: try ResolvedConfig.resolve(inputs), profileFile: "p.yaml")
        let keys = directory.appendingPathComponent("keys").path
        let identity = try NodeIdentity.loadOrCreate(in: keys, logger: logger)
        let token = try AdminToken.loadOrCreate(dataDir: directory.path, keysDir: keys, logger: logger)
        let state = AgentState(config: config, identity: identity)
        let hub = EventHub()
        let wireguard = WireGuardService(config: config, identity: identity, agent: state, dataDir: directory.path, logger: logger,
                                         network: { nil }) { nil }
        let agent = AgentParts(state: state, token: token, hub: hub, subsystems: Subsystems(), wireguard: wireguard)
        let parts: RoleParts
        if role == "lead" {
            let store = Store(conninfo: "host=/nonexistent")
            let registry = try Registry(store: store, hub: hub, config: config, identity: identity, logger: logger)
            let jobs = JobCoordinator(store: store, hub: hub, leadName: config.name, logger: logger)
            let master = try SecretsMasterKey.loadOrCreate(in: keys, passphraseFile: nil, logger: logger)
            let secrets = SecretsManager(store: store, hub: hub, master: master, signing: identity.signing, generation: SecretsGeneration(),
                                         logger: logger)
            let board = ConnectivityBoard(store: store, hub: hub, logger: logger)
            parts = .lead(LeadParts(
                registry: registry, jobs: jobs, secrets: secrets, connectivity: board, store: store,
                inbox: ReportInbox(store: store, hub: hub, jobs: jobs, board: board, logger: logger),
                backups: BackupArchive(dataDir: directory.path, store: store, source: .init(conninfo: "", binDirectory: nil), logger: logger),
                apiTokens: APITokens(store: store), leadTLS: nil))
        } else {
            let cache = RegistryCache(dataDir: directory.path)
            let membership = try MembershipService(
                config: config, identity: identity, state: state, inventory: Inventory(config: config, logger: logger), cache: cache, worker: nil,
                link: try LeadLink.forNode(config: config, saved: nil), tlsPin: nil, onSecretsChanged: nil, logger: logger)
            parts = .node(NodeParts(membership: membership, cache: cache,
                                    secretCache: SecretCache(dataDir: directory.path, node: config.name, box: identity.box, leadSignKey: nil,
                                                             logger: logger)))
        }
        return HTTPServer.router(agent: agent, role: parts, metrics: nil, logger: logger)
    }
}
