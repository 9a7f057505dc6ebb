import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 19: nodes behind NAT. A public lead, a public compute node that relays (`relay.enabled`
/// and the trusted label `relay=true`), and three homes behind their own NAT routers (nftables
/// masquerade, no inbound): two endpoint-independent, one symmetric. Every agent runs
/// wireguard-go in apply mode and answers DNS on its mesh address; each namespace's resolver is
/// its own agent.
@Suite("Nodes behind NAT: relays, hole punching, re-NAT, names (namespaces, nftables, wireguard-go)", .serialized)
struct MeshNATTests {
    @Test(
        "names resolve and every pair pings; NATed pairs are relayed and a punchable pair turns direct; the relay carries only WireGuard and refuses strangers; re-NAT recovers; the lead away, names and relayed traffic go on"
    )
    func nat() async throws {
        let scratch = try ScratchDirectory("nat")
        defer { scratch.remove() }
        // Homes 1 and 2 are endpoint-independent NATs, home 3 symmetric.
        let mesh = try await NATMesh(
            root: scratch.path, homes: [false, false, true], executable: Binaries.nodeagent, cli: Binaries.auroraCLI)
        do {
            try await scenario(mesh, scratch: scratch)
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }

    func scenario(_ mesh: NATMesh, scratch: ScratchDirectory) async throws {
        let net = mesh.net, lead = mesh.lead, relay = mesh.relay, everyone = mesh.everyone
        let home1 = mesh.homes[0], home2 = mesh.homes[1], home3 = mesh.homes[2]
        let relayAddress = relay.address
        func api<T: Decodable>(_ m: NATMesh.Member, _ path: String, as type: T.Type) async throws -> T {
            try await mesh.api(m, path, as: type)
        }
        func paths() async throws -> [String: MeshPath] { try await mesh.paths() }
        func byName(_ from: NATMesh.Member, _ to: NATMesh.Member) async -> Bool { await mesh.reachesByName(from, to) }

        // 1. Every node resolves and pings every other by name: NAT to NAT included.
        _ = try await poll(timeout: .seconds(90), every: .milliseconds(500), "every pair to resolve and ping by name") {
            () async throws -> Bool? in
            for a in everyone {
                for b in everyone where a.name != b.name {
                    guard await byName(a, b) else { return nil }
                }
            }
            return true
        }

        // 2. The symmetric home's pairs stay relayed through the relay node (not the lead); the
        //    two endpoint-independent homes punch through and turn direct.
        let settled = try await poll(timeout: .seconds(90), every: .milliseconds(500), "the paths to settle") {
            () async throws -> [String: MeshPath]? in
            let paths = try await paths()
            guard paths.count == 3, paths["home-1|home-2"]?.mode == .direct,
                paths["home-1|home-3"]?.mode == .relayed, paths["home-2|home-3"]?.mode == .relayed,
                paths["home-1|home-3"]?.natB == "symmetric"
            else { return nil }
            return paths
        }
        let relayed = try #require(settled["home-1|home-3"])
        #expect(relayed.relay == relay.name && settled["home-2|home-3"]?.relay == relay.name)
        #expect(relayed.reason.contains("symmetric"))
        #expect(settled["home-1|home-2"]?.natA == "endpoint-independent")
        // home-1's peer entry for home-3 points at the relay's port; for home-2 at home-2's NAT.
        let home1Status = try await api(home1, Routes.wireguard, as: WireGuardStatus.self)
        let home3Key = try await api(home3, Routes.wireguard, as: WireGuardStatus.self).publicKey
        let home2Key = try await api(home2, Routes.wireguard, as: WireGuardStatus.self).publicKey
        let wgShow = try await net.run(in: home1.namespace, "/usr/bin/wg", ["show", home1.interface, "endpoints"])
            .stdout
        #expect(wgShow.contains("\(home3Key)\t\(relayed.relayA ?? "?")"), "\(wgShow)")
        #expect(wgShow.contains("\(home2Key)\t\(home2.publicAddress ?? "?"):51820"), "\(wgShow)")
        #expect(home1Status.paths?.count == 2)
        // `aurora-cli status` shows each pair's path.
        let status = try await net.run(
            in: lead.namespace, Binaries.auroraCLI, ["status", "--agent", lead.url, "--data-dir", lead.dataDir])
        #expect(status.stdout.contains("home-1 ↔ home-3") && status.stdout.contains("relayed via gpu-1"))
        #expect(status.stdout.contains("home-1 ↔ home-2") && status.stdout.contains("direct"))

        // 3. A capture on the relay while home-1 pings home-3: only WireGuard datagrams cross
        //    the relay's ports; the pings' plaintext never does.
        let capture = scratch.path + "/relay.pcap"
        let dump = try net.spawn(
            in: relay.namespace, "/usr/bin/tcpdump",
            ["-i", "any", "-n", "-U", "--immediate-mode", "-w", capture, "udp portrange 41000-41127"])
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "tcpdump to start") {
            FileManager.default.fileExists(atPath: capture) ? true : nil
        }
        for _ in 0..<5 {
            #expect(await net.pings(from: home1.namespace, home3.meshIP), "relayed ping")
        }
        _ = try await net.run(
            in: home1.namespace, "/usr/bin/ping", ["-c", "3", "-i", "0.2", "-p", "deadbeefcafe", "-q", home3.meshIP])
        // Full-size packets too: 1420 bytes of IP in the tunnel (WireGuard pads to 16 only up to
        // the MTU, so such a datagram is no multiple of 16; a relay that assumed so dropped TCP).
        let large = try await net.run(
            in: home1.namespace, "/usr/bin/ping",
            ["-c", "3", "-i", "0.2", "-s", "1392", "-M", "do", "-q", home3.meshIP])
        #expect(large.code == 0, "full-MTU packets cross the relay: \(large.stdout)")
        // Every forwarded datagram is written as it comes (--immediate-mode, -U): wait for them.
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "the capture to hold the pings") {
            () async throws -> Bool? in
            (try? PCAP.udpPayloads(capture).count).map { $0 >= 10 ? true : nil } ?? nil
        }
        dump.signal(SIGINT)
        _ = try await dump.waitForExit(timeout: .seconds(10))
        let payloads = try PCAP.udpPayloads(capture)
        #expect(payloads.count >= 10, "the relay forwarded the pings")
        #expect(payloads.allSatisfy(PCAP.isWireGuard), "only WireGuard datagrams")
        #expect(
            !payloads.contains { Data($0).range(of: Data([0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe])) != nil },
            "no plaintext")
        let relayView = try #require(
            try await api(relay, Routes.wireguard, as: WireGuardStatus.self).relay?.first {
                $0.a == "home-1" && $0.b == "home-3"
            })
        #expect(relayView.forwardedAToB > 0 && relayView.forwardedBToA > 0)
        #expect(relayView.latchedA?.hasPrefix((home1.publicAddress ?? "?") + ":") == true)

        // 4. Strangers at the relay's ports: not WireGuard, or WireGuard-shaped from a host that is
        //    not the side's: dropped, counted, and the pair keeps its addresses.
        let portA = try #require(relayed.relayA?.split(separator: ":").last.flatMap { Int($0) })
        let injector = scratch.path + "/inject.py"
        try """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for payload in (b"GET / HTTP/1.0\\r\\n\\r\\n", b"\\x04\\x00\\x00\\x00" + b"\\x00" * 44, b"\\x01\\x00\\x00\\x00" + b"\\x00" * 144, b"\\xff" * 3000):
            s.sendto(payload, (sys.argv[1], int(sys.argv[2])))
        """.write(toFile: injector, atomically: true, encoding: .utf8)
        let droppedBefore = relayView.dropped
        _ = try await net.run(in: lead.namespace, "/usr/bin/python3", [injector, relayAddress, String(portA)])
        let after = try await poll(timeout: .seconds(10), every: .milliseconds(200), "the relay to drop them") {
            () async throws -> RelayPairStatus? in
            let view = try await api(relay, Routes.wireguard, as: WireGuardStatus.self).relay?.first {
                $0.a == "home-1" && $0.b == "home-3"
            }
            return view.map { $0.dropped >= droppedBefore + 4 ? $0 : nil } ?? nil
        }
        #expect(after.latchedA == relayView.latchedA, "a stranger does not take home-1's place")
        #expect(await net.pings(from: home1.namespace, home3.meshIP), "the pair still flows")

        // 5. Re-NAT: home-3's router gets another public address and forgets its mappings.
        //    Pings from home-3 (relayed to home-1, direct to the lead) and to it (relayed from
        //    home-2) recover within 10 s.
        let renumbered = try await net.renumber(home: 5)
        let moved = ContinuousClock.now
        _ = try await poll(timeout: .seconds(10), every: .milliseconds(100), "home-3's pings to recover") {
            () async throws -> Bool? in
            guard await net.pings(from: home3.namespace, home1.meshIP),
                await net.pings(from: home3.namespace, lead.meshIP),
                // The other way round, on the other relayed pair: home-3 told its peers where it is now.
                await net.pings(from: home2.namespace, home3.meshIP)
            else { return nil }
            return true
        }
        let recovery = moved.duration(to: .now)
        #expect(recovery < .seconds(10))
        _ = try await poll(timeout: .seconds(20), every: .milliseconds(250), "the relay to latch home-3's new address")
        {
            () async throws -> Bool? in
            let view = try await api(relay, Routes.wireguard, as: WireGuardStatus.self).relay?.first {
                $0.a == "home-1" && $0.b == "home-3"
            }
            return view?.latchedB?.hasPrefix(renumbered + ":") == true ? true : nil
        }

        // 6. The lead stops: names still resolve on every node, and the relayed pair keeps
        //    flowing through the relay node.
        #expect(try await mesh.stop(lead.name) == 0)
        for a in everyone.dropFirst() {
            for b in everyone where a.name != b.name {
                let found = try await net.run(in: a.namespace, "/usr/bin/getent", ["hosts", b.fqdn]).stdout
                #expect(found.hasPrefix(b.meshIP + " "), "\(a.name) resolves \(b.fqdn) with the lead away")
            }
        }
        var last = (one: false, two: false)
        do {
            _ = try await poll(timeout: .seconds(10), every: .milliseconds(200), "relayed pings, lead away") {
                () async throws -> Bool? in
                last = (
                    await net.pings(from: home1.namespace, home3.meshIP),
                    await net.pings(from: home2.namespace, home3.meshIP)
                )
                return last.one && last.two ? true : nil
            }
        } catch {
            // What each side and the relay had when it did not flow.
            var seen = "home-1 → home-3: \(last.one), home-2 → home-3: \(last.two)"
            for m in [home1, home2, home3] {
                let wg = try? await net.run(in: m.namespace, "/usr/bin/wg", ["show", m.interface, "dump"])
                seen += "\n\(m.name) wg: \(wg?.stdout ?? "")"
            }
            let relayed = try? await api(relay, Routes.wireguard, as: WireGuardStatus.self).relay
            seen += "\nrelay: \(String(describing: relayed))"
            let home3Paths = try? await api(home3, Routes.wireguard, as: WireGuardStatus.self).paths
            seen += "\nhome-3's paths: \(String(describing: home3Paths))"
            Issue.record("relayed pings with the lead away: \(error)\n\(seen)")
            throw error
        }
        #expect(await net.pings(from: home1.namespace, home2.fqdn), "the direct pair, lead away")

    }
}

extension PCAP {
    /// The shape of a WireGuard message (type 1-4, three zero bytes, the type's length), written
    /// here again from the protocol rather than taken from the code under test.
    static func isWireGuard(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 4, bytes[1] == 0, bytes[2] == 0, bytes[3] == 0 else { return false }
        switch bytes[0] {
        case 1: return bytes.count == 148
        case 2: return bytes.count == 92
        case 3: return bytes.count == 64
        case 4: return bytes.count >= 32  // padded to 16, but never past the MTU
        default: return false
        }
    }
}

/// The UDP payloads of a pcap file (`tcpdump -i any -w`: Linux cooked capture v1, or Ethernet).
enum PCAP {
    static func udpPayloads(_ path: String) throws -> [[UInt8]] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count >= 24 else { return [] }
        func u32(_ at: Int) -> Int {
            Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
        }
        let linkType = u32(20)
        let linkHeader: Int
        switch linkType {
        case 1: linkHeader = 14  // Ethernet
        case 113: linkHeader = 16  // Linux cooked v1
        case 276: linkHeader = 20  // Linux cooked v2
        default: throw TestKitError("pcap link type \(linkType) is not handled")
        }
        var payloads: [[UInt8]] = []
        var offset = 24
        while offset + 16 <= bytes.count {
            let captured = u32(offset + 8)
            let start = offset + 16
            offset = start + captured
            guard offset <= bytes.count, captured > linkHeader + 28 else { continue }
            let ip = start + linkHeader
            guard bytes[ip] >> 4 == 4, bytes[ip + 9] == 17 else { continue }
            let udp = ip + Int(bytes[ip] & 0x0f) * 4
            let length = Int(bytes[udp + 4]) << 8 | Int(bytes[udp + 5])
            let end = min(udp + length, start + captured)
            guard end >= udp + 8 else { continue }
            payloads.append(Array(bytes[(udp + 8)..<end]))
        }
        return payloads
    }
}
