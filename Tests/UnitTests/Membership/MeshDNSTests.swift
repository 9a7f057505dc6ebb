import Mesh
import Testing

@testable import NodeAgent

/// The mesh DNS server's pure core: the wire format (hostile queries included) and the zone.
@Suite("Mesh DNS (pure: wire format and zone)")
struct MeshDNSTests {
    /// A query as `dig` sends it: id, RD, one question, and an EDNS OPT record.
    static func query(
        _ name: String, type: UInt16 = 1, id: UInt16 = 0x1234, flags: UInt16 = 0x0100, edns: Bool = true
    ) -> [UInt8] {
        var out: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), UInt8(flags >> 8), UInt8(flags & 0xFF), 0, 1, 0, 0, 0, 0]
        out += [0, edns ? 1 : 0]
        for label in name.split(separator: ".") {
            out.append(UInt8(label.utf8.count))
            out += Array(label.utf8)
        }
        out += [0, UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
        if edns { out += [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0] }
        return out
    }

    static let zone = MeshZone(
        domain: "aurora.internal",
        entries: [
            .init(name: "lead-1", role: "lead", company: "", address: 0x0A00_0001, live: true, apiPort: 9443),
            .init(name: "gpu-1", role: "compute", company: "acme", address: 0x0A00_0002, live: true, apiPort: 9999),
            .init(name: "gpu-2", role: "compute", company: "acme", address: 0x0A00_0003, live: true, apiPort: nil),
            .init(name: "gpu-3", role: "compute", company: "other", address: 0x0A00_0004, live: false, apiPort: 9999),
            .init(name: "laptop", role: "edge", company: "", address: 0x0A00_0005, live: true, apiPort: 9999),
        ],
        lead: "lead-1")

    static func addresses(_ records: [DNSMessage.Record]) -> [UInt32] {
        records.compactMap { if case .a(_, let address, _) = $0 { address } else { nil } }
    }

    @Test("a dig-style query parses: id, recursion desired, the name in lower case, type and class; EDNS is ignored")
    func parses() throws {
        let query = try DNSMessage.parseQuery(Self.query("GPU-1.Aurora.Internal", type: 33))
        #expect(query.id == 0x1234 && query.recursionDesired)
        #expect(query.question == DNSMessage.Question(labels: ["gpu-1", "aurora", "internal"], type: 33))
        let plain = try DNSMessage.parseQuery(Self.query("gpu-1.aurora.internal", edns: false))
        #expect(plain.question.name == "gpu-1.aurora.internal")
    }

    @Test("the zone: a node, the lead, a role, a company, SRV; dead nodes are in no answer; NXDOMAIN, NODATA, REFUSED")
    func zone() {
        func ask(_ name: String, _ type: UInt16 = 1) -> (DNSMessage.ResponseCode, [DNSMessage.Record]) {
            Self.zone.answer(DNSMessage.Question(labels: MeshZone.labels(name), type: type))
        }
        #expect(Self.addresses(ask("gpu-1.aurora.internal").1) == [0x0A00_0002])
        #expect(Self.addresses(ask("lead.aurora.internal").1) == [0x0A00_0001])
        #expect(Self.addresses(ask("compute.aurora.internal").1) == [0x0A00_0002, 0x0A00_0003], "gpu-3 is dead")
        #expect(Self.addresses(ask("company.acme.aurora.internal").1) == [0x0A00_0002, 0x0A00_0003])
        #expect(Self.addresses(ask("edge.aurora.internal", 255).1) == [0x0A00_0005])
        #expect(ask("gpu-3.aurora.internal").0 == .nameError, "a dead node's name is gone")
        #expect(ask("company.other.aurora.internal").0 == .nameError)
        #expect(ask("nobody.aurora.internal").0 == .nameError)
        #expect(ask("a.b.c.aurora.internal").0 == .nameError)
        let aaaa = ask("gpu-1.aurora.internal", 28)
        #expect(aaaa.0 == .noError && aaaa.1.isEmpty, "a known name, another type: NODATA")
        #expect(ask("aurora.internal").0 == .noError && ask("aurora.internal").1.isEmpty)
        for outside in ["example.com", "internal", "gpu-1.aurora.internal.evil", "aurora.internal.example.com"] {
            #expect(ask(outside).0 == .refused, "\(outside)")
        }
        let services = ask("_aurora._tcp.aurora.internal", 33).1
        #expect(
            services.contains(
                .srv(
                    name: ["_aurora", "_tcp", "aurora", "internal"], priority: 0, weight: 0, port: 9443,
                    target: ["lead-1", "aurora", "internal"], ttl: 5)))
        #expect(services.count == 3, "gpu-2 has no known port, gpu-3 is dead: \(services)")
        #expect(ask("_aurora._tcp.gpu-1.aurora.internal", 33).1.count == 1)
        #expect(
            Self.zone.answer(DNSMessage.Question(labels: ["gpu-1", "aurora", "internal"], type: 1, dnsClass: 3)).0
                == .refused, "class CHAOS")
    }

    @Test(
        "the answer echoes the question, is authoritative, and carries the A record; over UDP it stays within 512 bytes"
    )
    func answers() throws {
        let query = try DNSMessage.parseQuery(Self.query("gpu-1.aurora.internal"))
        let (code, records) = Self.zone.answer(query.question)
        let bytes = DNSMessage.response(to: query, code: code, records: records, udp: true)
        #expect(Array(bytes[0..<2]) == [0x12, 0x34])
        #expect(bytes[2] & 0x80 != 0 && bytes[2] & 0x04 != 0, "QR and AA")
        #expect(bytes[3] & 0x0F == 0 && bytes[7] == 1, "NOERROR, one answer")
        #expect(Array(bytes.suffix(4)) == [10, 0, 0, 2])
        // 60 addresses do not fit in 512 bytes: UDP truncates (TC), TCP does not.
        let many = MeshZone(
            domain: "aurora.internal",
            entries: (0..<60).map {
                .init(
                    name: "n\($0)", role: "compute", company: "", address: 0x0A00_0100 + UInt32($0), live: true,
                    apiPort: 1)
            }, lead: nil)
        let roleQuery = try DNSMessage.parseQuery(Self.query("compute.aurora.internal"))
        let (manyCode, manyRecords) = many.answer(roleQuery.question)
        let udp = DNSMessage.response(to: roleQuery, code: manyCode, records: manyRecords, udp: true)
        #expect(udp.count <= 512 && udp[2] & 0x02 != 0, "truncated, with TC")
        let tcp = DNSMessage.response(to: roleQuery, code: manyCode, records: manyRecords, udp: false)
        #expect(tcp[2] & 0x02 == 0 && Int(tcp[6]) << 8 | Int(tcp[7]) == 60)
    }

    @Test(
        "hostile queries are refused with a reason, never a crash: truncation, loops, long labels, responses, opcodes")
    func hostile() {
        func refused(_ bytes: [UInt8], _ code: DNSMessage.ResponseCode, _ what: String) {
            do {
                _ = try DNSMessage.parseQuery(bytes)
                Issue.record("\(what) parsed")
            } catch {
                #expect(error.code == code, "\(what): \(error.reason)")
            }
        }
        let good = Self.query("gpu-1.aurora.internal", edns: false)
        refused([], .formatError, "empty")
        refused(Array(good.prefix(11)), .formatError, "a short header")
        for cut in 12..<good.count { refused(Array(good.prefix(cut)), .formatError, "cut at \(cut)") }
        refused(Self.query("a.b", flags: 0x8100), .formatError, "a response")
        refused(Self.query("a.b", flags: 0x2800), .notImplemented, "opcode 5 (UPDATE)")
        var twoQuestions = good
        twoQuestions[5] = 2
        refused(twoQuestions, .formatError, "two questions")
        var withAnswers = good
        withAnswers[7] = 1
        refused(withAnswers, .formatError, "answers in a query")
        // A pointer to itself, a pointer forward, a pointer loop.
        refused(Array(good.prefix(12)) + [0xC0, 12, 0, 1, 0, 1], .formatError, "a pointer to itself")
        refused(Array(good.prefix(12)) + [0xC0, 40, 0, 1, 0, 1], .formatError, "a pointer forward")
        refused(Array(good.prefix(12)) + [1, 0x61, 0xC0, 12, 0, 1, 0, 1], .formatError, "a pointer loop")
        refused(
            Array(good.prefix(12)) + [64] + Array(repeating: 0x61, count: 64) + [0, 0, 1, 0, 1], .formatError,
            "a 64-byte label")
        var long = Array(good.prefix(12))
        for _ in 0..<5 { long += [60] + Array(repeating: 0x61, count: 60) }
        refused(long + [0, 0, 1, 0, 1], .formatError, "a 305-byte name")
        refused(Array(good.prefix(12)) + [3, 0x61, 0x00, 0x62, 0, 0, 1, 0, 1], .formatError, "a NUL in a label")
        refused(Array(good.prefix(12)) + [0x80, 0, 0, 1, 0, 1], .formatError, "a reserved label type")
        // FORMERR carries the id when it was readable.
        #expect(DNSMessage.failure(id: 7, code: .formatError) == [0, 7, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    }
}

/// `dns.configure: hosts`: the marked block of the hosts file.
@Suite("Hosts file block (pure)")
struct HostsBlockTests {
    @Test("the block replaces an old one and keeps every other line; removing it restores the file")
    func block() {
        let original = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
        let added = HostsFileService.replacing(block: ["10.0.0.2 gpu-1.aurora.internal"], in: original)
        #expect(
            added == original + HostsFileService.begin + "\n10.0.0.2 gpu-1.aurora.internal\n" + HostsFileService.end
                + "\n")
        let replaced = HostsFileService.replacing(block: ["10.0.0.3 gpu-2.aurora.internal"], in: added + "# mine\n")
        #expect(replaced.contains("# mine") && !replaced.contains("gpu-1") && replaced.contains("gpu-2"))
        #expect(HostsFileService.replacing(block: nil, in: added) == original)
        #expect(HostsFileService.replacing(block: nil, in: original) == original)
        #expect(HostsFileService.replacing(block: nil, in: "a") == "a\n")
    }

    @Test("live nodes and the lead's alias; a dead node and a name that is not a plain host name are left out")
    func lines() {
        let zone = MeshZone(
            domain: "aurora.internal",
            entries: [
                .init(name: "lead-1", role: "lead", company: "", address: 0x0A00_0001, live: true, apiPort: nil),
                .init(name: "GPU-1", role: "compute", company: "", address: 0x0A00_0002, live: true, apiPort: nil),
                .init(name: "gpu-2", role: "compute", company: "", address: 0x0A00_0003, live: false, apiPort: nil),
                .init(name: "a b\nc", role: "compute", company: "", address: 0x0A00_0004, live: true, apiPort: nil),
            ], lead: "lead-1")
        #expect(
            HostsFileService.lines(zone) == [
                "10.0.0.2 gpu-1.aurora.internal", "10.0.0.1 lead-1.aurora.internal", "10.0.0.1 lead.aurora.internal",
            ])
    }
}
