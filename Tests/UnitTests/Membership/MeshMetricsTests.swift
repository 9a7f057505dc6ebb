import AuroraAPI
import Foundation
import Testing

@testable import NodeAgent

@Suite("The lead's per-node metrics and every metric's help text")
struct MeshMetricsTests {
    @Test("one state series per state (1 for the node's), three VRAM series per GPU, reservations from the status")
    func values() {
        let gpu = GPU(
            index: 0, uuid: "GPU-0", name: "RTX 4090", memoryTotalMB: 24564, memoryUsedMB: 300, utilizationPct: 1)
        let node = Node(
            name: "gpu-1", role: .compute, company: "", vpnIP: "10.0.0.2", state: .suspect, lastSeen: "",
            labels: [:], wireguard: WireGuardPeer(publicKey: "", endpoint: nil, listenPort: 51820),
            capabilities: Capabilities(cpuCores: 4, memoryMB: 8192, os: "linux", arch: "x86_64", gpus: [gpu]),
            version: "", address: nil, joinedAt: "", signPublicKey: "", boxPublicKey: "", timing: nil)
        let status = GPUStatus(
            nodes: [
                .init(
                    name: "gpu-1", state: .suspect, accepting: true, allowExec: false,
                    gpus: [.init(gpu: gpu, reservedMB: 8000, freeVramMB: 16264)], running: 1)
            ], queued: 0, policy: "binpack")
        let values = MeshMetrics.values(
            MeshMetrics.samples(NodeList(nodes: [node], stale: false, lead: "lead-1"), status: status))
        func value(_ name: String, _ labels: [String]) -> Double? { values[.init(name: name, labels: labels)] }
        #expect(value("aurora_node_state", ["gpu-1", "suspect"]) == 1)
        for state in ["alive", "away", "dead", "left"] { #expect(value("aurora_node_state", ["gpu-1", state]) == 0) }
        #expect(value("aurora_gpu_vram_total_mb", ["gpu-1", "0"]) == 24564)
        #expect(value("aurora_gpu_vram_used_mb", ["gpu-1", "0"]) == 300)
        #expect(value("aurora_gpu_vram_reserved_mb", ["gpu-1", "0"]) == 8000)
        #expect(value("aurora_gpu_utilization_pct", ["gpu-1", "0"]) == 1)
        #expect(values.count == 5 + 4)
        #expect(MeshMetrics.values([]).isEmpty)
        #expect(
            MeshMetrics.dimensions(.init(name: "aurora_gpu_vram_used_mb", labels: ["gpu-1", "0"])).map(\.0) == [
                "node", "gpu",
            ])
    }

    @Test("a node's replica (streaming, lag) and the lead's handshake age with it are series by node alone")
    func replicaAndHandshake() {
        var replica = Node(
            name: "db-2", role: .compute, company: "", vpnIP: "10.0.0.3", state: .alive, lastSeen: "", labels: [:],
            wireguard: WireGuardPeer(publicKey: "", endpoint: nil, listenPort: 51820, handshakeAgeS: 42.5),
            capabilities: Capabilities(cpuCores: 4, memoryMB: 8192, os: "linux", arch: "x86_64", gpus: []),
            version: "", address: nil, joinedAt: "", signPublicKey: "", boxPublicKey: "", timing: nil)
        replica.postgres = ReplicaHealth(
            role: .replica, state: "catching_up", reason: "behind", degraded: true, lagBytes: 4096, lagS: 3.5,
            sampledAt: "")
        var primary = replica
        primary.name = "db-1"
        primary.wireguard.handshakeAgeS = nil
        primary.postgres = ReplicaHealth(role: .primary, state: "primary", reason: "", degraded: false, sampledAt: "")
        let values = MeshMetrics.values(
            MeshMetrics.samples(NodeList(nodes: [replica, primary], stale: false, lead: "lead-1"), status: nil))
        func value(_ name: String, _ node: String) -> Double? { values[.init(name: name, labels: [node])] }
        #expect(value("aurora_postgres_replica_streaming", "db-2") == 0)
        #expect(value("aurora_postgres_replica_lag_bytes", "db-2") == 4096)
        #expect(value("aurora_postgres_replica_lag_seconds", "db-2") == 3.5)
        #expect(value("aurora_wireguard_handshake_age_seconds", "db-2") == 42.5)
        // A primary has no replica series; no handshake, no age.
        #expect(value("aurora_postgres_replica_streaming", "db-1") == nil)
        #expect(value("aurora_wireguard_handshake_age_seconds", "db-1") == nil)
        #expect(
            MeshMetrics.dimensions(.init(name: "aurora_postgres_replica_lag_bytes", labels: ["db-2"])).map(\.0) == [
                "node"
            ])
    }

    @Test("rendered as Prometheus text: each family once with HELP and TYPE, nodes in name order, values escaped")
    func rendered() {
        let samples = [
            MeshMetrics.NodeSample(name: "b", state: .alive, gpus: []),
            MeshMetrics.NodeSample(
                name: "a", state: .dead, gpus: [(index: 0, totalMB: 100, usedMB: 1, reservedMB: 2, utilizationPct: 3)]),
            MeshMetrics.NodeSample(name: "q\"\\\n", state: .alive, gpus: [], handshakeAgeS: 2.5),
        ]
        let text = String(decoding: MeshMetrics.render(MeshMetrics.families(samples)), as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        // Each family once, by name, HELP then TYPE, before its series.
        let families = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(
            families == [
                "aurora_gpu_utilization_pct", "aurora_gpu_vram_reserved_mb", "aurora_gpu_vram_total_mb",
                "aurora_gpu_vram_used_mb", "aurora_node_state", "aurora_wireguard_handshake_age_seconds",
            ])
        #expect(lines.contains("# HELP aurora_node_state \(MetricHelp.help("aurora_node_state"))"))
        #expect(lines.contains(#"aurora_gpu_vram_total_mb{node="a",gpu="0"} 100.0"#))
        #expect(lines.contains(#"aurora_wireguard_handshake_age_seconds{node="q\"\\\n"} 2.5"#))
        let states = lines.filter { $0.hasPrefix("aurora_node_state{") }
        #expect(states.first == #"aurora_node_state{node="a",state="alive"} 0.0"#)
        #expect(states.count == 15 && states[5] == #"aurora_node_state{node="b",state="alive"} 1.0"#)
        // What is written is exactly what values() holds: one line per series.
        #expect(lines.filter { !$0.hasPrefix("#") }.count == MeshMetrics.values(samples).count)
        #expect(MeshMetrics.render([]).isEmpty)
    }

    @Test("every metric the sources make has a # HELP text")
    func helpForEveryMetric() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let pattern = try NSRegularExpression(pattern: #"(?:label: |name: )"(aurora_[a-z_]+)""#)
        var names = Set<String>()
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)
        while let file = files?.nextObject() as? URL {
            guard file.pathExtension == "swift", !file.path.contains("AuroraTestKit") else { continue }
            let text = try String(contentsOf: file, encoding: .utf8)
            for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                if let range = Range(match.range(at: 1), in: text) { names.insert(String(text[range])) }
            }
        }
        #expect(names.count > 15, "the scan found the metrics: \(names.sorted())")
        for name in names.sorted() {
            #expect(!MetricHelp.help(name).isEmpty, "\(name) has no help text in MetricHelp.text")
        }
    }
}
