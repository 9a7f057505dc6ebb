import AuroraAPI
import Testing

/// `GET /api/prometheus/targets` from the registry: what Prometheus's HTTP service discovery gets.
@Suite("Prometheus service discovery from the registry (pure)")
struct PrometheusTargetsTests {
    static func node(
        _ name: String, role: NodeRole = .compute, state: NodeState = .alive, address: String?, tlsPort: Int? = nil,
        company: String = "", metrics: String? = nil
    ) -> Node {
        var node = Node(
            name: name, role: role, company: company, vpnIP: "10.0.0.9", state: state, lastSeen: "", labels: [:],
            wireguard: WireGuardPeer(publicKey: "", endpoint: nil, listenPort: 51820),
            capabilities: Capabilities(cpuCores: 1, memoryMB: 1024, os: "linux", arch: "x86_64", gpus: []),
            version: "", address: address, joinedAt: "", signPublicKey: "", boxPublicKey: "", timing: nil)
        node.tlsPort = tlsPort
        node.metricsAddress = metrics
        return node
    }

    @Test("one group per agent by name, with node, role, company and mesh address labels; dead ones stay, left ones go")
    func groups() {
        let groups = PrometheusTargets.groups([
            Self.node("gpu-2", state: .dead, address: "127.0.0.1:9102", company: "acme"),
            Self.node("lead-1", role: .lead, address: "127.0.0.1:9999"),
            Self.node("gone", state: .left, address: "127.0.0.1:9103"),
            Self.node("gpu-1", address: "127.0.0.1:9101"),
        ])
        #expect(groups.map(\.targets) == [["127.0.0.1:9101"], ["127.0.0.1:9102"], ["127.0.0.1:9999"]])
        #expect(
            groups[1].labels == [
                "node": "gpu-2", "role": "compute", "company": "acme", "vpn_ip": "10.0.0.9", "__scheme__": "http",
                "__metrics_path__": "/metrics",
            ])
        #expect(groups[2].labels["role"] == "lead")
    }

    @Test("a TLS listener is scraped over https at its port; every address means the mesh address")
    func addresses() {
        let secure = PrometheusTargets.groups([Self.node("tls", address: "10.1.2.3:9998", tlsPort: 9443)])
        #expect(secure.first?.targets == ["10.1.2.3:9443"] && secure.first?.labels["__scheme__"] == "https")
        let wildcard = PrometheusTargets.groups([Self.node("any", address: "0.0.0.0:9998")])
        #expect(wildcard.first?.targets == ["10.0.0.9:9998"])
    }

    @Test("no address, a malformed or out-of-range one, or a host with spaces or slashes: not listed")
    func unusable() {
        for address in [
            nil, "", "no-port", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x", "a b:1", "evil/path:1",
            String(repeating: "a", count: 400) + ":1",
        ] {
            #expect(
                PrometheusTargets.groups([Self.node("n", address: address)]).isEmpty, "\(address ?? "nil")")
        }
        #expect(
            PrometheusTargets.groups([Self.node("n", address: "127.0.0.1:9", tlsPort: 0)]).first?.targets == [
                "127.0.0.1:9"
            ])
    }

    @Test("a metrics-only listener comes first, over plain HTTP (the mesh encrypts it); a wildcard is the mesh address")
    func metricsListener() {
        let listed = PrometheusTargets.groups([
            Self.node("a", address: "127.0.0.1:9999", tlsPort: 9443, metrics: "10.0.0.9:9464"),
            Self.node("b", address: "127.0.0.1:9998", metrics: "0.0.0.0:9464"),
            Self.node("c", address: "127.0.0.1:9997", tlsPort: 9443, metrics: "not an address"),
        ])
        #expect(listed.map(\.targets) == [["10.0.0.9:9464"], ["10.0.0.9:9464"], ["127.0.0.1:9443"]])
        #expect(listed.map { $0.labels["__scheme__"] } == ["http", "http", "https"])
    }
}
