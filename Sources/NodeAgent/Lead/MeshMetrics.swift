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

    /// The values a scrape of `nodes` exports, by series (pure, for tests).
    static func values(_ nodes: [NodeSample]) -> [Series: Double] {
        var values: [Series: Double] = [:]
        for node in nodes {
            for state in states {
                values[Series(name: "aurora_node_state", labels: [node.name, state.rawValue])] =
                    node.state == state ? 1 : 0
            }
            for gpu in node.gpus {
                let labels = [node.name, String(gpu.index)]
                values[Series(name: "aurora_gpu_vram_total_mb", labels: labels)] = Double(gpu.totalMB)
                values[Series(name: "aurora_gpu_vram_used_mb", labels: labels)] = Double(gpu.usedMB)
                values[Series(name: "aurora_gpu_vram_reserved_mb", labels: labels)] = Double(gpu.reservedMB)
                values[Series(name: "aurora_gpu_utilization_pct", labels: labels)] = Double(gpu.utilizationPct)
            }
            if let replica = node.replica {
                values[Series(name: "aurora_postgres_replica_streaming", labels: [node.name])] =
                    replica.streaming ? 1 : 0
                if let bytes = replica.lagBytes {
                    values[Series(name: "aurora_postgres_replica_lag_bytes", labels: [node.name])] = Double(bytes)
                }
                if let seconds = replica.lagS {
                    values[Series(name: "aurora_postgres_replica_lag_seconds", labels: [node.name])] = seconds
                }
            }
            if let age = node.handshakeAgeS {
                values[Series(name: "aurora_wireguard_handshake_age_seconds", labels: [node.name])] = age
            }
        }
        return values
    }

    /// `values` in Prometheus's text format: each family once, by name, with its `# HELP` and
    /// `# TYPE` lines, its series ordered by label values. Written here rather than kept as one
    /// swift-prometheus gauge per series: the registry copies a family on every new series, which
    /// made a lead's first scrape of 10,000 nodes take over 30 s.
    static func render(_ values: [Series: Double]) -> [UInt8] {
        var text = ""
        let families = Dictionary(grouping: values.keys, by: \.name)
        for name in families.keys.sorted() {
            let help = MetricHelp.help(name)
            if !help.isEmpty { text += "# HELP \(name) \(help)\n" }
            text += "# TYPE \(name) gauge\n"
            for series in families[name, default: []].sorted(by: { $0.labels.lexicographicallyPrecedes($1.labels) }) {
                let labels = dimensions(series).map { "\($0.0)=\"\(escaped($0.1))\"" }.joined(separator: ",")
                text += "\(name){\(labels)} \(values[series] ?? 0)\n"
            }
        }
        return Array(text.utf8)
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
        return render(values(samples(list, status: try? await lead.jobs.status())))
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
