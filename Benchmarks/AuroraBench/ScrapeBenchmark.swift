import AsyncHTTPClient
import AuroraAPI
import AuroraTestKit
import Foundation

/// `aurora-bench scrape`: what Prometheus pays to scrape one agent. A lead with `nodes`
/// simulated compute nodes (each with a GPU, so the lead exports its per-node and per-GPU
/// series) is scraped `scrapes` times one after another, as a Prometheus would: each
/// `GET /metrics`'s duration and size. With 0 nodes it is an agent's own metrics alone.
struct ScrapeBenchmark: Sendable {
    struct Report: Codable, Sendable {
        var nodes: Int
        var scrapes: Int
        var p50Ms: Double
        var p99Ms: Double
        var maxMs: Double
        /// The last scrape's body.
        var bytes: Int
        var series: Int

        enum CodingKeys: String, CodingKey {
            case nodes, scrapes, bytes, series
            case p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms"
        }
    }

    var executable: String
    var nodes: Int
    var scrapes: Int
    var progress: @Sendable (String) -> Void

    func run() async throws -> Report {
        let lead = try await BenchLead.start("scrape", executable: executable)
        defer { lead.discard() }
        try await lead.joinIdleSimulated(nodes, progress: progress)
        progress("scraping \(scrapes) times…")
        var durations: [Double] = []
        var text = ""
        for _ in 0..<scrapes {
            let started = ContinuousClock.now
            let answer = try await http(lead.baseURL + Routes.metrics, timeout: .seconds(10))
            durations.append(Measurements.ms(started.duration(to: .now)))
            guard answer.status == 200 else { throw TestKitError("GET /metrics answered \(answer.status)") }
            text = answer.text
        }
        let series = text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.count
        guard nodes == 0 || text.contains("aurora_node_state{node=\"sim-\(nodes - 1)\"") else {
            throw TestKitError("the scrape lacks the simulated nodes' series")
        }
        let sorted = durations.sorted()
        return Report(
            nodes: nodes, scrapes: scrapes, p50Ms: Samples.percentile(sorted, 0.5),
            p99Ms: Samples.percentile(sorted, 0.99), maxMs: sorted.last ?? 0, bytes: text.utf8.count,
            series: series)
    }
}
