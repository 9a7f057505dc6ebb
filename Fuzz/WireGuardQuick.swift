// Fuzz target `wireguard-quick`: the wg-quick file (`DATA/wireguard/IF.conf`), the last good
// configuration the agent wrote and reads back at boot. The first byte picks how the rest is used:
//   even: the rest is the file's text, as read from disk;
//   odd:  the rest describes mesh members (name, key, address, endpoint, NAT), from which the
//         configuration is built as the agent builds it, written and read back. Names, keys and
//         the node's own address are made what the registry lets through (node names, base64,
//         an allocated address); other members' addresses and endpoints are anything.
//
// Invariants: parsing never traps; a configuration written and read back is the same
// configuration (so nothing in it can add a line, a section or a peer to the file).

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireGuardQuick(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = InputReader(bytes(start, count))
    if input.byte() & 1 == 0 {
        let file = text(start + 1, max(0, count - 1))
        guard let config = WireGuardConfig(wgQuick: file, node: "fuzz") else { return 0 }
        checkRoundTrip(config)
    } else {
        let network = (try? IPv4Network(parsing: "10.0.0.0/16"))!
        var members: [WireGuardConfig.Member] = []
        while !input.isEmpty {
            let flags = input.byte()
            let name = input.string(),
                key = input.string().filter { $0.isASCII && ($0.isLetter || $0.isNumber || "+/=".contains($0)) }
            let member = WireGuardConfig.Member(
                name: name, publicKey: key, vpnIP: input.string(),
                endpoint: flags & 2 == 0 ? nil : input.string(), behindNAT: flags & 4 != 0,
                active: flags & 8 == 0)
            if (try? NodeName(name)) != nil { members.append(member) }
        }
        // The node's own address is the one the lead allocated it.
        guard let me = members.first, IPv4Network.parse(me.vpnIP) != nil else { return 0 }
        let config = WireGuardConfig.build(
            for: me, privateKey: "cHJpdmF0ZQ==", listenPort: 51820, network: network, members: members)
        checkRoundTrip(config)
    }
    return 0
}

private func checkRoundTrip(_ config: WireGuardConfig) {
    let file = config.wgQuick()
    expect(
        WireGuardConfig(wgQuick: file, node: config.node) == config,
        "a configuration of \(config.peers.count) peers, written and read back, differs:\n\(file)")
}
