/// `POST /api/gpu/jobs/{id}/stream` (signed by the worker): the next chunks of a streamed gateway
/// call, as the backend produced them.
///
/// A worker has no inbound port, so chunks travel the way job output does: the worker posts
/// them to the lead as they come, one post in flight at a time, each with every chunk that came
/// while the last one was under way. `seq` is the index of the first chunk in the whole stream;
/// the lead takes a batch only at the index it expects next (a repeat is answered as taken, a gap
/// is refused), so a retried post never doubles or reorders a chunk.
public struct InferenceStreamPush: Codable, Sendable, Equatable {
    /// The attempt the worker runs: any other is refused with 409.
    public var attempt: Int
    /// Index of `chunks[0]` in the stream (0 for the first chunk).
    public var seq: Int
    /// Each chunk is the `data:` of one of the backend's server-sent events: a JSON object on one
    /// line (`[DONE]` is not a chunk: `done` says it).
    public var chunks: [String]
    /// The backend ended the stream (after `chunks`).
    public var done: Bool
    /// The backend failed after the stream began: the client gets this as an error event.
    public var error: String?

    public init(attempt: Int, seq: Int, chunks: [String], done: Bool = false, error: String? = nil) {
        self.attempt = attempt
        self.seq = seq
        self.chunks = chunks
        self.done = done
        self.error = error
    }

    public static let fields: Set<String> = ["attempt", "seq", "chunks", "done", "error"]
    /// The most chunks one post carries.
    public static let maxChunks = 256
    /// The longest chunk, in bytes.
    public static let maxChunkBytes = 64 * 1024

    /// Why `chunk` cannot be relayed as one server-sent event (nil: it can): it must be a JSON
    /// object on one line, at most ``maxChunkBytes``, without control characters (a newline
    /// would end the event and let the rest pose as another).
    public static func problem(with chunk: String) -> String? {
        let bytes = chunk.utf8
        guard bytes.count <= maxChunkBytes else { return "is longer than \(maxChunkBytes) bytes" }
        guard bytes.first == UInt8(ascii: "{"), bytes.last == UInt8(ascii: "}") else {
            return "is not a JSON object"
        }
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return "contains a control character" }
        return nil
    }
}

/// The lead's answer to ``InferenceStreamPush``: the index it expects next, and whether the
/// worker should stop (the client went away or the call was cancelled).
public struct InferenceStreamAck: Codable, Sendable, Equatable {
    public var next: Int
    public var cancel: Bool

    public init(next: Int, cancel: Bool) {
        self.next = next
        self.cancel = cancel
    }
}
