import Synchronization

/// Resumes a continuation once: the first of several outcomes (a result, a timeout) wins.
final class ResumeOnce<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, Never>?>

    init(_ continuation: CheckedContinuation<T, Never>) { self.continuation = Mutex(continuation) }

    /// Resumes the continuation with `value` if nobody has yet; later calls do nothing. Safe from
    /// any thread: the continuation is taken out under the lock and resumed outside it.
    func resume(_ value: T) {
        continuation.withLock { pending in
            defer { pending = nil }
            return pending
        }?.resume(returning: value)
    }
}
