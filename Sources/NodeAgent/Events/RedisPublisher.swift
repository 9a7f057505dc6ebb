import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The lead's fan-out of events to Redis (`events.redis`): every event the store records is
/// appended to the stream `aurora:events` (`XADD MAXLEN ~ N`, entry id `<seq>-0`, fields `seq`,
/// `id`, `type`, `node`, `at`, `event`) and published on the channel `aurora:events` (the event
/// JSON), in sequence order, once per event.
///
/// Both happen in one Lua script per event: the XADD with the event's own entry id, and the
/// PUBLISH only if Redis took the entry, so a replay after a lost answer neither duplicates the
/// entry nor the message. New events reach the publisher through an ``EventHub`` tap that only
/// hands them over (request handlers never wait for Redis); after a (re)connect it reads the
/// `seq` of the stream's last entry and catches up from the `events` table. Redis down: the
/// lead works on, and reconnects with backoff (100 ms doubling to 5 s). Every hiredis call runs
/// on the publisher's own thread.
final class RedisPublisher: Service {
    /// Events handed over by the tap and not yet written.
    private struct Live {
        var buffer: [MeshEvent] = []
        /// Events were dropped (buffer full, or written while disconnected): catch up from the store.
        var overflowed = false
        var wake: AsyncStream<Void>.Continuation?
    }

    /// The connection, touched only on the publisher's thread.
    private final class Link: @unchecked Sendable {  // accessed from one thread (the publisher's)
        var connection: RedisConnection?
        var scriptSHA: String?
    }

    /// Arguments: KEYS[1] the stream; ARGV[1] MAXLEN, ARGV[2] entry id, ARGV[3...8] the fields,
    /// ARGV[9] `1` to publish, ARGV[10] the channel. Returns 1 when written, 0 when the stream
    /// already had the entry (a replay), or the XADD error.
    static let script = """
        local ok = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2], 'seq', ARGV[3], 'id', ARGV[4], 'type', ARGV[5], \
        'node', ARGV[6], 'at', ARGV[7], 'event', ARGV[8])
        if type(ok) == 'table' and ok.err then
          if string.find(ok.err, 'equal or smaller', 1, true) then return 0 end
          return ok
        end
        if ARGV[9] == '1' then redis.call('PUBLISH', ARGV[10], ARGV[8]) end
        return 1
        """
    /// Events the tap holds before it drops them all and marks the buffer overflowed.
    static let bufferLimit = 20_000
    /// Script calls per pipelined write.
    static let chunk = 256
    /// Events read from the store per page while catching up.
    static let catchUpPage = 2_000

    let endpoint: RedisEndpoint
    /// `events.redis_maxlen`: the stream keeps about this many newest entries.
    let maxLength: Int
    let store: any EventStore
    let state: AgentState
    let logger: Logger
    private let live = Mutex(Live())
    private let written = Counter(label: "aurora_redis_events_written_total")
    private let up = Gauge(label: "aurora_redis_up")

    init(url: String, maxLength: Int, hub: EventHub, store: any EventStore, state: AgentState, logger: Logger)
        throws(AgentError)
    {
        endpoint = try RedisEndpoint(url: url)
        self.maxLength = maxLength
        self.store = store
        self.state = state
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "redis"
        logger[metadataKey: "nodeagent.redis"] = "\(endpoint)"
        self.logger = logger
        hub.addTap { [weak self] events in
            guard let self else { return }
            let wake = self.live.withLock { live -> AsyncStream<Void>.Continuation? in
                if live.buffer.count + events.count > Self.bufferLimit {
                    live.buffer.removeAll(keepingCapacity: true)
                    live.overflowed = true
                } else {
                    live.buffer.append(contentsOf: events)
                }
                return live.wake
            }
            wake?.yield()
        }
        state.setRedis(RedisHealth(state: .connecting))
    }

    /// The service's loop: sleeps until the tap hands something over (or once at start, to
    /// connect and catch up), then pumps. Ends on graceful shutdown, dropping the connection
    /// and its thread; events not yet written are in the store and caught up at the next start.
    func run() async throws {
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        let link = Link()
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        live.withLock { $0.wake = wake }
        wake.yield()
        var fanOut = EventFanOut(maxLength: maxLength)
        await withGracefulShutdownHandler {
            for await _ in wakes {
                await pump(&fanOut, link: link, thread: thread)
            }
        } onGracefulShutdown: {
            wake.finish()
        }
        live.withLock { $0.wake = nil }
        _ = try? await thread.runIfActive { link.connection = nil }
        try? await thread.shutdownGracefully()
        up.record(0)
    }

    // MARK: Pumping

    /// Connects if needed and writes everything handed over; returns once it is all in Redis
    /// (or on shutdown). While Redis is away it retries with backoff.
    private func pump(_ fanOut: inout EventFanOut, link: Link, thread: NIOThreadPool) async {
        var delay = Duration.milliseconds(100)
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                if fanOut.written == nil {
                    guard state.store.state == .ok else {
                        try await pause(.milliseconds(200))
                        continue
                    }
                    try await connect(&fanOut, link: link, thread: thread)
                }
                let (events, overflowed) = live.withLock { live in
                    defer { live.buffer.removeAll(keepingCapacity: true); live.overflowed = false }
                    return (live.buffer, live.overflowed)
                }
                if overflowed { try await catchUp(&fanOut, link: link, thread: thread) }
                let fresh = events.filter { fanOut.needs($0.seq) }
                if !fresh.isEmpty { try await write(fresh, &fanOut, link: link, thread: thread) }
                if !overflowed, fresh.isEmpty { return }
                delay = .milliseconds(100)
            } catch is CancellationError {
                return
            } catch {
                let message = (error as? AgentError)?.message ?? "\(error)"
                if fanOut.written != nil || state.redis?.state != .down {
                    logger.warning(
                        "Redis unavailable; events wait in the store", metadata: ["nodeagent.error": "\(message)"])
                }
                fanOut.disconnected()
                // Whatever was handed over meanwhile comes from the store after the reconnect.
                live.withLock {
                    $0.buffer.removeAll(); $0.overflowed = true
                }
                _ = try? await thread.runIfActive { link.connection = nil }
                state.setRedis(RedisHealth(state: .down, message: message))
                up.record(0)
                do { try await pause(delay) } catch { return }
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    /// Connects, loads the script, reads where the stream ends and plans the catch-up.
    private func connect(_ fanOut: inout EventFanOut, link: Link, thread: NIOThreadPool) async throws {
        let endpoint = self.endpoint
        let streamLast = try await thread.runIfActive { () throws -> Int64? in
            let connection = try RedisConnection(endpoint, timeout: .seconds(2))
            guard case .string(let sha) = try connection.command(["SCRIPT", "LOAD", Self.script]) else {
                throw AgentError(
                    .process, "Redis did not load the fan-out script (needs Redis 2.6 or later with scripting)")
            }
            let last = try Self.lastSeq(
                try connection.command(["XREVRANGE", RedisNames.events, "+", "-", "COUNT", "1"]))
            link.connection = connection
            link.scriptSHA = sha
            return last
        }
        let newest = try await store.latestEventSeq()
        let start = fanOut.connected(streamLast: streamLast, newest: newest)
        if let streamLast, streamLast > newest {
            logger.warning(
                "the Redis stream is ahead of the store (another mesh, or a reset store?); writing after its end",
                metadata: ["nodeagent.stream_seq": "\(streamLast)", "nodeagent.store_seq": "\(newest)"])
        }
        live.withLock { $0.overflowed = true }  // catch up from the store first
        state.setRedis(RedisHealth(state: .connected, writtenSeq: start))
        up.record(1)
        logger.notice(
            "connected to Redis",
            metadata: [
                "nodeagent.stream_seq": "\(streamLast.map(String.init) ?? "empty")",
                "nodeagent.store_seq": "\(newest)",
            ])
    }

    /// Writes what the store has after the stream's end, page by page.
    private func catchUp(_ fanOut: inout EventFanOut, link: Link, thread: NIOThreadPool) async throws {
        while let after = fanOut.written {
            let events = try await store.events(since: after, limit: Self.catchUpPage)
            if events.isEmpty { return }
            try await write(events, &fanOut, link: link, thread: thread)
            if events.count < Self.catchUpPage { return }
        }
    }

    /// Writes `events` (in order) in pipelined chunks: one script call each.
    private func write(_ events: [MeshEvent], _ fanOut: inout EventFanOut, link: Link, thread: NIOThreadPool)
        async throws
    {
        let encoder = APICoding.encoder()
        let maxLength = String(self.maxLength)
        var start = 0
        while start < events.count {
            let chunk = Array(events[start..<min(start + Self.chunk, events.count)])
            start += chunk.count
            var commands: [[String]] = []
            commands.reserveCapacity(chunk.count)
            for event in chunk {
                let json = String(decoding: try encoder.encode(event), as: UTF8.self)
                commands.append([
                    "", "1", RedisNames.events, maxLength, EventFanOut.entryID(seq: event.seq), String(event.seq),
                    event.id, event.type,
                    event.node ?? "", event.at, json, fanOut.publishes(event.seq) ? "1" : "0", RedisNames.events,
                ])
            }
            let prepared = commands
            let replies = try await thread.runIfActive { () throws -> [RedisReply] in
                guard let connection = link.connection, let sha = link.scriptSHA else {
                    throw AgentError(.process, "not connected to Redis")
                }
                var replies = try connection.pipeline(prepared.map { ["EVALSHA", sha] + $0.dropFirst() })
                if replies.contains(where: {
                    if case .error(let text) = $0 { text.hasPrefix("NOSCRIPT") } else { false }
                }) {
                    // The script cache was flushed: load it again and send the chunk once more
                    // (entries already written are refused as duplicates, and not published twice).
                    guard case .string(let fresh) = try connection.command(["SCRIPT", "LOAD", Self.script]) else {
                        throw AgentError(.process, "Redis did not load the fan-out script")
                    }
                    link.scriptSHA = fresh
                    replies = try connection.pipeline(prepared.map { ["EVALSHA", fresh] + $0.dropFirst() })
                }
                return replies
            }
            for (event, reply) in zip(chunk, replies) {
                switch reply {
                case .integer(1): fanOut.wrote(event.seq)
                case .integer(0): fanOut.wrote(event.seq, duplicate: true)
                case .error(let message):
                    throw AgentError(.process, "Redis refused event \(event.seq): \(message.prefix(200))")
                default: throw AgentError(.process, "unexpected Redis answer for event \(event.seq)")
                }
            }
            written.increment(by: chunk.count)
            state.setRedis(RedisHealth(state: .connected, writtenSeq: fanOut.written))
        }
    }

    /// Sleeps for `duration`; throws at once on graceful shutdown, which ends the pump.
    private func pause(_ duration: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }

    /// The `seq` of `XREVRANGE ... COUNT 1`'s entry (from its field, else its id); nil when empty.
    static func lastSeq(_ reply: RedisReply) throws(AgentError) -> Int64? {
        switch reply {
        case .array(let entries):
            guard case .array(let entry)? = entries.first else { return nil }
            if entry.count == 2, case .array(let fields) = entry[1] {
                var index = 0
                while index + 1 < fields.count {
                    if fields[index].text == "seq", let seq = fields[index + 1].text.flatMap({ Int64($0) }) {
                        return seq
                    }
                    index += 2
                }
            }
            if let id = entry.first?.text, let seq = id.split(separator: "-").first.flatMap({ Int64($0) }) {
                return seq
            }
            return nil
        case .error(let message):
            throw AgentError(.process, "cannot read the stream \(RedisNames.events): \(message.prefix(200))")
        default:
            return nil
        }
    }
}
