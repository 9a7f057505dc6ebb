import AuroraAPI
import Foundation
import Logging
import Mesh
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Outbox record format and ledger (pure core)")
struct OutboxCoreTests {
    func report(_ sequence: UInt64, _ text: String) -> OutboxRecord {
        OutboxRecord(kind: .report, sequence: sequence, payload: Array(text.utf8))
    }

    @Test("CRC-32 matches the IEEE check value")
    func crc() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        // Continuing a checksum equals checksumming the whole.
        #expect(CRC32.checksum(Array("6789".utf8), seed: CRC32.checksum(Array("12345".utf8))) == 0xCBF4_3926)
    }

    @Test("records round-trip; every prefix of a record is not a record")
    func roundTrip() throws {
        let record = report(7, #"{"id":"x"}"#)
        let bytes = record.encoded()
        #expect(bytes.count == OutboxRecord.headerSize + record.payload.count)
        let decoded = try #require(OutboxRecord.decode(bytes, at: 0))
        #expect(decoded.record == record && decoded.size == bytes.count)
        for cut in 0..<bytes.count {
            #expect(OutboxRecord.decode(Array(bytes.prefix(cut)), at: 0) == nil, "prefix \(cut)")
        }
        // A flipped bit anywhere makes it invalid.
        for index in 4..<bytes.count {
            var damaged = bytes
            damaged[index] ^= 0x10
            #expect(OutboxRecord.decode(damaged, at: 0) == nil, "flip at \(index)")
        }
    }

    @Test("a torn tail is dropped: the records before it survive, at every cut point")
    func tornTail() {
        let first = report(1, "first"), second = report(2, "second")
        let whole = first.encoded() + second.encoded()
        for cut in first.encoded().count..<whole.count {
            let scan = OutboxScan.scan(Array(whole.prefix(cut)))
            #expect(scan.records == [first])
            #expect(scan.validLength == first.encoded().count)
            #expect(scan.tornTail == (cut > first.encoded().count))
            #expect(scan.corruptRegions == 0)
        }
        let complete = OutboxScan.scan(whole)
        #expect(complete.records == [first, second] && !complete.tornTail && complete.validLength == whole.count)
    }

    @Test("a damaged record in the middle is skipped and the rest is read")
    func damagedMiddle() {
        let records = [report(1, "one"), report(2, "two"), report(3, "three")]
        var bytes = records.flatMap { $0.encoded() }
        bytes[records[0].encoded().count + OutboxRecord.headerSize] ^= 0xFF  // payload of record 2
        let scan = OutboxScan.scan(bytes)
        #expect(scan.records == [records[0], records[2]])
        #expect(scan.corruptRegions == 1 && !scan.tornTail)
    }

    @Test("the ledger keeps unacknowledged reports in order and numbers new ones after the highest")
    func ledger() throws {
        let records = [
            report(1, "a"), report(2, "b"), OutboxRecord(kind: .acknowledgement, sequence: 1), report(3, "c"),
        ]
        var ledger = OutboxLedger(records)
        #expect(ledger.pending.map(\.sequence) == [2, 3])
        #expect(ledger.acknowledged == 1 && ledger.nextSequence == 4)
        #expect(!ledger.shouldCompact(threshold: 1 << 20))
        let next = ledger.record(for: Array("d".utf8))
        #expect(next.sequence == 4)
        ledger.appended(next)
        #expect(ledger.acknowledgement(through: 1) == nil, "nothing new")
        let ack = try #require(ledger.acknowledgement(through: 3))
        ledger.acknowledged(ack)
        #expect(ledger.pending.map(\.sequence) == [4])
        #expect(ledger.shouldCompact(threshold: 10), "mostly dead bytes over the threshold")
        let last = try #require(ledger.acknowledgement(through: 4))
        ledger.acknowledged(last)
        #expect(ledger.pending.isEmpty && ledger.shouldCompact(threshold: 1 << 20))
        ledger.compacted()
        #expect(!ledger.shouldCompact(threshold: 1 << 20))
    }
}

@Suite("Outbox file (fsync'd appends, torn tail repaired on open)", .serialized)
struct OutboxFileTests {
    let logger = Logger(label: "test")

    func scratch() throws -> String {
        let path = "/tmp/aurora-unit-outbox-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func event(_ n: Int) -> NodeReport {
        .make(.event, event: NodeEvent(type: EventType.checkChanged, data: ["n": .number(Double(n))]))
    }

    @Test("appends survive a reopen; acknowledged reports do not come back; an empty outbox compacts to nothing")
    func reopen() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outbox = try Outbox(dataDir: directory, logger: logger)
        let reports = (1...5).map(event)
        for report in reports { try await outbox.append(report) }
        #expect(outbox.pendingCount == 5)
        let first = outbox.peek(limit: 2)
        #expect(first.compactMap(\.report) == Array(reports.prefix(2)))
        await outbox.acknowledge(through: first[1].sequence, delivered: 2)
        await outbox.close()

        let again = try Outbox(dataDir: directory, logger: logger)
        #expect(again.peek(limit: 10).compactMap(\.report) == Array(reports.dropFirst(2)))
        #expect(!again.tornTailRepaired)
        // New reports follow the old ones.
        try await again.append(event(6))
        let all = again.peek(limit: 10)
        #expect(all.map(\.sequence) == all.map(\.sequence).sorted() && all.count == 4)
        await again.acknowledge(through: all.last!.sequence, delivered: 4)
        #expect(again.isEmpty)
        #expect(
            (try FileManager.default.attributesOfItem(atPath: again.path)[.size] as? Int) == 0, "compacted once empty")
        #expect(SecureFile.mode(again.path) == 0o600)
        await again.close()
    }

    @Test(
        "a crash in the middle of a write: the torn record is cut off on open and new appends follow the last whole one"
    )
    func tornWrite() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outbox = try Outbox(dataDir: directory, logger: logger)
        let kept = [event(1), event(2)]
        for report in kept { try await outbox.append(report) }
        let path = outbox.path
        await outbox.close()
        // Half of a third record, as a crash during write() leaves it.
        let torn = OutboxRecord(kind: .report, sequence: 3, payload: Array(try APICoding.encoder().encode(event(3))))
            .encoded()
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(torn.prefix(torn.count / 2)))
        try handle.close()

        let reopened = try Outbox(dataDir: directory, logger: logger)
        #expect(reopened.tornTailRepaired)
        #expect(reopened.peek(limit: 10).compactMap(\.report) == kept)
        try await reopened.append(event(4))
        await reopened.close()
        let third = try Outbox(dataDir: directory, logger: logger)
        #expect(!third.tornTailRepaired)
        #expect(
            third.peek(limit: 10).compactMap(\.report).map(\.event?.data)
                == [kept[0], kept[1], event(4)].map(\.event?.data))
        #expect(third.status.pending == 3)
        await third.close()
    }

    @Test("job results waiting in the outbox are named as leases")
    func leases() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outbox = try Outbox(dataDir: directory, logger: logger)
        try await outbox.append(.make(.jobResult, job: "job-1", result: JobResult(attempt: 2, outcome: .succeeded)))
        try await outbox.append(event(1))
        #expect(outbox.pendingJobLeases == [JobLease(id: "job-1", attempt: 2)])
        await outbox.close()
    }
}
