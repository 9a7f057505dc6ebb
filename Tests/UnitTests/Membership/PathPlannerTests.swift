import Testing

@testable import Mesh

/// The lead's path decisions for pairs of nodes behind NAT, and the relay's datagram check.
@Suite("Paths between nodes behind NAT: relays, trials, direct")
struct PathPlannerTests {
    typealias View = PathPlanner.NodeView

    static let timing = PathPlanner.Timing(
        firstTrialAfter: .seconds(5), trialTimeout: .seconds(12), backoff: .seconds(60), maxBackoff: .seconds(240),
        directIdle: .seconds(75))

    /// A lead (last-resort relay), a relay node, and NATed homes seen by both observers.
    func mesh(homes: [String: [String]], relayNode: Bool = true, links: [String: [String: View.Link]] = [:]) -> [View] {
        var views = [
            View(
                name: "lead", alive: true, behindNAT: false, outside: [], relay: ("203.0.113.1", 41000, 64),
                relayLast: true),
            View(name: "gpu-1", alive: true, behindNAT: false, outside: []),
        ]
        if relayNode { views[1].relay = ("203.0.113.2", 42000, 8) }
        for (name, outside) in homes.sorted(by: { $0.key < $1.key }) {
            views.append(
                View(
                    name: name, alive: true, behindNAT: true, outside: outside,
                    publicHost: outside.first.flatMap { $0.split(separator: ":").first.map(String.init) },
                    links: links[name] ?? [:]))
        }
        return views
    }

    @Test("pairs of NATed nodes start relayed through a relay node, not the lead; others are not listed")
    func startsRelayed() throws {
        var planner = PathPlanner(timing: Self.timing)
        let now = ContinuousClock.now
        let paths = planner.plan(
            mesh(homes: ["home-1": ["198.51.100.1:51820"], "home-2": ["198.51.100.2:51820"], "home-3": []]), now: now)
        #expect(paths.map { "\($0.a)|\($0.b)" } == ["home-1|home-2", "home-1|home-3", "home-2|home-3"])
        for path in paths {
            #expect(path.mode == .relayed && path.relay == "gpu-1")
            let a = try #require(path.relayA.map { try HostPort(parsing: $0) })
            let b = try #require(path.relayB.map { try HostPort(parsing: $0) })
            #expect(a.host == "203.0.113.2" && b.port == a.port + 1 && (42000..<42016).contains(a.port))
        }
        #expect(Set(paths.compactMap(\.relayA)).count == 3, "every pair its own ports")
        #expect(paths[0].hostA == "198.51.100.1" && paths[0].hostB == "198.51.100.2")
        // The same pairs get the same relay and ports from a fresh planner (a restarted lead).
        var again = PathPlanner(timing: Self.timing)
        #expect(
            again.plan(
                mesh(homes: ["home-1": ["198.51.100.1:51820"], "home-2": ["198.51.100.2:51820"], "home-3": []]),
                now: now
            ).map(\.relayA) == paths.map(\.relayA))
    }

    @Test("with no relay node the lead relays; once a relay node appears the pair moves to it")
    func leadAsLastResort() {
        var planner = PathPlanner(timing: Self.timing)
        let now = ContinuousClock.now
        let homes = ["home-1": ["198.51.100.1:51820"], "home-2": ["198.51.100.2:51820"]]
        #expect(planner.plan(mesh(homes: homes, relayNode: false), now: now).first?.relay == "lead")
        #expect(planner.plan(mesh(homes: homes), now: now + .seconds(1)).first?.relay == "gpu-1")
        // No relay at all: still listed, with the reason.
        var bare = PathPlanner(timing: Self.timing)
        var views = mesh(homes: homes, relayNode: false)
        views[0].relay = nil
        let path = bare.plan(views, now: now).first
        #expect(path?.relay == nil && path?.relayA == nil && path?.reason.contains("no relay") == true)
    }

    @Test("a punchable pair tries, turns direct when both see the other's traffic, and tries again after roaming")
    func holePunching() {
        var planner = PathPlanner(timing: Self.timing)
        let start = ContinuousClock.now
        let one = "198.51.100.1:51820", two = "198.51.100.2:51820"
        let homes = ["home-1": [one, one], "home-2": [two, two]]
        #expect(planner.plan(mesh(homes: homes), now: start).first?.mode == .relayed)
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(4)).first?.mode == .relayed)
        let trying = planner.plan(mesh(homes: homes), now: start + .seconds(5)).first
        #expect(trying?.mode == .trying && trying?.directA == one && trying?.directB == two)
        // Both use the direct endpoints; counters must then rise for a second.
        func links(_ rx1: Int64, _ rx2: Int64) -> [String: [String: View.Link]] {
            [
                "home-1": ["home-2": .init(endpoint: two, rxBytes: rx1)],
                "home-2": ["home-1": .init(endpoint: one, rxBytes: rx2)],
            ]
        }
        #expect(
            planner.plan(mesh(homes: homes, links: links(100, 100)), now: start + .seconds(6)).first?.mode == .trying)
        #expect(
            planner.plan(mesh(homes: homes, links: links(100, 100)), now: start + .seconds(8)).first?.mode == .trying)
        let direct = planner.plan(mesh(homes: homes, links: links(200, 180)), now: start + .seconds(9)).first
        #expect(direct?.mode == .direct && direct?.relay == "gpu-1", "the relay slot is kept for a fallback")
        // home-2 re-NATs: a new outside endpoint is tried at once.
        let moved = ["home-1": [one, one], "home-2": ["198.51.100.9:51820", "198.51.100.9:51820"]]
        let retry = planner.plan(mesh(homes: moved, links: links(300, 300)), now: start + .seconds(20)).first
        #expect(retry?.mode == .trying && retry?.directB == "198.51.100.9:51820")
    }

    @Test("a trial with no traffic goes back to its relay and backs off (doubling, capped)")
    func failedTrial() {
        var planner = PathPlanner(timing: Self.timing)
        let start = ContinuousClock.now
        let homes = ["home-1": ["198.51.100.1:51820"], "home-2": ["198.51.100.2:51820"]]
        _ = planner.plan(mesh(homes: homes), now: start)
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(5)).first?.mode == .trying)
        let back = planner.plan(mesh(homes: homes), now: start + .seconds(17)).first
        #expect(back?.mode == .relayed && back?.reason.contains("trial failed") == true)
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(76)).first?.mode == .relayed, "60 s backoff")
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(77)).first?.mode == .trying)
        _ = planner.plan(mesh(homes: homes), now: start + .seconds(89))  // fails again: 120 s
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(208)).first?.mode == .relayed)
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(209)).first?.mode == .trying)
    }

    @Test("a side behind a symmetric NAT is never tried; a trial under way stops when it shows")
    func symmetric() {
        var planner = PathPlanner(timing: Self.timing)
        let start = ContinuousClock.now
        let homes = ["home-1": ["198.51.100.1:51820", "198.51.100.1:51820"], "home-3": ["198.51.100.3:40001"]]
        _ = planner.plan(mesh(homes: homes), now: start)
        #expect(planner.plan(mesh(homes: homes), now: start + .seconds(5)).first?.mode == .trying, "not known yet")
        let seen = [
            "home-1": ["198.51.100.1:51820", "198.51.100.1:51820"],
            "home-3": ["198.51.100.3:40001", "198.51.100.3:52113"],
        ]
        let path = planner.plan(mesh(homes: seen), now: start + .seconds(6)).first
        #expect(path?.mode == .relayed && path?.reason.contains("home-3 is behind a symmetric NAT") == true)
        #expect(planner.plan(mesh(homes: seen), now: start + .seconds(600)).first?.mode == .relayed)
        // home-3 moves: one observer sees its new mapping first. It is still known symmetric.
        let moving = ["home-1": seen["home-1"]!, "home-3": ["198.51.100.33:40777"]]
        #expect(planner.plan(mesh(homes: moving), now: start + .seconds(700)).first?.mode == .relayed)
        #expect(mesh(homes: seen).last?.natType == "symmetric")
        #expect(mesh(homes: seen).dropLast().last?.natType == "endpoint-independent")
        #expect(mesh(homes: ["x": ["198.51.100.1:1"]]).last?.natType == nil, "one observer says nothing")
    }

    @Test("a direct pair whose counters stand still goes back to its relay; a dead node's pairs go")
    func directIdleAndDeath() {
        var planner = PathPlanner(timing: Self.timing)
        let start = ContinuousClock.now
        let one = "198.51.100.1:51820", two = "198.51.100.2:51820"
        let homes = ["home-1": [one], "home-2": [two]]
        let links: [String: [String: View.Link]] = [
            "home-1": ["home-2": .init(endpoint: two, rxBytes: 10)],
            "home-2": ["home-1": .init(endpoint: one, rxBytes: 10)],
        ]
        let later: [String: [String: View.Link]] = [
            "home-1": ["home-2": .init(endpoint: two, rxBytes: 20)],
            "home-2": ["home-1": .init(endpoint: one, rxBytes: 20)],
        ]
        _ = planner.plan(mesh(homes: homes), now: start)
        _ = planner.plan(mesh(homes: homes, links: links), now: start + .seconds(5))
        _ = planner.plan(mesh(homes: homes, links: links), now: start + .seconds(6))
        #expect(planner.plan(mesh(homes: homes, links: later), now: start + .seconds(8)).first?.mode == .direct)
        #expect(planner.plan(mesh(homes: homes, links: later), now: start + .seconds(60)).first?.mode == .direct)
        #expect(planner.plan(mesh(homes: homes, links: later), now: start + .seconds(84)).first?.mode == .relayed)
        var views = mesh(homes: homes)
        views[3].alive = false
        #expect(planner.plan(views, now: start + .seconds(85)).isEmpty)
    }

    @Test("at most 128 nodes behind NAT are planned (their pairs grow with the square); the rest are counted")
    func bounded() {
        var planner = PathPlanner(timing: Self.timing)
        var homes: [String: [String]] = [:]
        for i in 0..<130 { homes["home-\(1000 + i)"] = ["198.51.100.\(i % 250):51820"] }
        let paths = planner.plan(mesh(homes: homes), now: .now)
        #expect(paths.count == 128 * 127 / 2 && planner.overflow == 2)
        #expect(!paths.contains { $0.b == "home-1128" || $0.b == "home-1129" })
    }

    @Test("the relay's check: WireGuard message types with their lengths, nothing else")
    func frames() {
        func message(_ type: UInt8, _ length: Int) -> [UInt8] {
            [type, 0, 0, 0] + [UInt8](repeating: 7, count: length - 4)
        }
        #expect(WireGuardFrame.isValid(message(1, 148)) && WireGuardFrame.isValid(message(2, 92)))
        #expect(WireGuardFrame.isValid(message(3, 64)) && WireGuardFrame.isValid(message(4, 32)))
        #expect(WireGuardFrame.isValid(message(4, 32 + 16 * 90)))
        #expect(!WireGuardFrame.isValid(message(1, 147)) && !WireGuardFrame.isValid(message(2, 93)))
        // A full-MTU packet (1420 bytes of plaintext, padding capped at the MTU) is 1452 bytes.
        #expect(WireGuardFrame.isValid(message(4, 1452)))
        #expect(!WireGuardFrame.isValid(message(4, 31)) && !WireGuardFrame.isValid(message(4, 16)))
        #expect(!WireGuardFrame.isValid(message(5, 148)) && !WireGuardFrame.isValid(message(0, 148)))
        #expect(!WireGuardFrame.isValid([1, 0, 1, 0] + [UInt8](repeating: 0, count: 144)), "reserved bytes")
        #expect(!WireGuardFrame.isValid([UInt8]()) && !WireGuardFrame.isValid([4, 0, 0]))
        #expect(!WireGuardFrame.isValid(Array("GET / HTTP/1.1\r\n\r\n".utf8)))
    }

    @Test("a node's peer entry takes the endpoint its path gives it")
    func rendering() throws {
        let network = try IPv4Network(parsing: "10.0.0.0/24")
        let members = [
            WireGuardConfig.Member(
                name: "home-1", publicKey: "K1", vpnIP: "10.0.0.2", endpoint: "198.51.100.1:51820", behindNAT: true),
            WireGuardConfig.Member(
                name: "home-2", publicKey: "K2", vpnIP: "10.0.0.3", endpoint: "198.51.100.2:51820", behindNAT: true),
        ]
        let config = WireGuardConfig.build(
            for: members[0], privateKey: nil, listenPort: 51820, network: network, members: members,
            paths: ["home-2": "203.0.113.2:42006"])
        #expect(config.peers.first?.endpoint == "203.0.113.2:42006")
        #expect(config.peers.first?.persistentKeepalive == 25)
        let bad = WireGuardConfig.build(
            for: members[0], privateKey: nil, listenPort: 51820, network: network, members: members,
            paths: ["home-2": "1.2.3.4:5\nPostUp = rm -rf /"])
        #expect(bad.peers.first?.endpoint == nil, "a path's endpoint is checked like any other")
    }
}
