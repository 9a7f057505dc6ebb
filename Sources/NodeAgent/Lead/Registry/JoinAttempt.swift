import AuroraAPI
import Foundation
import Mesh
import Secrets

/// A join the registry has validated, for a ``NodeStore`` to decide and write in one
/// transaction: everything that depends on other rows (the token, the name, the address) is
/// decided there, so concurrent joins cannot take the same name or address.
struct JoinAttempt: Sendable {
    /// Hex SHA-256 of the presented token's secret part.
    var tokenHash: String
    /// The node as it asks to join; company, labels and address are decided by ``decide(token:holder:others:)``.
    var template: Node
    /// The node's verified signing key and its detector timing.
    var signKey: PublicKey
    var policy: FailureDetector.Policy
    /// The company the node claims (refused when it is not the token's).
    var claimedCompany: String?
    /// The address it asks for, if any.
    var requested: UInt32?
    /// Where addresses come from, how long a removed node's address is kept, and the lead's name.
    var allocator: AddressAllocator
    var grace: Double
    var leadName: String
    /// When the join happens (its `last_seen`).
    var now: Date

    var name: String { template.name }

    /// What a store writes for an accepted join.
    struct Decision: Sendable {
        /// The node's record, to upsert with `tokenID`.
        var entry: Registry.Entry
        var tokenID: String
        /// A removed node whose address this join takes: its `vpn_ip` becomes "".
        var reclaimed: String?
        /// `node.joined`.
        var event: EventLog.Draft
    }

    /// A committed join: the node as written, the token it used and its recorded event.
    struct Joined: Sendable {
        var node: Node
        var tokenID: String
        var event: MeshEvent
    }

    /// The decision every store makes from the rows it holds, inside its transaction.
    ///
    /// The token comes first: without a valid one nothing else is answered (not whether a name
    /// or address is taken). The company and trusted labels are the token's, never the node's
    /// claim. `others` (every other node's address) is read only when an address must be allocated.
    func decide(
        token: JoinTokenRow?, holder: JoinRules.Holder?,
        others: () throws(AgentError) -> [JoinRules.AddressHolder]
    ) throws(AgentError) -> Result<Decision, Refusal> {
        let grant: TokenGrant
        switch JoinTokens.grant(token, for: template.role) {
        case .failure(let refusal): return .failure(refusal)
        case .success(let granted): grant = granted
        }
        var node = template
        let identity: JoinRules.Identity
        do throws(MeshError) {
            identity = try JoinRules.identity(
                name: node.name, signPublicKey: node.signPublicKey, claimedCompany: claimedCompany,
                requested: requested,
                grant: JoinRules.Grant(id: grant.id, company: grant.company, labels: grant.labels),
                holder: holder, leadName: leadName)
        } catch {
            return .failure(Refusal(error))
        }
        node.company = identity.company
        node.labels = identity.labels
        var reclaimed: String?
        if let kept = identity.keptAddress {
            node.vpnIP = kept
            if let joined = identity.keptJoinedAt { node.joinedAt = joined }
        } else {
            let holders = try others()
            let allocation: (address: UInt32, reclaimed: String?)
            do throws(MeshError) {
                allocation = try JoinRules.address(
                    requested: requested, others: holders, allocator: allocator, grace: grace)
            } catch {
                return .failure(Refusal(error))
            }
            node.vpnIP = IPv4Network.format(allocation.address)
            reclaimed = allocation.reclaimed
        }
        let entry = Registry.Entry(
            node: node, signKey: signKey, policy: policy, removed: false, observedHost: nil, lastSeen: now)
        let event = EventLog.Draft(
            type: EventType.nodeJoined, node: node.name,
            data: [
                "vpn_ip": .string(node.vpnIP), "role": .string(node.role.rawValue), "token": .string(grant.id),
                "rejoin": .bool(identity.rejoin),
            ])
        return .success(Decision(entry: entry, tokenID: grant.id, reclaimed: reclaimed, event: event))
    }
}
