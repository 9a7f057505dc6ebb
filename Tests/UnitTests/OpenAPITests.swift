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
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

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

    @Test("the router's routes and the document's operations are the same set")
    func routesMatchDocument() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-openapi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let resolved = try ResolvedConfig.resolve(ConfigInputs(
            profile: try ConfigFile.parse("role: lead\n", file: "p.yaml", kind: .profile), hostName: "h", workingDirectory: scratch.path))
        let config = NodeConfig(resolved: resolved, profileFile: "p.yaml")
        let identity = try NodeIdentity.loadOrCreate(in: scratch.appendingPathComponent("keys").path, logger: logger)
        let token = try AdminToken.loadOrCreate(dataDir: scratch.path, keysDir: scratch.appendingPathComponent("keys").path, logger: logger)
        // Routes are registered whatever the role; the mesh's parts only decide how they answer.
        let router = HTTPServer.router(state: AgentState(config: config, identity: identity), token: token, metrics: nil,
                                       mesh: MeshContext(hub: EventHub()), logger: logger)
        let registered = Set(router.routes.map { "\($0.method.rawValue) \($0.path)" })

        let bytes = try #require(OpenAPIDocument.served)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
        let documented = Set(paths.flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } })

        #expect(registered.count > 40)
        #expect(registered.subtracting(documented).sorted() == [], "routes missing from docs/openapi.yaml")
        #expect(documented.subtracting(registered).sorted() == [], "operations in docs/openapi.yaml that the router does not serve")
    }
}
