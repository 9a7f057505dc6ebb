// Fuzz target `outbox-log`: the node outbox file, read back at start after a crash, a torn write
// or a flipped bit. The first byte picks how the rest is used:
//   even: the rest is a file image, as read from disk;
//   odd:  the rest describes records (kind, sequence, payload), which are encoded and joined
//         into a file, so checksums are right and the scan and the ledger see any sequence.
//
// Invariants: scanning and building the ledger never trap; every record the scan accepts is
// numbered at most `maxSequence` and re-encodes to the very bytes it was read from, in file
// order, the last ending at `validLength`; a file of whole records scans back to exactly those
// records; the ledger's next number is above every record's.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOutboxLog(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = InputReader(bytes(start, count))
    if input.byte() & 1 == 0 {
        checkImage(bytes(start, count).dropFirst().map { $0 })
    } else {
        var records: [OutboxRecord] = []
        while !input.isEmpty {
            let kind: OutboxRecord.Kind = input.byte() & 1 == 0 ? .report : .acknowledgement
            records.append(OutboxRecord(kind: kind, sequence: input.integer(), payload: input.chunk()))
        }
        let file = records.flatMap { $0.encoded() }
        let scan = OutboxScan.scan(file)
        // A record numbered above `maxSequence` is taken for corruption, so only files without one
        // must scan back exactly.
        let whole =
            scan.records == records && scan.validLength == file.count && scan.corruptRegions == 0 && !scan.tornTail
        expect(
            whole || records.contains { $0.sequence > OutboxRecord.maxSequence },
            "a file of \(records.count) whole records scanned as \(scan.records.count) records, \(scan.validLength) of \(file.count) bytes"
        )
        checkImage(file)
    }
    return 0
}

/// Scans `file` and checks what the scan and the ledger make of it.
private func checkImage(_ file: [UInt8]) {
    let scan = OutboxScan.scan(file)
    expect(
        scan.validLength <= file.count && scan.tornTail == (scan.validLength < file.count),
        "validLength \(scan.validLength) of \(file.count)")
    var offset = 0
    for record in scan.records {
        let encoded = record.encoded()
        guard let at = find(encoded, in: file, from: offset) else {
            expect(false, "record \(record.sequence) does not re-encode to bytes of the file after offset \(offset)")
            return
        }
        expect(record.sequence <= OutboxRecord.maxSequence, "record \(record.sequence) is numbered above maxSequence")
        let decoded = OutboxRecord.decode(file, at: at)
        expect(
            decoded?.record == record && decoded?.size == encoded.count,
            "record \(record.sequence) at \(at) decodes differently")
        offset = at + encoded.count
    }
    expect(offset == scan.validLength, "the last record ends at \(offset), validLength is \(scan.validLength)")
    expect(
        OutboxScan.scan(Array(file[..<scan.validLength])).records == scan.records,
        "the file cut at validLength scans differently")

    var ledger = OutboxLedger(scan.records)
    for record in scan.records {
        expect(
            ledger.nextSequence > record.sequence,
            "next sequence \(ledger.nextSequence) is not above record \(record.sequence)")
    }
    expect(
        ledger.pending.allSatisfy { $0.kind == .report && $0.sequence > ledger.acknowledged },
        "a pending record is acknowledged")
    let next = ledger.record(for: [1, 2, 3])
    ledger.appended(next)
    if let acknowledgement = ledger.acknowledgement(through: next.sequence) {
        ledger.acknowledged(acknowledgement)
        expect(ledger.pending.isEmpty, "reports remain after acknowledging through the newest")
    }
    _ = ledger.shouldCompact(threshold: 1 << 20)
}

/// The first index at or after `from` where `needle` occurs in `haystack`.
private func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
    guard needle.count <= haystack.count else { return nil }
    var index = from
    while index + needle.count <= haystack.count {
        if haystack[index..<index + needle.count].elementsEqual(needle) { return index }
        index += 1
    }
    return nil
}
