// Fuzz target `lag-limit`: the load balancer's `?lag=` value (`5s`, `500ms`, `2min`, `16MB`, `4096`),
// straight from a request's query string.
//
// Invariants: parsing never traps; a parsed limit is finite and not negative; it re-formats to
// text that parses to the same limit (`N` bytes, `Xs`: a count with a unit goes through Double,
// so `9999999999999999b` is 10^16 bytes and is not required to survive as `...b`); a lag of zero
// is within every limit, an unknown lag is not.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLagLimit(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    guard let limit = LagLimit(input) else { return 0 }
    switch limit {
    case .seconds(let seconds):
        expect(seconds.isFinite && seconds >= 0, "'\(input)' parsed to \(seconds) s")
        expect(
            LagLimit("\(seconds)s") == limit,
            "'\(input)' parsed to \(seconds) s, which does not re-parse from '\(seconds)s'")
    case .bytes(let bytes):
        expect(
            LagLimit("\(bytes)") == limit,
            "'\(input)' parsed to \(bytes) bytes, which does not re-parse from '\(bytes)'")
    }
    expect(limit.admits(lagBytes: 0, lagS: 0), "'\(input)' does not admit a lag of zero")
    expect(!limit.admits(lagBytes: nil, lagS: nil), "'\(input)' admits an unknown lag")
    return 0
}
