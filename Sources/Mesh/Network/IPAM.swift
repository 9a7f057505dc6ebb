/// An IPv4 network such as `10.0.0.0/24`.
public struct IPv4Network: Sendable, Equatable, CustomStringConvertible {
    public let base: UInt32
    public let prefix: Int

    public init(parsing text: String) throws(MeshError) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let prefix = Int(parts[1]), (8...30).contains(prefix),
            let address = IPv4Network.parse(String(parts[0]))
        else {
            throw MeshError(.invalidAddress, "'\(text)' is not an IPv4 network such as 10.0.0.0/24 (prefix 8-30)")
        }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << (32 - prefix)
        self.base = address & mask
        self.prefix = prefix
    }

    /// Host addresses, excluding the network and broadcast addresses.
    public var hostCount: Int { (1 << (32 - prefix)) - 2 }

    /// The n-th host address (1-based: `host(1)` is .1 in a /24).
    public func host(_ n: Int) -> UInt32 { base + UInt32(n) }

    public func contains(_ address: UInt32) -> Bool {
        address > base && address < base + UInt32(hostCount + 1)
    }

    public var description: String { "\(IPv4Network.format(base))/\(prefix)" }

    /// Dotted quad → integer.
    public static func parse(_ text: String) -> UInt32? {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var value: UInt32 = 0
        for octet in octets {
            guard let byte = UInt8(octet), octet.count <= 3 else { return nil }
            value = value << 8 | UInt32(byte)
        }
        return value
    }

    /// Integer → dotted quad.
    public static func format(_ address: UInt32) -> String {
        "\(address >> 24).\(address >> 16 & 0xff).\(address >> 8 & 0xff).\(address & 0xff)"
    }
}

/// Chooses mesh addresses: the lead takes the first host, every other node the lowest free
/// one, or the one it asks for when that is free and inside the network. Addresses are
/// stable per node because the registry keeps them with the node.
public struct AddressAllocator: Sendable {
    public let network: IPv4Network

    public init(network: IPv4Network) {
        self.network = network
    }

    /// The lead's address.
    public var leadAddress: UInt32 { network.host(1) }

    /// An address a removed node held: taken until `grace` seconds after the removal.
    public struct Released: Sendable, Equatable {
        public var node: String
        public var address: UInt32
        /// Seconds since the node was removed.
        public var removedAgoS: Double

        public init(node: String, address: UInt32, removedAgoS: Double) {
            self.node = node
            self.address = address
            self.removedAgoS = removedAgoS
        }
    }

    /// An address for a node, given the addresses live nodes hold and those removed nodes held:
    /// a removed node's address is free again only after `grace` seconds. `reclaimed` names
    /// the removed node whose address was given out (its record must let go of it).
    public func allocate(requested: UInt32?, taken: Set<UInt32>, released: [Released], grace: Double) throws(MeshError)
        -> (address: UInt32, reclaimed: String?)
    {
        let held = released.filter { $0.removedAgoS < grace }
        if let requested, let holder = held.first(where: { $0.address == requested }) {
            let left = Int((grace - holder.removedAgoS).rounded(.up))
            throw MeshError(
                .addressTaken,
                "\(IPv4Network.format(requested)) was node '\(holder.node)''s and is held for another \(left) s after its removal (wireguard.reuse_after_s)"
            )
        }
        let address = try allocate(requested: requested, taken: taken.union(held.map(\.address)))
        return (address, released.first { $0.address == address && $0.removedAgoS >= grace }?.node)
    }

    /// An address for a node, given the addresses already taken.
    public func allocate(requested: UInt32?, taken: Set<UInt32>) throws(MeshError) -> UInt32 {
        if let requested {
            guard network.contains(requested) else {
                throw MeshError(
                    .invalidAddress, "\(IPv4Network.format(requested)) is not inside the mesh network \(network)")
            }
            guard !taken.contains(requested), requested != leadAddress else {
                throw MeshError(.addressTaken, "\(IPv4Network.format(requested)) is already taken")
            }
            return requested
        }
        for n in 2...max(2, network.hostCount) where !taken.contains(network.host(n)) {
            return network.host(n)
        }
        throw MeshError(.addressTaken, "the mesh network \(network) has no free address left")
    }
}
