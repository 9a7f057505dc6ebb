import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics
import Secrets
import Synchronization

extension Registry {
    // MARK: Signed requests

    /// Verifies a node's signed request and returns the node's name. Nothing changes when
    /// it is refused; the nonce is remembered only once the signature verified.
    ///
    /// The signature check (the costly part) runs on the caller's task against a snapshot of
    /// the nodes' keys, so requests verify in parallel; then one step on the registry checks
    /// the timestamp, the nonce and that the node was not removed.
    nonisolated func authenticate(
        _ headers: SignedHeaders, method: String, path: String, body: [UInt8],
        now: Date = Date()
    ) async throws(Refusal) -> String {
        guard headers.node != config.name, let key = signKeys.key(headers.node) else {
            throw await refuse(headers, Self.unknownNode(headers.node))
        }
        guard headers.verifies(method: method, path: path, body: body, key: key) else {
            throw await refuse(headers, "bad signature for node '\(headers.node)'")
        }
        try await admit(headers, key: key, now: now)
        return headers.node
    }

    /// Fresh timestamp, unused nonce (remembered now), the key still current, not removed.
    func admit(_ headers: SignedHeaders, key: PublicKey, now: Date) throws(Refusal) {
        try requireLoaded()
        guard let entry = entries[headers.node], entry.signKey == key else {
            throw refuse(headers, Self.unknownNode(headers.node))
        }
        switch replay.admit(
            node: headers.node, nonce: headers.nonce, timestampMilliseconds: headers.timestampMilliseconds,
            nowMilliseconds: Self.milliseconds(now))
        {
        case .stale(let skew):
            throw refuse(
                headers,
                "stale request: its timestamp is \(abs(skew) / 1000) s \(skew < 0 ? "behind" : "ahead of") the lead's clock (limit \(RequestSigning.maxSkewSeconds) s)"
            )
        case .replayed:
            throw refuse(headers, "replayed request: nonce already used")
        case .fresh:
            break
        }
        if entry.removed {
            throw refuse(headers, "node '\(headers.node)' was removed by an operator; join again with a token")
        }
    }

    /// The refusal's words for a name the registry does not hold (the caller's text, made printable).
    static func unknownNode(_ name: String) -> String {
        "unknown node '\(InputRules.printable(String(name.prefix(64))))' "
            + "(it never joined, or an operator removed it): join the mesh with a token"
    }

    func refuse(_ headers: SignedHeaders, _ message: String) -> Refusal {
        refusals.increment()
        // Header text is the caller's: logged only with its control characters made visible.
        logger.notice(
            "signed request refused",
            metadata: [
                "nodeagent.node": "\(InputRules.printable(String(headers.node.prefix(64))))",
                "nodeagent.reason": "\(message)",
            ])
        return Refusal.unauthorized(message)
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}

/// Nodes' signing keys by name, shared with request verification outside the registry actor.
final class SignKeyTable: Sendable {
    private let keys = Mutex<[String: PublicKey]>([:])

    func key(_ node: String) -> PublicKey? { keys.withLock { $0[node] } }
    func set(_ node: String, _ key: PublicKey) { keys.withLock { $0[node] = key } }
    func remove(_ node: String) { keys.withLock { $0[node] = nil } }
}
