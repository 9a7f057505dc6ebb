import AuroraAPI
import Foundation
import Secrets

/// Signs requests as a node the caller plays itself (the scheme is `RequestSigning`'s): a
/// test's or benchmark's simulated node talking to a real lead.
public struct NodeSigner: Sendable {
    public let node: String
    public let key: SigningKey

    public init(node: String, key: SigningKey = .generate()) {
        self.node = node
        self.key = key
    }

    /// The four signature headers for one request.
    public func headers(method: String, path: String, body: [UInt8], now: Date = Date()) -> [String: String] {
        let timestamp = String(Int64((now.timeIntervalSince1970 * 1000).rounded()))
        let nonce = Self.hex(Crypto.randomBytes(16))
        let canonical = RequestSigning.canonical(
            method: method, path: path, node: node, timestamp: timestamp, nonce: nonce,
            bodySHA256: Self.hex(Crypto.sha256(body)))
        return [
            RequestSigning.nodeHeader: node, RequestSigning.timestampHeader: timestamp,
            RequestSigning.nonceHeader: nonce,
            RequestSigning.signatureHeader: Data(key.sign(Array(canonical.utf8))).base64EncodedString(),
        ]
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0f)]] }, as: UTF8.self)
    }
}
