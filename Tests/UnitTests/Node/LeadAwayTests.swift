import AuroraAPI
import AuroraClient
import Foundation
import Testing

/// What a node says while its lead is away: the status table (its width, the stale marks, free
/// GPUs), `/health?strict=`, and how `events --follow` backs off. Pure: no agent, no clock.
@Suite("Lead away: the status table, ?strict and reconnection")
struct LeadAwayTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func node(
        _ name: String, role: NodeRole = .compute, state: NodeState = .alive, company: String = "",
        gpus: [GPU] = [], version: String = "0.1.0", postgres: ReplicaHealth? = nil
    ) -> Node {
        Node(
            name: name, role: role, company: company, vpnIP: "10.0.0.\(name.count + 2)", state: state,
            lastSeen: ISO8601DateFormatter().string(from: now.addingTimeInterval(-3)), labels: [:],
            wireguard: WireGuardPeer(publicKey: "k", listenPort: 51820, handshakeAgeS: 12),
            capabilities: Capabilities(cpuCores: 8, memoryMB: 32_768, os: "linux", arch: "x86_64", gpus: gpus),
            version: version, address: nil, joinedAt: "2026-01-01T00:00:00Z", signPublicKey: "s", boxPublicKey: "b",
            postgres: postgres)
    }

    static func gpu(_ index: Int, _ name: String = "NVIDIA GeForce RTX 4090") -> GPU {
        GPU(
            index: index, uuid: "GPU-\(index)", name: name, memoryTotalMB: 24_564, memoryUsedMB: 0,
            utilizationPct: 0)
    }

    /// A realistic mesh with long names, long versions, a lagging replica and mixed GPUs.
    static var mesh: [Node] {
        let replica = ReplicaHealth(
            role: .replica, state: "catching_up", reason: "lag", degraded: true, lagBytes: 50_331_648, lagS: 12.25,
            sampledAt: "2026-01-01T00:00:00Z")
        return [
            node(
                "lead-hetzner-fsn1-primary-01", role: .lead, company: "acme-industrial-robotics",
                version: "0.1.0-dev+g1234567"),
            node(
                "runpod-a100-sxm4-80gb-eu-west-3-spot-7", company: "acme-industrial-robotics",
                gpus: (0..<8).map { gpu($0, "NVIDIA A100-SXM4-80GB") }, version: "0.1.0-dev+g1234567", postgres: replica
            ),
            node(
                "office-workstation-rtx4090-basement", state: .suspect,
                gpus: [gpu(0), gpu(1, "NVIDIA GeForce RTX 3090 Ti")]),
            node("edge-laptop-of-a-very-long-named-engineer", role: .edge, state: .away),
            node("gpu-1", state: .dead, gpus: [gpu(0)]),
        ]
    }

    @Test("the table fits 100 columns with long names, stale or not; --wide cuts nothing")
    func width() {
        for stale in [false, true] {
            let list = NodeList(
                nodes: Self.mesh, stale: stale, ageS: stale ? 3725 : nil,
                reason: stale
                    ? "cannot connect to http://lead.example.net:9999: " + String(repeating: "x", count: 200) : nil)
            let table = MeshTable.render(list, colour: false, now: Self.now)
            for line in table.split(separator: "\n") {
                #expect(line.count <= MeshTable.width, "\(line.count) columns: \(line)")
            }
            for line in MeshTable.staleWarning(list) ?? [] {
                #expect(line.count <= MeshTable.width, "\(line.count) columns: \(line)")
            }
            let header = table.split(separator: "\n")[0]
            #expect(header.hasPrefix("NODE") && header.contains("GPUS") && !header.contains("VPN IP"))
            let wide = MeshTable.render(list, wide: true, colour: false, now: Self.now)
            #expect(wide.contains("runpod-a100-sxm4-80gb-eu-west-3-spot-7"))
            #expect(wide.contains("VPN IP") && wide.contains("acme-industrial-robotics") && wide.contains("HANDSHAKE"))
            #expect(wide.split(separator: "\n").contains { $0.count > MeshTable.width })
        }
    }

    @Test("a stale view marks each state with the copy's age; the warning names since when and why")
    func staleMarks() throws {
        let list = NodeList(nodes: Self.mesh, stale: true, ageS: 8.4, reason: "connection refused")
        let table = MeshTable.render(list, colour: false, now: Self.now)
        let rows = table.split(separator: "\n").dropFirst().prefix(Self.mesh.count)
        #expect(rows.allSatisfy { $0.contains(" ago)") }, "\(table)")
        #expect(table.contains("alive (8s ago)"))
        #expect(table.contains("suspect (8s ago)"))
        let warning = try #require(
            MeshTable.staleWarning(
                list, lead: LeadHealth(state: .unreachable, since: "2026-01-01T00:00:00.000Z", unreachableS: 14)))
        #expect(warning[0].hasPrefix("STALE VIEW: the lead is unreachable for 14s (since 2026-01-01T00:00:00.000Z)"))
        #expect(warning[1].contains("cached 8s ago"))
        #expect(warning[2].contains("connection refused"))

        let fresh = MeshTable.render(NodeList(nodes: Self.mesh, stale: false), colour: false, now: Self.now)
        #expect(!fresh.contains(" ago)"))
        #expect(MeshTable.staleWarning(NodeList(nodes: Self.mesh, stale: false)) == nil)
    }

    @Test("GPUS shows free/total and the model; a GPU with a job placed on it is not free")
    func busyGPU() {
        let node = Self.node("gpu-1", gpus: [Self.gpu(0)])
        let list = NodeList(nodes: [node], stale: false)
        #expect(MeshTable.render(list, colour: false, now: Self.now).contains("1/1 RTX 4090"))
        func status(reserved: Int, running: Int) -> GPUStatus {
            GPUStatus(
                nodes: [
                    .init(
                        name: "gpu-1", state: .alive, accepting: true, allowExec: true,
                        gpus: [.init(gpu: Self.gpu(0), reservedMB: reserved, freeVramMB: 24_564 - reserved)],
                        running: running)
                ], queued: 0, policy: "binpack")
        }
        // A job that reserves VRAM, and one that reserves none: either way the GPU is busy.
        for (reserved, running) in [(8000, 1), (0, 1)] {
            let table = MeshTable.render(
                list, gpu: status(reserved: reserved, running: running), colour: false, now: Self.now)
            #expect(table.contains("0/1 RTX 4090"), "\(table)")
            #expect(table.contains("GPUs 0/1 free"))
        }
        let idle = MeshTable.render(list, gpu: status(reserved: 0, running: 0), colour: false, now: Self.now)
        #expect(idle.contains("1/1 RTX 4090"))
        let mixed = NodeList(nodes: [Self.node("x", gpus: [Self.gpu(0), Self.gpu(1, "NVIDIA A100")])], stale: false)
        #expect(MeshTable.render(mixed, colour: false, now: Self.now).contains("2/2 mixed"))
        #expect(MeshTable.render(mixed, wide: true, colour: false, now: Self.now).contains("GPUS FREE/TOTAL"))
    }

    @Test("?strict: absent, 0 and false are off; bare, 1 and true are on; anything else is refused")
    func strictParameter() {
        for off in [nil, "0", "false", "FALSE"] { #expect(HealthStrictness.parse(off) == false, "\(off ?? "nil")") }
        for on in ["", "1", "true", "True"] { #expect(HealthStrictness.parse(on) == true, "\(on)") }
        for bad in ["2", "yes", "on", "-1", "1 ", "true\u{0}", String(repeating: "1", count: 100)] {
            #expect(HealthStrictness.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("a degraded node that only lost its lead still serves; a failed store does not")
    func servesWithoutLead() {
        var health = HealthResponse(
            status: .degraded, node: "gpu-1", role: .compute, version: "0", uptimeS: 1,
            store: StoreHealth(state: .none, mode: .none))
        health.lead = LeadHealth(state: .unreachable, since: "2026-01-01T00:00:00.000Z", unreachableS: 3)
        #expect(health.servesWithoutLead)
        health.lead = LeadHealth(state: .reachable)
        #expect(!health.servesWithoutLead)
        health.status = .ok
        #expect(!health.servesWithoutLead)
    }

    @Test("a bare id: moves the resume point (Last-Event-ID) without making an event")
    func bareID() async throws {
        let body = ": following from 5\nid: 5\n\nid: 6\nevent: node.joined\ndata: {}\n\n: ping\nid: 9\n\n"
        var iterator = ServerSentEvents(BodyChunks(body, every: 7)).makeAsyncIterator()
        #expect(try await iterator.next() == ServerSentEvent(type: "node.joined", data: "{}", id: "6"))
        #expect(iterator.lastEventID == "6")
        #expect(try await iterator.next() == nil)
        #expect(iterator.lastEventID == "9", "the ping's id: the filtered-out events up to 9 are behind it")
    }

    @Test("reconnection doubles its delay up to the maximum, starts over once open, and gives up on time")
    func reconnection() {
        let start = ContinuousClock.now
        var policy = Reconnection(initialDelay: .milliseconds(250), maximumDelay: .seconds(2))
        let delays = (0..<6).map { policy.failed(at: start + .seconds($0)) }
        #expect(
            delays == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(2), .seconds(2)])
        policy.opened()
        #expect(policy.failed(at: start + .seconds(100)) == .milliseconds(250))

        var limited = Reconnection(initialDelay: .seconds(1), maximumDelay: .seconds(4), giveUpAfter: .seconds(5))
        #expect(limited.failed(at: start) == .seconds(1))
        #expect(limited.failed(at: start + .seconds(1)) == .seconds(2))
        #expect(limited.failed(at: start + .seconds(3)) == .seconds(2), "never waits past the give-up point")
        #expect(limited.failed(at: start + .seconds(5)) == nil)
        limited.opened()
        #expect(limited.failed(at: start + .seconds(60)) == .seconds(1), "the clock starts again after a stream opened")
    }
}
