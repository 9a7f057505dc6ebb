import AuroraAPI
import Testing

@testable import Mesh
@testable import NodeAgent

/// The replica-health classifier on recorded sample sequences, with a test clock.
@Suite("Replica classifier (pure, recorded samples)")
struct ReplicaClassifierTests {
    static let mb: UInt64 = 1 << 20
    let limits = ReplicaThresholds(maxLagS: 5, maxLagBytes: 16 << 20, stallAfterS: 10, silentAfterS: 30)

    /// A streaming standby: replayed up to `replay`, the primary at `end`.
    static func standby(
        at: Double, replay: UInt64, end: UInt64, received: UInt64? = nil, heartbeatAge: Double? = 0.5,
        status: String? = "streaming", silent: Double? = 0.2
    ) -> ReplicaSample {
        ReplicaSample(
            at: at,
            .standby(
                .init(
                    receiverStatus: status, receiveLSN: LSN(received ?? end), replayLSN: LSN(replay),
                    primaryEndLSN: LSN(end), lastMessageAgeS: silent, heartbeatAgeS: heartbeatAge)))
    }

    func run(_ samples: [ReplicaSample], thresholds: ReplicaThresholds? = nil) -> [ReplicaVerdict] {
        var classifier = ReplicaClassifier(thresholds: thresholds ?? limits)
        return samples.map { classifier.classify($0) }
    }

    @Test("LSNs parse from PostgreSQL's text form and subtract; junk is refused")
    func lsn() throws {
        let lsn = try #require(LSN("16/B374D848"))
        #expect(lsn.value == 0x16_B374_D848)
        #expect(lsn.description == "16/B374D848")
        #expect(LSN("0/0")?.value == 0)
        #expect(LSN("1/0")!.bytes(after: LSN("0/FFFFFFFF")!) == 1)
        #expect(LSN("0/10")!.bytes(after: LSN("0/20")!) == 0)
        for junk in ["", "16", "16/", "/1", "G/1", "1/2/3", "123456789/0"] { #expect(LSN(junk) == nil, "\(junk)") }
    }

    @Test("an idle primary gives no false lag: caught up is 0 s even when the heartbeat row is old")
    func idlePrimary() {
        // 30 s of an idle primary, sampled every 2 s: nothing pending; the heartbeat row is at
        // most a second old while the lead writes it, then 40 s old when the writer is gone.
        let position: UInt64 = 0x3000_0000
        let samples =
            (0..<15).map { Self.standby(at: Double($0) * 2, replay: position, end: position, heartbeatAge: 0.9) }
            + [Self.standby(at: 32, replay: position, end: position, heartbeatAge: 40)]
        let verdicts = run(samples)
        #expect(verdicts.allSatisfy { $0.state == .streaming && $0.lagBytes == 0 && $0.lagS == 0 })
    }

    @Test("a bulk write: catching up while over the limit, streaming again only below half of it")
    func catchingUp() {
        let end: UInt64 = 0x1000_0000
        let lags: [UInt64] = [0, 2 * Self.mb, 40 * Self.mb, 30 * Self.mb, 12 * Self.mb, 9 * Self.mb, 7 * Self.mb, 0]
        let verdicts = run(
            lags.enumerated().map { index, lag in
                Self.standby(at: Double(index) * 2, replay: end - lag, end: end, heartbeatAge: lag == 0 ? 0.5 : 1.5)
            })
        #expect(
            verdicts.map(\.state) == [
                .streaming, .streaming, .catchingUp, .catchingUp, .catchingUp, .catchingUp, .streaming, .streaming,
            ])
        #expect(verdicts[2].lagBytes == 40 * Self.mb)
        #expect(verdicts[2].lagS == 1.5)
        #expect(verdicts[2].reason.contains("lag"))
    }

    @Test("time lag alone trips the limit (seconds from the heartbeat row)")
    func timeLag() {
        let end: UInt64 = 0x1000_0000
        let verdicts = run([
            Self.standby(at: 0, replay: end - 4096, end: end, heartbeatAge: 1),
            Self.standby(at: 2, replay: end - 4096, end: end, heartbeatAge: 6),
            Self.standby(at: 4, replay: end - 4096, end: end, heartbeatAge: 3),
            Self.standby(at: 6, replay: end - 8192, end: end, heartbeatAge: 2),
        ])
        #expect(verdicts.map(\.state) == [.streaming, .catchingUp, .catchingUp, .streaming])
    }

    @Test("stall: receiver up, WAL pending, replay not advancing for stall_after; replay moving again ends it")
    func stall() {
        let end: UInt64 = 0x2000_0000, stuck = end - Self.mb
        var samples = (0...6).map { Self.standby(at: Double($0) * 2, replay: stuck, end: end) }  // 0...12 s
        samples.append(Self.standby(at: 14, replay: stuck + 4096, end: end))
        samples.append(Self.standby(at: 16, replay: end, end: end))
        let states = run(samples).map(\.state)
        #expect(
            states == [
                .streaming, .streaming, .streaming, .streaming, .streaming, .stalled, .stalled, .streaming, .streaming,
            ])
        // Nothing pending: an unchanged replay position is no stall.
        let idle = run((0...10).map { Self.standby(at: Double($0) * 2, replay: end, end: end) })
        #expect(idle.allSatisfy { $0.state == .streaming })
    }

    @Test("disconnect: no receiver, a receiver not streaming, or one silent too long; reconnect streams again")
    func disconnect() {
        let end: UInt64 = 0x2000_0000
        let verdicts = run([
            Self.standby(at: 0, replay: end, end: end),
            Self.standby(at: 2, replay: end, end: end, status: nil),
            Self.standby(at: 4, replay: end, end: end, status: "waiting"),
            Self.standby(at: 6, replay: end, end: end, silent: 45),
            Self.standby(at: 8, replay: end, end: end),
        ])
        #expect(verdicts.map(\.state) == [.streaming, .disconnected, .disconnected, .disconnected, .streaming])
        #expect(verdicts[1].reason.contains("no WAL receiver"))
        #expect(verdicts[2].reason.contains("waiting"))
        #expect(verdicts[3].reason.contains("45 s"))
    }

    @Test("promotion: out of recovery is not_a_replica where a replica is expected, primary where a primary is")
    func promotion() {
        let end: UInt64 = 0x2000_0000
        let replica = run([Self.standby(at: 0, replay: end, end: end), ReplicaSample(at: 2, .primary)])
        #expect(replica.map(\.state) == [.streaming, .notAReplica])
        var expectPrimary = limits
        expectPrimary.expectPrimary = true
        #expect(run([ReplicaSample(at: 0, .primary)], thresholds: expectPrimary).map(\.state) == [.primary])
        #expect(
            run([ReplicaSample(at: 0, .down("connection refused"))]).first
                == ReplicaVerdict(state: .down, reason: "connection refused"))
    }

    @Test("flapping at the threshold: lag hovering around the limit is one change, not one per sample")
    func flapping() {
        let end: UInt64 = 0x4000_0000
        let lags: [UInt64] = [15, 17, 15, 17, 16, 17, 15, 15, 17, 15].map { $0 * Self.mb }
        let states = run(
            lags.enumerated().map { Self.standby(at: Double($0.offset) * 2, replay: end - $0.element, end: end) }
        ).map(\.state)
        #expect(states.first == .streaming)
        #expect(states.dropFirst().allSatisfy { $0 == .catchingUp })
        let changes = zip(states, states.dropFirst()).filter { $0 != $1 }.count
        #expect(changes == 1)
    }

    @Test("lag limits of the checks parse with units; inactive slots over the limit are found")
    func limitsAndSlots() {
        #expect(LagLimit("5s") == .seconds(5))
        #expect(LagLimit("500ms") == .seconds(0.5))
        #expect(LagLimit("2min") == .seconds(120))
        #expect(LagLimit("16MB") == .bytes(16 << 20))
        #expect(LagLimit("1gb") == .bytes(1 << 30))
        #expect(LagLimit("4096") == .bytes(4096))
        for junk in ["", "s", "-1s", "5 parsecs", "MB"] { #expect(LagLimit(junk) == nil, "\(junk)") }
        // Sizes past 2^64 bytes are refused, not a trap (schemathesis: GET /postgres/read-only?lag=587449140746800964.194503KB).
        for huge in ["587449140746800964.194503KB", "31711841692.31711841692GB", "1e20b", "18446744073709551616b"] {
            #expect(LagLimit(huge) == nil, "\(huge)")
        }
        #expect(LagLimit("17179869183GB") == nil)  // above the 2^60-byte cap
        #expect(LagLimit("1073741824GB") == .bytes(1 << 60))
        #expect(LagLimit.seconds(5).admits(lagBytes: 99, lagS: 4.9))
        #expect(!LagLimit.seconds(5).admits(lagBytes: 0, lagS: 5.1))
        #expect(!LagLimit.seconds(5).admits(lagBytes: 0, lagS: nil))
        #expect(LagLimit.bytes(100).admits(lagBytes: 100, lagS: nil))

        let slots = [
            SlotCheck.Slot(name: "b", active: false, retainedBytes: 2 << 30),
            SlotCheck.Slot(name: "a", active: true, retainedBytes: 5 << 30),
            SlotCheck.Slot(name: "c", active: false, retainedBytes: 1 << 20),
            SlotCheck.Slot(name: "d", active: false, retainedBytes: nil),
        ]
        #expect(SlotCheck.inactive(slots, retainingMoreThan: 1 << 30).map(\.name) == ["b"])
    }

    @Test("the mesh-wide view pairs each node with the primary's view of it, by slot, else by name")
    func overview() {
        func node(_ name: String, _ health: ReplicaHealth?) -> Node {
            Node(
                name: name, role: .compute, company: "", vpnIP: "10.0.0.2", state: .alive, lastSeen: "", labels: [:],
                wireguard: .init(publicKey: "", listenPort: 1), capabilities: .unknown, version: "", address: nil,
                joinedAt: "",
                signPublicKey: "", boxPublicKey: "", postgres: health)
        }
        func standby(_ application: String, slot: String?) -> StandbyView {
            StandbyView(
                applicationName: application, clientAddr: "127.0.0.1", state: "streaming", sentLSN: nil, writeLSN: nil,
                flushLSN: nil,
                replayLSN: nil, lagBytes: 0, writeLagS: nil, flushLagS: nil, replayLagS: nil, slot: slot)
        }
        let primary = ReplicaHealth(
            role: .primary, state: "primary", reason: "", degraded: false,
            standbys: [
                standby("walreceiver", slot: "replica_b"), standby("c", slot: nil),
                standby("walreceiver", slot: "orphan"),
            ],
            sampledAt: "")
        func replica(slot: String?) -> ReplicaHealth {
            ReplicaHealth(
                role: .replica, state: "streaming", reason: "", degraded: false,
                receiver: ReceiverView(status: "streaming", sender: nil, lastMsgAgeS: 0, slot: slot), sampledAt: "")
        }
        let view = ReplicaOverview.build([
            node("c", replica(slot: nil)), node("lead", primary), node("b", replica(slot: "replica_b")),
            node("plain", nil),
        ])
        #expect(view.primary == "lead")
        #expect(view.members.map(\.node) == ["b", "c", "lead"])
        #expect(view.members[0].primaryView?.slot == "replica_b")
        #expect(view.members[1].primaryView?.applicationName == "c")
        #expect(view.members[2].primaryView == nil)
        #expect(view.unmatched.map(\.slot) == ["orphan"])
    }
}
