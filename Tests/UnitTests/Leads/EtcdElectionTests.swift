import AuroraTestKit
import Foundation
import Logging
import Mesh
import ServiceLifecycle
import Synchronization
import Testing

@testable import NodeAgent

/// The lead election against a real 3-member etcd 3.4 cluster on loopback, and the etcd client
/// against a hostile fake backend. Timing: lease TTL 5 s, fence margin 1.5 s, renewal every 1 s.
@Suite("etcd lead election (real etcd cluster)", .serialized)
struct EtcdElectionTests {
    static let key = "/aurora/lead"

    // MARK: Harness

    /// What an election's callbacks saw, with the instants they came.
    final class Record: Sendable {
        let leads = Mutex<[(epoch: Int64, at: ContinuousClock.Instant)]>([])
        let fences = Mutex<[ContinuousClock.Instant]>([])

        var leadCount: Int { leads.withLock { $0.count } }
        var fenceCount: Int { fences.withLock { $0.count } }
        var lastLead: (epoch: Int64, at: ContinuousClock.Instant)? { leads.withLock { $0.last } }
        var firstFence: ContinuousClock.Instant? { fences.withLock { $0.first } }
    }

    /// One election, its record and the service group that runs it.
    struct Candidate {
        let name: String
        let value: String
        let election: LeaderElection
        let record: Record
        let group: ServiceGroup

        var isLeading: Bool { if case .leading = election.current { true } else { false } }
        var epoch: Int64? { if case .leading(let epoch, _) = election.current { epoch } else { nil } }
    }

    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func candidate(
        _ name: String, endpoints: [String], eligible: @escaping @Sendable () async -> Bool = { true }
    ) throws -> Candidate {
        let record = Record()
        let value = "{\"name\":\"\(name)\",\"url\":\"https://\(name).test:7443\"}"
        var logger = Logger(label: "test.\(name)")
        logger.logLevel = .notice
        logger[metadataKey: "test.candidate"] = "\(name)"
        let election = try LeaderElection(
            client: try EtcdClient(endpoints: endpoints), key: Self.key, value: value, ttl: 5,
            margin: .milliseconds(1500), eligible: eligible,
            onLead: { epoch in
                record.leads.withLock { $0.append((epoch, .now)) }
                return true
            },
            onFence: { record.fences.withLock { $0.append(.now) } }, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [election], gracefulShutdownSignals: [], logger: Self.quiet))
        return Candidate(name: name, value: value, election: election, record: record, group: group)
    }

    /// Runs `body` with a fresh 3-member cluster, then stops it.
    func withCluster(_ label: String, _ body: (EtcdCluster) async throws -> Void) async throws {
        let scratch = try ScratchDirectory("etcd-\(label)")
        defer { scratch.remove() }
        let cluster = try await EtcdCluster.start(in: scratch)
        do { try await body(cluster) } catch {
            await cluster.stopAll()
            throw error
        }
        await cluster.stopAll()
    }

    /// Runs `body` with a fresh cluster and the candidates running, then shuts everything down.
    func withElection(
        _ label: String, candidates make: (EtcdCluster) async throws -> [Candidate],
        _ body: (EtcdCluster, [Candidate]) async throws -> Void
    ) async throws {
        try await withCluster(label) { cluster in
            let candidates = try await make(cluster)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for candidate in candidates { group.addTask { try await candidate.group.run() } }
                do {
                    try await body(cluster, candidates)
                } catch {
                    for candidate in candidates { await candidate.group.triggerGracefulShutdown() }
                    throw error
                }
                for candidate in candidates { await candidate.group.triggerGracefulShutdown() }
                try await group.waitForAll()
            }
        }
    }

    /// The one candidate leading, once exactly one does (within 15 s).
    func theLeader(_ candidates: [Candidate]) async throws -> Candidate {
        try await poll(timeout: .seconds(45), every: .milliseconds(20), "exactly one candidate to lead") {
            let leading = candidates.filter(\.isLeading)
            return leading.count == 1 ? leading[0] : nil
        }
    }

    func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    // MARK: Real cluster

    @Test("EtcdClient on a real cluster: TTL raised, campaign won/held, linearizable get, revoke, delete")
    func clientBasics() async throws {
        try await withCluster("client") { cluster in try await clientBasics(cluster) }
    }

    func clientBasics(_ cluster: EtcdCluster) async throws {
        let client = try EtcdClient(endpoints: cluster.endpoints)
        // etcd's minimum TTL is 1.5 × the election timeout (1 s here), rounded up: 1 → 2.
        let short = try await client.grant(ttl: 1)
        #expect(short.ttl == 2)
        // Long enough that a loaded machine cannot let it expire before the checks below.
        let lease = try await client.grant(ttl: 60)
        #expect(lease.ttl == 60)
        #expect(try await client.get(key: "/aurora/none") == nil)

        guard case .won(let revision) = try await client.campaign(key: "/aurora/c", value: "a", lease: lease.id) else {
            Issue.record("the first campaign did not win")
            return
        }
        let held = try #require(try await client.get(key: "/aurora/c"))
        #expect(held == .init(value: "a", createRevision: revision, modRevision: revision, lease: lease.id))
        // A retry on the same lease (its answer lost) is still a win; another lease loses.
        #expect(
            try await client.campaign(key: "/aurora/c", value: "a", lease: lease.id) == .won(createRevision: revision))
        let other = try await client.grant(ttl: 60)
        #expect(
            try await client.campaign(key: "/aurora/c", value: "b", lease: other.id)
                == .held(by: "a", createRevision: revision))

        #expect(try await client.keepAlive(lease: lease.id) == 60)
        try await client.revoke(lease: lease.id)
        #expect(try await client.get(key: "/aurora/c") == nil)
        #expect(try await client.keepAlive(lease: lease.id) == 0)
        try await client.revoke(lease: lease.id)  // gone already: not an error

        guard case .won(let second) = try await client.campaign(key: "/aurora/c", value: "b", lease: other.id) else {
            Issue.record("the campaign after the revoke did not win")
            return
        }
        #expect(second > revision)
        try await client.delete(key: "/aurora/c")
        #expect(try await client.get(key: "/aurora/c") == nil)
        try await client.delete(key: "/aurora/c")
    }

    @Test("two candidates: exactly one leads with epoch = create_revision; a graceful stop hands over at once")
    func oneLeadsThenGracefulHandover() async throws {
        try await withElection("handover") { cluster in
            let endpoints = cluster.endpoints
            return [
                try candidate("a", endpoints: endpoints),
                try candidate("b", endpoints: Array(endpoints[1...] + endpoints[..<1])),
            ]
        } _: { cluster, candidates in
            let observer = try EtcdClient(endpoints: cluster.endpoints)
            let leader = try await theLeader(candidates)
            let other = try #require(candidates.first { $0.name != leader.name })
            let epoch = try #require(leader.epoch)
            let key = try #require(try await observer.get(key: Self.key))
            #expect(key.value == leader.value)
            #expect(key.createRevision == epoch)
            #expect(leader.record.lastLead?.epoch == epoch)
            // The other one sees the holder and stays a follower.
            _ = try await poll(timeout: .seconds(5), "the follower to see the holder") {
                other.election.holder == leader.value ? true : nil
            }
            #expect(other.election.current == .follower)
            #expect(other.record.leadCount == 0)

            let stoppedAt = ContinuousClock.now
            await leader.group.triggerGracefulShutdown()
            let (newEpoch, ledAt) = try await poll(timeout: .seconds(10), every: .milliseconds(10), "a takeover") {
                other.record.lastLead
            }
            let takeover = seconds(stoppedAt.duration(to: ledAt))
            print("graceful takeover: \(takeover) s (lease TTL 5 s)")
            #expect(takeover < 2.5)
            #expect(newEpoch > epoch)
            #expect(leader.record.fenceCount == 1)
            let fencedAt = try #require(leader.record.firstFence)
            #expect(fencedAt < ledAt)
            let newKey = try #require(try await observer.get(key: Self.key))
            #expect(newKey.value == other.value)
            #expect(newKey.createRevision == newEpoch)
        }
    }

    @Test("a lead key deleted out of band ends the term at once; a new term has a higher epoch")
    func keyDeletedOutOfBand() async throws {
        try await withElection("deleted") { cluster in
            let endpoints = cluster.endpoints
            return [
                try candidate("a", endpoints: endpoints),
                try candidate("b", endpoints: Array(endpoints[1...] + endpoints[..<1])),
            ]
        } _: { cluster, candidates in
            let observer = try EtcdClient(endpoints: cluster.endpoints)
            let leader = try await theLeader(candidates)
            let epoch = try #require(leader.epoch)
            let deletedAt = ContinuousClock.now
            try await observer.delete(key: Self.key)
            let fencedAt = try await poll(timeout: .seconds(5), every: .milliseconds(10), "the lead to fence") {
                leader.record.firstFence
            }
            print("key deleted out of band: fenced after \(seconds(deletedAt.duration(to: fencedAt))) s")
            #expect(fencedAt < deletedAt + .milliseconds(1500))
            let next = try await poll(timeout: .seconds(10), every: .milliseconds(20), "a new term") {
                () async throws -> EtcdClient.KeyValue? in
                guard let key = try await observer.get(key: Self.key), key.createRevision > epoch else { return nil }
                return key
            }
            let newLeader = try #require(candidates.first { $0.value == next.value })
            _ = try await poll(timeout: .seconds(5), "the new lead to know it") {
                newLeader.epoch == next.createRevision ? true : nil
            }
            #expect(leader.record.fenceCount == 1)
        }
    }

    @Test(
        "a lead whose keepalives fail fences before its lease expires; the other leads only after expiry",
        arguments: [Cut.killFollower, .killRaftLeader, .freezeFollower])
    func fenceBeforeExpiry(cut how: Cut) async throws {
        // b campaigns only once a leads: a's lease is the one to cut off.
        let aLeads = Atomic<Bool>(false)
        let cut = Mutex(0)
        try await withElection("fence") { cluster in
            // a reaches etcd only through one member (the raft leader, or a follower); b through
            // the two others. Killing that member cuts a off.
            let raftLeader = try await Self.raftLeader(cluster)
            let member = how == .killRaftLeader ? raftLeader : (raftLeader + 1) % cluster.members.count
            cut.withLock { $0 = member }
            let others = cluster.endpoints.indices.filter { $0 != member }.map { cluster.endpoints[$0] }
            return [
                try candidate("a", endpoints: [cluster.endpoints[member]]),
                try candidate("b", endpoints: others) { aLeads.load(ordering: .relaxed) },
            ]
        } _: { cluster, candidates in
            let (a, b) = (candidates[0], candidates[1])
            let member = cut.withLock { $0 }
            let others = cluster.endpoints.indices.filter { $0 != member }.map { cluster.endpoints[$0] }
            let observer = try EtcdClient(endpoints: others, timeout: .seconds(2))
            let leader = try await theLeader(candidates)
            #expect(leader.name == "a")
            let epoch = try #require(a.epoch)
            let ledAt = try #require(a.record.lastLead?.at)
            aLeads.store(true, ordering: .relaxed)
            // Let a renew its lease, then cut it off from etcd.
            _ = try await poll(timeout: .seconds(5), "a to renew its lease") {
                (a.election.fence.map { $0.sentAt > ledAt } ?? false) ? true : nil
            }
            if how == .freezeFollower { cluster.pause(member: member) } else { try await cluster.kill(member: member) }
            let cutAt = ContinuousClock.now

            // The key stays until the lease expires; find when it goes, as seen from the quorum.
            let goneAt = try await poll(timeout: .seconds(15), every: .milliseconds(20), "the lead key to expire") {
                () async throws -> ContinuousClock.Instant? in
                let key = try await observer.get(key: Self.key)
                return key == nil || key?.createRevision != epoch ? ContinuousClock.now : nil
            }
            let (newEpoch, bLedAt) = try await poll(timeout: .seconds(5), every: .milliseconds(10), "b to lead") {
                b.record.lastLead
            }
            let fence = try #require(a.election.fence)
            let fencedAt = try #require(a.record.firstFence)
            let sentAt = fence.sentAt
            print(
                """
                fence test (\(how.rawValue)): \
                last keepalive sent \(seconds(sentAt.duration(to: cutAt))) s before the cut; \
                fenced \(seconds(sentAt.duration(to: fencedAt))) s after it (deadline \
                \(seconds(sentAt.duration(to: fence.deadline))) s); key gone \(seconds(sentAt.duration(to: goneAt))) s \
                after it; b led \(seconds(sentAt.duration(to: bLedAt))) s after it (lease TTL 5 s, margin 1.5 s)
                """)
            #expect(a.record.fenceCount == 1)
            #expect(!a.election.current.isLeading(epoch: epoch))
            #expect(fencedAt >= fence.deadline)
            #expect(fencedAt < fence.deadline + .milliseconds(300))
            #expect(fencedAt < sentAt + .seconds(5))
            #expect(fencedAt < goneAt)
            #expect(bLedAt > fencedAt)
            // etcd expires a lease no earlier than TTL after the keepalive was sent.
            #expect(goneAt >= sentAt + .seconds(5))
            #expect(newEpoch > epoch)
        }
    }

    @Test("one of three etcd members killed (the raft leader): the lead keeps leading, no fence")
    func survivesMemberLoss() async throws {
        try await withElection("member-loss") { cluster in
            let endpoints = cluster.endpoints
            return [
                try candidate("a", endpoints: endpoints),
                try candidate("b", endpoints: Array(endpoints[1...] + endpoints[..<1])),
            ]
        } _: { cluster, candidates in
            let leader = try await theLeader(candidates)
            let other = try #require(candidates.first { $0.name != leader.name })
            let epoch = try #require(leader.epoch)
            let raftLeader = try await Self.raftLeader(cluster)
            try await cluster.kill(member: raftLeader)
            let killedAt = ContinuousClock.now
            // Two lease lifetimes: the lead must stay, without a fence, on the same epoch. This
            // watches a window (sampling every 50 ms), it does not wait for a condition.
            var longestGap = Duration.zero
            while ContinuousClock.now < killedAt + .seconds(10) {
                #expect(leader.election.current.isLeading(epoch: epoch))
                #expect(other.election.current == .follower)
                if let fence = leader.election.fence {
                    longestGap = max(longestGap, fence.sentAt.duration(to: .now))
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            print("member loss (raft leader \(raftLeader) killed): longest time since a renewal was sent \(longestGap)")
            #expect(leader.record.fenceCount == 0)
            #expect(other.record.leadCount == 0)
            // The member comes back with its data and rejoins; the lead is undisturbed.
            try await cluster.start(member: raftLeader)
            #expect(cluster.isRunning(member: raftLeader))
            #expect(leader.election.current.isLeading(epoch: epoch))
        }
    }

    /// How the fence test cuts the lead off from etcd: its only member killed (a raft follower,
    /// or the raft leader: etcd then extends leases) or frozen (SIGSTOP: its connections stay
    /// open and nothing answers, so renewals time out instead of being refused).
    enum Cut: String, Sendable, CaseIterable {
        case killFollower = "a raft follower killed"
        case killRaftLeader = "the raft leader killed"
        case freezeFollower = "a raft follower frozen"
    }

    /// The index of the member that is the raft leader now.
    static func raftLeader(_ cluster: EtcdCluster) async throws -> Int {
        try await poll(timeout: .seconds(10), "the etcd cluster to have a leader") {
            () async throws -> Int? in
            for (index, endpoint) in cluster.endpoints.enumerated() {
                let answer = try await http(
                    endpoint + "/v3/maintenance/status", method: "POST", body: Array("{}".utf8), timeout: .seconds(2))
                let status = try JSONSerialization.jsonObject(with: answer.body) as? [String: Any]
                let header = status?["header"] as? [String: Any]
                if let leader = status?["leader"] as? String, leader == header?["member_id"] as? String {
                    return index
                }
            }
            return nil
        }
    }
}

extension LeadershipState {
    func isLeading(epoch: Int64) -> Bool {
        if case .leading(let current, _) = self { current == epoch } else { false }
    }
}
