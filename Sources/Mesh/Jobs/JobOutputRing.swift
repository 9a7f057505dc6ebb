/// The last `capacity` bytes of a job's output, stdout and stderr together, each byte at its
/// offset in the whole output (the first byte the command wrote is offset 0).
///
/// A worker appends what its command writes; the lead inserts what a worker sends at the offsets
/// the worker gave (a repeated piece is taken once, a gap stays a gap). Older bytes are dropped
/// once more than `capacity` are held, so a job that prints without end costs at most `capacity`
/// bytes. Readers continue from an offset (``read(from:limit:holdingBackPartialCharacter:)``).
/// Pure: no I/O, no clock.
public struct JobOutputRing: Sendable, Equatable {
    /// The output a piece came from.
    public enum Stream: Sendable, Equatable {
        case stdout, stderr
    }

    /// Bytes of one stream at consecutive offsets: `offset..<offset + bytes.count`.
    public struct Segment: Sendable, Equatable {
        public var stream: Stream
        public var offset: Int
        public var bytes: [UInt8]
        /// The offset after the segment's last byte.
        public var end: Int { offset + bytes.count }

        public init(stream: Stream, offset: Int, bytes: [UInt8]) {
            self.stream = stream
            self.offset = offset
            self.bytes = bytes
        }
    }

    /// At most this many bytes are held (at least 1).
    public let capacity: Int
    /// Held segments in offset order, none empty, none overlapping.
    public private(set) var segments: [Segment] = []
    /// The offset after the last byte taken: where ``append(_:_:)`` writes next.
    public private(set) var end = 0
    /// Bytes held now (at most ``capacity``).
    public private(set) var count = 0

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// The first offset still held (``end`` when nothing is).
    public var start: Int { segments.first?.offset ?? end }

    // MARK: Writing

    /// Appends what `stream` wrote after everything taken so far, `skipping` bytes that were
    /// written but never read (a gap) before them.
    public mutating func append(_ stream: Stream, _ bytes: [UInt8], skipping: Int = 0) {
        insert(stream, at: end + max(0, skipping), bytes)
    }

    /// Takes `bytes` written to `stream` at `offset`: what lies before ``end`` was taken already
    /// and is skipped; a piece beyond ``end`` leaves a gap (bytes that never arrived). A negative
    /// offset is ignored. Of one piece larger than ``capacity`` only its last bytes are kept.
    public mutating func insert(_ stream: Stream, at offset: Int, _ bytes: [UInt8]) {
        guard offset >= 0, !bytes.isEmpty else { return }
        var offset = offset
        var piece = bytes[...]
        if offset < end {
            let seen = end - offset
            guard seen < piece.count else { return }
            piece = piece.dropFirst(seen)
            offset = end
        }
        if piece.count > capacity {
            offset += piece.count - capacity
            piece = piece.suffix(capacity)
        }
        if let last = segments.indices.last, segments[last].stream == stream, segments[last].end == offset {
            segments[last].bytes.append(contentsOf: piece)
        } else {
            segments.append(Segment(stream: stream, offset: offset, bytes: Array(piece)))
        }
        end = offset + piece.count
        count += piece.count
        trim()
    }

    /// Drops the oldest bytes until at most ``capacity`` are held.
    private mutating func trim() {
        while count > capacity, !segments.isEmpty {
            let excess = count - capacity
            if segments[0].bytes.count <= excess {
                count -= segments.removeFirst().bytes.count
            } else {
                segments[0].bytes.removeFirst(excess)
                segments[0].offset += excess
                count -= excess
            }
        }
    }

    // MARK: Reading

    /// What is held from `offset` on, at most `limit` bytes in at most `maxSegments` segments, and
    /// the offset to continue from.
    ///
    /// An offset before ``start`` reads from ``start`` (older bytes are gone); one after ``end``
    /// from ``end``. With `holdingBackPartialCharacter` (the command still runs) an incomplete UTF-8
    /// sequence at the very end is left for the next read, so a character the command wrote in two
    /// pieces is not split between two answers.
    public func read(
        from offset: Int, limit: Int, maxSegments: Int = .max, holdingBackPartialCharacter: Bool = false
    ) -> (segments: [Segment], next: Int) {
        let from = min(max(offset, start), end)
        var budget = max(0, limit)
        var taken: [Segment] = []
        for segment in segments where segment.end > from && budget > 0 && taken.count < maxSegments {
            let skip = max(0, from - segment.offset)
            let slice = segment.bytes[(segment.bytes.startIndex + skip)...].prefix(budget)
            taken.append(Segment(stream: segment.stream, offset: segment.offset + skip, bytes: Array(slice)))
            budget -= slice.count
        }
        if holdingBackPartialCharacter, let last = taken.indices.last {
            let partial = Self.partialCharacterLength(taken[last].bytes)
            taken[last].bytes.removeLast(partial)
            if taken[last].bytes.isEmpty { taken.removeLast() }
        }
        return (taken, taken.last?.end ?? from)
    }

    /// How many bytes at the end of `bytes` begin a UTF-8 sequence that is not complete yet
    /// (0 to 3).
    public static func partialCharacterLength(_ bytes: [UInt8]) -> Int {
        guard !bytes.isEmpty else { return 0 }
        for back in 1...min(3, bytes.count) {
            let byte = bytes[bytes.count - back]
            if byte & 0xC0 == 0x80 { continue }  // a continuation byte: look further back
            // ASCII, stray continuations or bytes that never start a character: nothing to wait for.
            guard (0xC2...0xF4).contains(byte) else { return 0 }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2
            return length > back ? back : 0
        }
        return 0
    }
}
