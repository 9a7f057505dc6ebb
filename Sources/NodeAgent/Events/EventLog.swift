import AuroraAPI
import Foundation
import Synchronization

/// Fans events out to live subscribers (SSE streams), in sequence order.
///
/// The lead publishes from the store thread right after the transaction that wrote the
/// events commits, so subscribers see events in `seq` order.
public final class EventHub: Sendable {
    /// What a subscriber receives.
    enum Item: Sendable {
        /// A recorded event, in `seq` order.
        case event(MeshEvent)
        /// Keeps idle streams alive and finds clients that went away.
        case ping
    }

    private struct State {
        var subscribers: [UUID: AsyncStream<Item>.Continuation] = [:]
        var closed = false
        /// In-process listeners (the Redis publisher), called with every published batch.
        var taps: [@Sendable ([MeshEvent]) -> Void] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// A live stream of items; ends when the hub closes or `unsubscribe` is called.
    /// Each stream buffers the newest 10,000 items: a client that reads slower than that loses the
    /// oldest (it can resume from the log with `Last-Event-ID`). Subscribing to a closed hub gives a stream
    /// that has already ended. Called by `GET /api/events` before it reads the backlog, so nothing
    /// committed in between is missed.
    func subscribe() -> (UUID, AsyncStream<Item>) {
        let (stream, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let id = UUID()
        let closed = state.withLock { state in
            if !state.closed { state.subscribers[id] = continuation }
            return state.closed
        }
        if closed { continuation.finish() }
        return (id, stream)
    }

    /// Ends the stream and forgets it; called when the SSE client goes away. Unknown ids do nothing.
    func unsubscribe(_ id: UUID) {
        state.withLock { $0.subscribers.removeValue(forKey: id) }?.finish()
    }

    /// Hands a committed batch to every stream, then to every tap. Called by the store thread
    /// after the commit (the ``EventStore`` write's `published`); it never blocks: streams buffer.
    func publish(_ events: [MeshEvent]) {
        guard !events.isEmpty else { return }
        let taps = state.withLock { state in
            for continuation in state.subscribers.values {
                for event in events { continuation.yield(.event(event)) }
            }
            return state.taps
        }
        for tap in taps { tap(events) }
    }

    /// Calls `tap` with every batch published from now on, in order, on the publishing thread
    /// (the store's): it must only hand the events over, never block.
    func addTap(_ tap: @escaping @Sendable ([MeshEvent]) -> Void) {
        state.withLock { $0.taps.append(tap) }
    }

    /// Sends a ``Item/ping`` to every stream; the registry service's loop calls it every 15 s.
    func ping() {
        state.withLock { state in
            for continuation in state.subscribers.values { continuation.yield(.ping) }
        }
    }

    /// Ends every stream (graceful shutdown: SSE clients must not hold the server open).
    public func close() {
        let continuations = state.withLock { state in
            state.closed = true
            defer { state.subscribers = [:] }
            return Array(state.subscribers.values)
        }
        continuations.forEach { $0.finish() }
    }
}

/// The lead's durable event log (an ``EventStore``): its drafts and their SSE form.
enum EventLog {
    /// A pending event, written inside the transaction of the change it describes.
    struct Draft: Sendable {
        /// The event type (`node.joined`, `job.completed`, ...; see `EventType`).
        var type: String
        /// The node the event is about, if any; SSE filters and the `events` table's index use it.
        var node: String?
        /// The event's payload, stored as `jsonb`; never a secret.
        var data: [String: JSONValue]
    }

    /// One event in Server-Sent Events form.
    static func sse(_ event: MeshEvent) -> String {
        let json = (try? APICoding.encoder().encode(event)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return "id: \(event.seq)\nevent: \(event.type)\ndata: \(json)\n\n"
    }
}

/// ISO 8601 with milliseconds, UTC, as the API writes times.
enum ISOTime {
    /// `2026-11-21T20:22:39.318Z`. Hand-rolled with `gmtime_r`: heartbeats format times at a
    /// rate where Foundation's format styles show up in the lead's CPU profile.
    static func string(_ date: Date) -> String {
        string(milliseconds: milliseconds(date))
    }

    /// Milliseconds since 1970 (rounded down), the precision of ``string(_:)`` and the store.
    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }

    /// `milliseconds` since 1970 as ``string(_:)`` writes it; exact, with no floating point.
    static func string(milliseconds: Int64) -> String {
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var bytes = [UInt8]()
        bytes.reserveCapacity(24)
        func put(_ value: Int, _ width: Int) {
            var digits = [UInt8](repeating: UInt8(ascii: "0"), count: width)
            var rest = value
            for index in stride(from: width - 1, through: 0, by: -1) {
                digits[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            }
            bytes += digits
        }
        put(Int(parts.tm_year) + 1900, 4); bytes.append(UInt8(ascii: "-"))
        put(Int(parts.tm_mon) + 1, 2); bytes.append(UInt8(ascii: "-"))
        put(Int(parts.tm_mday), 2); bytes.append(UInt8(ascii: "T"))
        put(Int(parts.tm_hour), 2); bytes.append(UInt8(ascii: ":"))
        put(Int(parts.tm_min), 2); bytes.append(UInt8(ascii: ":"))
        put(Int(parts.tm_sec), 2); bytes.append(UInt8(ascii: "."))
        put(Int(milliseconds % 1000), 3); bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads what ``string(_:)`` writes, and any other ISO 8601 time; nil when it is neither.
    static func parse(_ text: String) -> Date? {
        (try? Date(
            text,
            strategy: .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true)
                .timeSeparator(.colon).timeZone(separator: .omitted)))
            ?? (try? Date(text, strategy: .iso8601))
    }
}
