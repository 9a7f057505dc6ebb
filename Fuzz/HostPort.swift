// Fuzz target `host-port`: `HOST:PORT` and `[V6]:PORT` addresses, as nodes send them in joins
// and heartbeats and as the config files and flags give them.
//
// Invariants: parsing never traps; a parsed address has a host and a port in 0-65535, and
// prints as text that parses back to the same address.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHostPort(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    guard let address = try? HostPort(parsing: input) else { return 0 }
    expect(
        !address.host.isEmpty && (0...65535).contains(address.port),
        "'\(input)' parsed to host '\(address.host)' port \(address.port)")
    let printed = address.description
    expect((try? HostPort(parsing: printed)) == address, "'\(input)' prints as '\(printed)', which does not parse back")
    return 0
}
