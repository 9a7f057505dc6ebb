import AsyncAlgorithms
import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import Foundation
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// The lead's view of every node's connectivity: the latest result per node and service, in
/// memory (nodes report again every few seconds); a state change is a `connectivity.changed`
/// event.
actor ConnectivityBoard {
    let store: any EventStore
    let hub: EventHub
    let logger: Logger
    /// Node name → service name → latest result. Lost on restart: nodes report again within 15 s.
    private var matrix: [String: [String: ProbeResult]] = [:]

    init(store: any EventStore, hub: EventHub, logger: Logger) {
        self.store = store
        self.hub = hub
        self.logger = logger
    }

    /// The most services one node may report on (its profile's probes), in one report and in all.
    static let maxServices = 64

    /// A node's latest results; changed states become events (written before they count).
    /// Called by the report inbox (a node's outbox), the connectivity route, and on the lead by
    /// its own ``ConnectivityService``. Refuses (400) more than ``maxServices`` services or
    /// malformed names; a store failure (503) leaves the board as it was, so the node's next
    /// report brings the change again.
    func report(_ node: String, _ results: [ProbeResult]) async throws(Refusal) {
        guard results.count <= Self.maxServices else {
            throw Refusal.badRequest(
                "results has \(results.count) entries; the cap is \(Self.maxServices) services per node")
        }
        for (index, result) in results.enumerated() {
            do throws(MeshError) {
                try InputRules.identifier(result.service, field: "results[\(index)].service", maxBytes: 64)
                try InputRules.identifier(result.url, field: "results[\(index)].url", maxBytes: 2048)
                if let error = result.error {
                    try InputRules.freeText(error, field: "results[\(index)].error", maxBytes: 4096)
                }
            } catch {
                throw Refusal.badRequest(error.message)
            }
            guard !result.service.isEmpty else {
                throw Refusal.badRequest("results[\(index)].service must not be empty")
            }
        }
        var drafts: [EventLog.Draft] = []
        var updated = matrix[node] ?? [:]
        let services = Set(updated.keys).union(results.map(\.service))
        guard services.count <= Self.maxServices else {
            throw Refusal.badRequest(
                "node '\(node)' would report on \(services.count) services; the cap is \(Self.maxServices) services per node"
            )
        }
        for result in results {
            let before = updated[result.service]?.state
            if before != result.state {
                var data: [String: JSONValue] = [
                    "service": .string(result.service), "to": .string(result.state.rawValue),
                    "from": before.map { .string($0.rawValue) } ?? .null,
                ]
                if let latency = result.latencyMs { data["latency_ms"] = .number(latency) }
                if let error = result.error { data["error"] = .string(String(error.prefix(200))) }
                drafts.append(EventLog.Draft(type: EventType.connectivityChanged, node: node, data: data))
            }
            updated[result.service] = result
        }
        if !drafts.isEmpty {
            do { try await store.append(drafts, published: { [hub] in hub.publish($0) }) } catch {
                throw Refusal.storeUnavailable(error)
            }
        }
        matrix[node] = updated
    }

    /// Every node's latest results, for `GET /api/connectivity/status` and (summarized) `.../health`.
    func status() -> ConnectivityMatrix { ConnectivityMatrix(nodes: matrix) }
}

/// Probes the external APIs this node's profile lists and reports the results to the lead
/// (or, on the lead, to its board): at once when a state changes, and every 15 s anyway.
final class ConnectivityService: Service {
    let config: NodeConfig
    let logger: Logger
    /// Where results go: the lead's board, or (on other nodes) the outbox when a state changed
    /// and a signed POST to the lead otherwise. The flag says a state changed since the last
    /// delivered report.
    let deliver: @Sendable ([ProbeResult], Bool) async -> Bool
    /// Each probe's latest result by probe name; read by `latest` for reports.
    private let results = Mutex<[String: ProbeResult]>([:])

    init(config: NodeConfig, logger: Logger, deliver: @escaping @Sendable ([ProbeResult], Bool) async -> Bool) {
        self.config = config
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "connectivity"
        self.logger = logger
        self.deliver = deliver
    }

    /// The latest result of each probe.
    var latest: [ProbeResult] { results.withLock { Array($0.values) }.sorted { $0.service < $1.service } }

    /// The probe loop: ticks at a quarter of the shortest probe interval (50 ms to 1 s), runs the
    /// probes that are due in parallel, and delivers the results when a state changed (until a
    /// delivery succeeds) or 15 s after the last one. A failed delivery is retried on the next tick.
    func run() async throws {
        guard !config.probes.isEmpty else { return }
        var due = Dictionary(uniqueKeysWithValues: config.probes.map { ($0.name, ContinuousClock.now) })
        var lastReport: ContinuousClock.Instant?
        var pending = false
        let tick = Duration.milliseconds(Int64(max(50, min(1000, (config.probes.map(\.intervalS).min() ?? 1) * 250))))
        for await _ in AsyncTimerSequence(interval: tick, clock: .continuous).cancelOnGracefulShutdown() {
            let now = ContinuousClock.now
            let ready = config.probes.filter { due[$0.name].map { $0 <= now } ?? true }
            for probe in ready { due[probe.name] = now + .milliseconds(Int64(probe.intervalS * 1000)) }
            if !ready.isEmpty {
                let outcomes = await withTaskGroup(of: ProbeResult.self) { group in
                    for probe in ready { group.addTask { await Self.check(probe) } }
                    return await group.reduce(into: [ProbeResult]()) { $0.append($1) }
                }
                let changed = results.withLock { current in
                    var changed = false
                    for outcome in outcomes {
                        if current[outcome.service]?.state != outcome.state { changed = true }
                        current[outcome.service] = outcome
                    }
                    return changed
                }
                if changed {
                    pending = true
                    for outcome in outcomes {
                        logger.info(
                            "probe",
                            metadata: [
                                "nodeagent.service": "\(outcome.service)",
                                "nodeagent.state": "\(outcome.state.rawValue)",
                            ])
                    }
                }
            }
            if pending || lastReport.map({ $0.duration(to: now) >= .seconds(15) }) ?? true {
                if await deliver(latest, pending) {
                    pending = false
                    lastReport = now
                }
            }
        }
    }

    /// One probe: healthy (expected status in time), degraded (slow, or another status below
    /// 500), down (no answer, refused, timed out, 5xx).
    static func check(_ probe: ConnectivityProbe) async -> ProbeResult {
        var request = HTTPClientRequest(url: probe.url)
        request.method = HTTPMethod(rawValue: probe.method)
        let started = ContinuousClock.now
        let checkedAt = ISOTime.string(Date())
        do {
            let response = try await LeadClient.http.execute(
                request, timeout: .milliseconds(Int64(probe.timeoutS * 1000)))
            _ = try await response.body.collect(upTo: 1 << 20)
            let latency = (Double(started.duration(to: .now) / .microseconds(1)) / 1000).rounded(toPlaces: 1)
            let status = Int(response.status.code)
            let state: ConnectivityState =
                status >= 500
                ? .down : status != probe.expectStatus || latency > probe.degradedMs ? .degraded : .healthy
            return ProbeResult(
                service: probe.name, url: probe.url, state: state, latencyMs: latency, status: status,
                error: status == probe.expectStatus ? nil : "status \(status), expected \(probe.expectStatus)",
                checkedAt: checkedAt)
        } catch {
            return ProbeResult(
                service: probe.name, url: probe.url, state: .down, latencyMs: nil, status: nil,
                error: AuroraClientError.reason(error),
                checkedAt: checkedAt)
        }
    }
}
