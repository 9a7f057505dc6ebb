import AuroraAPI

/// One entry of the secrets audit log: the API's shape. Each entry's hash covers its fields and
/// the previous entry's hash, so changing, deleting or reordering entries breaks the chain.
public typealias AuditRecord = AuditEntry

/// Builds and verifies the hash chain of the audit log.
public enum AuditChain {
    /// The "previous hash" of the first entry.
    public static let genesis = String(repeating: "0", count: 64)

    /// Where a chain stops being trustworthy.
    public enum Problem: Sendable, Equatable, CustomStringConvertible {
        /// The entry's fields do not match its hash: it was changed.
        case changed(seq: Int64)
        /// Entries are missing before this one (its sequence skips, or its link does not match).
        case missing(before: Int64)
        /// Entries are out of order.
        case reordered(at: Int64)
        /// The newest entries are gone: the chain ends before the head recorded elsewhere.
        case truncated(last: Int64?)

        public var description: String {
            switch self {
            case .changed(let seq): "entry \(seq) was changed"
            case .missing(let seq): "entries before \(seq) are missing"
            case .reordered(let seq): "entries are out of order at \(seq)"
            case .truncated(let last): "the log ends at \(last.map(String.init) ?? "nothing"), before its recorded head"
            }
        }
    }

    /// The next entry after `previous` (nil: the first), with its hash.
    public static func append(
        after previous: AuditRecord?, at: String, actor: String, action: String, service: String, keyName: String,
        node: String? = nil, scope: String? = nil, version: Int? = nil, result: String
    ) -> AuditRecord {
        var record = AuditRecord(
            seq: (previous?.seq ?? 0) + 1, at: at, actor: actor, action: action, service: service, keyName: keyName,
            node: node, scope: scope, version: version, result: result,
            previousHash: previous?.hash ?? genesis, hash: "")
        record.hash = hash(of: record)
        return record
    }

    /// Hex SHA-256 over the previous hash and every field, each length-prefixed so no two
    /// different entries encode alike.
    public static func hash(of record: AuditRecord) -> String {
        var bytes: [UInt8] = []
        for field in [
            record.previousHash, String(record.seq), record.at, record.actor, record.action, record.service,
            record.keyName,
            record.node ?? "\u{0}", record.scope ?? "\u{0}", record.version.map(String.init) ?? "\u{0}", record.result,
        ] {
            let utf8 = Array(field.utf8)
            bytes += Array(String(utf8.count).utf8) + [0x3A] + utf8
        }
        return Crypto.sha256(bytes).map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 15)]], as: UTF8.self)
        }.joined()
    }

    /// The first problem in `records` (oldest first), or nil when the chain holds. With
    /// `head` (the newest sequence number kept elsewhere), deleting the newest entries is
    /// found too.
    public static func verify(_ records: [AuditRecord], head: Int64? = nil) -> Problem? {
        for (earlier, later) in zip(records, records.dropFirst()) where later.seq <= earlier.seq {
            return .reordered(at: later.seq)
        }
        var previous: AuditRecord?
        for record in records {
            if hash(of: record) != record.hash { return .changed(seq: record.seq) }
            let expectedSeq = (previous?.seq ?? 0) + 1
            let expectedLink = previous?.hash ?? genesis
            if record.seq != expectedSeq || record.previousHash != expectedLink { return .missing(before: record.seq) }
            previous = record
        }
        if let head, (previous?.seq ?? 0) < head { return .truncated(last: previous?.seq) }
        return nil
    }
}
