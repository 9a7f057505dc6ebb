// Fuzz target `lsn`: PostgreSQL's write-ahead-log positions (`16/B374D848`) as the replica
// monitor reads them from query results. Two positions separated by a space are both parsed and
// compared.
//
// Invariants: parsing never traps; a parsed position prints in PostgreSQL's form (upper-case
// hex, no leading zeros) and parses back to itself; `bytes(after:)` is the distance, never
// negative.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLSN(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    let positions = input.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).compactMap {
        LSN(String($0))
    }
    for lsn in positions {
        let printed = lsn.description
        expect(LSN(printed) == lsn, "\(lsn.value) prints as '\(printed)', which does not parse back")
        expect(
            printed == printed.uppercased()
                && printed.split(separator: "/").allSatisfy { $0 == "0" || !$0.hasPrefix("0") },
            "\(lsn.value) prints as '\(printed)', not in PostgreSQL's form")
    }
    if positions.count == 2 {
        let (a, b) = (positions[0], positions[1])
        let distance = a.bytes(after: b)
        expect(a > b ? distance == a.value - b.value : distance == 0, "\(a) after \(b) is \(distance) bytes")
        expect(distance == 0 || b.bytes(after: a) == 0, "\(a) and \(b) are both after each other")
    }
    return 0
}
