import Foundation
import Testing

@testable import Mesh

/// WireGuard, pure: address allocation with a reuse grace period, rendering against golden
/// files, the diff that decides whether `wg syncconf` runs, and `wg show dump` parsing.
@Suite("WireGuard core: IPAM, rendering, diff, dump")
struct WireGuardTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("Golden/wireguard").path
    let network = try! IPv4Network(parsing: "10.0.0.0/24")

    func members(lead endpoint: String? = "198.51.100.1:51820") -> [WireGuardConfig.Member] {
        [
            .init(
                name: "lead", publicKey: "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL=", vpnIP: "10.0.0.1",
                endpoint: endpoint, behindNAT: false),
            .init(
                name: "gpu-1", publicKey: "GGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGGG=", vpnIP: "10.0.0.2",
                endpoint: "192.0.2.10:51820", behindNAT: false),
            .init(
                name: "gpu-2", publicKey: "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC=", vpnIP: "10.0.0.3",
                endpoint: "203.0.113.7:51820", behindNAT: false),
            .init(
                name: "edge-1", publicKey: "EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE=", vpnIP: "10.0.0.4",
                endpoint: nil, behindNAT: true),
            .init(
                name: "gone", publicKey: "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX=", vpnIP: "10.0.0.5",
                endpoint: nil, behindNAT: false, active: false),
        ]
    }

    func config(_ name: String, port: Int = 51820, members: [WireGuardConfig.Member]? = nil) -> WireGuardConfig {
        let all = members ?? self.members()
        return WireGuardConfig.build(
            for: all.first { $0.name == name }!, privateKey: nil, listenPort: port, network: network, members: all)
    }

    @Test(
        "addresses: the lead takes .1, nodes the lowest free, a requested one when free and inside; no room, outside and duplicates are refused"
    )
    func allocation() throws {
        let allocator = AddressAllocator(network: network)
        #expect(IPv4Network.format(allocator.leadAddress) == "10.0.0.1")
        let taken: Set<UInt32> = [allocator.leadAddress, IPv4Network.parse("10.0.0.2")!]
        #expect(try IPv4Network.format(allocator.allocate(requested: nil, taken: taken)) == "10.0.0.3")
        #expect(
            try IPv4Network.format(allocator.allocate(requested: IPv4Network.parse("10.0.0.77"), taken: taken))
                == "10.0.0.77")
        let outside = #expect(throws: MeshError.self) {
            try allocator.allocate(requested: IPv4Network.parse("10.0.1.5"), taken: taken)
        }
        #expect(outside?.message.contains("not inside the mesh network 10.0.0.0/24") == true)
        let duplicate = #expect(throws: MeshError.self) {
            try allocator.allocate(requested: IPv4Network.parse("10.0.0.2"), taken: taken)
        }
        #expect(duplicate?.code == .addressTaken)
        let tiny = AddressAllocator(network: try IPv4Network(parsing: "10.9.0.0/30"))  // .1 lead, .2 one node
        #expect(try IPv4Network.format(tiny.allocate(requested: nil, taken: [tiny.leadAddress])) == "10.9.0.2")
        let full = #expect(throws: MeshError.self) {
            try tiny.allocate(requested: nil, taken: [tiny.leadAddress, tiny.network.host(2)])
        }
        #expect(full?.message.contains("no free address") == true)
        #expect(throws: MeshError.self) { try IPv4Network(parsing: "10.0.0.0/31") }
    }

    @Test("a removed node's address is held for the grace period, then reused and reclaimed")
    func reuseAfterGrace() throws {
        let allocator = AddressAllocator(network: network)
        let taken: Set<UInt32> = [allocator.leadAddress]
        let removed = AddressAllocator.Released(
            node: "old-box", address: IPv4Network.parse("10.0.0.2")!, removedAgoS: 600)
        let within = try allocator.allocate(requested: nil, taken: taken, released: [removed], grace: 3600)
        #expect(IPv4Network.format(within.address) == "10.0.0.3" && within.reclaimed == nil)
        let asked = #expect(throws: MeshError.self) {
            try allocator.allocate(
                requested: IPv4Network.parse("10.0.0.2"), taken: taken, released: [removed], grace: 3600)
        }
        #expect(asked?.message.contains("old-box") == true && asked?.message.contains("3000 s") == true)
        let after = try allocator.allocate(requested: nil, taken: taken, released: [removed], grace: 300)
        #expect(IPv4Network.format(after.address) == "10.0.0.2" && after.reclaimed == "old-box")
    }

    @Test(
        "rendering matches the golden files: peers sorted, /32 each, endpoints when known, keepalive with NAT on either side"
    )
    func golden() throws {
        let gpu = config("gpu-1")
        #expect(gpu.wgQuick() == (try String(contentsOfFile: Self.golden + "/gpu-1.wg-quick.conf", encoding: .utf8)))
        let edge = config("edge-1", port: 51821)
        #expect(edge.setconf() == (try String(contentsOfFile: Self.golden + "/edge-1.setconf.conf", encoding: .utf8)))
        #expect(!gpu.peers.contains { $0.name == "gone" || $0.name == "gpu-1" })
        var keyed = config("gpu-1")
        keyed.interface.privateKey = "cHJpdmF0ZS1rZXktcHJpdmF0ZS1rZXktcHJpdmF0ZSE="
        #expect(keyed.wgQuick().contains("PrivateKey = cHJpdmF0ZS1rZXktcHJpdmF0ZS1rZXktcHJpdmF0ZSE="))
        #expect(!keyed.redacted.wgQuick().contains("cHJpdmF0ZS1rZXktcHJpdmF0ZS1rZXktcHJpdmF0ZSE="))
    }

    @Test("the wg-quick file reads back into the same configuration (the last good one, applied at boot)")
    func roundTrip() throws {
        var keyed = config("gpu-1")
        keyed.interface.privateKey = "cHJpdmF0ZS1rZXktcHJpdmF0ZS1rZXktcHJpdmF0ZSE="
        #expect(WireGuardConfig(wgQuick: keyed.wgQuick(), node: "gpu-1") == keyed)
        #expect(WireGuardConfig(wgQuick: config("edge-1").wgQuick(), node: "edge-1") == config("edge-1"))
        #expect(WireGuardConfig(wgQuick: "[Peer]\nPublicKey = x\n", node: "n") == nil)
        #expect(WireGuardConfig(wgQuick: "", node: "n") == nil)
    }

    @Test("the diff: nothing when nothing changed; added, removed and changed peers; address and interface changes")
    func diff() {
        let before = config("gpu-1")
        #expect(WireGuardDiff(from: before, to: before).isEmpty)
        #expect(!WireGuardDiff(from: before, to: before).peersOrInterfaceChanged)
        var grown = members()
        grown.append(
            .init(
                name: "gpu-3", publicKey: "NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN=", vpnIP: "10.0.0.6",
                endpoint: nil, behindNAT: false))
        grown[2].endpoint = "203.0.113.8:51820"  // gpu-2 moved
        grown.removeAll { $0.name == "edge-1" }
        let after = config("gpu-1", members: grown)
        let change = WireGuardDiff(from: before, to: after)
        #expect(change.added == ["gpu-3"] && change.removed == ["edge-1"] && change.changed == ["gpu-2"])
        #expect(!change.addressChanged && !change.interfaceChanged && change.peersOrInterfaceChanged)
        #expect(change.summary == "+1 -1 ~1 peers")
        let moved = config("gpu-1", port: 51999)
        #expect(WireGuardDiff(from: before, to: moved).interfaceChanged)
        #expect(WireGuardDiff(from: nil, to: before).addressChanged)
    }

    @Test("wg show dump parses: handshake 0 is none, (none) endpoints and allowed IPs, junk is refused")
    func dump() throws {
        let text = """
            cHJpdmF0ZQ==\tcHVibGlj\t51820\toff
            UEVFUjE=\t(none)\t172.31.0.2:51820\t10.0.0.2/32\t1763760000\t9124\t8876\t25
            UEVFUjI=\t(none)\t(none)\t(none)\t0\t0\t148\toff

            """
        let parsed = try #require(WireGuardDump(parsing: text))
        #expect(parsed.publicKey == "cHVibGlj" && parsed.listenPort == 51820 && parsed.peers.count == 2)
        #expect(
            parsed.peers[0]
                == WireGuardPeerStatus(
                    publicKey: "UEVFUjE=", endpoint: "172.31.0.2:51820", allowedIPs: ["10.0.0.2/32"],
                    latestHandshake: 1_763_760_000, rxBytes: 9124, txBytes: 8876, persistentKeepalive: 25))
        #expect(
            parsed.peers[1].endpoint == nil && parsed.peers[1].allowedIPs.isEmpty
                && parsed.peers[1].latestHandshake == nil)
        #expect(parsed.peers[1].persistentKeepalive == nil)
        #expect(WireGuardDump(parsing: "Unable to access interface: No such device") == nil)
        // A "(none)" or empty item inside a list is no address (found by the fuzzer).
        let odd = try #require(WireGuardDump(parsing: "k\tp\t1\toff\nA\t\t\t,(none),,10.0.0.3/32\t0\t1\t2\toff\n"))
        #expect(odd.peers.first?.allowedIPs == ["10.0.0.3/32"])
    }
}
