import AsyncHTTPClient
import AuroraAPI
import Foundation
import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
import NIOHTTP1
#endif

/// `nodeagent bench redis`: a real lead with `events.redis` pointing at a real redis-server
/// (started here on a loopback port), and an in-process consumer subscribed to the channel.
///
/// - latency: jobs submitted at a steady rate (each answered `job.queued`, then cancelled:
///   `job.cancelled`); per job, the time from the start of the API call that changed the state
///   to the consumer receiving the `job.queued` message (p50/p99);
/// - live throughput: 32 clients submitting and cancelling back to back; events per second
///   arriving at the consumer;
/// - catch-up throughput: events written straight into the store, the stream emptied and the
///   publisher restarted; events per second until the stream holds them all.
///
/// Afterwards the stream is checked: every event of the store once, in order.
public struct RedisBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var rate: Int
        public var seconds: Int
        public var latencySamples: Int
        public var latencyP50Ms: Double
        public var latencyP99Ms: Double
        public var latencyMaxMs: Double
        /// From the event's commit timestamp (`at`, the store's clock, millisecond resolution) to the consumer.
        public var commitToConsumerP50Ms: Double
        public var commitToConsumerP99Ms: Double
        public var liveEventsPerSecond: Double
        public var liveEvents: Int
        public var catchUpEvents: Int
        public var catchUpEventsPerSecond: Double
        public var streamEvents: Int
        public var storeEvents: Int
        public var duplicates: Int
        public var outOfOrder: Int
        public var failed: Int

        enum CodingKeys: String, CodingKey {
            case rate, seconds, failed, duplicates
            case latencySamples = "latency_samples", latencyP50Ms = "latency_p50_ms", latencyP99Ms = "latency_p99_ms", latencyMaxMs = "latency_max_ms"
            case commitToConsumerP50Ms = "commit_to_consumer_p50_ms", commitToConsumerP99Ms = "commit_to_consumer_p99_ms"
            case liveEventsPerSecond = "live_events_per_s", liveEvents = "live_events"
            case catchUpEvents = "catch_up_events", catchUpEventsPerSecond = "catch_up_events_per_s"
            case streamEvents = "stream_events", storeEvents = "store_events", outOfOrder = "out_of_order"
        }
    }

    public var executable: String
    public var rate: Int
    public var seconds: Int
    public var catchUp: Int
    public var progress: @Sendable (String) -> Void

    public init(executable: String, rate: Int, seconds: Int, catchUp: Int, progress: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.rate = rate
        self.seconds = seconds
        self.catchUp = catchUp
        self.progress = progress
    }

    /// What the consumer saw: arrival time and payload of every message.
    private final class Inbox: Sendable {
        let messages = Mutex<[(ContinuousClock.Instant, String)]>([])
        /// Wall-clock arrival of each message, for comparing with the event's `at`.
        let wallArrivals = Mutex<[Double]>([])
        let sent = Mutex<[String: ContinuousClock.Instant]>([:])
        let failures = Mutex(0)
        let next = Mutex(0)
        let subscribed = Mutex(false)
    }

    public func run() async throws -> Report {
        guard let server = Inventory.which("redis-server") else { throw AgentError(.process, "redis-server is not installed (apt-get install redis-server)") }
        let root = try BenchLead.scratch("redis-server")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let port = try StartupBenchmark.freePort()
        let redis = try BenchLead.spawn(server, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", root])
        // A child of this process inherits its blocked signals (redis-server would ignore
        // SIGTERM): it is stopped with SHUTDOWN below, and SIGKILL when anything went wrong.
        defer { if redis.isRunning { kill(redis.processIdentifier, SIGKILL) } }
        let endpoint = try RedisEndpoint(url: "redis://127.0.0.1:\(port)")
        try await BenchLead.waitUntil("redis-server to answer", timeout: .seconds(10)) {
            (try? RedisConnection(endpoint, timeout: .seconds(1)).command(["PING"])) == .status("PONG")
        }
        let lead = try await BenchLead.start("redis", executable: executable, config: """
            events:
              redis: "redis://127.0.0.1:\(port)"
              redis_maxlen: 10000000

            """)
        defer { lead.discard() }
        let inbox = Inbox()
        let consumer = NIOThreadPool(numberOfThreads: 1)
        consumer.start()
        // The consumer blocks on its own thread; the future completes when it reads "stop".
        let listening = consumer.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.next()) { () throws in
            let connection = try RedisConnection(endpoint, timeout: .seconds(600))
            _ = try connection.command(["SUBSCRIBE", RedisNames.events])
            inbox.subscribed.withLock { $0 = true }
            while true {
                guard case .array(let parts)? = try connection.nextPush(), parts.count == 3, let payload = parts[2].text else { continue }
                if payload == "stop" { return }
                let now = ContinuousClock.now, wall = Date().timeIntervalSince1970
                inbox.messages.withLock { $0.append((now, payload)) }
                inbox.wallArrivals.withLock { $0.append(wall) }
            }
        }
        try await BenchLead.waitUntil("the consumer to subscribe", timeout: .seconds(10)) { inbox.subscribed.withLock { $0 } }

        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { _ = client.shutdown() }
        let leadURL = lead.baseURL, token = lead.token
        /// Submits a job nobody can run (one `job.queued`), then cancels it (one `job.cancelled`).
        @Sendable func change(_ n: Int, record: Bool) async {
            var request = HTTPClientRequest(url: leadURL + Routes.gpuJobs)
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let submission = JobSubmission(kind: .generate, requirements: JobRequirements(labels: ["bench": "none"]),
                                           payload: ["model": .string("bench"), "prompt": .string(String(n))])
            request.body = .bytes(ByteBuffer(bytes: (try? APICoding.encoder().encode(submission)) ?? Data()))
            let started = ContinuousClock.now
            do {
                let response = try await client.execute(request, timeout: .seconds(10))
                let body = try await response.body.collect(upTo: 1 << 16)
                guard response.status == .created, let job = try? APICoding.decoder().decode(Job.self, from: Data(body.readableBytesView)) else {
                    inbox.failures.withLock { $0 += 1 }
                    return
                }
                if record { inbox.sent.withLock { $0[job.id] = started } }
                var cancel = HTTPClientRequest(url: leadURL + Routes.gpuJob(job.id))
                cancel.method = .DELETE
                cancel.headers.add(name: "Authorization", value: "Bearer \(token)")
                let answer = try await client.execute(cancel, timeout: .seconds(10))
                _ = try await answer.body.collect(upTo: 1 << 16)
            } catch {
                inbox.failures.withLock { $0 += 1 }
            }
        }

        // Latency at a steady rate.
        progress("latency: \(rate) state changes/s (submit + cancel) for \(seconds) s")
        let total = rate * seconds
        let started = ContinuousClock.now
        await withDiscardingTaskGroup { group in
            let spacing = Duration.nanoseconds(1_000_000_000 / Int64(rate))
            for n in 0..<total {
                try? await Task.sleep(until: started + spacing * n, clock: .continuous)
                group.addTask { await change(n, record: true) }
            }
        }
        try await BenchLead.waitUntil("every queued event to reach the consumer", timeout: .seconds(30)) {
            let sent = inbox.sent.withLock { $0.count }
            return Self.received(inbox, types: [EventType.jobQueued]).count >= sent
        }
        let sent = inbox.sent.withLock { $0 }
        let latencies = Self.received(inbox, types: [EventType.jobQueued]).compactMap { id, at in
            sent[id].map { Double($0.duration(to: at) / .microseconds(1)) / 1000 }
        }.sorted()
        let fromCommit = zip(inbox.messages.withLock { $0 }, inbox.wallArrivals.withLock { $0 }).compactMap { message, wall -> Double? in
            guard let event = try? APICoding.decoder().decode(MeshEvent.self, from: Data(message.1.utf8)), let at = ISOTime.parse(event.at) else { return nil }
            return max(0, (wall - at.timeIntervalSince1970) * 1000)
        }.sorted()

        // Live throughput: 32 clients back to back.
        progress("live throughput: 32 clients submitting and cancelling for \(seconds) s")
        let before = inbox.messages.withLock { $0.count }
        let deadline = ContinuousClock.now + .seconds(Int64(seconds))
        inbox.next.withLock { $0 = total }
        await withDiscardingTaskGroup { group in
            for _ in 0..<32 {
                group.addTask {
                    while ContinuousClock.now < deadline { await change(inbox.next.withLock { $0 += 1; return $0 }, record: false) }
                }
            }
        }
        let newest = try await Self.newest(lead)
        try await BenchLead.waitUntil("the live events to reach the consumer", timeout: .seconds(60)) {
            (inbox.messages.withLock { $0.last?.1 }).flatMap(Self.seq) ?? 0 >= newest
        }
        let live = inbox.messages.withLock { Array($0[before...]) }
        let liveSpan = live.count > 1 ? Double(live.first!.0.duration(to: live.last!.0) / .microseconds(1)) / 1e6 : .nan

        // Catch-up: events straight into the store, the stream emptied, the publisher restarted.
        progress("catch-up: \(catchUp) events written to the store, stream emptied, publisher restarted")
        let store = try PostgresConnection(conninfo: "host=\(lead.dataDir)/postgres port=5432 dbname=\(ManagedPostgres.databaseName) user=\(ManagedPostgres.superuser)")
        _ = try store.execute("""
            INSERT INTO events (id, type, node, data)
            SELECT gen_random_uuid(), 'bench.filler', NULL, jsonb_build_object('n', g) FROM generate_series(1, \(catchUp)) AS g
            """)
        let storeEvents = Int(try store.execute("SELECT count(*) FROM events").scalar ?? "0") ?? 0
        let last = Int64(try store.execute("SELECT max(seq) FROM events").scalar ?? "0") ?? 0
        let reader = try RedisConnection(endpoint, timeout: .seconds(10))
        _ = try reader.command(["DEL", RedisNames.events])
        let restartAt = ContinuousClock.now
        var restart = HTTPClientRequest(url: leadURL + Routes.restartSubsystem("redis"))
        restart.method = .POST
        restart.headers.add(name: "Authorization", value: "Bearer \(token)")
        _ = try await client.execute(restart, timeout: .seconds(30)).body.collect(upTo: 1 << 16)
        try await BenchLead.waitUntil("the stream to catch up", timeout: .seconds(300)) {
            (try? RedisPublisher.lastSeq(try reader.command(["XREVRANGE", RedisNames.events, "+", "-", "COUNT", "1"]))) == last
        }
        let catchUpSeconds = Double(restartAt.duration(to: .now) / .microseconds(1)) / 1e6

        // The stream: every event of the store, once, in order.
        var seqs: [Int64] = []
        var cursor = "-"
        while true {
            guard case .array(let entries) = try reader.command(["XRANGE", RedisNames.events, cursor, "+", "COUNT", "10000"]) else { break }
            let page = entries.compactMap { entry -> Int64? in
                guard case .array(let parts) = entry, let id = parts.first?.text else { return nil }
                return id.split(separator: "-").first.flatMap { Int64($0) }
            }
            if page.isEmpty { break }
            seqs += page
            cursor = "(\(page.last!)-0"
        }
        _ = try reader.command(["PUBLISH", RedisNames.events, "stop"])
        try? await listening.get()
        try? await consumer.shutdownGracefully()
        await lead.stop()
        _ = try? reader.command(["SHUTDOWN", "NOSAVE"])
        try? await BenchLead.waitUntil("redis-server to stop", timeout: .seconds(10)) { !redis.isRunning }
        let outOfOrder = zip(seqs, seqs.dropFirst()).filter { $0 >= $1 }.count
        return Report(rate: rate, seconds: seconds, latencySamples: latencies.count, latencyP50Ms: Samples.percentile(latencies, 0.5),
                      latencyP99Ms: Samples.percentile(latencies, 0.99), latencyMaxMs: latencies.last ?? .nan,
                      commitToConsumerP50Ms: Samples.percentile(fromCommit, 0.5), commitToConsumerP99Ms: Samples.percentile(fromCommit, 0.99),
                      liveEventsPerSecond: Double(live.count) / liveSpan, liveEvents: live.count,
                      catchUpEvents: storeEvents, catchUpEventsPerSecond: Double(storeEvents) / catchUpSeconds,
                      streamEvents: seqs.count, storeEvents: storeEvents, duplicates: seqs.count - Set(seqs).count, outOfOrder: outOfOrder,
                      failed: inbox.failures.withLock { $0 })
    }

    /// Job id → arrival, for messages of `types`.
    private static func received(_ inbox: Inbox, types: Set<String>) -> [String: ContinuousClock.Instant] {
        var result: [String: ContinuousClock.Instant] = [:]
        for (at, payload) in inbox.messages.withLock({ $0 }) {
            guard let event = try? APICoding.decoder().decode(MeshEvent.self, from: Data(payload.utf8)), types.contains(event.type),
                  let id = event.data["id"]?.string else { continue }
            result[id] = at
        }
        return result
    }

    private static func seq(_ payload: String) -> Int64? {
        (try? APICoding.decoder().decode(MeshEvent.self, from: Data(payload.utf8)))?.seq
    }

    /// The lead's newest event sequence.
    private static func newest(_ lead: BenchLead) async throws -> Int64 {
        var newest: Int64 = 0
        try await BenchLead.waitUntil("the lead's event count", timeout: .seconds(10)) {
            // The events route with tail=1 answers the newest event.
            var events = HTTPClientRequest(url: lead.baseURL + Routes.events + "?tail=1&follow=false")
            events.headers.add(name: "Authorization", value: "Bearer \(lead.token)")
            guard let response = try? await HTTPClient.shared.execute(events, timeout: .seconds(5)),
                  let body = try? await response.body.collect(upTo: 1 << 20) else { return false }
            let text = String(buffer: body)
            newest = text.split(separator: "\n").compactMap { $0.hasPrefix("id: ") ? Int64($0.dropFirst(4)) : nil }.last ?? 0
            return newest > 0
        }
        return newest
    }
}
