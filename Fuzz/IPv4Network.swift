// Fuzz target `ipv4-network`: the mesh network (`wireguard.cidr`, `10.0.0.0/24`) from config
// and the data directory, and single addresses (`vpn_ip`) from join requests.
//
// Invariants: parsing never traps; a parsed address prints as a dotted quad that parses back to
// it; a parsed network has a prefix of 8-30, a base with no host bits, prints as text that parses
// back to it, and its first and last hosts are inside it.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIPv4Network(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    if let address = IPv4Network.parse(input) {
        let printed = IPv4Network.format(address)
        expect(IPv4Network.parse(printed) == address, "'\(input)' prints as '\(printed)', which does not parse back")
    }
    guard let network = try? IPv4Network(parsing: input) else { return 0 }
    expect((8...30).contains(network.prefix), "'\(input)' parsed with prefix \(network.prefix)")
    expect(network.base & ~(~UInt32(0) << (32 - network.prefix)) == 0, "'\(input)' parsed to a base with host bits")
    let printed = network.description
    expect(
        (try? IPv4Network(parsing: printed)) == network, "'\(input)' prints as '\(printed)', which does not parse back")
    expect(
        network.contains(network.host(1)) && network.contains(network.host(network.hostCount)),
        "'\(input)': its hosts are outside it")
    expect(!network.contains(network.base), "'\(input)': the network address counts as a host")
    return 0
}
