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
    ///
    /// A node's metrics-only listener (`metrics_address`, plain HTTP: what a Prometheus on the
    /// mesh scrapes, the tunnel encrypting it) comes first; then its TLS listener; then its API's
    /// plain listener. A wildcard host is the node's mesh address.
    static func target(_ node: Node) -> (address: String, scheme: String)? {
        if let metrics = node.metricsAddress, let target = hostPort(metrics, vpnIP: node.vpnIP) {
            return ("\(target.host):\(target.port)", "http")
        }
        guard let address = node.address, let (host, plainPort) = hostPort(address, vpnIP: node.vpnIP) else {
            return nil
        }
        if let secure = node.tlsPort, (1...65535).contains(secure) {
            return ("\(host):\(secure)", "https")
        }
        return ("\(host):\(plainPort)", "http")
    }

    /// The host and port of `address` (`HOST:PORT`, `[V6]:PORT`), a wildcard host replaced by
    /// `vpnIP`; nil for anything else (over 300 bytes, no port, a port out of range, a host with
    /// a space, a slash or a character outside ASCII).
    static func hostPort(_ address: String, vpnIP: String) -> (host: String, port: Int)? {
        guard address.utf8.count <= 300, let colon = address.lastIndex(of: ":"),
            let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(address[..<colon])
        if ["0.0.0.0", "[::]", "::", ""].contains(host) { host = vpnIP }
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != "/" }) else { return nil }
        return (host, port)
    }
}
