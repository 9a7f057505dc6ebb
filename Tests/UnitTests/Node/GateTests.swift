import Testing

@testable import NodeAgent

/// The startup gate: waiters resume when it opens, later waits return at once, and a cancelled
/// waiter returns without the gate opening.
@Suite("Readiness gate")
struct GateTests {
    @Test("waiters resume on open; an open gate does not block; a cancelled waiter returns while it stays closed")
    func gate() async {
        let gate = Gate()
        #expect(!gate.isOpen)
        let cancelled = Task { await gate.wait() }
        cancelled.cancel()
        await cancelled.value
        #expect(!gate.isOpen, "the cancelled waiter came back with the gate still closed")

        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<10 { group.addTask { await gate.wait() } }
            gate.open()
            await group.waitForAll()
        }
        #expect(gate.isOpen)
        await gate.wait()  // returns at once
    }
}
