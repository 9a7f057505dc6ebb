import Testing

@testable import Mesh

/// The job book, pure: placement, leases, fencing by attempt, requeues, idempotency,
/// cancellation. Time is passed in; nothing sleeps.
@Suite("Job book (pure leases and fencing)")
struct JobBookTests {
    typealias Book = JobBook<String>

    static let origin = ContinuousClock.now

    /// `seconds` after the start, on both clocks.
    static func at(_ seconds: Double) -> Book.Time {
        let ms = Int64((seconds * 1000).rounded())
        return Book.Time(instant: origin + .milliseconds(ms), wallMs: 1_700_000_000_000 + ms)
    }

    static func node(
        _ name: String, vramMB: Int = 24_000, gpus: Int = 1, state: MemberState = .alive, exec: Bool = false,
        labels: [String: String] = [:]
    ) -> Book.Node {
        Book.Node(
            name: name, state: state, accepting: true, allowExec: exec, canGenerate: true, labels: labels,
            gpus: (0..<gpus).map {
                Scheduler.GPUSlot(index: $0, model: "NVIDIA L4", totalMB: vramMB, usedByOthersMB: 0)
            })
    }

    static func submission(
        _ id: String, priority: Int = 5, vramMB: Int = 16_000, maxAttempts: Int = 3, key: String? = nil,
        by submitter: String = "alice"
    ) -> Book.Submission {
        Book.Submission(
            id: id, spec: "spec-\(id)", priority: priority, requirements: Scheduler.Requirements(minVramMB: vramMB),
            maxAttempts: maxAttempts, key: key.map { Book.IdempotencyKey(submitter: submitter, key: $0) })
    }

    /// A book with nodes `names` (one 24 GB GPU each, so one 16 GB job each).
    static func book(_ names: String...) -> Book {
        var book = Book(agingSeconds: 0)
        for name in names { _ = book.nodeChanged(node(name), now: at(0)) }
        return book
    }

    /// Submits and returns the accepted record (fails the test on `existing`).
    static func submit(_ book: inout Book, _ submission: Book.Submission, at time: Double = 0) -> Book.Record? {
        guard case .accepted(let record, _) = book.submit(submission, now: at(time)) else {
            Issue.record("expected a new job")
            return nil
        }
        return record
    }

    // MARK: Submitting and placing

    @Test("a job that fits is placed at once: assigned, with a lease, its node woken")
    func submitPlaces() throws {
        var book = Self.book("a")
        guard case .accepted(let record, let placed) = book.submit(Self.submission("j1"), now: Self.at(1)) else {
            Issue.record("expected a new job")
            return
        }
        #expect(record.state == .assigned)
        #expect(record.node == "a")
        #expect(record.gpus == [0])
        #expect(record.attempt == 1)
        #expect(record.leaseDeadlineMs == Self.at(11).wallMs)
        #expect(placed.changes.map(\.record.id) == ["j1"])
        #expect(placed.wake == ["a"])
        #expect(book.scheduler.placedCount == 1)
    }

    @Test("a job that fits nowhere stays queued until a node can take it")
    func queuedUntilCapacity() throws {
        var book = Self.book()
        let record = try #require(Self.submit(&book, Self.submission("j1")))
        #expect(record.state == .queued)
        #expect(book.place(now: Self.at(1)).isEmpty)
        _ = book.nodeChanged(Self.node("a"), now: Self.at(2))
        let placed = book.place(now: Self.at(2))
        #expect(placed.changes.map(\.record.id) == ["j1"])
        #expect(book.record("j1")?.state == .assigned)
    }

    @Test("higher priority is placed first; FIFO among equals")
    func priorityOrder() throws {
        var book = Self.book()
        _ = Self.submit(&book, Self.submission("low", priority: 2), at: 1)
        _ = Self.submit(&book, Self.submission("high", priority: 7), at: 2)
        _ = Self.submit(&book, Self.submission("normal-1", priority: 5), at: 3)
        _ = Self.submit(&book, Self.submission("normal-2", priority: 5), at: 4)
        #expect(book.scheduler.order(now: 5) == ["high", "normal-1", "normal-2", "low"])
        _ = book.nodeChanged(Self.node("a"), now: Self.at(5))
        #expect(book.place(now: Self.at(5)).changes.map(\.record.id) == ["high"])
    }

    @Test("handing over marks the job running once; a second delivery is empty")
    func deliverOnce() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        let delivery = book.deliver(to: "a", now: Self.at(2))
        #expect(delivery.started.map(\.id) == ["j1"])
        #expect(delivery.started.first?.state == .running)
        #expect(delivery.started.first?.startedAtMs == Self.at(2).wallMs)
        #expect(book.record("j1")?.delivered == true)
        #expect(book.deliver(to: "a", now: Self.at(3)).isEmpty)
        #expect(book.deliver(to: "b", now: Self.at(3)).isEmpty)
    }

    // MARK: Idempotency

    @Test("the same key from the same submitter is the same job")
    func sameKeySameJob() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1", key: "k"))
        guard case .existing(let existing) = book.submit(Self.submission("j2", key: "k"), now: Self.at(1)) else {
            Issue.record("expected the existing job")
            return
        }
        #expect(existing.id == "j1")
        #expect(book.openCount == 1)
        #expect(book.record("j2") == nil)
    }

    @Test("the same key from another submitter is another job")
    func otherSubmitterIndependent() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1", key: "k", by: "alice"))
        let other = try #require(Self.submit(&book, Self.submission("j2", key: "k", by: "bob")))
        #expect(other.id == "j2")
        #expect(book.record(forKey: Book.IdempotencyKey(submitter: "alice", key: "k"))?.id == "j1")
        #expect(book.record(forKey: Book.IdempotencyKey(submitter: "bob", key: "k"))?.id == "j2")
    }

    @Test("a withdrawn job (its key is in the store) leaves no trace: key, queue, reservation")
    func withdraw() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1", key: "k"))
        book.withdraw("j1")
        #expect(book.openCount == 0)
        #expect(book.record(forKey: Book.IdempotencyKey(submitter: "alice", key: "k")) == nil)
        #expect(book.scheduler.placedCount == 0)
        #expect(book.deliver(to: "a", now: Self.at(1)).isEmpty)
    }

    // MARK: Leases

    @Test("a heartbeat naming the job renews its lease; silence past the lease requeues it")
    func leaseRenewal() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        _ = book.deliver(to: "a", now: Self.at(0))
        #expect(book.renew(node: "a", leases: [Book.Lease(id: "j1", attempt: 1)], now: Self.at(8)).isEmpty)
        #expect(book.tick(now: Self.at(15)).isEmpty)
        #expect(book.tick(now: Self.at(18)).isEmpty)  // exactly at the deadline: not yet
        let expired = book.tick(now: Self.at(18.001))
        #expect(expired.changes.map(\.record.id) == ["j1"])
    }

    @Test("lease expiry requeues with the next attempt and tells the old worker to stop")
    func leaseExpiryRequeues() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        _ = book.deliver(to: "a", now: Self.at(0))
        let directives = book.tick(now: Self.at(11))
        guard case .requeued(let record, let from, let reason)? = directives.changes.first else {
            Issue.record("expected a requeue, got \(directives.changes)")
            return
        }
        #expect(record.attempt == 2)
        #expect(record.state == .queued)
        #expect(record.node == nil)
        #expect(record.startedAtMs == nil)
        #expect(from == "a")
        #expect(reason == "lease_expired")
        #expect(directives.wake == ["a"])
        #expect(book.stops(for: "a") == [Book.Lease(id: "j1", attempt: 1)])
        #expect(book.scheduler.placedCount == 0)
        #expect(book.scheduler.isQueued("j1"))
    }

    @Test("an assigned job never picked up expires too")
    func undeliveredExpires() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"), at: 0)
        #expect(book.tick(now: Self.at(11)).changes.first?.record.attempt == 2)
    }

    // MARK: Fencing

    @Test("a result from the old attempt is refused and changes nothing; its worker is told to stop")
    func staleAttemptRefused() throws {
        var book = Self.book("a", "b")
        _ = Self.submit(&book, Self.submission("j1"))
        let first = try #require(book.record("j1")?.node)
        _ = book.deliver(to: first, now: Self.at(0))
        _ = book.tick(now: Self.at(11))
        _ = book.place(now: Self.at(11))
        let second = try #require(book.record("j1"))
        #expect(second.attempt == 2)
        guard
            case .staleAttempt(current: 2) = book.result(
                "j1", from: second.node!, attempt: 1, .succeeded, now: Self.at(12))
        else {
            Issue.record("expected a stale attempt")
            return
        }
        #expect(book.record("j1")?.state == .assigned)
        #expect(book.stops(for: first) == [Book.Lease(id: "j1", attempt: 1)])
        // The old worker's heartbeat still naming attempt 1 is not renewed, only stopped.
        let renewed = book.renew(node: first, leases: [Book.Lease(id: "j1", attempt: 1)], now: Self.at(12))
        #expect(renewed.wake == [first])
        #expect(book.deliver(to: first, now: Self.at(12)).stops == [Book.Lease(id: "j1", attempt: 1)])
    }

    @Test("a result from a node the job is not on is refused")
    func otherNodeRefused() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        guard case .notAssigned = book.result("j1", from: "b", attempt: 1, .succeeded, now: Self.at(1)) else {
            Issue.record("expected not assigned")
            return
        }
        guard case .notOpen = book.result("nope", from: "a", attempt: 1, .succeeded, now: Self.at(1)) else {
            Issue.record("expected not open")
            return
        }
    }

    @Test("a heartbeat naming an unknown job puts it on the stop list once")
    func unknownLeaseStopped() throws {
        var book = Self.book("a")
        let lease = Book.Lease(id: "ghost", attempt: 3)
        #expect(book.renew(node: "a", leases: [lease], now: Self.at(1)).wake == ["a"])
        _ = book.renew(node: "a", leases: [lease], now: Self.at(2))
        #expect(book.stops(for: "a") == [lease])
    }

    // MARK: Requeue and failure

    @Test("a node's death requeues its jobs, not the others'; they go elsewhere")
    func nodeDeathRequeues() throws {
        var book = Self.book("a", "b")
        _ = Self.submit(&book, Self.submission("j1"))
        _ = Self.submit(&book, Self.submission("j2"))
        let onA = try #require(["j1", "j2"].first { book.record($0)?.node == "a" })
        let onB = try #require(["j1", "j2"].first { book.record($0)?.node == "b" })
        var dead = Self.node("a")
        dead.state = .dead
        let directives = book.nodeChanged(dead, now: Self.at(3))
        guard case .requeued(let record, "a", "node_dead")? = directives.changes.first, directives.changes.count == 1
        else {
            Issue.record("expected one requeue from a, got \(directives.changes)")
            return
        }
        #expect(record.id == onA)
        #expect(book.record(onB)?.state == .assigned)
        #expect(book.nodeChanged(dead, now: Self.at(4)).isEmpty)  // no transition, nothing more
        // a is dead, b is full: it waits.
        #expect(book.place(now: Self.at(4)).isEmpty)
        _ = book.nodeChanged(Self.node("c"), now: Self.at(5))
        #expect(book.place(now: Self.at(5)).changes.first?.record.node == "c")
    }

    @Test("a node that leaves requeues with node_left")
    func nodeLeft() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        let directives = book.nodeChanged(Self.node("a", state: .left), now: Self.at(1))
        guard case .requeued(_, _, "node_left")? = directives.changes.first else {
            Issue.record("expected node_left, got \(directives.changes)")
            return
        }
    }

    @Test("the last attempt lost: failed, out of the book, reservation freed")
    func attemptsExhausted() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1", maxAttempts: 2, key: "k"))
        _ = book.tick(now: Self.at(11))  // attempt 1 lost
        _ = book.place(now: Self.at(11))
        let directives = book.tick(now: Self.at(22))  // attempt 2 lost
        guard case .exhausted(let record)? = directives.changes.first else {
            Issue.record("expected exhausted, got \(directives.changes)")
            return
        }
        #expect(record.state == .failed)
        #expect(record.attempt == 2)
        #expect(record.error == "lease_expired on a; all 2 attempts used")
        #expect(record.finishedAtMs == Self.at(22).wallMs)
        #expect(book.record("j1") == nil)
        #expect(book.record(forKey: Book.IdempotencyKey(submitter: "alice", key: "k")) == nil)
        #expect(book.scheduler.placedCount == 0)
        #expect(book.stops(for: "a") == [Book.Lease(id: "j1", attempt: 1), Book.Lease(id: "j1", attempt: 2)])
    }

    @Test("a retryable failure requeues with the next attempt")
    func retryableFailure() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        _ = book.deliver(to: "a", now: Self.at(0))
        guard
            case .requeued(let before, let directives) = book.result(
                "j1", from: "a", attempt: 1,
                .failed(error: "backend down", retry: true), now: Self.at(1))
        else {
            Issue.record("expected a requeue")
            return
        }
        #expect(before.state == .running)
        guard case .requeued(let record, _, "worker: backend down")? = directives.changes.first else {
            Issue.record("expected the worker's reason, got \(directives.changes)")
            return
        }
        #expect(record.attempt == 2)
    }

    // MARK: Finishing

    @Test("a finished job leaves the open book: record, key and reservation; its run time feeds the ETA")
    func finishedLeaves() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1", key: "k"))
        _ = book.deliver(to: "a", now: Self.at(0))
        guard
            case .finished(let record, let directives) = book.result(
                "j1", from: "a", attempt: 1, .succeeded, now: Self.at(5))
        else {
            Issue.record("expected finished")
            return
        }
        #expect(record.state == .succeeded)
        #expect(record.leaseDeadlineMs == nil)
        #expect(directives.changes.count == 1)
        #expect(book.openCount == 0)
        #expect(book.record(forKey: Book.IdempotencyKey(submitter: "alice", key: "k")) == nil)
        #expect(book.scheduler.worker("a")?.gpus.first?.reservedMB == 0)
        #expect(book.meanRunTime == 5)
        #expect(Book.eta(position: 3, slots: 2, mean: 5) == 10)
        // Its lease no longer exists: time passing changes nothing, and a late result is not open.
        #expect(book.tick(now: Self.at(100)).isEmpty)
        guard case .notOpen = book.result("j1", from: "a", attempt: 1, .succeeded, now: Self.at(101)) else {
            Issue.record("expected not open")
            return
        }
    }

    @Test("a failed result finishes the job with its error")
    func failedResult() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        guard
            case .finished(let record, _) = book.result(
                "j1", from: "a", attempt: 1, .failed(error: nil, retry: false), now: Self.at(1))
        else {
            Issue.record("expected finished")
            return
        }
        #expect(record.state == .failed)
        #expect(record.error == "failed")
    }

    // MARK: Cancelling

    @Test("cancelling a queued job: out of the queue, no stop, nobody woken")
    func cancelQueued() throws {
        var book = Self.book()
        _ = Self.submit(&book, Self.submission("j1"))
        let cancelled = book.cancel("j1", now: Self.at(1))
        let (record, directives) = try #require(cancelled)
        #expect(record.state == .cancelled)
        guard case .cancelled(_, from: .queued)? = directives.changes.first else {
            Issue.record("expected cancelled from queued")
            return
        }
        #expect(directives.wake.isEmpty)
        #expect(book.scheduler.queuedCount == 0)
        #expect(book.openCount == 0)
        #expect(book.cancel("j1", now: Self.at(2)) == nil)
    }

    @Test("cancelling a running job sends its worker a stop and frees the GPU")
    func cancelRunning() throws {
        var book = Self.book("a")
        _ = Self.submit(&book, Self.submission("j1"))
        _ = book.deliver(to: "a", now: Self.at(0))
        let cancelled = book.cancel("j1", now: Self.at(1))
        let (_, directives) = try #require(cancelled)
        guard case .cancelled(_, from: .running)? = directives.changes.first else {
            Issue.record("expected cancelled from running")
            return
        }
        #expect(directives.wake == ["a"])
        #expect(book.scheduler.placedCount == 0)
        let delivery = book.deliver(to: "a", now: Self.at(2))
        #expect(delivery.stops == [Book.Lease(id: "j1", attempt: 1)])
        // A delivery whose write failed gives its stops back.
        book.returnStops(delivery.stops, to: "a")
        #expect(book.stops(for: "a") == delivery.stops)
    }

    // MARK: Restart and exec

    @Test("a restart keeps placed jobs on their node with a fresh lease, and re-offers the undelivered")
    func restore() throws {
        var book = Book(agingSeconds: 0)
        let assigned = Book.Record(
            id: "j1", spec: "s", priority: 5, requirements: Scheduler.Requirements(minVramMB: 16_000), key: nil,
            state: .assigned, attempt: 2, maxAttempts: 3, node: "a", gpus: [0], submittedAtMs: 0)
        let queued = Book.Record(
            id: "j2", spec: "s", priority: 5, requirements: Scheduler.Requirements(minVramMB: 16_000),
            key: Book.IdempotencyKey(submitter: "alice", key: "k"), state: .queued, attempt: 1, maxAttempts: 3,
            submittedAtMs: 0)
        book.restore([assigned, queued], nodes: [Self.node("a")], now: Self.at(100))
        #expect(book.openCount == 2)
        #expect(book.record(forKey: Book.IdempotencyKey(submitter: "alice", key: "k"))?.id == "j2")
        #expect(book.place(now: Self.at(100)).isEmpty)  // a's GPU is held by j1
        #expect(book.tick(now: Self.at(109)).isEmpty)
        #expect(book.deliver(to: "a", now: Self.at(109)).started.map(\.attempt) == [2])
    }

    @Test(
        "after a restart, a job delivered before it that its long-running worker does not hold is delivered again, same attempt"
    )
    func reattachUndelivered() throws {
        func running(_ id: String, node: String, startedAtMs: Int64) -> Book.Record {
            Book.Record(
                id: id, spec: "s", priority: 5, requirements: Scheduler.Requirements(minVramMB: 1_000), key: nil,
                state: .running, attempt: 1, maxAttempts: 3, node: node, gpus: [0], submittedAtMs: 0,
                startedAtMs: startedAtMs)
        }
        let delivered = Self.at(50).wallMs
        var book = Book(agingSeconds: 0)
        book.restore(
            [
                running("lost", node: "a", startedAtMs: delivered), running("held", node: "a", startedAtMs: delivered),
                running("restarted", node: "b", startedAtMs: delivered),
                running("unsaid", node: "c", startedAtMs: delivered),
            ], nodes: [Self.node("a"), Self.node("b"), Self.node("c")], now: Self.at(100))
        // a has run since long before the delivery and holds only "held": "lost" never reached it.
        let woken = book.reattach(
            node: "a", leases: [Book.Lease(id: "held", attempt: 1)], workerStartedAtMs: Self.at(0).wallMs,
            now: Self.at(101))
        #expect(woken.wake == ["a"])
        #expect(book.record("lost")?.state == .assigned)
        #expect(book.record("held")?.state == .running)
        let again = book.deliver(to: "a", now: Self.at(102))
        #expect(again.started.map(\.id) == ["lost"])
        #expect(again.started.map(\.attempt) == [1])
        // Only the first report counts: a later one without "held" changes nothing here.
        #expect(book.reattach(node: "a", leases: [], workerStartedAtMs: Self.at(0).wallMs, now: Self.at(103)).isEmpty)
        #expect(book.record("held")?.state == .running)
        // b started after the delivery (it restarted; its job ended with it), or c did not say
        // when: the lease decides, as before.
        #expect(
            book.reattach(node: "b", leases: [], workerStartedAtMs: delivered + 1_000, now: Self.at(101)).isEmpty)
        #expect(book.reattach(node: "c", leases: [], workerStartedAtMs: nil, now: Self.at(101)).isEmpty)
        #expect(book.record("restarted")?.state == .running && book.record("unsaid")?.state == .running)
        _ = book.renew(node: "a", leases: [Book.Lease(id: "held", attempt: 1)], now: Self.at(103))
        _ = book.tick(now: Self.at(111))  // b's and c's leases ran out: requeued, a second attempt
        #expect(book.record("restarted")?.attempt == 2 && book.record("unsaid")?.attempt == 2)
        #expect(book.record("lost")?.attempt == 1 && book.record("held")?.attempt == 1)
    }

    @Test("exec jobs need a live node that allows exec and carries the labels")
    func execRule() throws {
        var book = Self.book("a")
        #expect(!book.mayRunExec(labels: [:]))
        _ = book.nodeChanged(Self.node("x", exec: true, labels: ["zone": "eu"]), now: Self.at(1))
        #expect(book.mayRunExec(labels: [:]))
        #expect(book.mayRunExec(labels: ["zone": "eu"]))
        #expect(!book.mayRunExec(labels: ["zone": "us"]))
        _ = book.nodeChanged(Self.node("x", state: .dead, exec: true, labels: ["zone": "eu"]), now: Self.at(2))
        #expect(!book.mayRunExec(labels: [:]))
    }

    @Test("a live node that has not reported its worker yet (a new lead) may allow exec: not a refusal, a wait")
    func unreportedWorker() throws {
        var book = Self.book("a")
        #expect(!book.awaitsWorkerReport(labels: [:]))
        var fresh = Self.node("x", labels: ["zone": "eu"])
        fresh.reported = false
        _ = book.nodeChanged(fresh, now: Self.at(1))
        #expect(!book.mayRunExec(labels: [:]))
        #expect(book.awaitsWorkerReport(labels: [:]) && book.awaitsWorkerReport(labels: ["zone": "eu"]))
        #expect(!book.awaitsWorkerReport(labels: ["zone": "us"]))
        // Reported without exec: a plain no. Gone while unreported: nothing to wait for.
        _ = book.nodeChanged(Self.node("x", labels: ["zone": "eu"]), now: Self.at(2))
        #expect(!book.awaitsWorkerReport(labels: [:]))
        fresh.state = .dead
        _ = book.nodeChanged(fresh, now: Self.at(3))
        #expect(!book.awaitsWorkerReport(labels: [:]))
    }
}
