import Metrics
import Prometheus

/// The `# HELP` text of every metric the agent exports, by name. swift-metrics has no help text,
/// so ``HelpfulMetricsFactory`` looks it up here when a metric is first made; a metric missing
/// from this table is exported without `# HELP` (a unit test finds such names in the sources).
public enum MetricHelp {
    public static let text: [String: String] = [
        // Every agent
        "aurora_uptime_seconds": "Seconds since this agent started.",
        "aurora_http_requests_total": "HTTP requests answered, by method, route and status class.",
        "aurora_http_request_duration_seconds": "Time to answer an HTTP request, by method and route.",
        "aurora_outbox_appended_total": "Reports written to this node's durable outbox.",
        "aurora_outbox_pending": "Reports in the outbox that the lead has not taken yet.",
        "aurora_outbox_delivery_failures_total": "Failed attempts to deliver outbox reports to the lead.",
        // Compute and edge nodes
        "aurora_heartbeats_sent_total": "Heartbeats this node sent to its lead.",
        "aurora_heartbeat_failures_total": "Heartbeats to the lead that failed (the lead away or refusing).",
        "aurora_worker_jobs_total": "Jobs this node's GPU worker finished, by outcome.",
        // The lead
        "aurora_gateway_requests_total": "Gateway (/v1/) calls answered, by key (or caller) and model.",
        "aurora_gateway_tokens_total":
            "Tokens of gateway calls as the backends reported them, by key (or caller), model and kind (prompt, completion).",
        "aurora_gateway_rate_limited_total": "Gateway calls refused because a key's rpm or tpm was spent.",
        "aurora_store_up": "1 while the lead's PostgreSQL store answers, else 0.",
        "aurora_redis_up": "1 while the Redis event publisher is connected, else 0.",
        "aurora_redis_events_written_total": "Events written to the Redis stream aurora:events.",
        "aurora_heartbeats_total": "Heartbeats the lead accepted from its nodes.",
        "aurora_signed_requests_refused_total":
            "Node-signed requests the lead refused (bad key, stale, replayed, removed).",
        "aurora_reports_total": "Node reports the lead received, by status.",
        "aurora_jobs_submitted_total": "GPU jobs submitted to the lead.",
        "aurora_jobs_finished_total": "GPU jobs a worker finished, by state (succeeded, failed).",
        "aurora_job_queue_wait_seconds": "Time a finished GPU job waited from submission to its start, by priority.",
        "aurora_job_run_seconds": "Time a finished GPU job ran on its node, by priority.",
        "aurora_store_query_duration_seconds":
            "Time of a call on the lead's PostgreSQL store (a query or a transaction, with the wait for the store's thread).",
        "aurora_heartbeat_rtt_seconds": "Round trip of a heartbeat this node sent to its lead, answered.",
        "aurora_secrets_audit_failures_total":
            "Secret reads refused and writes failed because their audit record could not be stored.",
        "aurora_tls_certificate_expiry_timestamp_seconds":
            "When this agent's TLS certificate expires (Unix seconds; agents with a TLS listener only).",
        "aurora_jobs_oldest_queued_seconds": "Seconds the longest-waiting queued GPU job has waited (0: none queued).",
        "aurora_jobs_requeued_total": "GPU jobs requeued (node dead or left, lease expired, worker refusal).",
        "aurora_jobs_queued": "GPU jobs waiting for a placement.",
        "aurora_jobs_placed": "GPU jobs assigned to or running on a node.",
        "aurora_node_state":
            "1 for the state each node of the registry is in (alive, suspect, away, dead, left), 0 for the others.",
        "aurora_gpu_vram_total_mb": "A node's GPU memory in MB, as the node reports it.",
        "aurora_gpu_vram_used_mb": "A node's GPU memory in MB used by processes, as the node reports it.",
        "aurora_gpu_vram_reserved_mb": "A node's GPU memory in MB reserved by the jobs the lead placed there.",
        "aurora_gpu_utilization_pct": "A node's GPU utilisation in percent, as the node reports it.",
        "aurora_postgres_replica_streaming":
            "1 while a node's PostgreSQL replica streams from its primary, else 0 (nodes with a replica only).",
        "aurora_postgres_replica_lag_bytes": "WAL bytes a node's PostgreSQL replica has not replayed yet.",
        "aurora_postgres_replica_lag_seconds": "Seconds a node's PostgreSQL replica's replay is behind its primary.",
        "aurora_wireguard_handshake_age_seconds": "Seconds since the lead's last WireGuard handshake with a node.",
        "aurora_webhook_deliveries_total": "Events an alert webhook delivered (answered 2xx), by webhook.",
        "aurora_webhook_failures_total": "Failed attempts to deliver an event to an alert webhook, by webhook.",
        "aurora_webhook_failing": "1 while an alert webhook has failed three times in a row, else 0, by webhook.",
        "aurora_webhook_cursor_seq": "The last event sequence number an alert webhook delivered, by webhook.",
        "aurora_relay_pairs": "Pairs of nodes behind NAT this agent relays now (relay.enabled).",
        "aurora_relay_forwarded_datagrams_total":
            "WireGuard datagrams this relay forwarded between the sides of its pairs.",
        "aurora_relay_forwarded_bytes_total": "Bytes of WireGuard datagrams this relay forwarded.",
        "aurora_relay_dropped_datagrams_total":
            "Datagrams this relay did not forward: not WireGuard, from a host that is not the side's, or for a side not seen yet.",
    ]

    /// The help for `name`; "" (no `# HELP` line) for a name the table does not have.
    public static func help(_ name: String) -> String { text[name] ?? "" }

    /// `name` (used whole) with its help, as swift-prometheus takes them.
    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help(name))
    }
}

/// swift-metrics to swift-prometheus, as `PrometheusMetricsFactory` does, but every family gets
/// its `# HELP` line from ``MetricHelp``. Removals go through the Prometheus factory.
public struct HelpfulMetricsFactory: CoreMetrics.MetricsFactory {
    let base: PrometheusMetricsFactory
    var registry: PrometheusCollectorRegistry { base.registry }

    public init(registry: PrometheusCollectorRegistry) {
        self.base = PrometheusMetricsFactory(registry: registry)
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: MetricHelp.descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)])
        -> any FloatingPointCounterHandler
    {
        registry.makeCounter(descriptor: MetricHelp.descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else {
            return registry.makeGauge(descriptor: MetricHelp.descriptor(label), labels: dimensions)
        }
        return registry.makeValueHistogram(
            descriptor: MetricHelp.descriptor(label), labels: dimensions,
            buckets: base.valueHistogramBuckets[label] ?? base.defaultValueHistogramBuckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: MetricHelp.descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: MetricHelp.descriptor(label), labels: dimensions,
            buckets: base.durationHistogramBuckets[label] ?? base.defaultDurationHistogramBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        base.destroyFloatingPointCounter(handler)
    }
    public func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
