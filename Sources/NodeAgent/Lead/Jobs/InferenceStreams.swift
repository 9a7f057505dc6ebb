import AuroraAPI
import Foundation
import Synchronization

/// Streamed gateway calls in flight on this lead: what their workers post
/// (`POST /api/gpu/jobs/{id}/stream`) and what the job queue says about them, queued for the
/// request that relays them to its client.
///
/// The worker pushes because it pulls everything else too: it needs no inbound port, and a push
/// is an ordinary signed call that every forwarding agent, proxy and retry already handles.
/// Chunks are taken in order only (``InferenceStreamPush/seq``), so a retried post never doubles
/// one. A stream nobody opened (a worker faster than the request that submitted its job) is
/// kept for ``unopenedRetention``.
final class InferenceStreams: Sendable {
    /// What a waiting request learns, in the order it happened.
    enum Event: Sendable, Equatable {
        /// Chunks of attempt `attempt`, in order.
        case chunks(attempt: Int, [String])
        /// The backend ended attempt `attempt`'s stream; `error` when it failed after it began.
        case done(attempt: Int, error: String?)
        /// The job went back to the queue as attempt `attempt` (its node was lost or gave it back).
        case requeued(attempt: Int)
        /// The job ended without its stream's end (failed, cancelled, attempts spent).
        case ended
    }

    /// What a push changed, for the route's answer.
    enum Taken: Sendable, Equatable {
        /// Taken (or a repeat): the index expected next, and whether the worker should stop.
        case ack(InferenceStreamAck)
        /// `seq` is past the index expected next: chunks in between are missing.
        case gap(expected: Int)
        /// The request has not relayed enough of what came before: try again shortly.
        case full
    }

    private struct Entry {
        var events: [Event] = []
        var waiter: (id: UUID, continuation: CheckedContinuation<Void, Never>)?
        /// The attempt whose chunks are counted, and the index of the next one.
        var attempt = 0
        var next = 0
        /// The attempt's `done` was taken.
        var ended = false
        /// The client went away: the worker is told to stop.
        var cancelled = false
        var opened = false
        var created: ContinuousClock.Instant
        /// Bytes of the chunks queued and not yet taken by the request.
        var queuedBytes = 0
    }

    /// The most bytes of chunks queued for one stream (a slow client, or no request yet).
    static let maxQueuedBytes = 4 << 20

    /// How long a stream that no request opened is kept.
    let unopenedRetention: Duration
    private let entries = Mutex<[String: Entry]>([:])

    init(unopenedRetention: Duration = .seconds(60)) {
        self.unopenedRetention = unopenedRetention
    }

    /// Starts relaying job `id`'s stream (what was posted before is kept for the first ``next``).
    func open(_ id: String) {
        let now = ContinuousClock.now
        entries.withLock { entries in
            prune(&entries, now: now)
            entries[id, default: Entry(created: now)].opened = true
        }
    }

    /// Stops relaying job `id`'s stream: what is queued is dropped, a waiter is woken.
    func close(_ id: String) {
        let waiter = entries.withLock { $0.removeValue(forKey: id)?.waiter }
        waiter?.continuation.resume()
    }

    /// The client went away: the worker's next push is answered with `cancel`.
    func cancel(_ id: String) {
        entries.withLock { $0[id]?.cancelled = true }
    }

    /// Takes a worker's push for job `id`, which runs on its node at `push.attempt` (the caller
    /// checked). A later attempt restarts the count; an earlier one is told to stop.
    func take(_ id: String, _ push: InferenceStreamPush) -> Taken {
        let now = ContinuousClock.now
        let (taken, waiter) = entries.withLock { entries -> (Taken, CheckedContinuation<Void, Never>?) in
            prune(&entries, now: now)
            var entry = entries[id] ?? Entry(created: now)
            if push.attempt > entry.attempt {
                entry.attempt = push.attempt
                entry.next = 0
                entry.ended = false
            }
            guard push.attempt == entry.attempt else {
                return (.ack(InferenceStreamAck(next: entry.next, cancel: true)), nil)
            }
            guard push.seq <= entry.next else { return (.gap(expected: entry.next), nil) }
            let skip = entry.next - push.seq
            let fresh = skip < push.chunks.count ? Array(push.chunks[skip...]) : []
            let ends = push.done && !entry.ended
            // A repeat (all of it taken before) changes nothing.
            guard !fresh.isEmpty || ends else {
                entries[id] = entry
                return (.ack(InferenceStreamAck(next: entry.next, cancel: entry.cancelled)), nil)
            }
            let bytes = fresh.reduce(0) { $0 + $1.utf8.count }
            if bytes > 0, entry.queuedBytes + bytes > Self.maxQueuedBytes {
                entries[id] = entry
                return (.full, nil)
            }
            if !fresh.isEmpty {
                entry.queuedBytes += bytes
                entry.events.append(.chunks(attempt: push.attempt, fresh))
                entry.next = push.seq + push.chunks.count
            }
            if ends {
                entry.events.append(.done(attempt: push.attempt, error: push.error))
                entry.ended = true
            }
            let waiter = entry.waiter?.continuation
            entry.waiter = nil
            entries[id] = entry
            return (.ack(InferenceStreamAck(next: entry.next, cancel: entry.cancelled)), waiter)
        }
        waiter?.resume()
        return taken
    }

    /// The queue put job `id` back as attempt `attempt` (only an open stream hears of it).
    func requeued(_ id: String, attempt: Int) { post(.requeued(attempt: attempt), to: id) }

    /// Job `id` ended (only an open stream hears of it).
    func ended(_ id: String) { post(.ended, to: id) }

    private func post(_ event: Event, to id: String) {
        let waiter = entries.withLock { entries -> CheckedContinuation<Void, Never>? in
            guard entries[id] != nil else { return nil }
            entries[id]?.events.append(event)
            defer { entries[id]?.waiter = nil }
            return entries[id]?.waiter?.continuation
        }
        waiter?.resume()
    }

    /// The events queued for job `id`, waiting up to `timeout` for one; empty when none came
    /// (or the stream was closed, or the task was cancelled).
    func next(_ id: String, timeout: Duration) async -> [Event] {
        if let ready = takeEvents(id) { return ready }
        guard timeout > .zero else { return [] }
        let waiterID = UUID()
        let woken = WaitDone()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: timeout)
                guard !woken.value.load(ordering: .acquiring) else { return }
                self.wake(id, waiterID)
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = entries.withLock { entries -> Bool in
                    guard entries[id] != nil, entries[id]?.events.isEmpty == true, !Task.isCancelled else {
                        return true
                    }
                    entries[id]?.waiter = (waiterID, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            woken.value.store(true, ordering: .releasing)
            group.cancelAll()
        }
        return takeEvents(id) ?? []
    }

    /// Queued events, taken; nil when there are none.
    private func takeEvents(_ id: String) -> [Event]? {
        entries.withLock { entries in
            guard let events = entries[id]?.events, !events.isEmpty else { return nil }
            entries[id]?.events = []
            entries[id]?.queuedBytes = 0
            return events
        }
    }

    private func wake(_ id: String, _ waiterID: UUID) {
        let waiter = entries.withLock { entries -> CheckedContinuation<Void, Never>? in
            guard let waiter = entries[id]?.waiter, waiter.id == waiterID else { return nil }
            entries[id]?.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }

    /// Drops streams no request opened within ``unopenedRetention``.
    private func prune(_ entries: inout [String: Entry], now: ContinuousClock.Instant) {
        for (id, entry) in entries where !entry.opened && now - entry.created > unopenedRetention {
            entries[id] = nil
        }
    }

    /// Streams held (for tests).
    var count: Int { entries.withLock { $0.count } }
}
