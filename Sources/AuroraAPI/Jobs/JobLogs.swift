import Foundation

/// Which output of an exec job's command a piece of its log came from.
public enum JobOutputStream: String, Codable, Sendable, CaseIterable {
    case stdout, stderr
}

/// One piece of a job's log as clients read it: what `stream` got, starting at byte `offset`
/// of the job's output (stdout and stderr counted together, in the order the worker read them).
///
/// `text` is the bytes as UTF-8 with invalid sequences replaced by U+FFFD and control characters
/// other than tab, newline and carriage return written as `\u{XX}`: it never breaks the JSON or a
/// terminal. `bytes` is how many bytes of output it covers (the next piece starts at `offset + bytes`).
public struct JobLogChunk: Codable, Sendable, Equatable {
    public var offset: Int
    public var bytes: Int
    public var stream: JobOutputStream
    public var text: String

    public init(offset: Int, bytes: Int, stream: JobOutputStream, text: String) {
        self.offset = offset
        self.bytes = bytes
        self.stream = stream
        self.text = text
    }
}

/// `GET /api/gpu/jobs/{id}/logs?offset=N&wait=S`: the part of the job's output tail from `offset`
/// on, and whether more can come.
///
/// The lead keeps the last `exec.output_tail_kib` KiB of each job's output while it runs and for a
/// while after (docs/API.md). `start_offset` is the first byte still kept (above the asked offset
/// when older output was dropped); `next_offset` is where the next call continues. `done` is true
/// once the job is in a terminal state and everything its worker sent has been returned: following
/// stops there.
public struct JobLogs: Codable, Sendable, Equatable {
    public var id: String
    public var state: JobState
    /// The attempt whose output this is (nil: no output has arrived yet).
    public var attempt: Int?
    public var node: String?
    public var startOffset: Int
    public var nextOffset: Int
    public var chunks: [JobLogChunk]
    public var done: Bool

    public init(
        id: String, state: JobState, attempt: Int?, node: String?, startOffset: Int, nextOffset: Int,
        chunks: [JobLogChunk], done: Bool
    ) {
        self.id = id
        self.state = state
        self.attempt = attempt
        self.node = node
        self.startOffset = startOffset
        self.nextOffset = nextOffset
        self.chunks = chunks
        self.done = done
    }

    enum CodingKeys: String, CodingKey {
        case id, state, attempt, node, chunks, done
        case startOffset = "start_offset"
        case nextOffset = "next_offset"
    }
}

/// One piece of output as a worker sends it: raw bytes, base64 in `data`.
public struct JobOutputPiece: Codable, Sendable, Equatable {
    public var offset: Int
    public var stream: JobOutputStream
    /// Base64 of the bytes.
    public var data: String

    public init(offset: Int, stream: JobOutputStream, data: String) {
        self.offset = offset
        self.stream = stream
        self.data = data
    }

    public static let fields: Set<String> = ["offset", "stream", "data"]
}

/// `POST /api/gpu/jobs/{id}/output` (signed, a worker): new output of the attempt it runs.
public struct JobOutputReport: Codable, Sendable, Equatable {
    /// The attempt the worker runs: output of any other attempt is refused with 409.
    public var attempt: Int
    public var pieces: [JobOutputPiece]

    public init(attempt: Int, pieces: [JobOutputPiece]) {
        self.attempt = attempt
        self.pieces = pieces
    }

    public static let fields: Set<String> = ["attempt", "pieces"]
}

/// `POST /api/gpu/jobs/{id}/output`'s answer: how far the lead's copy of the output goes.
public struct JobOutputAccepted: Codable, Sendable, Equatable {
    public var nextOffset: Int

    public init(nextOffset: Int) { self.nextOffset = nextOffset }

    enum CodingKeys: String, CodingKey {
        case nextOffset = "next_offset"
    }
}
