import AuroraAPI
import Foundation
import Logging
import Mesh
import Secrets

extension Registry {
    // MARK: Views

    /// `GET /api/nodes`: every node the registry knows (removed ones included), sorted by name.
    /// 503 until the registry has loaded.
    func list() throws(Refusal) -> NodeList {
        try requireLoaded()
        return NodeList(
            nodes: entries.values.map(Self.view).sorted { $0.name < $1.name }, stale: false, lead: config.name)
    }

    /// `GET /api/nodes/{name}`; 404 for a name the registry does not know.
    func node(_ name: String) throws(Refusal) -> Node {
        try requireLoaded()
        guard let entry = entries[name] else { throw Refusal.notFound("no node named '\(name)'") }
        return Self.view(entry)
    }

    /// The node as the API shows it, with `last_seen` from the in-memory time.
    static func view(_ entry: Entry) -> Node {
        var node = entry.node
        node.lastSeen = ISOTime.string(entry.lastSeen)
        node.wireguard.endpoint = endpoint(entry)
        return node
    }

    /// How peers reach a node: the endpoint it configured, else the source address of its
    /// heartbeats with its WireGuard port.
    static func endpoint(_ entry: Entry) -> String? {
        if let configured = entry.node.wireguard.endpoint, !configured.isEmpty { return configured }
        guard let host = entry.observedHost, !host.isEmpty, host != "0.0.0.0", host != "::" else { return nil }
        // The lead's "observed" host is its own listen address: loopback reaches no other machine.
        if entry.node.role == .lead, host.hasPrefix("127.") || host == "::1" || host == "localhost" { return nil }
        return host.contains(":")
            ? "[\(host)]:\(entry.node.wireguard.listenPort)" : "\(host):\(entry.node.wireguard.listenPort)"
    }

    /// `GET /api/topology`: every node, and a link per peer RTT a node reported in its heartbeats
    /// (with the WireGuard handshake age when it reported one, and how old the measurement is, in s).
    func topology(now: ContinuousClock.Instant = .now) throws(Refusal) -> Topology {
        try requireLoaded()
        let members = entries.values.map {
            Topology.Member(name: $0.node.name, state: $0.node.state, vpnIP: $0.node.vpnIP)
        }
        .sorted { $0.name < $1.name }
        var links: [Topology.Link] = []
        for entry in entries.values.sorted(by: { $0.node.name < $1.node.name }) {
            guard let at = entry.peersAt else { continue }
            let age = at.duration(to: now)
            for peer in entry.peers where entries[peer.name] != nil {
                let peerKey = entries[peer.name]?.node.wireguard.publicKey
                links.append(
                    Topology.Link(
                        from: entry.node.name, to: peer.name, rttMs: peer.rttMs,
                        handshakeAgeS: entry.links.first { $0.publicKey == peerKey }?.handshakeAgeS,
                        measuredAgeS: (Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18)
                            .rounded(toPlaces: 3)))
            }
        }
        return Topology(nodes: members, links: links, paths: paths, stale: false)
    }
}
