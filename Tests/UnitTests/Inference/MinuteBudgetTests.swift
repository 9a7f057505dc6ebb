import Mesh
import Testing

@Suite("Per-minute budgets (gateway keys' rpm and tpm)")
struct MinuteBudgetTests {
    @Test("a minute's budget at once, then the steady rate; the wait is exact")
    func requests() {
        var budget = MinuteBudget(perMinute: 3, now: 0)
        for _ in 0..<3 {
            #expect(budget.check(now: 0) == nil)
            budget.charge(1, now: 0)
        }
        // One request comes back every 20 s.
        #expect(budget.check(now: 0) == 20_000)
        #expect(budget.check(now: 19_999) == 1)
        #expect(budget.check(now: 20_000) == nil)
        budget.charge(1, now: 20_000)
        #expect(budget.check(now: 20_000) == 20_000)
        // Never more than a minute's worth, however long it waits.
        #expect(budget.available(now: 10_000_000) == 3)
    }

    @Test("tokens charged after the fact may go into debt, which time pays back before anything passes")
    func debt() {
        var budget = MinuteBudget(perMinute: 600, now: 0)
        #expect(budget.check(now: 0) == nil)
        budget.charge(1_800, now: 0)
        #expect(budget.available(now: 0) == -1_200)
        // 10 tokens a second: 1201 tokens take 120.1 s to come back.
        #expect(budget.check(now: 0) == 120_100)
        #expect(budget.check(now: 120_100) == nil)
        // Nothing negative is charged; time never runs backwards.
        budget.charge(-5, now: 120_100)
        #expect(budget.available(now: 100) == 1)
        #expect(MinuteBudget(perMinute: 0, now: 0).perMinute == 1)
    }
}
