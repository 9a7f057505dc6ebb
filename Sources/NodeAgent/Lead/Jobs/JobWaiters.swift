import Foundation
import Synchronization

/// Continuations waiting for something about a key (a node's assignments, a job's end), each
/// resumed exactly once: the first wake removes it, so a later wake of the same id (its timer,
/// a cancellation) finds nothing and does nothing.
struct WaitList {
    private var waiters: [String: [UUID: CheckedContinuation<Void, Never>]] = [:]

    var keys: [String] { Array(waiters.keys) }

    mutating func add(_ key: String, _ id: UUID, _ continuation: CheckedContinuation<Void, Never>) {
        waiters[key, default: [:]][id] = continuation
    }

    mutating func wakeAll(_ key: String) {
        guard let list = waiters.removeValue(forKey: key) else { return }
        for continuation in list.values { continuation.resume() }
    }

    mutating func wake(_ key: String, _ id: UUID) {
        guard let continuation = waiters[key]?.removeValue(forKey: id) else { return }
        if waiters[key]?.isEmpty == true { waiters[key] = nil }
        continuation.resume()
    }

    /// Wakes every waiter (graceful shutdown, a store failure).
    mutating func wakeEveryone() {
        for key in keys { wakeAll(key) }
    }
}

/// The coordinator's long-polls: workers waiting for assignments, clients waiting for a job's
/// end, and duplicate submissions waiting for the first one with their idempotency key.
struct JobWaiters {
    enum List { case node, job, key }

    var node = WaitList()
    var job = WaitList()
    var key = WaitList()

    /// Registers a waiter (switching in place: no copy of a list).
    mutating func add(_ list: List, _ key: String, _ id: UUID, _ continuation: CheckedContinuation<Void, Never>) {
        switch list {
        case .node: node.add(key, id, continuation)
        case .job: job.add(key, id, continuation)
        case .key: self.key.add(key, id, continuation)
        }
    }

    /// Wakes one waiter; a no-op when it was already woken.
    mutating func wake(_ list: List, _ key: String, _ id: UUID) {
        switch list {
        case .node: node.wake(key, id)
        case .job: job.wake(key, id)
        case .key: self.key.wake(key, id)
        }
    }
}

extension JobCoordinator {
    /// Waits until `key` is woken on `list`, `timeout` passes or the task is cancelled.
    ///
    /// The timeout is a child task, not a sleeping `Task {}`: it ends with this call, and the
    /// waiting request's cancellation reaches it (its sleep throws), so it wakes the waiter at
    /// once. The continuation is registered before the actor is given up, so the timer's wake
    /// always finds it or finds it already woken (a no-op). Once the waiter has been woken the
    /// timer ends without a hop onto this actor, so a busy coordinator does not delay the
    /// waiter's return.
    func waitOn(_ list: JobWaiters.List, _ key: String, timeout: Duration) async {
        guard timeout > .zero, !closing || list == .key else { return }
        let id = UUID()
        let woken = WaitDone()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: timeout)
                guard !woken.value.load(ordering: .acquiring) else { return }
                await self.wake(list, key, id)
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                waiters.add(list, key, id, continuation)
            }
            woken.value.store(true, ordering: .releasing)
            group.cancelAll()
        }
    }

    private func wake(_ list: JobWaiters.List, _ key: String, _ id: UUID) {
        waiters.wake(list, key, id)
    }

    /// Wakes the workers of `nodes` waiting for assignments.
    func wakeNodes(_ nodes: [String]) {
        for node in nodes { waiters.node.wakeAll(node) }
    }
}

/// Set once a waiter has been woken, so its timer need not wake it.
final class WaitDone: Sendable {
    let value = Atomic<Bool>(false)
}
