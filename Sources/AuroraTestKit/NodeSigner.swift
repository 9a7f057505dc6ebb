import AuroraAPI
import Foundation
import Secrets

/// Signs requests as a node the caller plays itself (the scheme is `RequestSigning`'s): a
/// test's or benchmark's simulated node talking to a real lead.
public struct NodeSigner: Sendable {
    public let node: String
    public let key: SigningKey
    /// The node the requests are for (`X-Aurora-Target`): a lead's calls to one node.
    public let target: String?

    public init(node: String, key: SigningKey = .generate(), target: String? = nil) {
        self.node = node
        self.key = key
        self.target = target
    }

    /// Signs as the agent whose data directory is `dataDir` (its `keys/sign.key`).
    public init(agent node: String, dataDir: String, target: String? = nil) throws {
        let seed = try String(contentsOfFile: dataDir + "/keys/sign.key", encoding: .utf8)
        self.init(
            node: node, key: try SigningKey(base64Seed: seed.trimmingCharacters(in: .whitespacesAndNewlines)),
            target: target)
    }

    /// The four signature headers for one request.
    public func headers(method: String, path: String, body: [UInt8], now: Date = Date()) -> [String: String] {
        let timestamp = String(Int64((now.timeIntervalSince1970 * 1000).rounded()))
        let nonce = Self.hex(Crypto.randomBytes(16))
        let canonical = RequestSigning.canonical(
            method: method, path: path, node: node, timestamp: timestamp, nonce: nonce,
            bodySHA256: Self.hex(Crypto.sha256(body)), target: target)
        var headers = [
            RequestSigning.nodeHeader: node, RequestSigning.timestampHeader: timestamp,
            RequestSigning.nonceHeader: nonce,
            RequestSigning.signatureHeader: Data(key.sign(Array(canonical.utf8))).base64EncodedString(),
        ]
        if let target { headers[RequestSigning.targetHeader] = target }
        return headers
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0f)]] }, as: UTF8.self)
    }
}
