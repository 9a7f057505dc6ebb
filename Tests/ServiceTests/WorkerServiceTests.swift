import AuroraAPI
import Foundation
import HTTPTypes
import Secrets
import Synchronization
import Testing

@testable import NodeAgent

/// A GPU worker's side of the lead in process, over the in-memory stores: assignments, results
/// fenced by attempt and node, and the outbox's report batches taken once.
@Suite("Worker routes over in-memory stores")
struct WorkerServiceTests {
    static let gpu = GPU(
        index: 0, uuid: "GPU-0", name: "RTX 4090", memoryTotalMB: 24_576, memoryUsedMB: 0, utilizationPct: 0)

    /// Joins `node` with one GPU and sends a heartbeat that says its worker takes generate jobs.
    static func joinWorker(_ node: TestNode, token: String, _ session: Session) async throws {
        var request = node.join(token: token)
        request.capabilities = Capabilities(cpuCores: 8, memoryMB: 32_768, os: "linux", arch: "x86_64", gpus: [gpu])
        #expect(try await session.call(.post, "/api/nodes/join", token: "", body: request).status == 201)
        var beat = node.heartbeat()
        beat.capabilities = request.capabilities
        beat.worker = WorkerReport(accepting: true, allowExec: false, generate: true, jobs: [])
        let answer = try await session.call(.post, "/api/nodes/\(node.name)/heartbeat", signer: node.signer, body: beat)
        #expect(answer.status == 200, "\(answer.body)")
    }

    @Test("a job goes to one worker; only its attempt on its node may finish it, once")
    func assignmentAndFencing() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await LeadServiceTests.joinToken(session, reusable: true)
            let workers = [TestNode(name: "gpu-1"), TestNode(name: "gpu-2")]
            for worker in workers { try await Self.joinWorker(worker, token: token, session) }
            let submission = JobSubmission(kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")])
            let job = try await session.call(.post, "/api/gpu/jobs", body: submission).decode(Job.self)

            // Exactly one worker is handed the job.
            var holder: TestNode?
            var assignment: Assignment?
            for worker in workers {
                let batch = try await session.call(.get, "/api/gpu/assignments?wait=0", signer: worker.signer)
                #expect(batch.status == 200, "\(batch.body)")
                if let found = try batch.decode(AssignmentBatch.self).assignments.first(where: { $0.id == job.id }) {
                    #expect(holder == nil)
                    (holder, assignment) = (worker, found)
                }
            }
            let owner = try #require(holder), given = try #require(assignment)
            #expect(given.attempt == 1)
            #expect(given.payload["prompt"] == .string("p"))
            let other = try #require(workers.first { $0.name != owner.name })
            #expect(try await session.call(.get, "/api/gpu/assignments?wait=0", token: "").status == 401)
            #expect(try await session.call(.get, "/api/gpu/assignments?wait=61", signer: owner.signer).status == 400)

            let path = "/api/gpu/jobs/\(job.id)/result"
            let done = JobResult(attempt: 1, outcome: .succeeded, result: .object(["text": .string("hi")]))
            // Another node, a stale attempt and the operator's token are refused; nothing changes.
            let notHis = try await session.call(.post, path, signer: other.signer, body: done)
            #expect(notHis.status == 409)
            #expect(notHis.error?.code == "not_assigned")
            let stale = try await session.call(
                .post, path, signer: owner.signer, body: JobResult(attempt: 2, outcome: .succeeded))
            #expect(stale.status == 409)
            #expect(try await session.call(.post, path, body: done).status == 401)
            #expect(lead.store.tables.withLock { $0.jobs.first { $0.job.id == job.id }?.job.state } != .succeeded)

            let finished = try await session.call(.post, path, signer: owner.signer, body: done)
            #expect(finished.status == 200, "\(finished.body)")
            let row = try #require(lead.store.tables.withLock { $0.jobs.first { $0.job.id == job.id }?.job })
            #expect(row.state == .succeeded)
            #expect(row.node == owner.name)
            #expect(row.result == .object(["text": .string("hi")]))
            // Once: the same result again is refused, and the row stays as it was.
            #expect(try await session.call(.post, path, signer: owner.signer, body: done).status == 409)
            let read = try await session.call(.get, "/api/gpu/jobs/\(job.id)").decode(Job.self)
            #expect(read.state == .succeeded)
            #expect(read.result == .object(["text": .string("hi")]))
        }
    }

    @Test("report batches: each report id is taken once; another node's name and bad reports are refused")
    func reports() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await LeadServiceTests.joinToken(session, reusable: true)
            let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
            for node in [gpu1, gpu2] { try await Self.joinWorker(node, token: token, session) }
            let id = UUID().uuidString.lowercased()
            let report = NodeReport(
                id: id, kind: .event, at: ISOTime.string(Date()),
                event: NodeEvent(
                    type: EventType.checkChanged, data: ["check": .string("disk"), "to": .string("critical")]))
            let path = "/api/nodes/gpu-1/reports"
            let first = try await session.call(.post, path, signer: gpu1.signer, body: ReportBatch(reports: [report]))
            #expect(first.status == 200, "\(first.body)")
            #expect(try first.decode(ReportAnswer.self).results.map(\.status) == [.accepted])
            let again = try await session.call(.post, path, signer: gpu1.signer, body: ReportBatch(reports: [report]))
            #expect(try again.decode(ReportAnswer.self).results.map(\.status) == [.duplicate])
            #expect(lead.store.tables.withLock { $0.events.filter { $0.id == id }.count } == 1)
            #expect(lead.store.tables.withLock { $0.events.first { $0.id == id }?.node } == "gpu-1")

            // Another node's name, the operator token, an unknown event type, a bad id.
            let forged = try await session.call(.post, path, signer: gpu2.signer, body: ReportBatch(reports: [report]))
            #expect(forged.status == 401)
            #expect(try await session.call(.post, path, body: ReportBatch(reports: [report])).status == 401)
            var grant = report
            grant.id = UUID().uuidString.lowercased()
            grant.event = NodeEvent(type: EventType.nodeJoined, data: [:])
            var badID = report
            badID.id = "not-a-uuid"
            let refused = try await session.call(
                .post, path, signer: gpu1.signer, body: ReportBatch(reports: [grant, badID]))
            #expect(try refused.decode(ReportAnswer.self).results.map(\.status) == [.refused, .refused])
            #expect(lead.store.tables.withLock { $0.events.contains { $0.id == grant.id } } == false)
        }
    }
}
