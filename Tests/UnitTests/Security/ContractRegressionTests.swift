import AuroraAPI
import HTTPTypes
import Logging
import Secrets
import Testing

@testable import NodeAgent

/// Requests the contract fuzzer (Tests/contract/run) found to fail, kept as pure checks.
@Suite("Contract fuzzing regressions")
struct ContractRegressionTests {
    @Test("a job whose payload, key or requirements hold U+0000 is a 400 naming the field, not a store failure")
    func nulInJobSubmission() throws {
        // schemathesis: POST /api/gpu/jobs {"kind": "generate", "payload": {"model": "m", "prompt": "p", "options": {"\u0000": 1}}}
        func refusal(_ submission: JobSubmission) -> String? {
            do { _ = try JobCoordinator.validate(submission); return nil } catch {
                return error.status == .badRequest ? error.message : "\(error.status)"
            }
        }
        let nul = "a\u{0}b"
        let payload: [String: JSONValue] = ["model": .string("m"), "prompt": .string("p")]
        #expect(refusal(JobSubmission(kind: .generate, payload: payload)) == nil)
        var nested = payload
        nested["options"] = .object(["x": .array([.object([nul: .number(1)])])])
        #expect(refusal(JobSubmission(kind: .generate, payload: nested)) == "payload must not contain U+0000")
        #expect(
            refusal(JobSubmission(kind: .generate, payload: ["model": .string("m"), "prompt": .string(nul)]))
                == "payload must not contain U+0000")
        #expect(
            refusal(JobSubmission(kind: .generate, payload: payload, idempotencyKey: nul))
                == "idempotency_key must not contain U+0000")
        #expect(
            refusal(JobSubmission(kind: .generate, requirements: JobRequirements(gpuModel: nul), payload: payload))
                == "requirements.gpu_model must not contain U+0000")
        #expect(
            refusal(
                JobSubmission(kind: .generate, requirements: JobRequirements(labels: ["zone": nul]), payload: payload))
                == "requirements.labels must not contain U+0000")
    }

    @Test("a join token whose company or labels hold U+0000 is a 400, not a store failure or a company cut short")
    func nulInJoinToken() async throws {
        // schemathesis: POST /api/tokens {"profile": "compute", "labels": {"k": "a\u0000b"}} answered 503 store_unavailable.
        let store = Store(conninfo: "host=/nonexistent")
        func answer(_ request: TokenCreateRequest) async -> String {
            do { _ = try await JoinTokens.create(request, store: store); return "created" } catch {
                return "\(error.status.code) \(error.code)"
            }
        }
        #expect(await answer(TokenCreateRequest(profile: .compute, labels: ["k": "a\u{0}b"])) == "400 bad_request")
        #expect(await answer(TokenCreateRequest(profile: .compute, labels: ["a\u{0}b": "v"])) == "400 bad_request")
        #expect(await answer(TokenCreateRequest(profile: .compute, company: "acme\u{0}evil")) == "400 bad_request")
        // A good request gets past validation to the (absent) store.
        #expect(
            await answer(TokenCreateRequest(profile: .compute, company: "acme", labels: ["k": "v"]))
                == "503 store_unavailable")
    }

    @Test("a secret scope id holding U+0000 is refused (a 400), not a store failure")
    func nulInSecretScope() {
        // schemathesis: POST /api/secrets {"service": "s", "key_name": "k", "value": "v", "scope": "company", "scope_id": "a\u0000b"}
        // answered 503 store_unavailable.
        #expect(throws: SecretsError.self) { try SecretScope(name: "company", id: "a\u{0}b") }
        #expect(throws: Refusal.self) { try SecretsManager.scope("node", "n\u{0}") }
        #expect((try? SecretScope(name: "company", id: "acme"))?.description == "company:acme")
    }

    @Test("a connectivity report holding U+0000 is a 400, not a store failure")
    func nulInConnectivityReport() async {
        // schemathesis (signed as a node): POST /api/connectivity/status {"results": [{"service": "s", "url": "u",
        // "state": "down", "error": "a\u0000b", "checked_at": "…"}]} answered 503 store_unavailable.
        let board = ConnectivityBoard(
            store: Store(conninfo: "host=/nonexistent"), hub: EventHub(), logger: Logger(label: "test"))
        func answer(_ error: String) async -> String {
            let result = ProbeResult(
                service: "api", url: "http://127.0.0.1:9/", state: .down, latencyMs: nil, status: nil, error: error,
                checkedAt: "2026-01-01T00:00:00.000Z")
            do { try await board.report("gpu-1", [result]); return "accepted" } catch {
                return "\(error.status.code) \(error.code)"
            }
        }
        #expect(await answer("a\u{0}b") == "400 bad_request")
        // A good report gets past the check to the (absent) store.
        #expect(await answer("connection refused") == "503 store_unavailable")
    }
}
