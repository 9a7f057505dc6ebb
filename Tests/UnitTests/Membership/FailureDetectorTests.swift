import Testing

@testable import Mesh

/// The failure detector with a test clock: no sleeps, every transition.
@Suite("Failure detector (pure, test clock)")
struct FailureDetectorTests {
    let t0 = ContinuousClock.now
    let compute = FailureDetector.Policy(interval: .seconds(1), suspectAfter: 3, awayAfter: 0, deadAfter: 10)
    let edge = FailureDetector.Policy(interval: .seconds(5), suspectAfter: 3, awayAfter: 6, deadAfter: 720)

    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int64(seconds * 1000)) }

    func transitions(_ directives: [FailureDetector.Directive]) -> [FailureDetector.Transition] {
        directives.compactMap { if case .transition(let t) = $0 { t } else { nil } }
    }

    func probes(_ directives: [FailureDetector.Directive]) -> [String] {
        directives.compactMap { if case .probe(let name) = $0 { name } else { nil } }
    }

    /// Ticks every 100 ms from `from` to `to`, collecting transitions.
    func run(_ detector: inout FailureDetector, from: Double, to: Double) -> [FailureDetector.Transition] {
        var all: [FailureDetector.Transition] = []
        var t = from
        while t <= to + 1e-9 {
            all += transitions(detector.onTick(now: at(t)))
            t += 0.1
        }
        return all
    }

    @Test("compute: alive → suspect after 3 missed intervals → dead after dead_after; a heartbeat brings it back")
    func computeTiming() {
        var detector = FailureDetector()
        detector.add("gpu-1", policy: compute, at: at(0))
        #expect(run(&detector, from: 0, to: 3.0).isEmpty)
        #expect(detector.state(of: "gpu-1") == .alive)
        let suspect = run(&detector, from: 3.1, to: 3.1)
        #expect(suspect.map(\.to) == [.suspect])
        #expect(suspect.first?.reason == .missedHeartbeats)
        #expect(run(&detector, from: 3.2, to: 10.0).isEmpty)
        let dead = run(&detector, from: 10.1, to: 10.1)
        #expect(dead.map { "\($0.from)→\($0.to)" } == ["suspect→dead"])
        let back = transitions(detector.onHeartbeat("gpu-1", at: at(12)))
        #expect(back.map { "\($0.from)→\($0.to)" } == ["dead→alive"])
        #expect(back.first?.reason == .heartbeat)
        #expect(run(&detector, from: 12, to: 15).isEmpty)
    }

    @Test("steady heartbeats never change state")
    func steady() {
        var detector = FailureDetector()
        detector.add("gpu-1", policy: compute, at: at(0))
        var changes: [FailureDetector.Transition] = []
        for second in 1...100 {
            changes += transitions(detector.onHeartbeat("gpu-1", at: at(Double(second))))
            changes += transitions(detector.onTick(now: at(Double(second) + 0.5)))
        }
        #expect(changes.isEmpty)
        #expect(detector.state(of: "gpu-1") == .alive)
    }

    @Test("edge: suspect after 3 intervals, away after away_after, dead only after dead_after")
    func edgeTiming() {
        var detector = FailureDetector()
        detector.add("laptop", policy: edge, at: at(0))
        #expect(run(&detector, from: 0, to: 15).isEmpty)
        #expect(run(&detector, from: 15.1, to: 15.1).map(\.to) == [.suspect])
        #expect(run(&detector, from: 15.2, to: 30).isEmpty)
        #expect(run(&detector, from: 30.1, to: 30.1).map(\.to) == [.away])
        #expect(transitions(detector.onTick(now: at(3599))).isEmpty)
        #expect(transitions(detector.onTick(now: at(3600.1))).map(\.to) == [.dead])
        #expect(transitions(detector.onHeartbeat("laptop", at: at(3700))).map(\.to) == [.alive])
    }

    @Test("a late tick jumps straight to the state the silence earns")
    func lateTick() {
        var detector = FailureDetector()
        detector.add("gpu-1", policy: compute, at: at(0))
        let jump = transitions(detector.onTick(now: at(60)))
        #expect(jump.map { "\($0.from)→\($0.to)" } == ["alive→dead"])
    }

    @Test("late members are probed once per interval; a refusal is dead at once, a timeout proves nothing")
    func probing() {
        var detector = FailureDetector()
        detector.add("gpu-1", policy: compute, at: at(0))
        #expect(probes(detector.onTick(now: at(1.4))).isEmpty)
        #expect(probes(detector.onTick(now: at(1.5))) == ["gpu-1"])
        #expect(probes(detector.onTick(now: at(1.9))).isEmpty, "not again within one interval")
        // A timeout (not refused) changes nothing.
        #expect(detector.onProbe("gpu-1", refused: false, sentAt: at(1.5), at: at(2.0)).isEmpty)
        #expect(probes(detector.onTick(now: at(2.5))) == ["gpu-1"])
        let dead = transitions(detector.onProbe("gpu-1", refused: true, sentAt: at(2.5), at: at(2.6)))
        #expect(dead.map { "\($0.from)→\($0.to)" } == ["alive→dead"])
        #expect(dead.first?.reason == .notListening)
        #expect(probes(detector.onTick(now: at(4))).isEmpty, "dead members are not probed")
    }

    @Test("a refusal that predates a newer heartbeat is ignored")
    func probeRace() {
        var detector = FailureDetector()
        detector.add("gpu-1", policy: compute, at: at(0))
        _ = detector.onTick(now: at(1.6))
        _ = detector.onHeartbeat("gpu-1", at: at(1.7))
        #expect(detector.onProbe("gpu-1", refused: true, sentAt: at(1.6), at: at(1.8)).isEmpty)
        #expect(detector.state(of: "gpu-1") == .alive)
    }

    @Test("an edge node whose agent is gone goes away, not dead")
    func edgeRefused() {
        var detector = FailureDetector()
        detector.add("laptop", policy: edge, at: at(0))
        #expect(probes(detector.onTick(now: at(7.5))) == ["laptop"])
        let away = transitions(detector.onProbe("laptop", refused: true, sentAt: at(7.5), at: at(7.6)))
        #expect(away.map(\.to) == [.away])
        #expect(probes(detector.onTick(now: at(20))).isEmpty, "away members are not probed")
    }

    @Test("a graceful leave is left, not dead, and timing leaves it alone")
    func leave() {
        var detector = FailureDetector()
        detector.add("gpu-1", policy: compute, at: at(0))
        let left = transitions(detector.onLeave("gpu-1", at: at(0.5)))
        #expect(left.map { "\($0.from)→\($0.to)" } == ["alive→left"])
        #expect(left.first?.reason == .left)
        #expect(run(&detector, from: 1, to: 30).isEmpty)
        #expect(detector.onLeave("gpu-1", at: at(31)).isEmpty, "leaving twice is one event")
        #expect(
            transitions(detector.onHeartbeat("gpu-1", at: at(40))).map(\.to) == [.alive], "a node that returns is alive"
        )
    }

    @Test("flapping is damped: changes happen, events stop, one settling event reports the net change")
    func damping() {
        var detector = FailureDetector(damping: .init(halfLife: .seconds(30), suppressAt: 4, reuseAt: 2))
        detector.add("flaky", policy: compute, at: at(0))
        var all: [FailureDetector.Transition] = []
        // Twenty cycles of: killed (refused probe) then back (heartbeat), two seconds apart.
        var t = 0.0
        for _ in 0..<20 {
            t += 2
            all += transitions(detector.onTick(now: at(t)))
            all += transitions(detector.onProbe("flaky", refused: true, sentAt: at(t), at: at(t)))
            t += 0.5
            all += transitions(detector.onHeartbeat("flaky", at: at(t)))
        }
        #expect(all.count == 40, "every change happens")
        let reported = all.filter(\.reported)
        #expect(reported.count == 5, "only the first five are reported: \(reported.map { "\($0.from)→\($0.to)" })")
        #expect(reported.last?.to == .dead)
        #expect(reported.last?.dampingStarted == true)
        #expect(detector.isDamped("flaky"))
        #expect(detector.state(of: "flaky") == .alive)

        // It stays up; once the penalty decays, damping ends with one event from the last
        // reported state (dead) to the real one (alive), folding the 35 unreported changes.
        var later: [FailureDetector.Transition] = []
        var s = t
        while s < t + 200 {
            s += 1
            later += transitions(detector.onHeartbeat("flaky", at: at(s)))
            later += transitions(detector.onTick(now: at(s + 0.1)))
        }
        #expect(later.map { "\($0.from)→\($0.to) \($0.reason.rawValue) \($0.folded)" } == ["dead→alive settled 35"])
        #expect(!detector.isDamped("flaky"))
    }

    @Test("damping ends with one settled event when the state differs from the last reported one")
    func settle() {
        var detector = FailureDetector(damping: .init(halfLife: .seconds(10), suppressAt: 3, reuseAt: 1))
        detector.add("flaky", policy: compute, at: at(0))
        var t = 0.0
        var all: [FailureDetector.Transition] = []
        for _ in 0..<3 {  // down, up, three times
            t += 2
            all += transitions(detector.onProbe("flaky", refused: true, sentAt: at(t), at: at(t)))
            t += 0.2
            all += transitions(detector.onHeartbeat("flaky", at: at(t)))
        }
        let reported = all.filter(\.reported)
        #expect(reported.map(\.to) == [.dead, .alive, .dead, .alive])
        #expect(reported.last?.dampingStarted == true)
        #expect(all.count == 6)

        // Then it goes silent for good: suspect and dead happen while damped, unreported;
        // when the penalty has decayed one settled event says alive → dead.
        var quiet: [FailureDetector.Transition] = []
        var settled: [FailureDetector.Transition] = []
        var s = t
        while s < t + 200, settled.isEmpty {
            s += 0.5
            let changes = transitions(detector.onTick(now: at(s)))
            settled += changes.filter { $0.reason == .settled }
            quiet += changes.filter { $0.reason != .settled }
        }
        #expect(quiet.map(\.to) == [.suspect, .dead])
        #expect(quiet.allSatisfy { !$0.reported })
        #expect(settled.count == 1)
        #expect(settled.first.map { "\($0.from)→\($0.to)" } == "alive→dead")
        #expect(settled.first?.reported == true)
        #expect(settled.first?.folded == 4)
        #expect(!detector.isDamped("flaky"))
    }
}

@Suite("Replay guard and address allocation")
struct ReplayGuardTests {
    @Test("fresh, stale both ways, replayed; nonces are per node and forgotten after the window")
    func replay() {
        var guardian = ReplayGuard(windowSeconds: 30)
        let now: Int64 = 1_000_000_000
        #expect(guardian.admit(node: "a", nonce: "n1", timestampMilliseconds: now, nowMilliseconds: now) == .fresh)
        #expect(
            guardian.admit(node: "a", nonce: "n1", timestampMilliseconds: now, nowMilliseconds: now + 5) == .replayed)
        #expect(guardian.admit(node: "b", nonce: "n1", timestampMilliseconds: now, nowMilliseconds: now + 5) == .fresh)
        #expect(
            guardian.admit(node: "a", nonce: "n2", timestampMilliseconds: now - 31_000, nowMilliseconds: now)
                == .stale(skewMilliseconds: -31_000))
        #expect(
            guardian.admit(node: "a", nonce: "n3", timestampMilliseconds: now + 31_000, nowMilliseconds: now)
                == .stale(skewMilliseconds: 31_000))
        #expect(guardian.check(node: "a", nonce: "n4", timestampMilliseconds: now, nowMilliseconds: now) == .fresh)
        #expect(guardian.remembered == 2)
        // 31 s later the old timestamp is stale anyway, and the nonce is forgotten.
        #expect(
            guardian.admit(node: "a", nonce: "n1", timestampMilliseconds: now, nowMilliseconds: now + 31_000)
                == .stale(skewMilliseconds: -31_000))
        #expect(
            guardian.admit(node: "c", nonce: "x", timestampMilliseconds: now + 31_000, nowMilliseconds: now + 31_000)
                == .fresh)
        #expect(guardian.remembered == 1)
    }

    @Test("the lead takes .1; nodes get the lowest free address or the one they ask for")
    func allocate() throws {
        let network = try IPv4Network(parsing: "10.0.0.0/24")
        let allocator = AddressAllocator(network: network)
        #expect(IPv4Network.format(allocator.leadAddress) == "10.0.0.1")
        let first = try allocator.allocate(requested: nil, taken: [allocator.leadAddress])
        #expect(IPv4Network.format(first) == "10.0.0.2")
        let second = try allocator.allocate(requested: nil, taken: [allocator.leadAddress, first])
        #expect(IPv4Network.format(second) == "10.0.0.3")
        #expect(
            IPv4Network.format(try allocator.allocate(requested: IPv4Network.parse("10.0.0.50"), taken: []))
                == "10.0.0.50")
        #expect(throws: MeshError.self) { try allocator.allocate(requested: IPv4Network.parse("10.0.1.5"), taken: []) }
        #expect(throws: MeshError.self) { try allocator.allocate(requested: first, taken: [first]) }
        #expect(throws: MeshError.self) { try IPv4Network(parsing: "10.0.0.0/33") }
        let tiny = AddressAllocator(network: try IPv4Network(parsing: "10.0.0.0/30"))
        #expect(throws: MeshError.self) {
            try tiny.allocate(requested: nil, taken: [tiny.network.host(1), tiny.network.host(2)])
        }
    }
}
