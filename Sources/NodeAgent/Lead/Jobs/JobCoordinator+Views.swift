import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics

/// What clients read about the queue: positions, ETAs and the job views.
extension JobCoordinator {
    // MARK: Views

    /// An open job as the API shows it, with its place in the queue and ETA when queued.
    func view(_ record: Book.Record, positions: [String: Int]? = nil) -> Job {
        var job = Self.job(record)
        if job.state == .queued {
            job.position = positions?[job.id] ?? book.scheduler.position(of: job.id, now: Self.now().wallSeconds)
            job.etaS = job.position.flatMap {
                Book.eta(position: $0, slots: max(1, book.scheduler.placedCount), mean: book.meanRunTime)
            }
        }
        return job
    }

    func queuePositions() -> [String: Int] {
        var positions: [String: Int] = [:]
        for (index, id) in book.scheduler.order(now: Self.now().wallSeconds).enumerated() { positions[id] = index + 1 }
        return positions
    }

    /// Jobs ahead run `slots` at a time, each for the mean run time.
    static func eta(position: Int, slots: Int, mean: Double?) -> Double? {
        Book.eta(position: position, slots: slots, mean: mean)
    }
}
