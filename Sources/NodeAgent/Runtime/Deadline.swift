/// The first of two outcomes: what `start` delivers through its callback, or `fallback()` once
/// `deadline` passes (or the caller is cancelled). For blocking work handed to a thread pool,
/// which cannot be interrupted: the caller stops waiting, the work finishes on its own and its
/// late result is dropped.
///
/// The deadline is a child task of the caller, ended as soon as the result comes; nothing
/// outlives the call.
func firstOf<T: Sendable>(
    _ start: (_ deliver: @escaping @Sendable (T) -> Void) -> Void,
    orAfter deadline: Duration,
    _ fallback: @escaping @Sendable () -> T
) async -> T {
    await withTaskGroup(of: Void.self) { group in
        let value = await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
            let once = ResumeOnce(continuation)
            start { once.resume($0) }
            group.addTask {
                // Ends at the deadline, or early when the result came (cancelAll below) or the
                // caller was cancelled; resuming an answered call does nothing.
                try? await Task.sleep(for: deadline)
                once.resume(fallback())
            }
        }
        group.cancelAll()
        return value
    }
}
