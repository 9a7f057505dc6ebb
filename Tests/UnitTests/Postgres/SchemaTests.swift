import AuroraTestKit
import Testing

@testable import NodeAgent

@Suite("Store schema")
struct SchemaTests {
    @Test("migrations are numbered 1...n without gaps, and the test kit expects n")
    func numbering() {
        #expect(Migrations.all.map(\.version) == Array(1...Migrations.all.count))
        #expect(Migrations.all.last?.version == latestSchemaVersion)
    }
}
