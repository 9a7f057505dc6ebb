/// One group of Prometheus's HTTP service discovery (`http_sd_configs`): scrape targets
/// (`HOST:PORT`) and the labels they get.
public struct PrometheusTargetGroup: Codable, Sendable, Equatable {
    public var targets: [String]
    public var labels: [String: String]

    public init(targets: [String], labels: [String: String]) {
        self.targets = targets
        self.labels = labels
    }
}

/// `GET /api/prometheus/targets`: every agent of the registry whose API address is known, as
/// Prometheus HTTP service discovery reads it.
public enum PrometheusTargets {
    /// One group per agent, by name: the address it serves its API (and `/metrics`) on, over TLS
    /// (`__scheme__` `https`) when it has a TLS listener. An agent listening on every address
    /// (`0.0.0.0`, `::`) is scraped at its mesh (VPN) address. Left agents are not listed; dead
    /// ones are, so that Prometheus sees them down (`up == 0`).
    ///
    /// Labels: `node`, `role`, `company` (empty when none) and `vpn_ip`; with `honor_labels:
    /// true` (deploy/prometheus) the lead's per-node series keep their own `node`.
    public static func groups(_ nodes: [Node]) -> [PrometheusTargetGroup] {
        nodes.filter { $0.state != .left }.sorted { $0.name < $1.name }.compactMap { node in
            guard let target = target(node) else { return nil }
            return PrometheusTargetGroup(
                targets: [target.address],
                labels: [
                    "node": node.name, "role": node.role.rawValue, "company": node.company, "vpn_ip": node.vpnIP,
                    "__scheme__": target.scheme, "__metrics_path__": "/metrics",
                ])
        }
    }

    /// `HOST:PORT` and scheme of `node`'s metrics; nil without a usable address.
    static func target(_ node: Node) -> (address: String, scheme: String)? {
        guard let address = node.address, address.utf8.count <= 300, let colon = address.lastIndex(of: ":"),
            let plainPort = Int(address[address.index(after: colon)...]), (1...65535).contains(plainPort)
        else { return nil }
        var host = String(address[..<colon])
        if ["0.0.0.0", "[::]", "::", ""].contains(host) { host = node.vpnIP }
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != "/" }) else { return nil }
        if let secure = node.tlsPort, (1...65535).contains(secure) {
            return ("\(host):\(secure)", "https")
        }
        return ("\(host):\(plainPort)", "http")
    }
}
