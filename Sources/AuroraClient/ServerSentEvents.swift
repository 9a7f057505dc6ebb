import NIOCore

/// One event of a `text/event-stream` (WHATWG HTML, "Server-sent events").
public struct ServerSentEvent: Sendable, Hashable {
    /// `event:`; `message` when the event named none.
    public var type: String
    /// The `data:` lines joined by `\n`.
    public var data: String
    /// The last `id:` seen so far in the stream (what `Last-Event-ID` resumes from).
    public var id: String?
    /// `retry:` in milliseconds, when this event set one.
    public var retry: Int?

    public init(type: String = "message", data: String, id: String? = nil, retry: Int? = nil) {
        self.type = type
        self.data = data
        self.id = id
        self.retry = retry
    }
}

/// The events of a `text/event-stream` body: multi-line `data:`, `event:`, `id:`, `retry:`,
/// comments (`: ping`) skipped, LF, CRLF or CR line ends. An event cut off by the end of the
/// stream is dropped, as the standard says. A line longer than `maxLineBytes`, or an event whose
/// data grows past `maxEventBytes`, ends the sequence with ``AuroraClientError/Code/lineTooLong``.
public struct ServerSentEvents<Base: AsyncSequence>: AsyncSequence where Base.Element == ByteBuffer {
    public typealias Element = ServerSentEvent

    let base: Base
    let maxLineBytes: Int
    let maxEventBytes: Int

    /// Events read from `base`, a body's chunks.
    public init(_ base: Base, maxLineBytes: Int = 1 << 20, maxEventBytes: Int = 8 << 20) {
        self.base = base
        self.maxLineBytes = maxLineBytes
        self.maxEventBytes = maxEventBytes
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(
            base: base.makeAsyncIterator(), lines: LineSplitter(maxLineBytes: maxLineBytes),
            assembler: EventAssembler(maxEventBytes: maxEventBytes))
    }

    /// Reads chunks until an event is complete.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        var lines: LineSplitter
        var assembler: EventAssembler
        var queued: [[UInt8]] = []
        var next = 0
        var finished = false

        /// The last `id:` read so far, also from a blank event (`id: 7` alone): where a new
        /// request resumes with `Last-Event-ID`, though no event carried it yet.
        public var lastEventID: String? { assembler.lastEventID }

        public mutating func next() async throws -> ServerSentEvent? {
            while true {
                while next < queued.count {
                    let line = queued[next]
                    next += 1
                    if let event = try assembler.feed(line) { return event }
                }
                guard !finished else { return nil }
                guard let chunk = try await base.next() else {
                    // The standard drops an event that no blank line ended.
                    finished = true
                    queued = []
                    return nil
                }
                queued = try lines.append(chunk.readableBytesView)
                next = 0
            }
        }
    }
}

/// The event-stream field rules, one line at a time (no I/O).
struct EventAssembler {
    let maxEventBytes: Int
    private var data: [UInt8] = []
    private var hasData = false
    private var type: String?
    private var retry: Int?
    private var lastID: String?

    /// The last `id:` field read, as the standard's "last event ID buffer".
    var lastEventID: String? { lastID }

    init(maxEventBytes: Int) {
        self.maxEventBytes = maxEventBytes
    }

    /// Takes one line (without its end); returns an event when the line is the blank line that
    /// dispatches one.
    mutating func feed(_ line: [UInt8]) throws(AuroraClientError) -> ServerSentEvent? {
        guard !line.isEmpty else { return dispatch() }
        if line.first == UInt8(ascii: ":") { return nil }
        let colon = line.firstIndex(of: UInt8(ascii: ":"))
        let name = String(decoding: line[..<(colon ?? line.endIndex)], as: UTF8.self)
        var value = colon.map { line[($0 + 1)...] } ?? []
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        switch name {
        case "data":
            if hasData { data.append(UInt8(ascii: "\n")) }
            data += value
            hasData = true
            guard data.count <= maxEventBytes else {
                throw AuroraClientError(.lineTooLong, "the stream sent an event larger than \(maxEventBytes) bytes")
            }
        case "event":
            type = String(decoding: value, as: UTF8.self)
        case "id":
            if !value.contains(0) { lastID = String(decoding: value, as: UTF8.self) }
        case "retry":
            if !value.isEmpty, value.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                value.count < 10
            {
                retry = Int(String(decoding: value, as: UTF8.self))
            }
        default:
            break
        }
        return nil
    }

    private mutating func dispatch() -> ServerSentEvent? {
        defer {
            data = []
            hasData = false
            type = nil
            retry = nil
        }
        guard hasData else { return nil }
        return ServerSentEvent(
            type: type.flatMap { $0.isEmpty ? nil : $0 } ?? "message", data: String(decoding: data, as: UTF8.self),
            id: lastID, retry: retry)
    }
}
