import Testing

@testable import Mesh

/// Why a job waits (node by node), queue ETAs from what is ahead and what runs, and cordon and
/// drain: the pure parts, on the book's manual clock.
@Suite("Placement explanations, ETAs, cordon and drain (pure)")
struct PlacementExplanationTests {
    typealias Book = JobBook<String>
    typealias T = JobBookTests

    static func requirements(vram: Int = 0, model: String? = nil, count: Int = 1, exec: Bool = false)
        -> Scheduler.Requirements
    {
        Scheduler.Requirements(minVramMB: vram, gpuModel: model, gpuCount: count, exec: exec)
    }

    @Test("nodes are grouped by the first rule they fail, most nodes first, with the best VRAM figure")
    func grouped() {
        var book = Book(agingSeconds: 0)
        var busy = T.node("busy-1", vramMB: 24_576)
        busy.gpus[0].usedByOthersMB = 512  // 24064 free
        var busier = T.node("busy-2", vramMB: 24_576)
        busier.gpus[0].usedByOthersMB = 4096
        var stopping = T.node("stopping", vramMB: 80_000)
        stopping.accepting = false
        for node in [busy, busier, stopping, T.node("small", vramMB: 8_000)] {
            _ = book.nodeChanged(node, now: T.at(0))
        }
        // Other processes use some of the busy nodes' VRAM: 20 GB still fits on both.
        let explanation = book.scheduler.explain(Self.requirements(vram: 20_000))
        #expect(explanation.fitsNow == ["busy-1", "busy-2"])
        let big = book.scheduler.explain(Self.requirements(vram: 50_000))
        #expect(big.fitsNow.isEmpty)
        #expect(
            big.entries == [
                PlacementExplanation.Entry(reason: .vramTotal, nodes: ["busy-1", "busy-2", "small"], bestMB: 24_576),
                PlacementExplanation.Entry(reason: .notAccepting, nodes: ["stopping"]),
            ])
        #expect(big.summary == "3 nodes too little VRAM (need 50000 MB, largest 24576), 1 node not accepting")
        #expect(big.couldEverRun)
        #expect(!big.runsWithoutHelp)
    }

    @Test("busy GPUs: too little free VRAM, with the most any of them has free")
    func busy() throws {
        var book = T.book("a", "b")
        _ = T.submit(&book, T.submission("j1", vramMB: 16_000), at: 0)
        _ = T.submit(&book, T.submission("j2", vramMB: 16_000), at: 0)
        let waiting = try #require(T.submit(&book, T.submission("j3", vramMB: 16_000), at: 1))
        #expect(waiting.state == .queued)
        let explanation = try #require(book.explain("j3"))
        #expect(
            explanation.entries == [PlacementExplanation.Entry(reason: .vramFree, nodes: ["a", "b"], bestMB: 8_000)])
        #expect(explanation.summary == "2 nodes too little free VRAM (need 16000 MB, best 8000)")
        #expect(explanation.runsWithoutHelp)
        #expect(book.explain("j1") == nil, "only queued jobs are explained")
    }

    @Test("never runnable: no worker, no matching model, too few GPUs, missing labels, exec not allowed")
    func neverRunnable() {
        #expect(!Scheduler().couldEverRun(Self.requirements()))
        #expect(Scheduler().explain(Self.requirements()).summary == "no GPU worker has joined the mesh")
        let book = T.book("a", "b")
        for need in [
            Self.requirements(model: "A100"), Self.requirements(count: 2), Self.requirements(vram: 50_000),
            Self.requirements(exec: true),
            Scheduler.Requirements(labels: ["zone": "secure"]),
        ] {
            #expect(!book.scheduler.couldEverRun(need), "\(need)")
            #expect(!book.scheduler.explain(need).couldEverRun, "\(need)")
        }
        #expect(
            book.scheduler.explain(Self.requirements(model: "A100")).summary == "2 nodes no GPU matching 'A100'")
        #expect(
            book.scheduler.explain(Scheduler.Requirements(labels: ["zone": "secure"])).summary
                == "2 nodes without the labels zone=secure")
        #expect(book.scheduler.couldEverRun(Self.requirements(model: "l4")))
    }

    @Test("a fitting node that is away, cordoned or has not reported yet could run it later")
    func later() {
        var book = Book(agingSeconds: 0)
        _ = book.nodeChanged(T.node("dead", state: .dead), now: T.at(0))
        var fresh = T.node("fresh")
        fresh.reported = false
        fresh.allowExec = false
        _ = book.nodeChanged(fresh, now: T.at(0))
        var cordoned = T.node("cordoned")
        cordoned.cordoned = true
        _ = book.nodeChanged(cordoned, now: T.at(0))
        _ = book.nodeChanged(T.node("gone", state: .left), now: T.at(0))
        let explanation = book.scheduler.explain(Self.requirements(vram: 1_000, exec: true))
        // An unreported worker's exec permission is unknown: it is "not reported", not "no exec".
        #expect(Set(explanation.entries.map(\.reason)) == [.noExec, .unreported])
        #expect(explanation.entries.first { $0.reason == .unreported }?.nodes == ["fresh"])
        let generate = book.scheduler.explain(Self.requirements(vram: 1_000))
        #expect(Set(generate.entries.map(\.reason)) == [.away, .unreported, .cordoned])
        #expect(generate.entries.allSatisfy { $0.nodes.count == 1 })
        #expect(!generate.entries.flatMap(\.nodes).contains("gone"), "departed nodes are not counted")
        #expect(generate.couldEverRun)
        #expect(!generate.runsWithoutHelp)
    }

    @Test("ETAs: unknown before any run time, without placed jobs, and behind overdue jobs")
    func etaUnknown() throws {
        var book = T.book("a")
        #expect(book.etas(count: 2, now: T.at(0)) == [nil, nil])
        let first = try #require(T.submit(&book, T.submission("j1"), at: 0))
        _ = book.deliver(to: "a", now: T.at(0))
        _ = book.result(first.id, from: "a", attempt: 1, .succeeded, now: T.at(10))
        #expect(book.meanRunTime == 10)
        #expect(book.etas(count: 1, now: T.at(10)) == [nil], "nothing placed: no slot will come free")
        let second = try #require(T.submit(&book, T.submission("j2"), at: 10))
        _ = book.deliver(to: "a", now: T.at(10))
        #expect(second.node == "a")
        _ = T.submit(&book, T.submission("j3"), at: 11)
        #expect(book.etas(count: 2, now: T.at(14)) == [6, 16])
        // The running job outlived the mean: when it ends is not known.
        #expect(book.etas(count: 2, now: T.at(25)) == [nil, nil])
    }

    @Test("ETAs: the jobs ahead take the first slot to come free, each for the mean run time")
    func etaQueue() throws {
        var book = T.book("a", "b")
        for (id, at) in [("w1", 0.0), ("w2", 0.0)] {
            let record = try #require(T.submit(&book, T.submission(id), at: at))
            _ = book.deliver(to: record.node ?? "", now: T.at(at))
            _ = book.result(id, from: record.node ?? "", attempt: 1, .succeeded, now: T.at(at + 10))
        }
        _ = T.submit(&book, T.submission("r1"), at: 20)
        _ = T.submit(&book, T.submission("r2"), at: 22)
        _ = book.deliver(to: "a", now: T.at(20))
        _ = book.deliver(to: "b", now: T.at(22))
        // Slots free at 30 and 32; now 24: 6 s and 8 s, then 16 s and 18 s.
        #expect(book.etas(count: 4, now: T.at(24)) == [6, 8, 16, 18])
    }

    @Test("a cordoned node takes no new job; its running job goes on; reopened, it takes work again")
    func cordon() throws {
        var book = T.book("a")
        let running = try #require(T.submit(&book, T.submission("j1"), at: 0))
        #expect(running.node == "a")
        var node = T.node("a")
        node.cordoned = true
        _ = book.nodeChanged(node, now: T.at(1))
        _ = book.result("j1", from: "a", attempt: 1, .succeeded, now: T.at(2))
        let waiting = try #require(T.submit(&book, T.submission("j2"), at: 3))
        #expect(waiting.state == .queued)
        #expect(book.explain("j2")?.summary == "1 node cordoned")
        #expect(book.tick(now: T.at(100)).changes.isEmpty, "no deadline: nothing is handed back")
        node.cordoned = false
        _ = book.nodeChanged(node, now: T.at(4))
        #expect(book.place(now: T.at(4)).changes.map(\.record.id) == ["j2"])
    }

    @Test("drain: jobs still running at the deadline go back to the queue without spending an attempt")
    func drain() throws {
        var book = T.book("a")
        let record = try #require(T.submit(&book, T.submission("j1", maxAttempts: 1), at: 0))
        _ = book.deliver(to: "a", now: T.at(0))
        #expect(record.node == "a")
        var node = T.node("a")
        node.cordoned = true
        node.drainDeadlineMs = T.at(30).wallMs
        _ = book.nodeChanged(node, now: T.at(1))
        _ = book.renew(node: "a", leases: [Book.Lease(id: "j1", attempt: 1)], now: T.at(25))
        #expect(book.tick(now: T.at(29)).changes.isEmpty, "before the deadline the job runs on")
        _ = book.renew(node: "a", leases: [Book.Lease(id: "j1", attempt: 1)], now: T.at(29))
        let handedBack = book.tick(now: T.at(30))
        guard case .requeued(let requeued, let from, let reason)? = handedBack.changes.first else {
            Issue.record("expected a requeue, got \(handedBack.changes)")
            return
        }
        #expect(from == "a" && reason == "drained")
        #expect(requeued.attempt == 2 && requeued.maxAttempts == 2, "a drain does not use up the job's attempts")
        #expect(book.stops(for: "a") == [Book.Lease(id: "j1", attempt: 1)])
        #expect(handedBack.wake == ["a"])
        #expect(book.record("j1")?.state == .queued, "not placed back on the draining node")
        #expect(book.tick(now: T.at(31)).changes.isEmpty, "handed back once")
        _ = book.nodeChanged(T.node("b"), now: T.at(32))
        #expect(book.place(now: T.at(32)).changes.first?.record.node == "b")
    }
}
