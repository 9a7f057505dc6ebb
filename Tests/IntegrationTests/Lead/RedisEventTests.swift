import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead with `events.redis` pointing at a real redis-server, and a `redis-cli SUBSCRIBE`
/// consumer on the channel.
@Suite("Redis event bus (lead + real redis-server)", .serialized)
struct RedisEventTests {
    @Test(
        "events reach the stream and the channel in order, once each; Redis frozen, and Redis restarted empty: the stream catches up with no gap and no duplicate"
    )
    func fanOut() async throws {
        let scratch = try ScratchDirectory("redis")
        defer { scratch.remove() }
        let redis = try await RedisServer(in: scratch)
        var agents: [AgentHarness] = []
        var subscribers: [ChildProcess] = []
        do {
            try await scenario(scratch: scratch, redis: redis, agents: &agents, subscribers: &subscribers)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            for subscriber in subscribers where subscriber.isRunning { subscriber.signal(SIGKILL) }
            await redis.stopIfRunning()
            throw error
        }
        for subscriber in subscribers where subscriber.isRunning { subscriber.signal(SIGKILL) }
        await redis.stopIfRunning()
    }

    func scenario(
        scratch: ScratchDirectory, redis: RedisServer, agents: inout [AgentHarness], subscribers: inout [ChildProcess]
    ) async throws {
        let subscriber = try redis.subscribe(RedisNames.events)
        subscribers.append(subscriber)
        _ = try await poll(timeout: .seconds(10), "redis-cli to subscribe") {
            subscriber.stdout.contains("subscribe") ? true : nil
        }

        let file = scratch.path + "/lead.yaml"
        try "events:\n  redis: \"\(redis.url)\"\n  redis_maxlen: 1000\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "bus-lead", "--config", file],
            outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]

        /// Jobs nobody can run: each submission is one `job.queued` event.
        func submit(_ count: Int, tag: String) async throws {
            for index in 0..<count {
                let body =
                    #"{"kind": "generate", "payload": {"model": "m", "prompt": "\#(tag)-\#(index)"}, "requirements": {"min_vram_mb": 0, "labels": {"zone": "nowhere"}}, "allow_unplaceable": true}"#
                let answer = try await http(
                    lead.baseURL + Routes.gpuJobs, method: "POST", headers: admin, body: Array(body.utf8))
                #expect(answer.status == 201, "\(answer.text)")
            }
        }
        func storeEvents() async throws -> [MeshEvent] {
            try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text.split(
                separator: "\n"
            ).compactMap { line in
                guard line.hasPrefix("data: ") else { return nil }
                return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
            }
        }
        /// Waits until the stream holds exactly the store's events, in order.
        func streamMatchesStore(_ what: String) async throws -> [Int64] {
            try await poll(timeout: .seconds(20), every: .milliseconds(50), "the stream to hold every event \(what)") {
                () async throws -> [Int64]? in
                let expected = try await storeEvents().map(\.seq)
                let seqs = try await redis.streamSeqs(RedisNames.events)
                return seqs == expected && !expected.isEmpty ? seqs : nil
            }
        }
        /// The events the subscriber printed (with --raw: "message", channel, payload).
        func channelEvents() -> [MeshEvent] {
            subscriber.stdout.split(separator: "\n").compactMap { line in
                guard line.hasPrefix("{") else { return nil }
                return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.utf8))
            }
        }

        // Live: every event in the stream and on the channel, in sequence order, once.
        try await submit(30, tag: "live")
        let live = try await streamMatchesStore("while Redis is up")
        #expect(live.count >= 30 && live == live.sorted() && Set(live).count == live.count)
        let stored = try await storeEvents()
        // The entry's fields and id carry the event.
        let first = try await redis.cli(["XRANGE", RedisNames.events, "-", "+", "COUNT", "1"]).split(separator: "\n")
            .map(String.init)
        #expect(first.first == "\(stored[0].seq)-0" && first.contains(stored[0].id) && first.contains(stored[0].type))
        _ = try await poll(timeout: .seconds(10), "the channel to carry every event") { () -> Bool? in
            channelEvents().count >= stored.count ? true : nil
        }
        #expect(channelEvents().map(\.seq) == stored.map(\.seq))
        #expect(channelEvents().map(\.id) == stored.map(\.id))

        // Frozen for a while (SIGSTOP: connections stay open, nothing answers): the lead keeps
        // taking requests; thawed, the stream and the channel go on with no gap and no duplicate.
        redis.pause()
        let frozenAt = ContinuousClock.now
        try await submit(15, tag: "frozen")
        let during = try await http(lead.baseURL + Routes.health).decode(HealthResponse.self)
        #expect(during.status == .ok, "the lead works without Redis")
        #expect(ContinuousClock.now - frozenAt < .seconds(10), "requests did not wait for Redis")
        _ = try await poll(timeout: .seconds(15), every: .milliseconds(100), "the lead to notice Redis is gone") {
            () async throws -> Bool? in
            try await http(lead.baseURL + Routes.health).decode(HealthResponse.self).redis?.state == .down ? true : nil
        }
        try await submit(5, tag: "frozen-late")
        redis.resume()
        let thawed = try await streamMatchesStore("after Redis was frozen")
        #expect(Set(thawed).count == thawed.count)
        let all = try await storeEvents()
        _ = try await poll(timeout: .seconds(10), "the channel to catch up") { () -> Bool? in
            channelEvents().count >= all.count ? true : nil
        }
        #expect(channelEvents().map(\.seq) == all.map(\.seq), "each event once on the channel, in order")

        // Stopped and started empty (no persistence): the lead refills the stream from the store.
        try await redis.stop()
        try await submit(10, tag: "down")
        _ = try await poll(timeout: .seconds(15), every: .milliseconds(100), "the lead to see Redis down") {
            () async throws -> Bool? in
            try await http(lead.baseURL + Routes.health).decode(HealthResponse.self).redis?.state == .down ? true : nil
        }
        try await redis.start()
        let refilled = try await streamMatchesStore("after Redis restarted empty")
        #expect(refilled.count == (try await storeEvents()).count && Set(refilled).count == refilled.count)
        let health = try await poll(timeout: .seconds(10), "the lead to report Redis connected") {
            () async throws -> HealthResponse? in
            let health = try await http(lead.baseURL + Routes.health).decode(HealthResponse.self)
            return health.redis?.state == .connected && health.redis?.writtenSeq == refilled.last ? health : nil
        }
        #expect(health.status == .ok)

        // The CLI's event filter: only the asked-for type.
        let cli = try await ChildProcess.run(
            Binaries.auroraCLI,
            [
                "events", "--since", "0", "--type", "job.*", "--json", "--agent", lead.baseURL,
                "--data-dir", lead.dataDir,
            ], outputDirectory: scratch.path)
        #expect(cli.code == 0)
        let printed = cli.stdout.split(separator: "\n").compactMap {
            try? APICoding.decoder().decode(MeshEvent.self, from: Data($0.utf8))
        }
        #expect(printed.count == refilled.count && printed.allSatisfy { $0.type == EventType.jobQueued })
        let none = try await ChildProcess.run(
            Binaries.auroraCLI,
            [
                "events", "--since", "0", "--type", "node.left", "--agent", lead.baseURL,
                "--data-dir", lead.dataDir,
            ], outputDirectory: scratch.path)
        #expect(none.code == 0 && none.stdout.isEmpty)
        #expect(
            try await http(lead.baseURL + Routes.events + "?since=0&follow=false&type=job.*,", headers: admin).status
                == 400)

        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(10)) == 0)
        // The Redis URL never reaches the log whole (it may hold a password).
        #expect(!lead.process.stderr.contains(redis.url))
    }
}
