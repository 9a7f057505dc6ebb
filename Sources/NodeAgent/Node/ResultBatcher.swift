import AuroraAPI
import Foundation
import Logging

/// Gateway calls' results on their way to the lead, in memory: a call's client waits on its
/// connection, and the lead keeps the call in memory only, so there is nothing to make durable.
/// Results that come while a post is under way go together in the next one
/// (`POST /api/nodes/{name}/reports`, at most ``maxBatch``): under load one post carries many,
/// where one post each would cost a round trip apiece and run into the lead's per-node request
/// limit.
///
/// No task of its own: the first caller that finds no post under way sends, and goes on sending
/// while results wait; the others wait for the batch that carries theirs.
actor ResultBatcher {
    static let maxBatch = 256

    private let node: String
    private let lead: LeadClient
    private let logger: Logger
    private var pending: [NodeReport] = []
    private var waiting: [String: CheckedContinuation<Void, Never>] = [:]
    private var sending = false

    init(node: String, lead: LeadClient, logger: Logger) {
        self.node = node
        self.lead = lead
        self.logger = logger
    }

    /// Returns once the lead has taken (or refused for good) the result, or the task is cancelled.
    func deliver(_ result: JobResult, for job: String) async {
        let report = NodeReport.make(.jobResult, job: job, result: result)
        pending.append(report)
        if sending {
            await withCheckedContinuation { waiting[report.id] = $0 }
            return
        }
        sending = true
        await drive()
    }

    /// Posts batches until nothing waits; retries a batch the lead did not answer (or asked to
    /// wait for) after 50 ms, doubling to 2 s, until the task is cancelled.
    private func drive() async {
        var delay = Duration.milliseconds(50)
        while !pending.isEmpty {
            let batch = Array(pending.prefix(Self.maxBatch))
            do {
                let outcomes = try await OutboxSender.toLead(batch, node: node, lead: lead)
                for outcome in outcomes where outcome.status == .refused {
                    logger.notice(
                        "the lead refused a gateway result",
                        metadata: ["nodeagent.report": "\(outcome.id)", "nodeagent.reason": "\(outcome.message ?? "")"])
                }
                // What the lead answered is done; a report it did not answer goes again.
                let answered = Set(outcomes.map(\.id))
                pending.removeAll { answered.contains($0.id) }
                for id in answered { waiting.removeValue(forKey: id)?.resume() }
                delay = .milliseconds(50)
                if answered.isEmpty { throw CancellationError() }
            } catch {
                if Task.isCancelled { break }
                logger.debug("cannot deliver gateway results; retrying", metadata: ["nodeagent.error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
        sending = false
        // Cancelled with results left: their callers stop waiting (the lead requeues them later).
        if !pending.isEmpty {
            for report in pending { waiting.removeValue(forKey: report.id)?.resume() }
            pending.removeAll()
        }
    }
}
