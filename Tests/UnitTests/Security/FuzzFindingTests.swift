import Mesh
import Testing

/// Inputs that `Fuzz/run` found to break a parser, kept so they stay fixed.
@Suite("Fuzz findings")
struct FuzzFindingTests {
    @Test("an outbox record numbered UInt64.max is corruption, not a trap in the ledger")
    func outboxSequenceOverflow() throws {
        let first = OutboxRecord(kind: .report, sequence: 1, payload: Array("{}".utf8))
        let last = OutboxRecord(kind: .report, sequence: .max, payload: [])
        #expect(OutboxRecord.decode(last.encoded(), at: 0) == nil)
        let scan = OutboxScan.scan(first.encoded() + last.encoded())
        #expect(scan.records == [first])
        #expect(scan.tornTail)
        let ledger = OutboxLedger(scan.records)
        #expect(ledger.nextSequence == 2)
        // The largest number still read is one the ledger can count past.
        let highest = OutboxRecord(kind: .report, sequence: OutboxRecord.maxSequence, payload: [])
        #expect(try #require(OutboxRecord.decode(highest.encoded(), at: 0)).record == highest)
        #expect(OutboxLedger([highest]).nextSequence == OutboxRecord.maxSequence + 1)
    }

    @Test("'[[+[]:2' is refused: a bracketed host holding '[' would print as an address that does not parse back")
    func hostPortBracketInHost() {
        #expect(throws: MeshError.self) { try HostPort(parsing: "[[+[]:2") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "[[::1]:80") }
        #expect((try? HostPort(parsing: "[::1]:80"))?.description == "[::1]:80")
    }

    @Test("an endpoint with a line break cannot add lines to the WireGuard file; only HOST:PORT endpoints are written")
    func wireGuardEndpointInjection() throws {
        let network = try IPv4Network(parsing: "10.0.0.0/24")
        let evil = "203.0.113.7:51820\n[Peer]\nPublicKey = QUFBQQ==\nAllowedIPs = 0.0.0.0/0"
        let members: [WireGuardConfig.Member] = [
            .init(name: "lead", publicKey: "TGVhZA==", vpnIP: "10.0.0.1", endpoint: nil, behindNAT: false),
            .init(name: "gpu-01", publicKey: "UGVlcjE=", vpnIP: "10.0.0.2", endpoint: evil, behindNAT: false),
            .init(
                name: "gpu-02", publicKey: "UGVlcjI=", vpnIP: "10.0.0.3", endpoint: " 192.0.2.1:51820", behindNAT: false
            ),
            .init(
                name: "gpu-03", publicKey: "UGVlcjM=", vpnIP: "10.0.0.4", endpoint: "[2001:db8::1]:51820",
                behindNAT: false),
        ]
        let config = WireGuardConfig.build(
            for: members[0], privateKey: nil, listenPort: 51820, network: network, members: members)
        #expect(config.peers.map(\.endpoint) == [nil, nil, "[2001:db8::1]:51820"])
        #expect(!config.wgQuick().contains("0.0.0.0/0"))
        #expect(WireGuardConfig(wgQuick: config.wgQuick(), node: "lead") == config)
    }

    @Test("empty AllowedIPs entries ('AllowedIPs = 1, ,') are dropped when the wg-quick file is read back")
    func wireGuardEmptyAllowedIP() throws {
        let file =
            "[Interface]\nAddress = 10.0.0.1/24\nListenPort = 51820\n# gpu-01\n[Peer]\nPublicKey = UGVlcjE=\nAllowedIPs = 10.0.0.2/32, ,\n"
        let config = try #require(WireGuardConfig(wgQuick: file, node: "lead"))
        #expect(config.peers.map(\.allowedIPs) == [["10.0.0.2/32"]])
        #expect(WireGuardConfig(wgQuick: config.wgQuick(), node: "lead") == config)
    }
}
