// Fuzz target `dns-query`: DNS messages as anyone who can reach an agent's DNS port sends them
// (UDP and TCP), through the parser and the mesh zone to an answer.
//
// Invariants: parsing never traps; a parsed question's name has at most 127 labels of 1-63
// bytes and 255 bytes in all; every answer starts with the query's id, has QR set and, over
// UDP, fits in 512 bytes; a refusal with a readable id is a 12-byte header.

import Mesh

private func entry(_ index: Int) -> MeshZone.Entry {
    let role = index % 2 == 0 ? "compute" : "edge"
    let company = index % 3 == 0 ? "acme" : ""
    let address = UInt32(0x0A00_0000) + UInt32(index)
    return MeshZone.Entry(
        name: "node-\(index)", role: role, company: company, address: address, live: index % 5 != 0, apiPort: 9999)
}

private let zone = MeshZone(domain: "aurora.internal", entries: (0..<40).map(entry), lead: "node-2")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNSQuery(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = bytes(start, count)
    do {
        let query = try DNSMessage.parseQuery(input)
        let labels = query.question.labels
        expect(labels.count <= 127 && labels.allSatisfy { (1...63).contains($0.utf8.count) }, "labels \(labels)")
        expect(labels.reduce(1) { $0 + $1.utf8.count + 1 } <= 255, "a name over 255 bytes: \(labels)")
        let (code, records) = zone.answer(query.question)
        for udp in [true, false] {
            let answer = DNSMessage.response(to: query, code: code, records: records, udp: udp)
            expect(answer.count >= 12 && answer[0] == input[0] && answer[1] == input[1], "the answer's id")
            expect(answer[2] & 0x80 != 0, "QR is set")
            expect(!udp || answer.count <= DNSMessage.udpLimit, "a UDP answer over 512 bytes")
        }
    } catch {
        if let id = error.id {
            expect(DNSMessage.failure(id: id, code: error.code).count == 12, "a refusal is a header")
        }
    }
    return 0
}
