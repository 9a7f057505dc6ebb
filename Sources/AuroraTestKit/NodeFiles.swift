/// Node files (`--config`) the integration tests give their agents, as text.
public enum NodeFiles {
    /// Heartbeats every 0.5 s; suspect after 2 missed, dead after 4.
    public static let fastHeartbeats = "heartbeat: {interval_s: 0.5, suspect_after: 2, dead_after: 4}\n"

    /// An exec worker with one static 24 GB GPU (`uuid`), 512 MB of it in use.
    public static func execWorker(gpu uuid: String) -> String {
        """
        gpu:
          allow_exec: true
        gpus:
          - {index: 0, uuid: \(uuid), name: NVIDIA GeForce RTX 4090, memory_total_mb: 24000, memory_used_mb: 512}

        """
    }

    /// Watches the PostgreSQL server at `conninfo` (a replica), sampled every 0.5 s.
    public static func replicaWatcher(_ conninfo: String) -> String {
        """
        postgres:
          monitor: "\(conninfo)"
          interval_s: 0.5

        """
    }
}
