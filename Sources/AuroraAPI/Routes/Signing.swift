/// How a node signs its requests to the lead (shared/DESIGN.md, Identity and trust).
///
/// The node sends four headers and signs, with its Ed25519 key, the canonical text
///
///     aurora-v1\n<METHOD>\n<path and query>\n<node>\n<timestamp>\n<nonce>\n<hex SHA-256 of the body>
///
/// The lead refuses a request whose timestamp is more than ``maxSkewSeconds`` from its own
/// clock, whose nonce it has seen within that window, or whose signature does not verify
/// with the key the node joined with.
public enum RequestSigning {
    /// The signing node's name.
    public static let nodeHeader = "X-Aurora-Node"
    /// Unix time in milliseconds.
    public static let timestampHeader = "X-Aurora-Timestamp"
    /// At least 16 random bytes, hex; never reused.
    public static let nonceHeader = "X-Aurora-Nonce"
    /// Base64 of the 64-byte Ed25519 signature over ``canonical(method:path:node:timestamp:nonce:bodySHA256:)``.
    public static let signatureHeader = "X-Aurora-Signature"

    /// The node the request is addressed to, on requests the lead signs to a node. It is part
    /// of the signed text, so a request signed for one node is refused by every other.
    public static let targetHeader = "X-Aurora-Target"

    /// Allowed clock difference between node and lead.
    public static let maxSkewSeconds: Int64 = 30

    /// The text that is signed.
    /// With a `target`, an eighth line `target:<name>` follows.
    public static func canonical(
        method: String, path: String, node: String, timestamp: String, nonce: String,
        bodySHA256: String, target: String? = nil
    ) -> String {
        var lines = ["aurora-v1", method.uppercased(), path, node, timestamp, nonce, bodySHA256]
        if let target { lines.append("target:" + target) }
        return lines.joined(separator: "\n")
    }
}
