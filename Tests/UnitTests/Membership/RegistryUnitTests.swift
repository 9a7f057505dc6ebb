import AuroraAPI
import Foundation
import HTTPTypes
import Secrets
import Testing

@testable import NodeAgent

@Suite("Request signing, GPU inventory parsing, API decoding")
struct RegistryUnitTests {
    func headerValue(_ headers: [(String, String)]) -> (String) -> String? {
        { name in headers.first { $0.0 == name }?.1 }
    }

    @Test("a signed request verifies; any change to method, path, body, node or key does not")
    func signingRoundTrip() throws {
        let key = SigningKey.generate()
        let signer = RequestSigner(node: "gpu-1", key: key)
        let body = Array(#"{"x":1}"#.utf8)
        let headers = signer.headers(method: "POST", path: "/api/nodes/gpu-1/heartbeat", body: body)
        let parsed = try #require(try SignedHeaders.parse(headerValue(headers)))
        #expect(parsed.node == "gpu-1")
        #expect(parsed.nonce.count == 32)
        #expect(parsed.verifies(method: "POST", path: "/api/nodes/gpu-1/heartbeat", body: body, key: key.publicKey))
        #expect(!parsed.verifies(method: "PUT", path: "/api/nodes/gpu-1/heartbeat", body: body, key: key.publicKey))
        #expect(!parsed.verifies(method: "POST", path: "/api/nodes/gpu-2/heartbeat", body: body, key: key.publicKey))
        #expect(
            !parsed.verifies(
                method: "POST", path: "/api/nodes/gpu-1/heartbeat", body: Array(#"{"x":2}"#.utf8), key: key.publicKey))
        #expect(
            !parsed.verifies(
                method: "POST", path: "/api/nodes/gpu-1/heartbeat", body: body, key: SigningKey.generate().publicKey))
        var renamed = headers
        renamed[0].1 = "gpu-2"
        #expect(
            try SignedHeaders.parse(headerValue(renamed))?.verifies(
                method: "POST", path: "/api/nodes/gpu-1/heartbeat", body: body, key: key.publicKey) == false)
        // Two requests never share a nonce.
        #expect(
            signer.headers(method: "GET", path: "/nodes", body: [])[2].1
                != signer.headers(method: "GET", path: "/nodes", body: [])[2].1)
    }

    @Test("missing or malformed signature headers are refused with the reason; none at all is not a node request")
    func headerParsing() throws {
        #expect(try SignedHeaders.parse { _ in nil } == nil)
        let partial = #expect(throws: Refusal.self) {
            try SignedHeaders.parse { $0 == RequestSigning.nodeHeader ? "gpu-1" : nil }
        }
        #expect(partial?.message.contains("missing X-Aurora-Timestamp, X-Aurora-Nonce, X-Aurora-Signature") == true)
        let values = [
            RequestSigning.nodeHeader: "gpu-1", RequestSigning.timestampHeader: "yesterday",
            RequestSigning.nonceHeader: String(repeating: "a", count: 32), RequestSigning.signatureHeader: "AAAA",
        ]
        let badTime = #expect(throws: Refusal.self) { try SignedHeaders.parse { values[$0] } }
        #expect(badTime?.message.contains("milliseconds") == true)
        var shortSignature = values
        shortSignature[RequestSigning.timestampHeader] = "1700000000000"
        let badSignature = #expect(throws: Refusal.self) { try SignedHeaders.parse { shortSignature[$0] } }
        #expect(badSignature?.status == .unauthorized)
    }

    @Test("nvidia-smi CSV parses; [N/A] counts as 0; junk lines are skipped")
    func nvidiaSMI() {
        let output = """
            0, GPU-1111, NVIDIA GeForce RTX 4090, 24564, 1200, 37
            1, GPU-2222, NVIDIA GeForce RTX 4090, 24564, [N/A], [N/A]
            No devices were found
            """
        let gpus = GPUQuery.parse(output)
        #expect(gpus.count == 2)
        #expect(
            gpus[0]
                == GPU(
                    index: 0, uuid: "GPU-1111", name: "NVIDIA GeForce RTX 4090", memoryTotalMB: 24564,
                    memoryUsedMB: 1200, utilizationPct: 37))
        #expect(gpus[1].memoryUsedMB == 0)
        #expect(GPUQuery.parse("").isEmpty)

        // The memory of this node's own job processes is not "used by other processes".
        let apps = """
            GPU-1111, 4242, 1000
            GPU-1111, 777, 100
            GPU-2222, 4242, 500
            garbage
            """
        #expect(GPUQuery.subtract(gpus, apps: apps) { $0 == 4242 }.map(\.memoryUsedMB) == [200, 0])
    }

    @Test("bodies: unknown fields, wrong types and missing fields are 400 naming the field")
    func decoding() throws {
        func body(_ text: String) -> [UInt8] { Array(text.utf8) }
        let unknown = #expect(throws: Refusal.self) {
            try HTTPServer.decode(
                TokenCreateRequest.self, body(#"{"profile":"compute","colour":"red"}"#),
                allowed: TokenCreateRequest.fields)
        }
        #expect(unknown?.message == "unknown field 'colour'")
        let wrongType = #expect(throws: Refusal.self) {
            try HTTPServer.decode(
                TokenCreateRequest.self, body(#"{"profile":"compute","ttl_s":"soon"}"#),
                allowed: TokenCreateRequest.fields)
        }
        #expect(wrongType?.message == "field 'ttl_s' must be an integer")
        let missing = #expect(throws: Refusal.self) {
            try HTTPServer.decode(NodeLabelsUpdate.self, body(#"{}"#), allowed: NodeLabelsUpdate.fields)
        }
        #expect(missing?.message == "missing field 'labels'")
        let badEnum = #expect(throws: Refusal.self) {
            try HTTPServer.decode(
                TokenCreateRequest.self, body(#"{"profile":"mainframe"}"#), allowed: TokenCreateRequest.fields)
        }
        #expect(badEnum?.message.hasPrefix("field 'profile'") == true)
        #expect(throws: Refusal.self) {
            try HTTPServer.decode(TokenCreateRequest.self, body("[1]"), allowed: TokenCreateRequest.fields)
        }
        let ok = try HTTPServer.decode(
            TokenCreateRequest.self, body(#"{"profile":"edge","ttl_s":60}"#), allowed: TokenCreateRequest.fields)
        #expect(ok == TokenCreateRequest(profile: .edge, ttlS: 60))
    }

    @Test("API times are ISO 8601 UTC with milliseconds and parse back")
    func isoTimes() throws {
        let date = Date(timeIntervalSince1970: 1_700_000_000.25)
        let text = ISOTime.string(date)
        #expect(text == "2023-11-14T22:13:20.250Z")
        let parsed = try #require(ISOTime.parse(text))
        #expect(abs(parsed.timeIntervalSince(date)) < 0.001)
    }
}

@Suite("Hand-written JSON for the audit batch")
struct QuotedJSONTests {
    @Test("quoted strings decode back to themselves, control characters and quotes included")
    func roundTrip() throws {
        for text in [
            "plain", "with \"quotes\" and \\ backslash", "tab\tnew\nline\rcr", "\u{01}\u{1F}", "ünïcödé ✓", "",
        ] {
            let decoded =
                try JSONSerialization.jsonObject(
                    with: Data(SecretsManager.quoted(text).utf8), options: .fragmentsAllowed) as? String
            #expect(decoded == text)
        }
    }
}
