import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Testing

@testable import NodeAgent

/// docs/openapi.yaml is the API's contract: it must be what the binary serves, and it must list
/// exactly the routes the router registers.
@Suite("OpenAPI document")
struct OpenAPITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test("the built-in OpenAPI document is docs/openapi.yaml (else run Tests/contract/embed-openapi)")
    func embeddedDocumentIsCurrent() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
        #expect(
            OpenAPIDocument.yaml == text,
            "Sources/NodeAgent/HTTP/OpenAPIDocument.swift is stale: run Tests/contract/embed-openapi")
    }

    @Test("the served document is JSON and keeps what the YAML says")
    func servedDocumentIsJSON() throws {
        let bytes = try #require(OpenAPIDocument.served)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let info = try #require(document["info"] as? [String: Any])
        #expect(info["version"] as? String == AuroraVersion.current)
        // Quoted YAML scalars stay strings; numbers, booleans and escapes convert.
        let converted = try OpenAPIDocument.json(
            fromYAML: "a: '200'\nb: 200\nc: true\nd: 1.5\ne: ~\nf: \"x\\\"y\\n\"\ng: [1, 'two']\n")
        #expect(converted == #"{"a":"200","b":200,"c":true,"d":1.5,"e":null,"f":"x\"y\n","g":[1,"two"]}"#)
    }

    @Test("each role's router serves the same routes, and they are the document's operations")
    func routesMatchDocument() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
            "aurora-openapi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

        let bytes = try #require(OpenAPIDocument.served)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
        let documented = Set(
            paths.flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } })

        // Routes are the same on every agent; the role's parts only decide how they answer.
        for role in ["lead", "compute"] {
            let router = try RouterFixture.router(role: role, in: scratch.appendingPathComponent(role), logger: logger)
            let registered = Set(router.routes.map { "\($0.method.rawValue) \($0.path)" })
            #expect(registered.count > 40)
            #expect(registered.subtracting(documented).sorted() == [], "\(role): routes missing from docs/openapi.yaml")
            #expect(
                documented.subtracting(registered).sorted() == [],
                "\(role): operations in docs/openapi.yaml that the router does not serve")
        }
    }
}
