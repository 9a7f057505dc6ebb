import AuroraAPI
import Foundation

/// The lead's per-node series on `/metrics`, set from the registry and the job coordinator at
/// every scrape: `aurora_node_state{node,state}` (1 for the node's state, 0 for the others),
/// `aurora_gpu_vram_{total,used,reserved}_mb{node,gpu}` and `aurora_gpu_utilization_pct{node,gpu}`;
/// for a node with a PostgreSQL replica `aurora_postgres_replica_streaming{node}` (1 while
/// streaming) and, as it reports them, `aurora_postgres_replica_lag_bytes{node}` and
/// `aurora_postgres_replica_lag_seconds{node}`; and `aurora_wireguard_handshake_age_seconds{node}`
/// for the lead's tunnel to a node that has had a handshake. Label values are registered node names
/// and GPU indexes; a node that left the registry has no series from the next scrape on, so their
/// number follows the registry's size.
enum MeshMetrics {
    /// One series: a metric name and its labels in a fixed order.
    struct Series: Hashable, Sendable {
        var name: String
        var labels: [String]
    }

    /// What one scrape exports for one node.
    struct NodeSample: Sendable, Equatable {
        var name: String
        var state: NodeState
        /// Per GPU: index, total, used and reserved MB, utilisation in percent.
        var gpus: [(index: Int, totalMB: Int, usedMB: Int, reservedMB: Int, utilizationPct: Int)]
        /// The node's PostgreSQL replica, when it runs one.
        var replica: (streaming: Bool, lagBytes: Int64?, lagS: Double?)?
        /// Seconds since the lead's last WireGuard handshake with the node.
        var handshakeAgeS: Double?

        static func == (lhs: NodeSample, rhs: NodeSample) -> Bool {
            lhs.name == rhs.name && lhs.state == rhs.state
                && lhs.gpus.map { [$0.index, $0.totalMB, $0.usedMB, $0.reservedMB, $0.utilizationPct] }
                    == rhs.gpus.map { [$0.index, $0.totalMB, $0.usedMB, $0.reservedMB, $0.utilizationPct] }
                && lhs.replica?.streaming == rhs.replica?.streaming && lhs.replica?.lagBytes == rhs.replica?.lagBytes
                && lhs.replica?.lagS == rhs.replica?.lagS && lhs.handshakeAgeS == rhs.handshakeAgeS
        }
    }

    static let states: [NodeState] = [.alive, .suspect, .away, .dead, .left]

    /// One metric family of a scrape: its series in node order, each with its node, its second
    /// label's value (`state` or `gpu`, for the families that have one) and its value.
    struct Family: Sendable {
        var name: String
        var secondLabel: String?
        var series: [(node: String, second: String?, value: Double)] = []
    }

    /// What a scrape of `nodes` exports: the families that have series, by name, each in one pass
    /// over the nodes by name (pure).
    static func families(_ nodes: [NodeSample]) -> [Family] {
        var state = Family(name: "aurora_node_state", secondLabel: "state")
        var total = Family(name: "aurora_gpu_vram_total_mb", secondLabel: "gpu")
        var used = Family(name: "aurora_gpu_vram_used_mb", secondLabel: "gpu")
        var reserved = Family(name: "aurora_gpu_vram_reserved_mb", secondLabel: "gpu")
        var utilization = Family(name: "aurora_gpu_utilization_pct", secondLabel: "gpu")
        var streaming = Family(name: "aurora_postgres_replica_streaming")
        var lagBytes = Family(name: "aurora_postgres_replica_lag_bytes")
        var lagSeconds = Family(name: "aurora_postgres_replica_lag_seconds")
        var handshake = Family(name: "aurora_wireguard_handshake_age_seconds")
        for node in nodes.sorted(by: { $0.name < $1.name }) {
            let name = node.name
            for each in states { state.series.append((name, each.rawValue, node.state == each ? 1 : 0)) }
            for gpu in node.gpus {
                let index = String(gpu.index)
                total.series.append((name, index, Double(gpu.totalMB)))
                used.series.append((name, index, Double(gpu.usedMB)))
                reserved.series.append((name, index, Double(gpu.reservedMB)))
                utilization.series.append((name, index, Double(gpu.utilizationPct)))
            }
            if let replica = node.replica {
                streaming.series.append((name, nil, replica.streaming ? 1 : 0))
                if let bytes = replica.lagBytes { lagBytes.series.append((name, nil, Double(bytes))) }
                if let seconds = replica.lagS { lagSeconds.series.append((name, nil, seconds)) }
            }
            if let age = node.handshakeAgeS { handshake.series.append((name, nil, age)) }
        }
        return [state, total, used, reserved, utilization, streaming, lagBytes, lagSeconds, handshake]
            .filter { !$0.series.isEmpty }.sorted { $0.name < $1.name }
    }

    /// The values a scrape of `nodes` exports, by series (for tests).
    static func values(_ nodes: [NodeSample]) -> [Series: Double] {
        var values: [Series: Double] = [:]
        for family in families(nodes) {
            for series in family.series {
                values[Series(name: family.name, labels: [series.node] + (series.second.map { [$0] } ?? []))] =
                    series.value
            }
        }
        return values
    }

    /// `families` in Prometheus's text format: each family once, with its `# HELP` and `# TYPE`
    /// lines. Written at each scrape rather than kept as one swift-prometheus gauge per series:
    /// the registry copies a family on every new series, which made a lead's first scrape of
    /// 10,000 nodes take over 30 s.
    static func render(_ families: [Family]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(families.reduce(0) { $0 + $1.series.count * 64 })
        for family in families {
            let help = MetricHelp.help(family.name)
            if !help.isEmpty { out += Array("# HELP \(family.name) \(help)\n".utf8) }
            out += Array("# TYPE \(family.name) gauge\n".utf8)
            let prefix = Array((family.name + "{node=\"").utf8)
            let second = family.secondLabel.map { Array("\",\($0)=\"".utf8) }
            for series in family.series {
                out += prefix
                out += escaped(series.node).utf8
                if let second, let value = series.second {
                    out += second
                    out += escaped(value).utf8
                }
                out += "\"} ".utf8
                out += String(series.value).utf8
                out.append(UInt8(ascii: "\n"))
            }
        }
        return out
    }

    /// A label value as the text format writes it: backslash, double quote and newline escaped.
    static func escaped(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    /// The series' label pairs: `node`, then `state` or `gpu` for the series that have a second.
    static func dimensions(_ series: Series) -> [(String, String)] {
        guard series.labels.count > 1 else { return [("node", series.labels[0])] }
        let second = series.name == "aurora_node_state" ? "state" : "gpu"
        return [("node", series.labels[0]), (second, series.labels[1])]
    }

    /// One scrape's text: the registry's nodes (none while it loads) and the coordinator's
    /// reservations.
    static func scrape(_ lead: LeadParts) async -> [UInt8] {
        guard let list = try? await lead.registry.list() else { return [] }
        return render(families(samples(list, status: try? await lead.jobs.status())))
    }

    /// The samples of the registry's nodes, with each GPU's reservation from the coordinator's
    /// status (0 where it has none).
    static func samples(_ list: NodeList, status: GPUStatus?) -> [NodeSample] {
        var reserved: [String: [Int: Int]] = [:]
        for node in status?.nodes ?? [] {
            reserved[node.name] = Dictionary(
                node.gpus.map { ($0.gpu.index, $0.reservedMB) }, uniquingKeysWith: { first, _ in first })
        }
        return list.nodes.map { node in
            NodeSample(
                name: node.name, state: node.state,
                gpus: node.capabilities.gpus.map {
                    (
                        index: $0.index, totalMB: $0.memoryTotalMB, usedMB: $0.memoryUsedMB,
                        reservedMB: reserved[node.name]?[$0.index] ?? 0, utilizationPct: $0.utilizationPct
                    )
                },
                replica: node.postgres.flatMap { health in
                    health.role == .replica ? (health.state == "streaming", health.lagBytes, health.lagS) : nil
                },
                handshakeAgeS: node.wireguard.handshakeAgeS)
        }
    }
}
