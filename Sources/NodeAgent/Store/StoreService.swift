import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics
import ServiceLifecycle
import Synchronization

/// Owns the lead's store for the agent's lifetime: starts (or reuses) the managed cluster or
/// connects to the external one, runs migrations, watches the connection every two seconds,
/// and on shutdown closes the connection and stops the managed cluster.
final class StoreService: Service {
    /// The lead's one store, shared by the registry, jobs, secrets, backups and the event log.
    let store: Store
    /// The cluster in `DATA/postgres` when `store.url` is empty; nil for an external store.
    let managed: ManagedPostgres?
    let state: AgentState
    let logger: Logger
    private let up = Gauge(label: "aurora_store_up")
    /// Called after every reconnect (a lead checks its term and the lead lock again).
    private let reconnected = Mutex<(@Sendable () async -> Void)?>(nil)

    /// Sets what runs after every reconnect.
    func setReconnected(_ action: @escaping @Sendable () async -> Void) { reconnected.withLock { $0 = action } }

    /// Connects to nothing yet; for a managed store it finds the PostgreSQL binaries and checks the
    /// socket path, throwing ``AgentError`` with code `store` before any service starts.
    init(config: NodeConfig, state: AgentState, logger: Logger) throws(AgentError) {
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "store"
        if let url = config.storeURL {
            if let listen = config.storeReplicationListen {
                throw AgentError(
                    .config,
                    "store.replication_listen (\(listen)) is for a managed store; with store.url the standbys share that store"
                )
            }
            self.managed = nil
            self.store = Store(conninfo: url)
        } else {
            let managed = try ManagedPostgres(
                dataDir: config.dataDir, binDirectory: config.pgBinDirectory, runAs: config.storeRunAs, logger: logger,
                replication: Self.replicationListener(config: config))
            self.managed = managed
            self.store = Store(conninfo: managed.conninfo)
        }
        self.state = state
        self.logger = logger
    }

    /// The replication listener `store.replication_listen` asks for, serving the agent's own TLS
    /// certificate (`DATA/keys/tls.crt` and `tls.key`, which standbys pin); nil without the key.
    static func replicationListener(config: NodeConfig) -> ReplicationListener? {
        config.storeReplicationListen.map {
            ReplicationListener(
                host: $0.host, port: $0.port, certificatePath: config.dataDir + "/keys/tls.crt",
                keyPath: config.dataDir + "/keys/tls.key")
        }
    }

    /// The service's life: ``startUp()``, then a health probe every 2 s until the agent shuts
    /// down, then ``shutDown()``. A failed start is recorded in `/health` and thrown, which stops
    /// the agent: a lead without its store cannot serve.
    func run() async throws {
        do {
            guard try await startUp() else {  // shut down before the store ever answered
                await shutDown()
                return
            }
        } catch {
            state.updateStore {
                $0.state = .failed; $0.message = error.message
            }
            await shutDown()
            throw error
        }
        // Ends on graceful shutdown or cancellation; either way the store stops cleanly below.
        for await _ in AsyncTimerSequence(interval: .seconds(2), clock: .continuous).cancelOnGracefulShutdown() {
            await watch()
        }
        await shutDown()
    }

    /// Managed: start or reuse the cluster (fatal on failure). External: retry the connection
    /// with backoff until it answers; the agent keeps serving meanwhile. Returns false when a
    /// graceful shutdown came first.
    private func startUp() async throws(AgentError) -> Bool {
        let started = ContinuousClock.now
        if let managed {
            _ = try await managed.start()
            try await store.onStoreThread { () throws(AgentError) in try managed.createDatabaseIfNeeded() }
            try await store.connect()
        } else {
            var delay = Duration.milliseconds(250)
            while true {
                do {
                    try await store.connect()
                    break
                } catch {
                    state.updateStore {
                        $0.state = .failed; $0.message = error.message
                    }
                    logger.warning(
                        "store not reachable; retrying",
                        metadata: [
                            "nodeagent.error": "\(error.message)", "nodeagent.retry_ms": "\(delay.milliseconds)",
                        ])
                    let wait = delay
                    do {
                        try await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
                    } catch {
                        return false
                    }
                    delay = min(delay * 2, .seconds(5))
                }
            }
        }
        let version = try await Migrations.run(on: store, logger: logger)
        let meshID = try await ensureMeshRow()
        state.setMeshID(meshID)
        state.updateStore { $0 = .init(state: .ok, mode: $0.mode, schemaVersion: version, message: nil) }
        up.record(1)
        logger.info(
            "store ready",
            metadata: [
                "nodeagent.schema": "\(version)", "nodeagent.ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        return true
    }

    /// The mesh's id: made (a new UUID, with this lead's name) the first time, read ever after.
    private func ensureMeshRow() async throws(AgentError) -> String {
        try await store.query(
            "INSERT INTO mesh (mesh_id, lead_name) VALUES ($1, $2) ON CONFLICT (singleton) DO NOTHING",
            [UUID().uuidString.lowercased(), state.config.name])
        guard let id = try await store.query("SELECT mesh_id FROM mesh").scalar else {
            throw AgentError(.store, "the mesh row is missing after insert")
        }
        return id
    }

    /// One health probe; reconnects (and restarts a managed server that died) when it fails.
    private func watch() async {
        if await store.ping() {
            if state.store.state != .ok {
                state.updateStore {
                    $0.state = .ok; $0.message = nil
                }
                logger.notice("store reachable again")
            }
            up.record(1)
            return
        }
        up.record(0)
        state.updateStore {
            $0.state = .failed; $0.message = "store connection lost; reconnecting"
        }
        logger.error("store connection lost; reconnecting")
        do {
            if let managed, !(await managed.isRunning()) { _ = try await managed.start() }
            try await store.connect()
            state.updateStore {
                $0.state = .ok; $0.message = nil
            }
            up.record(1)
            logger.notice("store reconnected")
            await reconnected.withLock { $0 }?()
        } catch {
            state.updateStore { $0.message = error.message }
        }
    }

    /// Marks the store `stopping` for `/health`, closes the connection after the calls already
    /// queued, and stops a managed cluster (`pg_ctl stop -m fast`); a failed stop is only logged.
    private func shutDown() async {
        state.updateStore { $0.state = .stopping }
        await store.close()
        if let managed {
            do { try await managed.stop() } catch {
                logger.error("could not stop the managed PostgreSQL", metadata: ["nodeagent.error": "\(error.message)"])
            }
        }
        up.record(0)
    }
}
