// Fuzz target `wireguard-dump`: the output of `wg show IF dump`, read every few seconds for
// handshake ages and traffic.
//
// Invariants: parsing never traps; a parsed dump, printed again in the dump's own format, parses
// to the same dump.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireGuardDump(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    guard let dump = WireGuardDump(parsing: input) else { return 0 }
    let printed = render(dump)
    expect(
        WireGuardDump(parsing: printed) == dump,
        "the dump of \(dump.peers.count) peers, printed again, parses differently:\n\(printed)")
    return 0
}

/// `dump` in the format of `wg show IF dump`.
private func render(_ dump: WireGuardDump) -> String {
    var lines = ["(private)\t\(dump.publicKey)\t\(dump.listenPort)\toff"]
    for peer in dump.peers {
        let allowed = peer.allowedIPs.isEmpty ? "(none)" : peer.allowedIPs.joined(separator: ",")
        lines.append(
            [
                peer.publicKey, "(none)", peer.endpoint ?? "(none)", allowed, "\(peer.latestHandshake ?? 0)",
                "\(peer.rxBytes)", "\(peer.txBytes)", peer.persistentKeepalive.map { "\($0)" } ?? "off",
            ].joined(separator: "\t"))
    }
    return lines.joined(separator: "\n") + "\n"
}
