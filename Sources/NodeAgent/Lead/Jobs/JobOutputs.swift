import AuroraAPI
import Foundation
import Mesh

/// The lead's copy of exec jobs' output tails (`GET /api/gpu/jobs/{id}/logs`): workers send what
/// their commands write while they run (`POST /api/gpu/jobs/{id}/output`, signed), the lead keeps
/// the last `exec.output_tail_kib` KiB per job, in memory.
///
/// Workers push because nodes pull everything else too: a worker behind NAT needs no inbound port,
/// and the lead never waits on a node to answer a client. Bounded three ways: bytes per job (the
/// ring's capacity), jobs (`maxJobs`, the least recently written dropped first) and time (a tail not
/// written for `retention` is dropped). A new attempt of a job starts a new tail.
actor JobOutputs {
    /// One job's tail: the attempt and node it comes from, and when it was last written.
    private struct Tail {
        var attempt: Int
        var node: String
        var ring: JobOutputRing
        var written: ContinuousClock.Instant
    }

    /// Bytes kept per job.
    let capacity: Int
    /// Jobs whose tails are kept.
    let maxJobs: Int
    /// How long a tail is kept after its last write.
    let retention: Duration
    private var tails: [String: Tail] = [:]

    init(capacity: Int = 64 * 1024, maxJobs: Int = 256, retention: Duration = .seconds(3600)) {
        self.capacity = max(1, capacity)
        self.maxJobs = max(1, maxJobs)
        self.retention = retention
    }

    /// Takes pieces of output that `node` sent for attempt `attempt` of job `id` (the coordinator
    /// checked that it runs there) and returns the offset the lead's copy reaches. An older
    /// attempt's pieces change nothing.
    func take(_ id: String, node: String, attempt: Int, _ pieces: [(JobOutputStream, Int, [UInt8])]) -> Int {
        let now = ContinuousClock.now
        prune(now: now)
        var tail =
            tails[id] ?? Tail(attempt: attempt, node: node, ring: JobOutputRing(capacity: capacity), written: now)
        if attempt > tail.attempt {
            tail = Tail(attempt: attempt, node: node, ring: JobOutputRing(capacity: capacity), written: now)
        }
        guard attempt == tail.attempt else { return tail.ring.end }
        for (stream, offset, bytes) in pieces {
            tail.ring.insert(stream == .stdout ? .stdout : .stderr, at: offset, bytes)
        }
        tail.written = now
        tails[id] = tail
        if tails.count > maxJobs, let oldest = tails.min(by: { $0.value.written < $1.value.written })?.key {
            tails[oldest] = nil
        }
        return tail.ring.end
    }

    /// The page of `job`'s log from `offset`: every byte held from there (at most ``capacity``), as
    /// text that is safe in JSON and on a terminal. `done` once the job is terminal and nothing held
    /// is left unread. Read the job's state before calling: a worker sends the last output before
    /// its result, so output read after a terminal state was seen is complete.
    func page(_ job: Job, from offset: Int) -> JobLogs {
        prune(now: .now)
        let terminal = job.state.isTerminal
        guard let tail = tails[job.id] else {
            return JobLogs(
                id: job.id, state: job.state, attempt: nil, node: job.node, startOffset: 0, nextOffset: 0, chunks: [],
                done: terminal)
        }
        let (segments, next) = tail.ring.read(
            from: offset, limit: capacity, maxSegments: 1024, holdingBackPartialCharacter: !terminal)
        let chunks = segments.map { segment in
            JobLogChunk(
                offset: segment.offset, bytes: segment.bytes.count,
                stream: segment.stream == .stdout ? .stdout : .stderr,
                text: InputRules.sanitizedFreeText(String(decoding: segment.bytes, as: UTF8.self)))
        }
        return JobLogs(
            id: job.id, state: job.state, attempt: tail.attempt, node: tail.node, startOffset: tail.ring.start,
            nextOffset: next, chunks: chunks, done: terminal && next >= tail.ring.end)
    }

    /// Drops tails not written for ``retention``.
    private func prune(now: ContinuousClock.Instant) {
        let expired = tails.filter { now - $0.value.written > retention }.map(\.key)
        for id in expired { tails[id] = nil }
    }
}

extension JobCoordinator {
    /// Refuses output for job `id` unless `node` runs it at `attempt` now: 409 `not_assigned`
    /// (finished, unknown, or on another node) or `stale_attempt`.
    func checkOutput(_ id: String, from node: String, attempt: Int) throws(Refusal) {
        try requireLoaded()
        guard let record = book.record(id), record.node == node else {
            throw Refusal(
                .conflict, code: "not_assigned",
                message: "job \(InputRules.printable(String(id.prefix(64)))) is not running on node '\(node)'")
        }
        guard record.attempt == attempt else {
            throw Refusal(
                .conflict, code: "stale_attempt",
                message: "job \(id) is at attempt \(record.attempt); output of attempt \(attempt) is refused")
        }
    }

    /// ``checkOutput(_:from:attempt:)`` for a stream's chunks, which only a gateway call asking
    /// for `"stream": true` has: 409 `not_streaming` for any other job.
    func checkStream(_ id: String, from node: String, attempt: Int) throws(Refusal) {
        try checkOutput(id, from: node, attempt: attempt)
        guard let record = book.record(id), record.spec.ephemeral, Self.streams(record.spec.payload) else {
            throw Refusal(.conflict, code: "not_streaming", message: "job \(id) is not a streamed gateway call")
        }
    }

    /// Whether a job's payload is a gateway call with `"stream": true`.
    static func streams(_ payload: [String: JSONValue]) -> Bool {
        guard case .object(let call)? = payload["openai"], case .object(let body)? = call["body"],
            case .bool(true)? = body["stream"]
        else { return false }
        return true
    }
}
