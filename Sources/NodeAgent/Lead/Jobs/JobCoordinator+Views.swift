import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics

/// What clients read about the queue: positions, ETAs and the job views.
extension JobCoordinator {
    // MARK: Views

    /// An open job as the API shows it; a queued one with its place in the queue, its ETA and
    /// why it is not running.
    /// A list passes its `estimates` and no `explain`: explaining is O(nodes) per job, which a
    /// list of thousands of queued jobs on a large mesh must not pay; `GET /api/gpu/jobs/{id}` and
    /// the submit answer explain.
    func view(_ record: Book.Record, estimates: QueueEstimates? = nil, explain: Bool = true) -> Job {
        var job = Self.job(record)
        if job.state == .queued {
            if let estimates {
                job.position = estimates.positions[job.id]
                job.etaS = estimates.etas[job.id]
            } else {
                let now = Self.now()
                job.position = book.scheduler.position(of: job.id, now: now.wallSeconds)
                job.etaS = job.position.flatMap { book.etas(count: $0, now: now).last ?? nil }
            }
            if explain { job.waiting = book.explain(job.id).map(Self.waiting) }
        }
        return job
    }

    /// Every queued job's place (1 is next) and, where known, its ETA in seconds.
    struct QueueEstimates {
        var positions: [String: Int] = [:]
        var etas: [String: Double] = [:]
    }

    /// The queue's order and ETAs, computed once for a list of views.
    func queueEstimates() -> QueueEstimates {
        let now = Self.now()
        let order = book.scheduler.order(now: now.wallSeconds)
        var estimates = QueueEstimates()
        for (index, (id, eta)) in zip(order, book.etas(count: order.count, now: now)).enumerated() {
            estimates.positions[id] = index + 1
            if let eta { estimates.etas[id] = eta }
        }
        return estimates
    }

    /// The book's explanation as the API shows it: at most 20 names per reason.
    static func waiting(_ explanation: PlacementExplanation) -> JobWaiting {
        var reasons: [JobWaiting.Reason] = []
        if !explanation.fitsNow.isEmpty {
            reasons.append(
                JobWaiting.Reason(
                    code: "fits",
                    message:
                        "\(explanation.fitsNow.count == 1 ? "1 node" : "\(explanation.fitsNow.count) nodes") can take it now (waiting for its turn)",
                    count: explanation.fitsNow.count, nodes: Array(explanation.fitsNow.prefix(20))))
        }
        for entry in explanation.entries {
            reasons.append(
                JobWaiting.Reason(
                    code: entry.reason.rawValue, message: explanation.phrase(entry), count: entry.nodes.count,
                    nodes: Array(entry.nodes.prefix(20))))
        }
        return JobWaiting(summary: explanation.summary, reasons: reasons)
    }
}
