// Fuzz target `node-name`: node names from join requests, config files and host names.
//
// Invariants: validation never traps; an accepted name is 1-63 ASCII letters, digits, `-`, `_`
// and `.`, starting with a letter or digit; a name derived from any host name is such a name.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNodeName(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    if let name = try? NodeName(input) {
        expect(name.value == input && wellFormed(name.value), "'\(input)' was accepted as '\(name.value)'")
    }
    if let derived = NodeName.fromHostName(input) {
        expect(wellFormed(derived.value), "host name '\(input)' gave the node name '\(derived.value)'")
        expect(
            (try? NodeName(derived.value)) == derived,
            "host name '\(input)' gave '\(derived.value)', which does not validate")
    }
    return 0
}

private func wellFormed(_ name: String) -> Bool {
    let bytes = Array(name.utf8)
    func alphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
    guard let first = bytes.first, alphanumeric(first), bytes.count <= 63 else { return false }
    return bytes.allSatisfy {
        alphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
    }
}
