import AuroraAPI
import Foundation
import Secrets

// MARK: Read audit, group-committed

extension SecretsManager {
    /// How long a read waits for its audit record before it is refused. Fail closed when the
    /// audit cannot be written, not when it is slow (Vault's rule): a loaded machine or a
    /// key rotation holding the store delays a batch by tens of milliseconds, and such reads must
    /// still be served; a store that has not committed a small insert in 2 s is failing.
    static let auditDeadline: Duration = .seconds(2)

    /// The read audit's two loops, owned by the lead's job service for as long as it runs: one
    /// writes waiting audit records in batches, one refuses reads whose record is late. Both wake
    /// on a signal and sleep when idle. When they end (shutdown), every read still waiting is
    /// refused, and reads that arrive later are refused at once.
    func runReadAudit() async {
        let signals = readAuditSignals
        await withDiscardingTaskGroup { group in
            group.addTask { for await _ in signals.flush { await self.flushReads() } }
            group.addTask { for await _ in signals.deadlines { await self.watchDeadlines() } }
        }
        readAuditStopped = true
        let stopping = AgentError(.store, "the lead is stopping")
        for (_, done) in pendingReads { done(.failure(stopping)) }
        pendingReads = []
        for waiting in deadlines[deadlinesHead...] { waiting.fail(.failure(stopping)) }
        deadlines = []
        deadlinesHead = 0
    }

    /// Appends a read's audit record and waits until it is stored, at most `deadline`: a store
    /// that hangs refuses the read after the deadline (the write may still land later, and the
    /// chain stays whole). Reads that arrive while a batch is being written go together into the
    /// next one: one statement and one commit for many reads.
    func appendRead(_ record: AuditRecord, deadline: Duration) async -> Result<Void, AgentError> {
        guard !readAuditStopped else { return .failure(AgentError(.store, "the lead is stopping")) }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Result<Void, AgentError>, Never>) in
            let once = ResumeOnce(continuation)
            pendingReads.append((record, { once.resume($0) }))
            readAuditSignals.flushNeeded.yield()
            // One watchdog for all waiting reads, not a timer per read.
            deadlines.append((ContinuousClock.now + deadline, deadline, { once.resume($0) }))
            readAuditSignals.deadlineAdded.yield()
        }
    }

    /// Until no read waits: sleeps to the oldest waiting read's deadline and refuses the reads
    /// past theirs (a read already answered ignores it). Deadlines are all `auditDeadline` long,
    /// so the list is in deadline order.
    private func watchDeadlines() async {
        while deadlinesHead < deadlines.count {
            guard (try? await Task.sleep(until: deadlines[deadlinesHead].at, clock: .continuous)) != nil else { return }
            let now = ContinuousClock.now
            while deadlinesHead < deadlines.count, deadlines[deadlinesHead].at <= now {
                let expired = deadlines[deadlinesHead]
                expired.fail(.failure(AgentError(.store, "the audit write took longer than \(expired.deadline)")))
                deadlinesHead += 1
            }
            if deadlinesHead > 1024 {
                deadlines.removeFirst(deadlinesHead)
                deadlinesHead = 0
            }
        }
        deadlines.removeAll(keepingCapacity: true)
        deadlinesHead = 0
    }

    /// Writes the waiting audit records in batches until none waits.
    private func flushReads() async {
        while !pendingReads.isEmpty {
            let batch = pendingReads
            pendingReads = []
            let outcome: Result<Void, AgentError>
            do {
                try await store.appendAudit(batch.map(\.0))
                outcome = .success(())
            } catch {
                outcome = .failure(error)
                if let reloaded = try? await store.lastAuditRecord() { lastAudit = reloaded }
            }
            for (_, done) in batch { done(outcome) }
        }
    }
}

/// Wake-ups for the read audit's loops; each keeps only the newest, so a burst of reads is
/// one wake-up.
struct ReadAuditSignals: Sendable {
    /// Wakes the batch writer: audit records wait (`flushNeeded` is the sending side).
    let flush: AsyncStream<Void>
    let flushNeeded: AsyncStream<Void>.Continuation
    /// Wakes the deadline watcher: a read started waiting (`deadlineAdded` is the sending side).
    let deadlines: AsyncStream<Void>
    let deadlineAdded: AsyncStream<Void>.Continuation

    init() {
        (flush, flushNeeded) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (deadlines, deadlineAdded) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }
}
