import AsyncHTTPClient
import AuroraAPI
import AuroraTestKit
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
    import NIOHTTP1
#endif

/// `aurora-bench redis`: a real lead with `events.redis` pointing at a real redis-server
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
            case latencySamples = "latency_samples", latencyP50Ms = "latency_p50_ms", latencyP99Ms = "latency_p99_ms",
                latencyMaxMs = "latency_max_ms"
            case commitToConsumerP50Ms = "commit_to_consumer_p50_ms", commitToConsumerP99Ms =
                "commit_to_consumer_p99_ms"
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

    public init(
        executable: String, rate: Int, seconds: Int, catchUp: Int, progress: @escaping @Sendable (String) -> Void
    ) {
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
        let stopped = Mutex(false)
    }

    public func run() async throws -> Report {
        let scratch = try ScratchDirectory("redis-server", prefix: "aurora-bench")
        defer { scratch.remove() }
        let redis = try await RedisServer(in: scratch)
        let lead = try await BenchLead.start(
            "redis", executable: executable,
            config: """
                events:
                  redis: "\(redis.url)"
                  redis_maxlen: 10000000

                """)
        defer { lead.discard() }
        let inbox = Inbox()
        // The consumer blocks on a thread of its own (not the cooperative pool) until it reads "stop".
        let connection = try redis.connect(timeout: .seconds(600))
        let consumer = Thread {
            defer { inbox.stopped.withLock { $0 = true } }
            guard (try? connection.command(["SUBSCRIBE", RedisNames.events])) != nil else { return }
            inbox.subscribed.withLock { $0 = true }
            while true {
                guard case .array(let parts?)? = try? connection.nextPush() else { return }
                guard parts.count == 3, let payload = parts[2].text else { continue }
                if payload == "stop" { return }
                let now = ContinuousClock.now, wall = Date().timeIntervalSince1970
                inbox.messages.withLock { $0.append((now, payload)) }
                inbox.wallArrivals.withLock { $0.append(wall) }
            }
        }
        consumer.start()
        try await waitUntil("the consumer to subscribe", timeout: .seconds(10)) { inbox.subscribed.withLock { $0 } }

        let client = loadClient(connections: 64)
        defer { _ = client.shutdown() }
        let leadURL = lead.baseURL, token = lead.token
        /// Submits a job nobody can run (one `job.queued`), then cancels it (one `job.cancelled`).
        @Sendable func change(_ n: Int, record: Bool) async {
            let operatorHeaders = ["Authorization": "Bearer \(token)"]
            let submission = JobSubmission(
                kind: .generate, requirements: JobRequirements(labels: ["bench": "none"]),
                payload: ["model": .string("bench"), "prompt": .string(String(n))])
            let body = Array((try? APICoding.encoder().encode(submission)) ?? Data())
            let started = ContinuousClock.now
            do {
                let answer = try await http(
                    leadURL + Routes.gpuJobs, method: "POST", headers: operatorHeaders, body: body,
                    timeout: .seconds(10), client: client)
                guard answer.status == 201, let job = try? answer.decode(Job.self) else {
                    inbox.failures.withLock { $0 += 1 }
                    return
                }
                if record { inbox.sent.withLock { $0[job.id] = started } }
                _ = try await http(
                    leadURL + Routes.gpuJob(job.id), method: "DELETE", headers: operatorHeaders, timeout: .seconds(10),
                    client: client)
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
        try await waitUntil("every queued event to reach the consumer", timeout: .seconds(30)) {
            let sent = inbox.sent.withLock { $0.count }
            return Self.received(inbox, types: [EventType.jobQueued]).count >= sent
        }
        let sent = inbox.sent.withLock { $0 }
        let latencies = Self.received(inbox, types: [EventType.jobQueued]).compactMap { id, at in
            sent[id].map { Double($0.duration(to: at) / .microseconds(1)) / 1000 }
        }.sorted()
        let fromCommit = zip(inbox.messages.withLock { $0 }, inbox.wallArrivals.withLock { $0 }).compactMap {
            message, wall -> Double? in
            guard let event = try? APICoding.decoder().decode(MeshEvent.self, from: Data(message.1.utf8)),
                let at = Self.parseTime(event.at)
            else { return nil }
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
                    while ContinuousClock.now < deadline {
                        await change(
                            inbox.next.withLock {
                                $0 += 1; return $0
                            }, record: false)
                    }
                }
            }
        }
        let newest = try await Self.newest(lead)
        try await waitUntil("the live events to reach the consumer", timeout: .seconds(60)) {
            (inbox.messages.withLock { $0.last?.1 }).flatMap(Self.seq) ?? 0 >= newest
        }
        let live = inbox.messages.withLock { Array($0[before...]) }
        let liveSpan = live.count > 1 ? Double(live.first!.0.duration(to: live.last!.0) / .microseconds(1)) / 1e6 : .nan

        // Catch-up: events straight into the store, the stream emptied, the publisher restarted.
        progress("catch-up: \(catchUp) events written to the store, stream emptied, publisher restarted")
        try await Self.storeSQL(
            lead, scratch: scratch,
            """
            INSERT INTO events (id, type, node, data)
            SELECT gen_random_uuid(), 'bench.filler', NULL, jsonb_build_object('n', g) FROM generate_series(1, \(catchUp)) AS g
            """)
        let storeEvents = Int(try await Self.storeSQL(lead, scratch: scratch, "SELECT count(*) FROM events")) ?? 0
        let last = Int64(try await Self.storeSQL(lead, scratch: scratch, "SELECT max(seq) FROM events")) ?? 0
        let reader = try redis.connect()
        _ = try reader.command(["DEL", RedisNames.events])
        let restartAt = ContinuousClock.now
        _ = try await http(
            leadURL + Routes.restartSubsystem("redis"), method: "POST", headers: ["Authorization": "Bearer \(token)"],
            timeout: .seconds(30), client: client)
        try await waitUntil("the stream to catch up", timeout: .seconds(300)) {
            Self.lastSeq(try reader.command(["XREVRANGE", RedisNames.events, "+", "-", "COUNT", "1"])) == last
        }
        let catchUpSeconds = Double(restartAt.duration(to: .now) / .microseconds(1)) / 1e6

        // The stream: every event of the store, once, in order.
        var seqs: [Int64] = []
        var cursor = "-"
        while true {
            guard
                case .array(let entries?) = try reader.command([
                    "XRANGE", RedisNames.events, cursor, "+", "COUNT", "10000",
                ])
            else { break }
            let page = entries.compactMap { entry -> Int64? in
                guard case .array(let parts?) = entry, let id = parts.first?.text else { return nil }
                return id.split(separator: "-").first.flatMap { Int64($0) }
            }
            if page.isEmpty { break }
            seqs += page
            cursor = "(\(page.last!)-0"
        }
        _ = try reader.command(["PUBLISH", RedisNames.events, "stop"])
        try? await waitUntil("the consumer to stop", timeout: .seconds(10)) { inbox.stopped.withLock { $0 } }
        await lead.stop()
        try? await redis.stop()
        let outOfOrder = zip(seqs, seqs.dropFirst()).filter { $0 >= $1 }.count
        return Report(
            rate: rate, seconds: seconds, latencySamples: latencies.count,
            latencyP50Ms: Samples.percentile(latencies, 0.5),
            latencyP99Ms: Samples.percentile(latencies, 0.99), latencyMaxMs: latencies.last ?? .nan,
            commitToConsumerP50Ms: Samples.percentile(fromCommit, 0.5),
            commitToConsumerP99Ms: Samples.percentile(fromCommit, 0.99),
            liveEventsPerSecond: Double(live.count) / liveSpan, liveEvents: live.count,
            catchUpEvents: storeEvents, catchUpEventsPerSecond: Double(storeEvents) / catchUpSeconds,
            streamEvents: seqs.count, storeEvents: storeEvents, duplicates: seqs.count - Set(seqs).count,
            outOfOrder: outOfOrder,
            failed: inbox.failures.withLock { $0 })
    }

    /// Job id → arrival, for messages of `types`.
    private static func received(_ inbox: Inbox, types: Set<String>) -> [String: ContinuousClock.Instant] {
        var result: [String: ContinuousClock.Instant] = [:]
        for (at, payload) in inbox.messages.withLock({ $0 }) {
            guard let event = try? APICoding.decoder().decode(MeshEvent.self, from: Data(payload.utf8)),
                types.contains(event.type),
                let id = event.data["id"]?.string
            else { continue }
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
        try await waitUntil("the lead's event count", timeout: .seconds(10)) {
            // The events route with tail=1 answers the newest event.
            try await readEvents(
                lead.baseURL + Routes.events + "?tail=1&follow=false",
                headers: ["Authorization": "Bearer \(lead.token)"],
                timeout: .seconds(5)
            ) { data in
                newest = (try? APICoding.decoder().decode(MeshEvent.self, from: Data(data.utf8)))?.seq ?? 0
                return true
            }
            return newest > 0
        }
        return newest
    }

    /// Runs SQL in the lead's managed PostgreSQL (its socket in the data dir) with psql;
    /// the unaligned, tuples-only output.
    @discardableResult
    private static func storeSQL(_ lead: BenchLead, scratch: ScratchDirectory, _ sql: String) async throws -> String {
        let psql = try PostgresServer.binDirectory() + "/psql"
        let outcome = try await ChildProcess.run(
            psql,
            [
                "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", lead.dataDir + "/postgres", "-p", "5432",
                "-U", "aurora", "-d", "aurora", "-c", sql,
            ], outputDirectory: scratch.path, timeout: .seconds(300))
        guard outcome.code == 0 else {
            throw TestKitError("psql failed (\(outcome.code)): \(outcome.stderr.suffix(400))")
        }
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The `seq` of the newest stream entry of an `XREVRANGE ... COUNT 1` reply (entry ids are `SEQ-0`).
    private static func lastSeq(_ reply: RESPValue) -> Int64? {
        guard case .array(let entries?) = reply, case .array(let entry?)? = entries.first, let id = entry.first?.text
        else { return nil }
        return id.split(separator: "-").first.flatMap { Int64($0) }
    }

    /// An event's `at` (ISO 8601, with or without fractional seconds).
    private static func parseTime(_ text: String) -> Date? {
        (try? Date(
            text,
            strategy: .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true)
                .timeSeparator(.colon)
                .timeZone(separator: .omitted)))
            ?? (try? Date(text, strategy: .iso8601))
    }
}
