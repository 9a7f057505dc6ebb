import AuroraAPI
import AuroraClient
import Foundation
import Mesh
import Testing

/// The typed client (Sources/AuroraClient) has a method for every endpoint of the route table:
/// each endpoint of ``API/all`` is the first argument of some `call(API.name, …)` there. The
/// table's names are read from Sources/AuroraAPI/Routes/API.swift, and checked to be exactly
/// ``API/all``, so an endpoint added to the table without a client method fails here.
@Suite("Client coverage")
struct ClientCoverageTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `name -> Endpoint` of every `public static let name = Endpoint("METHOD", "/path")` of API.swift.
    static func declaredEndpoints() throws -> [String: Endpoint] {
        let text = try String(
            contentsOf: root.appendingPathComponent("Sources/AuroraAPI/Routes/API.swift"), encoding: .utf8)
        let declaration = try Regex(#"public static let (\w+) = Endpoint\("([A-Z]+)", "([^"]+)"\)"#)
        var endpoints: [String: Endpoint] = [:]
        for match in text.matches(of: declaration) {
            guard let name = match.output[1].substring, let method = match.output[2].substring,
                let pattern = match.output[3].substring
            else { continue }
            endpoints[String(name)] = Endpoint(String(method), String(pattern))
        }
        return endpoints
    }

    /// The names `API.name` that the client's sources pass first to `call(` (across line breaks).
    static func calledNames() throws -> Set<String> {
        let directory = root.appendingPathComponent("Sources/AuroraClient")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
            $0.hasSuffix(".swift")
        }
        let use = try Regex(#"\bcall\(\s*API\.(\w+)"#)
        var names: Set<String> = []
        for file in files {
            let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            for match in text.matches(of: use) {
                if let name = match.output[1].substring { names.insert(String(name)) }
            }
        }
        return names
    }

    @Test("API.swift's declarations, as read here, are exactly API.all")
    func declarationsAreTheTable() throws {
        let declared = try Self.declaredEndpoints()
        #expect(declared.count == API.all.count)
        #expect(Set(declared.values) == Set(API.all))
    }

    @Test("every endpoint of API.all has a method in AuroraClient")
    func everyEndpointHasAMethod() throws {
        let declared = try Self.declaredEndpoints()
        let called = try Self.calledNames()
        #expect(called.count > 40)
        #expect(called.subtracting(declared.keys).sorted() == [], "calls of names that are not endpoints")
        let covered = Set(called.compactMap { declared[$0] })
        let missing = API.all.filter { !covered.contains($0) }.map(\.description)
        #expect(missing == [], "endpoints without an AuroraClient method")
    }

    @Test("the client's ?lag= values are what the checks' LagLimit reads")
    func lagQueryValues() {
        #expect(LagLimit(PostgresLagLimit.seconds(5).queryValue) == .seconds(5))
        #expect(LagLimit(PostgresLagLimit.seconds(0.5).queryValue) == .seconds(0.5))
        #expect(LagLimit(PostgresLagLimit.bytes(16_777_216).queryValue) == .bytes(16_777_216))
        #expect(LagLimit(PostgresLagLimit.bytes(0).queryValue) == .bytes(0))
    }
}
