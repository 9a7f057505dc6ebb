import AuroraAPI
import Foundation
import HTTPTypes
import Testing

@testable import NodeAgent

/// Job output on the lead, in process: a worker's signed pushes (fenced by node and attempt,
/// bounded, validated) and the clients' reads (the rules of reading the job, offsets, waiting,
/// hostile bytes made safe).
@Suite("Job output on the lead (in process)")
struct JobLogServiceTests {
    /// A join with one GPU, so the node can be given a job.
    static func gpuJoin(_ node: TestNode, token: String) -> JoinRequest {
        var join = node.join(token: token)
        join.capabilities = Capabilities(
            cpuCores: 4, memoryMB: 8192, os: "linux", arch: "x86_64",
            gpus: [
                GPU(
                    index: 0, uuid: "GPU-\(node.name)", name: "NVIDIA GeForce RTX 4090", memoryTotalMB: 24_000,
                    memoryUsedMB: 0, utilizationPct: 0)
            ])
        return join
    }

    static func piece(_ offset: Int, _ stream: JobOutputStream, _ bytes: [UInt8]) -> JobOutputPiece {
        JobOutputPiece(offset: offset, stream: stream, data: Data(bytes).base64EncodedString())
    }

    @Test(
        "pushes: only the node running the job at its attempt, repeated pieces once, bad pieces refused; reads: the job's readers only, from an offset, hostile bytes made safe, done once the job ended"
    )
    func pushAndRead() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await LeadServiceTests.joinToken(session, reusable: true)
            let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
            for node in [gpu1, gpu2] {
                let joined = try await session.call(
                    .post, "/api/nodes/join", token: "", body: Self.gpuJoin(node, token: token))
                #expect(joined.status == 201, "\(joined.body)")
            }
            var beat = gpu1.heartbeat()
            beat.worker = WorkerReport(accepting: true, allowExec: false, generate: true, jobs: [])
            let beaten = try await session.call(.post, "/api/nodes/gpu-1/heartbeat", signer: gpu1.signer, body: beat)
            #expect(beaten.status == 200, "\(beaten.body)")
            let submitted = try await session.call(
                .post, "/api/gpu/jobs",
                body: JobSubmission(kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")]))
            #expect(submitted.status == 201, "\(submitted.body)")
            let job = try submitted.decode(Job.self)
            let batch = try await session.call(.get, "/api/gpu/assignments?wait=5", signer: gpu1.signer)
            #expect(try batch.decode(AssignmentBatch.self).assignments.map(\.id) == [job.id], "\(batch.body)")

            let output = "/api/gpu/jobs/\(job.id)/output", logs = "/api/gpu/jobs/\(job.id)/logs"
            let first = JobOutputReport(
                attempt: 1,
                pieces: [Self.piece(0, .stdout, Array("hello\n".utf8)), Self.piece(6, .stderr, Array("oops\n".utf8))])
            for _ in 0..<2 {
                let taken = try await session.call(.post, output, signer: gpu1.signer, body: first)
                #expect(taken.status == 200, "\(taken.body)")
                #expect(try taken.decode(JobOutputAccepted.self).nextOffset == 11)
            }
            // Another node, another attempt, a token instead of a signature: refused, nothing taken.
            let other = try await session.call(.post, output, signer: gpu2.signer, body: first)
            #expect(other.status == 409 && other.error?.code == "not_assigned")
            let stale = try await session.call(
                .post, output, signer: gpu1.signer, body: JobOutputReport(attempt: 2, pieces: first.pieces))
            #expect(stale.status == 409 && stale.error?.code == "stale_attempt")
            #expect(try await session.call(.post, output, body: first).status == 401)
            // Malformed: not base64, a negative offset, too many pieces, an unknown field.
            let bad: [JobOutputReport] = [
                JobOutputReport(attempt: 1, pieces: [JobOutputPiece(offset: 0, stream: .stdout, data: "%%%")]),
                JobOutputReport(attempt: 1, pieces: [Self.piece(-1, .stdout, [0x41])]),
                JobOutputReport(attempt: 1, pieces: Array(repeating: Self.piece(0, .stdout, [0x41]), count: 65)),
            ]
            for report in bad {
                #expect(try await session.call(.post, output, signer: gpu1.signer, body: report).status == 400)
            }
            let unknown = try await session.call(
                .post, output, signer: gpu1.signer,
                body: ["attempt": JSONValue.number(1), "pieces": .array([]), "x": .bool(true)])
            #expect(unknown.status == 400)

            // Reads: the admin (the submitter) sees it; neither node does, not even the one running it.
            let page = try await session.call(.get, logs).decode(JobLogs.self)
            #expect(page.state == .running && !page.done && page.attempt == 1 && page.node == "gpu-1")
            #expect(
                page.chunks == [
                    JobLogChunk(offset: 0, bytes: 6, stream: .stdout, text: "hello\n"),
                    JobLogChunk(offset: 6, bytes: 5, stream: .stderr, text: "oops\n"),
                ])
            #expect(page.nextOffset == 11)
            #expect(try await session.call(.get, logs, signer: gpu2.signer).status == 404)
            #expect(try await session.call(.get, logs, signer: gpu1.signer).status == 404)
            #expect(try await session.call(.get, logs, token: "").status == 401)
            #expect(try await session.call(.get, logs, token: "wrong").status == 401)
            #expect(try await session.call(.get, "/api/gpu/jobs/nope/logs").status == 404)
            for query in ["offset=-1", "offset=1.5", "offset=9007199254740993", "wait=31", "wait=-1"] {
                #expect(try await session.call(.get, logs + "?" + query).status == 400, "\(query)")
            }
            let resumed = try await session.call(.get, logs + "?offset=6").decode(JobLogs.self)
            #expect(resumed.chunks.map(\.text) == ["oops\n"])

            // Hostile bytes: invalid UTF-8 and an escape become safe text; a character cut at the
            // end waits while the job runs.
            let hostile = JobOutputReport(
                attempt: 1, pieces: [Self.piece(11, .stdout, [0xFF, 0x1B, 0x5B, 0x32, 0x4A, 0x0A, 0xE2, 0x82])])
            #expect(try await session.call(.post, output, signer: gpu1.signer, body: hostile).status == 200)
            let safe = try await session.call(.get, logs + "?offset=11").decode(JobLogs.self)
            #expect(safe.chunks.map(\.text) == ["\u{FFFD}\\u{001B}[2J\n"])
            #expect(safe.nextOffset == 17)
            // Waiting: nothing new arrives, the answer comes when the wait is over, still open.
            let started = ContinuousClock.now
            let waited = try await session.call(.get, logs + "?offset=17&wait=0.3").decode(JobLogs.self)
            #expect(started.duration(to: .now) >= .milliseconds(300))
            #expect(waited.chunks.isEmpty && !waited.done && waited.nextOffset == 17)

            // The job ends: the rest comes, done; output after the end is refused.
            let result = JobResult(attempt: 1, outcome: .succeeded, result: .object(["text": .string("x")]))
            let reported = try await session.call(
                .post, "/api/gpu/jobs/\(job.id)/result", signer: gpu1.signer, body: result)
            #expect(reported.status == 200, "\(reported.body)")
            let last = try await session.call(.get, logs + "?offset=17&wait=5").decode(JobLogs.self)
            #expect(last.done && last.state == .succeeded && last.nextOffset == 19)
            #expect(last.chunks.map(\.bytes) == [2])
            let late = try await session.call(.post, output, signer: gpu1.signer, body: first)
            #expect(late.status == 409)
            let whole = try await session.call(.get, logs).decode(JobLogs.self)
            #expect(whole.done && whole.startOffset == 0 && whole.chunks.count == 3)
        }
    }

    @Test("the lead's tails are bounded: bytes per job, jobs, and a new attempt starts over")
    func bounds() async {
        let outputs = JobOutputs(capacity: 8, maxJobs: 2)
        let running = { (id: String) in
            Job(
                id: id, kind: .exec, priority: 5, state: .running, attempt: 1, maxAttempts: 3,
                requirements: JobRequirements(minVramMB: 0), submittedAt: "2026-01-01T00:00:00Z")
        }
        #expect(await outputs.take("a", node: "n", attempt: 1, [(.stdout, 0, Array("0123456789".utf8))]) == 10)
        let page = await outputs.page(running("a"), from: 0)
        #expect(page.startOffset == 2 && page.chunks.map(\.text) == ["23456789"])
        _ = await outputs.take("b", node: "n", attempt: 1, [(.stdout, 0, [0x41])])
        _ = await outputs.take("c", node: "n", attempt: 1, [(.stdout, 0, [0x42])])
        #expect(await outputs.page(running("a"), from: 0).chunks.isEmpty, "the oldest tail outlived the bound")
        #expect(await outputs.page(running("c"), from: 0).chunks.map(\.text) == ["B"])
        // Attempt 2 starts over; attempt 1's late pieces change nothing.
        #expect(await outputs.take("c", node: "m", attempt: 2, [(.stderr, 0, [0x43])]) == 1)
        #expect(await outputs.take("c", node: "n", attempt: 1, [(.stdout, 1, [0x44])]) == 1)
        let again = await outputs.page(running("c"), from: 0)
        #expect(again.attempt == 2 && again.node == "m" && again.chunks.map(\.text) == ["C"])
    }
}
