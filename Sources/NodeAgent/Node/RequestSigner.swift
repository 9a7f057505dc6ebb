import AuroraAPI
import Foundation
import Secrets

/// Signs a node's requests to the lead (the scheme is in ``RequestSigning``).
struct RequestSigner: Sendable {
    /// The signing node's name (`X-Aurora-Node`): the receiver looks up its public key by it.
    let node: String
    /// The node's Ed25519 key (``NodeIdentity/signing``).
    let key: SigningKey
    /// The node the requests are for (the lead's calls to a node); signed with them.
    var target: String? = nil

    /// The four headers for one request.
    /// The timestamp (Unix ms) and a fresh 16-byte nonce make each signature single-use: the
    /// receiver refuses old timestamps and nonces it has seen. `path` is the path and query as
    /// sent; `body` the exact bytes sent. Used for every signed call: a node's to the lead, the
    /// lead's to a node.
    func headers(method: String, path: String, body: [UInt8], now: Date = Date()) -> [(String, String)] {
        let timestamp = String(Int64((now.timeIntervalSince1970 * 1000).rounded()))
        let nonce = Hex.encode(Crypto.randomBytes(16))
        let canonical = RequestSigning.canonical(
            method: method, path: path, node: node, timestamp: timestamp, nonce: nonce,
            bodySHA256: Hex.encode(Crypto.sha256(body)), target: target)
        let signature = Data(key.sign(Array(canonical.utf8))).base64EncodedString()
        var headers = [
            (RequestSigning.nodeHeader, node),
            (RequestSigning.timestampHeader, timestamp),
            (RequestSigning.nonceHeader, nonce),
            (RequestSigning.signatureHeader, signature),
        ]
        if let target { headers.append((RequestSigning.targetHeader, target)) }
        return headers
    }
}

/// The signature headers of a request, parsed but not yet verified.
struct SignedHeaders: Sendable {
    /// `X-Aurora-Node`: who claims to have signed; unverified until ``verifies(method:path:body:key:)``.
    let node: String
    /// `X-Aurora-Timestamp` as a number: Unix time in milliseconds, for the freshness check.
    let timestampMilliseconds: Int64
    let timestamp: String
    /// 16 to 128 characters; the verifier remembers it for the freshness window to refuse replays.
    let nonce: String
    /// The 64-byte Ed25519 signature over the canonical text.
    let signature: [UInt8]
    /// `X-Aurora-Target`, when the request names the node it is for.
    var target: String? = nil

    /// Parses the headers; nil when the request carries none of them (not a node request).
    /// Some headers but not all, a timestamp that is not a number, a nonce of the wrong length
    /// or a signature that is not 64 bytes of base64 is a 401 (``Refusal/unauthorized(_:)``).
    static func parse(_ value: (String) -> String?) throws(Refusal) -> SignedHeaders? {
        let node = value(RequestSigning.nodeHeader)
        let timestamp = value(RequestSigning.timestampHeader)
        let nonce = value(RequestSigning.nonceHeader)
        let signature = value(RequestSigning.signatureHeader)
        if node == nil, timestamp == nil, nonce == nil, signature == nil { return nil }
        let missing = [
            (RequestSigning.nodeHeader, node), (RequestSigning.timestampHeader, timestamp),
            (RequestSigning.nonceHeader, nonce), (RequestSigning.signatureHeader, signature),
        ]
        .filter { $0.1?.isEmpty ?? true }.map(\.0)
        guard missing.isEmpty, let node, let timestamp, let nonce, let signature else {
            throw Refusal.unauthorized("unsigned request: missing \(missing.joined(separator: ", "))")
        }
        guard let milliseconds = Int64(timestamp) else {
            throw Refusal.unauthorized("\(RequestSigning.timestampHeader) must be Unix time in milliseconds")
        }
        guard nonce.count >= 16, nonce.count <= 128 else {
            throw Refusal.unauthorized("\(RequestSigning.nonceHeader) must be 16 to 128 characters")
        }
        guard let bytes = Data(base64Encoded: signature), bytes.count == 64 else {
            throw Refusal.unauthorized("\(RequestSigning.signatureHeader) is not a base64 Ed25519 signature")
        }
        let target = value(RequestSigning.targetHeader).flatMap { $0.isEmpty ? nil : $0 }
        return SignedHeaders(
            node: node, timestampMilliseconds: milliseconds, timestamp: timestamp, nonce: nonce,
            signature: Array(bytes),
            target: target)
    }

    /// Whether the signature is `key`'s over this request.
    /// Checks the signature only; the caller checks freshness, the nonce and the target.
    func verifies(method: String, path: String, body: [UInt8], key: PublicKey) -> Bool {
        let canonical = RequestSigning.canonical(
            method: method, path: path, node: node, timestamp: timestamp, nonce: nonce,
            bodySHA256: Hex.encode(Crypto.sha256(body)), target: target)
        return SigningKey.verify(signature: signature, of: Array(canonical.utf8), by: key)
    }
}
