import Foundation
import Synchronization

/// A one-way flag a task can await: closed at first, opened once, never closed again. Startup
/// waits on gates (the store answered, the registry loaded, the node joined) instead of
/// polling a flag on a timer.
final class Gate: Sendable {
    private struct Waiting {
        var open = false
        var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(Waiting())

    /// Whether the gate has been opened.
    var isOpen: Bool { state.withLock { $0.open } }

    /// Opens the gate: every waiter resumes now, later waits return at once.
    func open() {
        let waiters = state.withLock { waiting -> [CheckedContinuation<Void, Never>] in
            waiting.open = true
            defer { waiting.waiters = [:] }
            return Array(waiting.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the gate is open, or at once when the task is (or gets) cancelled; the
    /// caller checks ``isOpen`` when it must tell the two apart.
    func wait() async {
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Under the lock, so a cancellation handler that ran before this finds nothing
                // to resume and this sees the task cancelled.
                let resumeNow = state.withLock { waiting -> Bool in
                    if waiting.open || Task.isCancelled { return true }
                    waiting.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
