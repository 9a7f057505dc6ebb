import AuroraAPI
import Foundation
import Logging
import Testing

@testable import NodeAgent

/// What an old lead's data directory remembers once it rejoined the new lead as its standby, and
/// the role it starts as from then on (no processes, no PostgreSQL).
@Suite("An old lead rejoins as a standby (markers and starting role)")
struct LeadRejoinTests {
    static func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-rejoin-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("a rejoined lead starts as a standby, a promotion wins over the rejoin, other roles keep theirs")
    func startingRole() {
        #expect(LeadRejoin.startingRole(configured: .lead, promoted: false, rejoined: false) == .lead)
        #expect(LeadRejoin.startingRole(configured: .lead, promoted: false, rejoined: true) == .standby)
        #expect(LeadRejoin.startingRole(configured: .lead, promoted: true, rejoined: true) == .lead)
        #expect(LeadRejoin.startingRole(configured: .standby, promoted: true, rejoined: false) == .lead)
        #expect(LeadRejoin.startingRole(configured: .standby, promoted: true, rejoined: true) == .lead)
        #expect(LeadRejoin.startingRole(configured: .standby, promoted: false, rejoined: true) == .standby)
        for role in [NodeRole.compute, .edge] {
            #expect(LeadRejoin.startingRole(configured: role, promoted: true, rejoined: true) == role)
        }
    }

    @Test("the marker round-trips; a file that does not decode stops the start instead of guessing")
    func marker() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try RejoinMarker.load(dataDir: directory) == nil)
        let marker = RejoinMarker(
            epoch: 4, lead: "lead-b", at: "2026-12-01T07:00:00Z", movePending: true, keptData: nil)
        try marker.save(dataDir: directory)
        #expect(try RejoinMarker.load(dataDir: directory) == marker)
        let text = try String(contentsOfFile: RejoinMarker.path(dataDir: directory), encoding: .utf8)
        #expect(text.contains("\"move_pending\":true") || text.contains("\"move_pending\": true"), "\(text)")
        try "{\"epoch\":\"four\"}".write(
            toFile: RejoinMarker.path(dataDir: directory), atomically: true, encoding: .utf8)
        #expect(throws: AgentError.self) { try RejoinMarker.load(dataDir: directory) }
    }

    @Test("the old primary's data goes to pgdata.before-epoch-N, never over an earlier copy")
    func keptDataPath() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(LeadRejoin.keptDataPath(dataDir: directory, epoch: 3) == directory + "/pgdata.before-epoch-3")
        try FileManager.default.createDirectory(
            atPath: directory + "/pgdata.before-epoch-3", withIntermediateDirectories: false)
        #expect(LeadRejoin.keptDataPath(dataDir: directory, epoch: 3) == directory + "/pgdata.before-epoch-3.2")
        try FileManager.default.createDirectory(
            atPath: directory + "/pgdata.before-epoch-3.2", withIntermediateDirectories: false)
        #expect(LeadRejoin.keptDataPath(dataDir: directory, epoch: 3) == directory + "/pgdata.before-epoch-3.3")
    }
}
