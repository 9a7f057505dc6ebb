import AuroraAPI
import Foundation
import Mesh

/// One transaction's worth of job writes and their events.
struct Writes: Sendable {
    /// What a committed batch did.
    enum Outcome: Sendable {
        case committed([MeshEvent])
        /// The insert's idempotency key belongs to an existing (finished) job: nothing written.
        case duplicate(Job)
    }

    /// The job this batch submits, with its payload.
    private(set) var insertJob: (Job, [String: JSONValue])?
    /// Jobs this batch changes (placement, lease, result, requeue, cancel), by id once each.
    private(set) var updates: [Job] = []
    /// The batch's events, in order.
    private(set) var events: [EventLog.Draft] = []
    /// Ephemeral jobs that ended: nothing is written for them, but their waiters wake.
    private(set) var woken: [String] = []

    /// Nothing to write (there may be ephemeral jobs' waiters to wake).
    var isEmpty: Bool { insertJob == nil && updates.isEmpty && events.isEmpty }

    /// Jobs this batch finishes (succeeded, failed, cancelled), ephemeral ones included.
    var finishedIDs: [String] { updates.filter(\.state.isTerminal).map(\.id) + woken }

    mutating func wake(_ id: String) { woken.append(id) }

    mutating func insert(_ job: Job, payload: [String: JSONValue]) { insertJob = (job, payload) }

    mutating func update(_ job: Job) {
        if let index = updates.firstIndex(where: { $0.id == job.id }) {
            updates[index] = job
        } else {
            updates.append(job)
        }
    }

    mutating func event(_ type: String, _ job: Job, _ extra: [String: JSONValue] = [:]) {
        var data = extra
        data["id"] = .string(job.id)
        data["kind"] = .string(job.kind.rawValue)
        data["attempt"] = .number(Double(job.attempt))
        events.append(EventLog.Draft(type: type, node: job.node, data: data))
    }
}
