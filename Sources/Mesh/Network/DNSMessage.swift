/// The DNS wire format (RFC 1035), as much of it as an authoritative server for one zone needs:
/// a query with one question in, an answer with A and SRV records out. Pure: bytes in, bytes out.
///
/// Every byte of a query is untrusted: lengths are checked before they are used, a name is at
/// most 255 bytes in at most 127 labels of 1-63 bytes, and compression pointers may only point
/// backwards (so they cannot loop).
public enum DNSMessage {
    /// Record types this server speaks of.
    public enum RecordType: UInt16, Sendable {
        case a = 1
        case ns = 2
        case soa = 6
        case aaaa = 28
        case srv = 33
        case any = 255
    }

    /// The response codes it answers with.
    public enum ResponseCode: UInt8, Sendable {
        case noError = 0
        case formatError = 1
        case serverFailure = 2
        case nameError = 3  // NXDOMAIN
        case notImplemented = 4
        case refused = 5
    }

    /// The question of a query: its name in lower case, as labels, and its type and class.
    public struct Question: Sendable, Equatable {
        public var labels: [String]
        public var type: UInt16
        public var dnsClass: UInt16

        public init(labels: [String], type: UInt16, dnsClass: UInt16 = 1) {
            self.labels = labels
            self.type = type
            self.dnsClass = dnsClass
        }

        /// The name with dots, without the root's.
        public var name: String { labels.joined(separator: ".") }
    }

    /// A query: its id, whether it asked for recursion, its one question, and the question's
    /// bytes as they came (echoed in the answer).
    public struct Query: Sendable, Equatable {
        public var id: UInt16
        public var recursionDesired: Bool
        public var question: Question
        /// The question section's bytes (name, type, class), copied into the answer.
        public var questionBytes: [UInt8]
    }

    /// Why a message is not a query this server answers. `id` is the message's id when its header
    /// was whole, so a FORMERR can still be sent back.
    public struct ParseError: Error, Sendable, Equatable {
        public var id: UInt16?
        public var code: ResponseCode
        public var reason: String
    }

    /// One answer record.
    public enum Record: Sendable, Equatable {
        /// An IPv4 address (host byte order).
        case a(name: [String], address: UInt32, ttl: UInt32)
        case srv(name: [String], priority: UInt16, weight: UInt16, port: UInt16, target: [String], ttl: UInt32)
    }

    /// The largest UDP message sent back without truncation (RFC 1035's 512 bytes).
    public static let udpLimit = 512

    /// Parses a query: a header with QR clear, opcode 0 (QUERY) and exactly one question. Answer
    /// and authority sections must be empty; additional records (EDNS) are ignored.
    public static func parseQuery(_ bytes: [UInt8]) throws(ParseError) -> Query {
        guard bytes.count >= 12 else { throw ParseError(id: nil, code: .formatError, reason: "shorter than a header") }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let flags = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        func count(_ at: Int) -> Int { Int(bytes[at]) << 8 | Int(bytes[at + 1]) }
        guard flags & 0x8000 == 0 else {
            throw ParseError(id: id, code: .formatError, reason: "a response, not a query")
        }
        let opcode = (flags >> 11) & 0x0F
        guard opcode == 0 else {
            throw ParseError(id: id, code: .notImplemented, reason: "opcode \(opcode) (only QUERY is answered)")
        }
        guard count(4) == 1 else {
            throw ParseError(id: id, code: .formatError, reason: "\(count(4)) questions (one is answered)")
        }
        guard count(6) == 0, count(8) == 0 else {
            throw ParseError(id: id, code: .formatError, reason: "a query with answer or authority records")
        }
        var offset = 12
        let labels: [String]
        do { labels = try readName(bytes, at: &offset) } catch {
            throw ParseError(id: id, code: .formatError, reason: error.reason)
        }
        guard offset + 4 <= bytes.count else {
            throw ParseError(id: id, code: .formatError, reason: "the question has no type and class")
        }
        let type = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        let dnsClass = UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])
        let question = Question(labels: labels, type: type, dnsClass: dnsClass)
        // The question as this server writes it: no compression, the name in lower case.
        var questionBytes = [UInt8]()
        writeName(labels, into: &questionBytes)
        questionBytes += [UInt8(type >> 8), UInt8(type & 0xFF), UInt8(dnsClass >> 8), UInt8(dnsClass & 0xFF)]
        return Query(
            id: id, recursionDesired: flags & 0x0100 != 0, question: question, questionBytes: questionBytes)
    }

    /// A name's labels in lower case, read at `offset` (which moves past the name as it is in the
    /// message, pointers included). Throws for a truncated name, a label over 63 bytes, a name
    /// over 255, a pointer that does not point backwards, or a label holding a byte outside
    /// printable ASCII.
    static func readName(_ bytes: [UInt8], at offset: inout Int) throws(ParseError) -> [String] {
        var labels: [String] = []
        var length = 1
        var position = offset
        var jumped = false
        var lowestTarget = offset
        while true {
            guard position < bytes.count else {
                throw ParseError(id: nil, code: .formatError, reason: "truncated name")
            }
            let byte = bytes[position]
            switch byte & 0xC0 {
            case 0x00:
                let size = Int(byte)
                if size == 0 {
                    if !jumped { offset = position + 1 }
                    return labels
                }
                guard position + 1 + size <= bytes.count else {
                    throw ParseError(id: nil, code: .formatError, reason: "truncated label")
                }
                length += size + 1
                guard length <= 255 else {
                    throw ParseError(id: nil, code: .formatError, reason: "a name over 255 bytes")
                }
                let label = bytes[(position + 1)...(position + size)]
                guard label.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                    throw ParseError(id: nil, code: .formatError, reason: "a label with a byte outside printable ASCII")
                }
                labels.append(
                    String(decoding: label.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self))
                position += 1 + size
            case 0xC0:
                guard position + 1 < bytes.count else {
                    throw ParseError(id: nil, code: .formatError, reason: "truncated pointer")
                }
                let target = Int(byte & 0x3F) << 8 | Int(bytes[position + 1])
                // Only backwards, and each jump further back than the last: no loop can form.
                guard target < lowestTarget else {
                    throw ParseError(
                        id: nil, code: .formatError, reason: "a compression pointer that does not point back")
                }
                if !jumped { offset = position + 2 }
                jumped = true
                lowestTarget = target
                position = target
            default:
                throw ParseError(id: nil, code: .formatError, reason: "a reserved label type")
            }
        }
    }

    static func writeName(_ labels: [String], into out: inout [UInt8]) {
        for label in labels {
            let bytes = Array(label.utf8.prefix(63))
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
    }

    /// The answer to `query`: authoritative, recursion not available, its question echoed and
    /// `records` as answers. Over UDP, records that do not fit in 512 bytes are left out and
    /// the TC bit set (the client asks again over TCP).
    public static func response(
        to query: Query, code: ResponseCode, records: [Record], udp: Bool
    ) -> [UInt8] {
        var encoded: [[UInt8]] = records.map(encode)
        var truncated = false
        if udp {
            var size = 12 + query.questionBytes.count
            var kept = 0
            for record in encoded {
                guard size + record.count <= udpLimit else {
                    truncated = true
                    break
                }
                size += record.count
                kept += 1
            }
            encoded = Array(encoded.prefix(kept))
        }
        var flags: UInt16 = 0x8000 | 0x0400  // QR, AA
        if truncated { flags |= 0x0200 }
        if query.recursionDesired { flags |= 0x0100 }
        flags |= UInt16(code.rawValue)
        var out = header(id: query.id, flags: flags, questions: 1, answers: encoded.count)
        out += query.questionBytes
        for record in encoded { out += record }
        return out
    }

    /// An answer without a question: FORMERR or NOTIMP for a message whose id was readable.
    public static func failure(id: UInt16, code: ResponseCode) -> [UInt8] {
        header(id: id, flags: 0x8000 | UInt16(code.rawValue), questions: 0, answers: 0)
    }

    static func header(id: UInt16, flags: UInt16, questions: Int, answers: Int) -> [UInt8] {
        [
            UInt8(id >> 8), UInt8(id & 0xFF), UInt8(flags >> 8), UInt8(flags & 0xFF),
            0, UInt8(questions), UInt8(answers >> 8), UInt8(answers & 0xFF), 0, 0, 0, 0,
        ]
    }

    static func encode(_ record: Record) -> [UInt8] {
        var out = [UInt8]()
        func u16(_ value: UInt16) { out += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        func u32(_ value: UInt32) {
            out += [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
        }
        switch record {
        case .a(let name, let address, let ttl):
            writeName(name, into: &out)
            u16(RecordType.a.rawValue)
            u16(1)
            u32(ttl)
            u16(4)
            u32(address)
        case .srv(let name, let priority, let weight, let port, let target, let ttl):
            writeName(name, into: &out)
            u16(RecordType.srv.rawValue)
            u16(1)
            u32(ttl)
            var data = [UInt8]()
            data += [UInt8(priority >> 8), UInt8(priority & 0xFF), UInt8(weight >> 8), UInt8(weight & 0xFF)]
            data += [UInt8(port >> 8), UInt8(port & 0xFF)]
            writeName(target, into: &data)
            u16(UInt16(data.count))
            out += data
        }
        return out
    }
}
