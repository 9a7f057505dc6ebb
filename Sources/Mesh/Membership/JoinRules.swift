/// The lead's rules for a node joining the mesh: which company and trusted labels it gets, who
/// may hold a name, and which mesh address it keeps or is given. A pure core: the registry reads
/// what the store holds under the name inside its join transaction, asks these rules, and writes
/// what they decide (or refuses with their error, changing nothing).
///
/// The order of the checks is part of the contract: the token's company first, then the name,
/// then the address, so a caller learns nothing about names or addresses it may not have.
public enum JoinRules {
    /// What a valid join token grants: the company and trusted labels are the token's, never
    /// the node's own claim.
    public struct Grant: Sendable, Equatable {
        /// The token's id, for messages and the audit.
        public var id: String
        /// The company the token is for ("" when it sets none).
        public var company: String
        /// Labels the token gives the node; placement trusts only these and an operator's.
        public var labels: [String: String]

        public init(id: String, company: String, labels: [String: String]) {
            self.id = id
            self.company = company
            self.labels = labels
        }
    }

    /// The record the store holds under the joining name, if any.
    public struct Holder: Sendable, Equatable {
        /// The signing key of the node that holds the name (base64, as stored).
        public var signPublicKey: String
        /// Removed by an operator: the name (not the lead's) is free for another key.
        public var removed: Bool
        /// Its mesh address ("" or nil when it let go of it).
        public var vpnIP: String?
        /// When it first joined (ISO 8601), kept across rejoins of the same key.
        public var joinedAt: String?
        /// Its trusted labels as stored, including an operator's.
        public var labels: [String: String]?

        public init(signPublicKey: String, removed: Bool, vpnIP: String?, joinedAt: String?, labels: [String: String]?)
        {
            self.signPublicKey = signPublicKey
            self.removed = removed
            self.vpnIP = vpnIP
            self.joinedAt = joinedAt
            self.labels = labels
        }
    }

    /// Who the joining node is in the mesh, decided before any address is allocated.
    public struct Identity: Sendable, Equatable {
        /// The token's company.
        public var company: String
        /// The token's labels, with an operator's labels on top for a rejoin.
        public var labels: [String: String]
        /// The same node (same key, not removed) joining again.
        public var rejoin: Bool
        /// The address the node keeps; nil: allocate one (``address(requested:others:allocator:grace:)``).
        public var keptAddress: String?
        /// The first join's time, kept for the same key.
        public var keptJoinedAt: String?

        public init(
            company: String, labels: [String: String], rejoin: Bool, keptAddress: String?, keptJoinedAt: String?
        ) {
            self.company = company
            self.labels = labels
            self.rejoin = rejoin
            self.keptAddress = keptAddress
            self.keptJoinedAt = keptJoinedAt
        }
    }

    /// Decides the joining node's company, labels, and whether it keeps its address.
    ///
    /// - Refuses with ``MeshError/Code/forbidden`` when the node claims a company other than
    ///   the token's, and with ``MeshError/Code/nameTaken`` when another key holds the name
    ///   (a removed node's name is free again, the lead's never is).
    /// - A node keeps the address stored under its name unless it asks for another one.
    public static func identity(
        name: String, signPublicKey: String, claimedCompany: String?, requested: UInt32?,
        grant: Grant, holder: Holder?, leadName: String
    ) throws(MeshError) -> Identity {
        if let claimed = claimedCompany, !claimed.isEmpty, claimed != grant.company {
            throw MeshError(
                .forbidden,
                grant.company.isEmpty
                    ? "join token \(grant.id) sets no company, and a node cannot choose its own; create the token with --company"
                    : "join token \(grant.id) is for company '\(grant.company)'; a node cannot choose another")
        }
        let sameKey = holder?.signPublicKey == signPublicKey
        if let holder, !sameKey, !holder.removed || name == leadName {
            throw MeshError(
                .nameTaken, "node name '\(name)' is taken by another node (a different key); choose another --name")
        }
        let rejoin = sameKey && holder?.removed == false
        var labels = grant.labels
        // The same node joining again keeps what an operator labelled it with.
        if rejoin, let stored = holder?.labels { labels = grant.labels.merging(stored) { _, byOperator in byOperator } }
        var identity = Identity(
            company: grant.company, labels: labels, rejoin: rejoin, keptAddress: nil, keptJoinedAt: nil)
        if let holder, let address = holder.vpnIP, !address.isEmpty,
            requested == nil || IPv4Network.format(requested!) == address
        {
            identity.keptAddress = address
            if sameKey { identity.keptJoinedAt = holder.joinedAt }
        }
        return identity
    }

    /// Another node's claim on an address, as the store holds it.
    public struct AddressHolder: Sendable, Equatable {
        public var node: String
        public var vpnIP: String
        public var removed: Bool
        /// Seconds since its removal (0 for a live node).
        public var removedAgoS: Double

        public init(node: String, vpnIP: String, removed: Bool, removedAgoS: Double) {
            self.node = node
            self.vpnIP = vpnIP
            self.removed = removed
            self.removedAgoS = removedAgoS
        }
    }

    /// A new address for a joining node: live nodes' addresses and the lead's are taken; a
    /// removed node's only until `grace` seconds after its removal. `reclaimed` names the removed
    /// node whose address was given out (its record must let go of it). Unparsable stored
    /// addresses are skipped.
    public static func address(
        requested: UInt32?, others: [AddressHolder], allocator: AddressAllocator, grace: Double
    ) throws(MeshError) -> (address: UInt32, reclaimed: String?) {
        var taken: Set<UInt32> = [allocator.leadAddress]
        var released: [AddressAllocator.Released] = []
        for other in others {
            guard let address = IPv4Network.parse(other.vpnIP) else { continue }
            if other.removed {
                released.append(.init(node: other.node, address: address, removedAgoS: other.removedAgoS))
            } else {
                taken.insert(address)
            }
        }
        do {
            return try allocator.allocate(requested: requested, taken: taken, released: released, grace: grace)
        } catch {
            throw MeshError(error.code, "vpn_ip: \(error.message)")
        }
    }
}
