import AuroraAPI
import Logging
import Mesh

extension Registry {
    // MARK: Paths between nodes behind NAT

    /// Runs the path planner on what the registry knows (called every second by the registry
    /// service): which pairs of nodes behind NAT are relayed, trying a direct path or direct.
    /// The registry version moves when a decision changes, so nodes and relays fetch it at once.
    func planPaths(now: ContinuousClock.Instant = .now) {
        guard loaded else { return }
        let live = entries.values.filter { !$0.removed && $0.node.state != .left }
        // Nothing to plan without two nodes behind NAT (a fleet of public machines pays nothing).
        let natted = live.filter { $0.node.wireguard.behindNAT == true }
        guard natted.count >= 2 else {
            if !paths.isEmpty {
                paths = []
                version += 1
            }
            return
        }
        // Only nodes behind NAT are looked up in what observers and peers report.
        let byKey = Dictionary(
            natted.map { ($0.node.wireguard.publicKey, $0.node.name) }, uniquingKeysWith: { a, _ in a })
        // The observers: the lead and the trusted relays (public, with a tunnel to each node),
        // the lead first. Their interfaces see each node's mapping from outside.
        let observers = live.filter {
            $0.node.wireguard.behindNAT != true
                && ($0.node.name == config.name
                    || ($0.node.labels["relay"] == "true" && $0.node.wireguard.relay != nil))
        }.sorted {
            ($0.node.name == config.name ? 0 : 1, $0.node.name) < ($1.node.name == config.name ? 0 : 1, $1.node.name)
        }
        var seen: [String: [String]] = [:]
        for observer in observers {
            for link in observer.links {
                guard let name = byKey[link.publicKey], let endpoint = link.endpoint,
                    let host = try? HostPort(parsing: endpoint).host,
                    host == entries[name]?.observedHost,  // a mapping of the address it speaks from now
                    link.handshakeAgeS.map({ $0 < 180 }) ?? false
                else { continue }
                seen[name, default: []].append(endpoint)
            }
        }
        let views = (natted + observers).map { entry -> PathPlanner.NodeView in
            let node = entry.node
            var relay: (host: String, portBase: Int, pairs: Int)?
            if let offer = node.wireguard.relay, offer.isValid, node.role == .lead || node.labels["relay"] == "true",
                let endpoint = Self.endpoint(entry), let host = try? HostPort(parsing: endpoint).host
            {
                relay = (host, offer.portBase, offer.pairs)
            }
            var links: [String: PathPlanner.NodeView.Link] = [:]
            for link in entry.links where node.wireguard.behindNAT == true {
                if let name = byKey[link.publicKey] {
                    links[name] = .init(endpoint: link.endpoint, rxBytes: link.rxBytes)
                }
            }
            return PathPlanner.NodeView(
                name: node.name, alive: node.state == .alive || node.state == .suspect,
                behindNAT: node.wireguard.behindNAT == true, outside: seen[node.name] ?? [],
                publicHost: entry.observedHost, relay: relay, relayLast: node.name == config.name, links: links)
        }
        let natTypes = Dictionary(views.map { ($0.name, $0.natType) }, uniquingKeysWith: { a, _ in a })
        let planned = planner.plan(views, now: now).map { path in
            MeshPath(
                a: path.a, b: path.b, mode: MeshPath.Mode(rawValue: path.mode.rawValue) ?? .relayed, relay: path.relay,
                relayA: path.relayA, relayB: path.relayB, directA: path.directA, directB: path.directB,
                hostA: path.hostA, hostB: path.hostB, natA: natTypes[path.a] ?? nil, natB: natTypes[path.b] ?? nil,
                reason: path.reason)
        }
        if planner.overflow > 0, !pathOverflowSaid {
            pathOverflowSaid = true
            logger.warning(
                "more nodes behind NAT than the path planner takes; the rest keep their registry endpoints (no relay)",
                metadata: [
                    "nodeagent.planned": "\(PathPlanner.maxPlannedNodes)", "nodeagent.left_out": "\(planner.overflow)",
                ])
        }
        if planned != paths {
            let before = Dictionary(paths.map { ("\($0.a)|\($0.b)", $0.mode) }, uniquingKeysWith: { a, _ in a })
            for path in planned where before["\(path.a)|\(path.b)"] != path.mode {
                logger.info(
                    "path changed",
                    metadata: [
                        "nodeagent.pair": "\(path.a)-\(path.b)", "nodeagent.mode": "\(path.mode.rawValue)",
                        "nodeagent.relay": "\(path.relay ?? "none")", "nodeagent.reason": "\(path.reason)",
                    ])
            }
            paths = planned
            version += 1
        }
    }
}
