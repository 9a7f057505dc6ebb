import AuroraAPI
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@testable import NodeAgent

/// Streamed gateway calls on the lead, in process: the test plays the workers (signed
/// assignments and pushes) and reads what the client gets.
@Suite("Streamed gateway calls on the lead (in process)")
struct GatewayStreamServiceTests {
    static let call = RawJSON(#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)

    /// A lead with two joined GPU nodes that take generate jobs (their models unknown: any goes).
    static func twoWorkers(_ session: Session) async throws -> (TestNode, TestNode) {
        let (token, _) = try await LeadServiceTests.joinToken(session, reusable: true)
        let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
        for node in [gpu1, gpu2] {
            let joined = try await session.call(
                .post, "/api/nodes/join", token: "", body: JobLogServiceTests.gpuJoin(node, token: token))
            #expect(joined.status == 201, "\(joined.body)")
            var beat = node.heartbeat()
            beat.worker = WorkerReport(accepting: true, allowExec: false, generate: true, jobs: [])
            let beaten = try await session.call(
                .post, "/api/nodes/\(node.name)/heartbeat", signer: node.signer, body: beat)
            #expect(beaten.status == 200, "\(beaten.body)")
        }
        return (gpu1, gpu2)
    }

    /// The next assignment of either node (polling both; at most 5 s).
    static func assignment(_ session: Session, _ nodes: [TestNode]) async throws -> (TestNode, Assignment) {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            for node in nodes {
                let batch = try await session.call(.get, "/api/gpu/assignments?wait=0.1", signer: node.signer)
                if let first = try batch.decode(AssignmentBatch.self).assignments.first { return (node, first) }
            }
        }
        throw CancellationError()
    }

    static func chunk(_ n: Int) -> String { #"{"choices":[{"delta":{"content":"c\#(n)"}}],"model":"m"}"# }

    @Test(
        "chunks relay in order, each once; the push route refuses strangers, other nodes, stale attempts and bad chunks"
    )
    func relay() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (gpu1, gpu2) = try await Self.twoWorkers(session)
            async let answer = session.call(.post, "/v1/chat/completions", body: Self.call)
            let (node, assignment) = try await Self.assignment(session, [gpu1, gpu2])
            let other = node.name == gpu1.name ? gpu2 : gpu1
            #expect(JobCoordinator.streams(assignment.payload))
            let path = "/api/gpu/jobs/\(assignment.id)/stream"
            func push(_ body: InferenceStreamPush, as signer: TestNode? = nil) async throws -> Session.Answer {
                try await session.call(.post, path, signer: (signer ?? node).signer, body: body)
            }
            let first = InferenceStreamPush(attempt: 1, seq: 0, chunks: [Self.chunk(0), Self.chunk(1)])
            for _ in 0..<2 {
                let taken = try await push(first)
                #expect(taken.status == 200, "\(taken.body)")
                #expect(try taken.decode(InferenceStreamAck.self) == InferenceStreamAck(next: 2, cancel: false))
            }
            let gap = try await push(InferenceStreamPush(attempt: 1, seq: 5, chunks: [Self.chunk(5)]))
            #expect(gap.status == 409 && gap.error?.code == "stream_gap", "\(gap.body)")

            // Attacks: no signature, the admin's token, another node, another attempt, bad chunks.
            #expect(try await session.call(.post, path, token: "", body: first).status == 401)
            #expect(try await session.call(.post, path, body: first).status == 401)
            let stranger = try await push(first, as: other)
            #expect(stranger.status == 409 && stranger.error?.code == "not_assigned", "\(stranger.body)")
            let stale = try await push(InferenceStreamPush(attempt: 2, seq: 2, chunks: [Self.chunk(2)]))
            #expect(stale.status == 409 && stale.error?.code == "stale_attempt", "\(stale.body)")
            let bad: [(String, InferenceStreamPush)] = [
                ("a newline", InferenceStreamPush(attempt: 1, seq: 2, chunks: ["{\"a\":1}\n\ndata: {\"b\":2}"])),
                ("an escape", InferenceStreamPush(attempt: 1, seq: 2, chunks: ["{\"a\":\"\u{1B}[2J\"}"])),
                ("not an object", InferenceStreamPush(attempt: 1, seq: 2, chunks: ["[1]"])),
                ("event injection", InferenceStreamPush(attempt: 1, seq: 2, chunks: ["event: x"])),
                (
                    "a 65 KiB chunk",
                    InferenceStreamPush(
                        attempt: 1, seq: 2, chunks: ["{\"a\":\"" + String(repeating: "x", count: 65 * 1024) + "\"}"])
                ),
                (
                    "257 chunks",
                    InferenceStreamPush(attempt: 1, seq: 2, chunks: Array(repeating: Self.chunk(2), count: 257))
                ),
                ("seq -1", InferenceStreamPush(attempt: 1, seq: -1, chunks: [])),
                ("attempt 0", InferenceStreamPush(attempt: 0, seq: 2, chunks: [])),
                ("an error before the end", InferenceStreamPush(attempt: 1, seq: 2, chunks: [], error: "x")),
                (
                    "an error with an escape",
                    InferenceStreamPush(attempt: 1, seq: 2, chunks: [], done: true, error: "\u{1B}[2J")
                ),
            ]
            for (label, body) in bad {
                let refused = try await push(body)
                #expect(refused.status == 400, "\(label): \(refused.status) \(refused.body.prefix(200))")
            }
            let unknown = try await session.call(
                .post, path, signer: node.signer,
                body: RawJSON(#"{"attempt":1,"seq":2,"chunks":[],"done":false,"admin":true}"#))
            #expect(unknown.status == 400)
            let oversized = try await session.call(
                .post, path, signer: node.signer,
                body: RawJSON(#"{"attempt":1,"seq":2,"chunks":[""# + String(repeating: "x", count: 2 << 20) + #""]}"#))
            #expect(oversized.status == 413)

            // Overlapping, then the end: the client gets each chunk once, in order, then [DONE].
            let overlap = try await push(
                InferenceStreamPush(attempt: 1, seq: 1, chunks: [Self.chunk(1), Self.chunk(2)]))
            #expect(try overlap.decode(InferenceStreamAck.self).next == 3)
            #expect(try await push(InferenceStreamPush(attempt: 1, seq: 3, chunks: [], done: true)).status == 200)
            let relayed = try await answer
            #expect(relayed.status == 200)
            #expect(
                relayed.body
                    == (0..<3).map { "data: \(Self.chunk($0))\n\n" }.joined() + "data: [DONE]\n\n", "\(relayed.body)")

            // A job that does not stream takes no chunks.
            let plain = try await session.call(
                .post, "/api/gpu/jobs",
                body: JobSubmission(kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")]))
            let (runner, job) = try await Self.assignment(session, [gpu1, gpu2])
            #expect(try plain.decode(Job.self).id == job.id)
            let refused = try await session.call(
                .post, "/api/gpu/jobs/\(job.id)/stream", signer: runner.signer,
                body: InferenceStreamPush(attempt: 1, seq: 0, chunks: [Self.chunk(0)]))
            #expect(refused.status == 409 && refused.error?.code == "not_streaming", "\(refused.body)")
        }
    }

    @Test("a worker lost before the first chunk: another attempt serves it; after it: one error event, no rerun")
    func retryAndInterrupt() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (gpu1, gpu2) = try await Self.twoWorkers(session)

            // Before the first chunk: the backend failed, the job goes back; attempt 2's stream is the answer.
            async let retried = session.call(.post, "/v1/chat/completions", body: Self.call)
            let (first, one) = try await Self.assignment(session, [gpu1, gpu2])
            let failed = JobResult(attempt: 1, outcome: .failed, error: "inference backend: refused", retry: true)
            let reported = try await session.call(
                .post, "/api/gpu/jobs/\(one.id)/result", signer: first.signer, body: failed)
            #expect(reported.status == 200, "\(reported.body)")
            let (second, two) = try await Self.assignment(session, [gpu1, gpu2])
            #expect(two.id == one.id && two.attempt == 2)
            let late = try await session.call(
                .post, "/api/gpu/jobs/\(one.id)/stream", signer: first.signer,
                body: InferenceStreamPush(attempt: 1, seq: 0, chunks: [Self.chunk(9)]))
            #expect(late.status == 409, "\(late.body)")
            let pushed = try await session.call(
                .post, "/api/gpu/jobs/\(two.id)/stream", signer: second.signer,
                body: InferenceStreamPush(attempt: 2, seq: 0, chunks: [Self.chunk(0)], done: true))
            #expect(pushed.status == 200, "\(pushed.body)")
            #expect(try await retried.body == "data: \(Self.chunk(0))\n\ndata: [DONE]\n\n")

            // After the first chunk: the job goes back; the client gets one error event and the
            // stream ends; the job is cancelled, not run again.
            async let interrupted = session.call(.post, "/v1/chat/completions", body: Self.call)
            let (runner, job) = try await Self.assignment(session, [gpu1, gpu2])
            _ = try await session.call(
                .post, "/api/gpu/jobs/\(job.id)/stream", signer: runner.signer,
                body: InferenceStreamPush(attempt: 1, seq: 0, chunks: [Self.chunk(0)]))
            _ = try await session.call(
                .post, "/api/gpu/jobs/\(job.id)/result", signer: runner.signer, body: failed)
            let body = try await interrupted.body
            let events = body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            #expect(events.count == 2 && events[0] == "data: \(Self.chunk(0))", "\(body)")
            let error = try JSONDecoder().decode(
                ErrorResponse.self, from: Data(events.last.map { String($0.dropFirst(6)) }?.utf8 ?? "".utf8))
            #expect(error.error.code == "stream_interrupted" && error.error.type == "server_error", "\(body)")
            #expect(!body.contains("[DONE]"))
            let ended = try await session.call(.get, "/api/gpu/jobs/\(job.id)").decode(Job.self)
            #expect(ended.state == .cancelled, "\(ended)")
            for node in [gpu1, gpu2] {
                let batch = try await session.call(.get, "/api/gpu/assignments?wait=0", signer: node.signer)
                #expect(try batch.decode(AssignmentBatch.self).assignments.isEmpty)
            }
        }
    }

    @Test("no first chunk within X-Aurora-Wait: 504 in OpenAI's shape, the job cancelled; a bad stream flag is 400")
    func timeout() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            _ = try await Self.twoWorkers(session)
            let started = ContinuousClock.now
            let answer = try await session.client.execute(
                uri: "/v1/chat/completions", method: .post,
                headers: [.authorization: "Bearer \(lead.admin)", HTTPField.Name("X-Aurora-Wait")!: "1"],
                body: .init(string: Self.call.text)
            ) { response in (Int(response.status.code), String(buffer: response.body)) }
            #expect(answer.0 == 504, "\(answer.1)")
            #expect(started.duration(to: .now) >= .seconds(1))
            #expect(answer.1.contains(#""type":"timeout""#) || answer.1.contains("timeout"), "\(answer.1)")
            for body in [
                #"{"model":"m","stream":"yes"}"#, #"{"model":"m","stream":1}"#,
                #"{"model":"m","stream":true,"input":"x"}"#,
            ] {
                let path = body.contains("input") ? "/v1/embeddings" : "/v1/chat/completions"
                let refused = try await session.call(.post, path, body: RawJSON(body))
                #expect(refused.status == 400, "\(body): \(refused.body)")
            }
            #expect(lead.parts.jobs.streams.count == 0)
        }
    }
}
