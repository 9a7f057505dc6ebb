import AuroraAPI
import Foundation
import Synchronization

/// A streamed gateway call's chunks on their way from the worker to the lead: the backend's
/// reader adds them, ``run(send:)`` posts them (`POST /api/gpu/jobs/{id}/stream`), one post in
/// flight, each carrying every chunk that came while the last was under way, so a fast backend
/// costs fewer posts and a slow lead link adds no more than one round trip to a chunk.
///
/// A chunk leaves the buffer only when the lead acknowledged it, so a post that failed is sent
/// again as it was (the lead takes each index once).
final class StreamPusher: Sendable {
    private struct State {
        /// Chunks not yet acknowledged; `pending[0]` has index `base`.
        var pending: [String] = []
        var base = 0
        var finished = false
        var error: String?
        /// The lead acknowledged the end.
        var delivered = false
        var count = 0
        var usage: JSONValue?
        /// Chunks the lead acknowledged.
        var acknowledged: Int { base }
    }

    /// Most bytes of chunks in one post (the lead's body limit is 1 MiB at least).
    static let maxPushBytes = 512 * 1024

    let attempt: Int
    private let state = Mutex(State())
    private let signal: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    init(attempt: Int) {
        self.attempt = attempt
        (signal, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// A chunk from the backend, with the `usage` it carries, if any.
    func add(_ chunk: String, usage: JSONValue? = nil) {
        state.withLock { state in
            state.pending.append(chunk)
            state.count += 1
            if let usage { state.usage = usage }
        }
        wake.yield()
    }

    /// Chunks the backend sent, and the last `usage` among them.
    var counted: (chunks: Int, usage: JSONValue?) { state.withLock { ($0.count, $0.usage) } }

    /// The backend's stream ended (`error`: it failed after it began).
    func finish(error: String?) {
        state.withLock { state in
            state.finished = true
            state.error = error
        }
        wake.yield()
    }

    /// Chunks the lead has acknowledged so far.
    var acknowledged: Int { state.withLock { $0.acknowledged } }

    /// What the next post carries; nil when there is nothing to send.
    func nextPush() -> InferenceStreamPush? {
        state.withLock { state in
            guard !state.delivered else { return nil }
            var chunks: [String] = []
            var bytes = 0
            for chunk in state.pending {
                guard chunks.count < InferenceStreamPush.maxChunks,
                    chunks.isEmpty || bytes + chunk.utf8.count <= Self.maxPushBytes
                else { break }
                chunks.append(chunk)
                bytes += chunk.utf8.count
            }
            let done = state.finished && chunks.count == state.pending.count
            guard !chunks.isEmpty || done else { return nil }
            return InferenceStreamPush(
                attempt: attempt, seq: state.base, chunks: chunks, done: done, error: done ? state.error : nil)
        }
    }

    /// The lead took `push` and expects index `next`.
    func acknowledge(_ push: InferenceStreamPush, next: Int) {
        state.withLock { state in
            let taken = min(max(0, next - state.base), state.pending.count)
            state.pending.removeFirst(taken)
            state.base += taken
            if push.done && state.pending.isEmpty { state.delivered = true }
        }
    }

    /// Why the pushing stopped.
    enum End: Sendable, Equatable {
        /// Every chunk and the end reached the lead.
        case delivered
        /// The lead said stop (the client went away, the call was cancelled or moved).
        case stopped
        /// The lead could not be reached or refused the chunks.
        case failed(String)
    }

    /// Posts until everything reached the lead, the lead says stop, or a post fails for good
    /// (refused, or no answer for `patience`). Ends early when the task is cancelled.
    func run(
        patience: Duration = .seconds(10),
        send: @Sendable (InferenceStreamPush) async throws(LeadCallError) -> InferenceStreamAck
    ) async -> End {
        for await _ in signal {
            var failingSince: ContinuousClock.Instant?
            var delay = Duration.milliseconds(50)
            while let push = nextPush() {
                if Task.isCancelled { return .stopped }
                do throws(LeadCallError) {
                    let ack = try await send(push)
                    failingSince = nil
                    delay = .milliseconds(50)
                    acknowledge(push, next: ack.next)
                    if ack.cancel { return .stopped }
                    if state.withLock({ $0.delivered }) { return .delivered }
                } catch {
                    switch error {
                    case .refused(status: 429, _):
                        break  // the client lags: the same chunks again shortly
                    case .refused(status: 409, _):
                        return .stopped  // not running here any more
                    case .refused:
                        return .failed(error.message)
                    case .unreachable:
                        let since = failingSince ?? .now
                        failingSince = since
                        if ContinuousClock.now - since > patience { return .failed(error.message) }
                    }
                    do { try await Task.sleep(for: delay) } catch { return .stopped }
                    delay = min(delay * 2, .seconds(1))
                }
            }
        }
        return .stopped
    }
}
