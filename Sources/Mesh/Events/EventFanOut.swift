// The lead's fan-out of events to a Redis stream and channel: which events still have to go
// out after a (re)connect, and which of them go to the channel too. Pure: the shell reads the
// stream's last entry and the store's newest sequence and passes them in.

/// Where the Redis fan-out stands.
///
/// The stream entry of an event has the id `<seq>-0`, so Redis itself refuses a second entry
/// for an event, or one out of order. After a connect the shell reads the `seq` of the
/// stream's last entry and writes from there; a stream that lost entries (Redis restarted
/// without persistence) is refilled with at most `maxLength` of the newest events. An event
/// goes to the channel only the first time this process writes it.
public struct EventFanOut: Sendable, Equatable {
    /// The stream's length limit (`XADD MAXLEN ~ N`).
    public let maxLength: Int
    /// The highest sequence known to be in the stream; nil while not connected.
    public private(set) var written: Int64?
    /// The highest sequence this process published on the channel.
    public private(set) var published: Int64 = 0

    public init(maxLength: Int) {
        self.maxLength = max(1, maxLength)
    }

    /// The stream entry id of an event.
    public static func entryID(seq: Int64) -> String { "\(seq)-0" }

    /// Connected: the stream's last entry has `streamLast` (nil: the stream is empty) and the
    /// store's newest event is `newest`. Returns the sequence to write after.
    public mutating func connected(streamLast: Int64?, newest: Int64) -> Int64 {
        // A stream with entries resumes right after its last one: no gap, however long Redis
        // was away (MAXLEN trims the oldest). An empty stream (lost, or new) is refilled with
        // the newest `maxLength` events at most.
        let start = streamLast ?? max(0, newest - Int64(maxLength))
        written = start
        return start
    }

    /// Whether `seq` is still to be written.
    public func needs(_ seq: Int64) -> Bool {
        guard let written else { return false }
        return seq > written
    }

    /// Whether writing `seq` also publishes it on the channel.
    public func publishes(_ seq: Int64) -> Bool { seq > published }

    /// `seq` is in the stream now (`duplicate`: Redis already had it).
    public mutating func wrote(_ seq: Int64, duplicate: Bool = false) {
        written = max(written ?? 0, seq)
        if !duplicate { published = max(published, seq) }
    }

    /// The connection is gone: nothing is known about the stream until the next connect.
    public mutating func disconnected() {
        written = nil
    }
}
