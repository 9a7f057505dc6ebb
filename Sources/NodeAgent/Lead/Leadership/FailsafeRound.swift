import AuroraAPI
import AuroraClient
import Foundation
import Logging
import Mesh
import NIOCore
import Secrets

/// The lead's failsafe round (Patroni's `failsafe_mode`): while etcd does not answer, every
/// lead-eligible peer (each standby the registry holds, alive or not) must promise not to
/// campaign or promote for the lease's TTL (`POST /api/lead/failsafe`, signed by the lead for
/// that standby, over TLS pinned to the key it joined with when it serves TLS).
///
/// The rule is all or nothing: a standby that does not answer may be one that reaches etcd and
/// is about to take the key, so one missing promise is enough to let the lead fence. A standby
/// that is gone for good must be removed (`aurora-cli nodes remove`) for the lead to serve
/// through an etcd outage without it. With no standby at all nobody can take over, and the lead
/// serves on.
struct FailsafeRound: Sendable {
    /// The lead's node name (the signer) and its signing key.
    let name: String
    let key: SigningKey
    /// The lead's standbys as the registry holds them now; nil when the registry cannot say.
    let standbys: @Sendable () async -> [Node]?
    /// The lead's epoch; nil before its term began (then it promises nothing to itself).
    let epoch: @Sendable () -> Int64?
    let logger: Logger

    /// Whether every standby promised for `ttl` within `timeout`.
    func run(ttl: Duration, timeout: Duration) async -> Bool {
        guard let epoch = epoch(), let standbys = await standbys() else { return false }
        let request = FailsafeRequest(epoch: epoch, ttlMs: Int64(ttl / .milliseconds(1)))
        let refused = await withTaskGroup(of: String?.self) { group in
            for standby in standbys {
                group.addTask { await ask(standby, request, timeout: timeout) ? nil : standby.name }
            }
            var refused: [String] = []
            for await name in group { if let name { refused.append(name) } }
            return refused.sorted()
        }
        if refused.isEmpty {
            logger.debug(
                "every standby promised not to take over", metadata: ["nodeagent.standbys": "\(standbys.count)"])
            return true
        }
        logger.warning(
            "etcd does not answer and not every standby promised not to take over",
            metadata: ["nodeagent.missing": "\(refused.joined(separator: ","))"])
        return false
    }

    /// Asks one standby; true when it promised.
    private func ask(_ standby: Node, _ request: FailsafeRequest, timeout: Duration) async -> Bool {
        guard
            var (client, _) = await LeadHandoffProbe.client(
                for: standby, timeout: .milliseconds(max(Int64(timeout / .milliseconds(1)), 50)))
        else { return false }
        let signer = RequestSigner(node: name, key: key, target: standby.name)
        client.signer = { method, path, body in signer.headers(method: method, path: path, body: body) }
        do {
            let answer = try await client.failsafe(request)
            return answer.agent == standby.name && answer.promisedMs >= request.ttlMs
        } catch {
            logger.debug(
                "a standby did not promise",
                metadata: ["nodeagent.node": "\(standby.name)", "nodeagent.error": "\(error)"])
            return false
        }
    }
}
