// The node outbox's record format and ledger: a pure core. The shell (NodeAgent's `Outbox`)
// appends encoded records to a file with fsync and feeds the bytes it reads back to `scan`.
// No I/O here: byte arrays in, byte arrays and decisions out.

// MARK: - CRC-32

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib and `cksum -o 3` compute it.
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    /// Continues a checksum (`seed` is a previous result; 0 to start).
    public static func checksum(_ bytes: some Sequence<UInt8>, seed: UInt32 = 0) -> UInt32 {
        var crc = ~seed
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }
}

// MARK: - Records

/// One record of the outbox file.
///
/// Layout, little-endian: magic `AOB1` (4 bytes), kind (1), sequence (8), payload length (4),
/// CRC-32 of kind + sequence + length + payload (4), payload. A record is valid only when all of
/// it is there and the checksum matches, so a write cut short by a crash is recognised.
public struct OutboxRecord: Sendable, Equatable {
    /// What a record is.
    public enum Kind: UInt8, Sendable {
        /// A report to deliver; `sequence` numbers it.
        case report = 1
        /// Every report up to and including `sequence` was delivered.
        case acknowledgement = 2
    }

    public static let magic: [UInt8] = Array("AOB1".utf8)
    public static let headerSize = 21
    /// Larger lengths are taken for corruption.
    public static let maxPayload = 16 << 20
    /// Larger sequence numbers are taken for corruption (the ledger counts up from 1 and adds 1
    /// to the highest it reads, which must not overflow).
    public static let maxSequence = UInt64(Int64.max)

    public var kind: Kind
    public var sequence: UInt64
    public var payload: [UInt8]

    public init(kind: Kind, sequence: UInt64, payload: [UInt8] = []) {
        self.kind = kind
        self.sequence = sequence
        self.payload = payload
    }

    /// The record's bytes, ready for one `write`.
    public func encoded() -> [UInt8] {
        var body: [UInt8] = [kind.rawValue]
        body.reserveCapacity(Self.headerSize + payload.count)
        Self.put(sequence, bytes: 8, into: &body)
        Self.put(UInt64(payload.count), bytes: 4, into: &body)
        let crc = CRC32.checksum(payload, seed: CRC32.checksum(body))
        var bytes = Self.magic + body
        Self.put(UInt64(crc), bytes: 4, into: &bytes)
        bytes += payload
        return bytes
    }

    /// The record at `offset` and its size, or nil when the bytes there are not a whole, valid record.
    public static func decode(_ bytes: [UInt8], at offset: Int) -> (record: OutboxRecord, size: Int)? {
        guard offset >= 0, bytes.count - offset >= headerSize else { return nil }
        for index in 0..<4 where bytes[offset + index] != magic[index] { return nil }
        guard let kind = Kind(rawValue: bytes[offset + 4]) else { return nil }
        let sequence = read(bytes, at: offset + 5, count: 8)
        let length = Int(read(bytes, at: offset + 13, count: 4))
        let crc = UInt32(read(bytes, at: offset + 17, count: 4))
        guard length <= maxPayload, sequence <= maxSequence, bytes.count - offset - headerSize >= length else {
            return nil
        }
        let payloadStart = offset + headerSize
        let computed = CRC32.checksum(
            bytes[payloadStart..<payloadStart + length], seed: CRC32.checksum(bytes[(offset + 4)..<(offset + 17)]))
        guard computed == crc else { return nil }
        return (
            OutboxRecord(kind: kind, sequence: sequence, payload: Array(bytes[payloadStart..<payloadStart + length])),
            headerSize + length
        )
    }

    private static func put(_ value: UInt64, bytes count: Int, into buffer: inout [UInt8]) {
        for index in 0..<count { buffer.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(index)))) }
    }

    private static func read(_ bytes: [UInt8], at offset: Int, count: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in (0..<count).reversed() { value = value << 8 | UInt64(bytes[offset + index]) }
        return value
    }
}

/// What a scan of the outbox file found.
public struct OutboxScan: Sendable, Equatable {
    /// The valid records, in file order.
    public var records: [OutboxRecord]
    /// Bytes up to the end of the last valid record: what is beyond it is a torn tail to cut off.
    public var validLength: Int
    /// Damaged stretches skipped between valid records (a flipped bit, not a crash).
    public var corruptRegions: Int
    /// Whether bytes after the last valid record were dropped (a write cut short by a crash).
    public var tornTail: Bool

    /// Reads every valid record of `bytes`. A damaged record followed by valid ones is skipped
    /// (the next record is found by its magic and checksum); damage at the end is a torn tail.
    public static func scan(_ bytes: [UInt8]) -> OutboxScan {
        var records: [OutboxRecord] = []
        var offset = 0, validLength = 0, corrupt = 0
        while offset < bytes.count {
            if let (record, size) = OutboxRecord.decode(bytes, at: offset) {
                records.append(record)
                offset += size
                validLength = offset
                continue
            }
            // Look for the next whole record after the damage.
            var next = offset + 1
            var found: Int?
            while next + OutboxRecord.headerSize <= bytes.count {
                if bytes[next] == OutboxRecord.magic[0], OutboxRecord.decode(bytes, at: next) != nil {
                    found = next
                    break
                }
                next += 1
            }
            guard let found else { break }
            corrupt += 1
            offset = found
        }
        return OutboxScan(
            records: records, validLength: validLength, corruptRegions: corrupt, tornTail: validLength < bytes.count)
    }
}

// MARK: - Ledger

/// Which reports are still to deliver, from the records of the file and what happens after.
///
/// Reports are numbered in append order; an acknowledgement covers every report up to its
/// number. Delivery is strictly in order, so one number is all the state there is.
public struct OutboxLedger: Sendable, Equatable {
    /// Reports not yet acknowledged, oldest first.
    public private(set) var pending: [OutboxRecord]
    /// The highest acknowledged report number.
    public private(set) var acknowledged: UInt64
    /// The number the next report gets.
    public private(set) var nextSequence: UInt64
    /// Bytes of records in the file that are no longer needed (delivered reports, acknowledgements).
    public private(set) var deadBytes: Int

    /// The ledger of a freshly scanned file.
    public init(_ records: [OutboxRecord]) {
        var acknowledged: UInt64 = 0, highest: UInt64 = 0
        for record in records {
            highest = max(highest, record.sequence)
            if record.kind == .acknowledgement { acknowledged = max(acknowledged, record.sequence) }
        }
        let pending = records.filter { $0.kind == .report && $0.sequence > acknowledged }
        self.pending = pending
        self.acknowledged = acknowledged
        self.nextSequence = highest + 1
        let live = pending.reduce(0) { $0 + OutboxRecord.headerSize + $1.payload.count }
        let all = records.reduce(0) { $0 + OutboxRecord.headerSize + $1.payload.count }
        self.deadBytes = all - live
    }

    /// The record for a new report (not yet in the ledger: ``appended(_:)`` once it is on disk).
    public func record(for payload: [UInt8]) -> OutboxRecord {
        OutboxRecord(kind: .report, sequence: nextSequence, payload: payload)
    }

    /// A report record reached the disk.
    public mutating func appended(_ record: OutboxRecord) {
        pending.append(record)
        nextSequence = max(nextSequence, record.sequence + 1)
    }

    /// The acknowledgement record for reports up to `sequence`; nil when it covers nothing new.
    public func acknowledgement(through sequence: UInt64) -> OutboxRecord? {
        guard sequence > acknowledged, pending.contains(where: { $0.sequence <= sequence }) else { return nil }
        return OutboxRecord(kind: .acknowledgement, sequence: sequence)
    }

    /// An acknowledgement record reached the disk.
    public mutating func acknowledged(_ record: OutboxRecord) {
        acknowledged = max(acknowledged, record.sequence)
        while let first = pending.first, first.sequence <= acknowledged {
            deadBytes += OutboxRecord.headerSize + first.payload.count
            pending.removeFirst()
        }
        deadBytes += OutboxRecord.headerSize
    }

    /// Whether the file should be rewritten with only the pending reports: once everything is
    /// delivered, or when most of the file is dead and it is large.
    public func shouldCompact(threshold: Int) -> Bool {
        (pending.isEmpty && deadBytes > 0) || (deadBytes > threshold && deadBytes > liveBytes)
    }

    /// Bytes of the pending reports.
    public var liveBytes: Int { pending.reduce(0) { $0 + OutboxRecord.headerSize + $1.payload.count } }

    /// The file was rewritten with only the pending reports.
    public mutating func compacted() {
        deadBytes = 0
    }
}
