import Testing
import Mesh

/// Inputs that `Fuzz/run` found to break a parser, kept so they stay fixed.
@Suite("Fuzz findings")
struct FuzzFindingTests {
    @Test("an outbox record numbered UInt64.max is corruption, not a trap in the ledger")
    func outboxSequenceOverflow() throws {
        let first = OutboxRecord(kind: .report, sequence: 1, payload: Array("{}".utf8))
        let last = OutboxRecord(kind: .report, sequence: .max, payload: [])
        #expect(OutboxRecord.decode(last.encoded(), at: 0) == nil)
        let scan = OutboxScan.scan(first.encoded() + last.encoded())
        #expect(scan.records == [first])
        #expect(scan.tornTail)
        let ledger = OutboxLedger(scan.records)
        #expect(ledger.nextSequence == 2)
        // The largest number still read is one the ledger can count past.
        let highest = OutboxRecord(kind: .report, sequence: OutboxRecord.maxSequence, payload: [])
        #expect(try #require(OutboxRecord.decode(highest.encoded(), at: 0)).record == highest)
        #expect(OutboxLedger([highest]).nextSequence == OutboxRecord.maxSequence + 1)
    }

    @Test("'[[+[]:2' is refused: a bracketed host holding '[' would print as an address that does not parse back")
    func hostPortBracketInHost() {
        #expect(throws: MeshError.self) { try HostPort(parsing: "[[+[]:2") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "[[::1]:80") }
        #expect((try? HostPort(parsing: "[::1]:80"))?.description == "[::1]:80")
    }
}
