import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import Mesh
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Watches the local PostgreSQL server (`postgres.monitor`): samples it every
/// `postgres.interval_s` through libpq on its own thread (never the cooperative pool), judges
/// each sample with the pure ``ReplicaClassifier`` and publishes the result in ``AgentState``,
/// from where heartbeats, `/health`, `/api/postgres/health` and the load-balancer checks read it.
///
/// When the server is meant to be the primary, a second thread writes the heartbeat row
/// (`aurora_replica_heartbeat`) every second, so a standby measures its time lag from it and an
/// idle primary shows no false lag.
final class ReplicaMonitor: Service, Sendable {
    /// One row (`id = 1`, `at`, `node`) on the primary, replicated to every standby; created by
    /// the writer on first use.
    static let heartbeatTable = "aurora_replica_heartbeat"

    let config: PostgresMonitorConfig
    let state: AgentState
    let logger: Logger
    private let sampler = NIOThreadPool(numberOfThreads: 1)
    private let writer = NIOThreadPool(numberOfThreads: 1)
    /// Used only on the sampler thread (and the writer's only on the writer thread).
    private let samplerConnection = Mutex<PostgresConnection?>(nil)
    private let writerConnection = Mutex<PostgresConnection?>(nil)
    /// When the sampler has been busy with one sample longer than this, the server counts as down.
    private var sampleTimeout: Duration { .milliseconds(Int64(max(3, config.interval * 2) * 1000)) }

    init(config: PostgresMonitorConfig, state: AgentState, logger: Logger) {
        self.config = config
        self.state = state
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "postgres"
        self.logger = logger
    }

    /// The service: the sampling loop and, when the server is meant to be the primary, the
    /// heartbeat-row loop, until graceful shutdown; then both connections and threads go.
    /// Nothing here throws: an unreachable server is a `down` sample, not an error.
    func run() async throws {
        sampler.start()
        writer.start()
        await withDiscardingTaskGroup { group in
            if config.expectPrimary {
                group.addTask { await self.writeHeartbeats() }
            }
            group.addTask { await self.sample() }
        }
        samplerConnection.withLock { $0 = nil }
        writerConnection.withLock { $0 = nil }
        try? await sampler.shutdownGracefully()
        try? await writer.shutdownGracefully()
    }

    // MARK: Sampling

    /// The sampling loop, every `postgres.interval_s`. A sample that does not come back within
    /// ``sampleTimeout`` counts as down, and no new one is submitted while it is stuck, so a hung
    /// server cannot pile up queries on the sampler thread. Logs each change of state once.
    private func sample() async {
        var classifier = ReplicaClassifier(thresholds: config.thresholds)
        let origin = ContinuousClock.now
        var lastState: ReplicaState?
        let interval = Duration.milliseconds(Int64(config.interval * 1000))
        var busy: SampleInFlight?
        for await _ in AsyncTimerSequence(interval: interval, clock: .continuous).cancelOnGracefulShutdown() {
            let now = origin.duration(to: .now)
            let at = Double(now.components.seconds) + Double(now.components.attoseconds) / 1e18
            let raw: RawSample
            if let pending = busy, !pending.done {
                // The previous query still waits on the server (frozen, or a network that eats
                // packets): that is down, whatever the thread is stuck in.
                raw = RawSample(
                    sample: ReplicaSample(
                        at: at, .down("the server has not answered for \(pending.age.components.seconds) s")))
            } else {
                let box = SampleInFlight()
                busy = box
                let deadline = sampleTimeout
                raw = await firstOf(
                    { deliver in
                        sampler.submit { [self] outcome in
                            let result: RawSample
                            if case .active = outcome {
                                result = Self.take(connection: samplerConnection, conninfo: config.conninfo, at: at)
                            } else {
                                result = RawSample(sample: ReplicaSample(at: at, .down("the monitor is stopping")))
                            }
                            box.finish()
                            deliver(result)
                        }
                    }, orAfter: deadline
                ) {
                    RawSample(sample: ReplicaSample(at: at, .down("no answer within \(deadline.components.seconds) s")))
                }
            }
            let verdict = classifier.classify(raw.sample)
            let health = Self.health(
                verdict, raw, thresholds: config.thresholds, slotLimit: config.slotMaxRetainedBytes)
            state.setPostgres(health)
            if verdict.state != lastState {
                let level: Logger.Level =
                    lastState == nil || verdict.state == .streaming || verdict.state == .primary ? .info : .warning
                logger.log(
                    level: level, "replica state",
                    metadata: [
                        "nodeagent.state": "\(verdict.state.rawValue)",
                        "nodeagent.from": "\(lastState?.rawValue ?? "none")",
                        "nodeagent.reason": "\(verdict.reason)",
                    ])
                lastState = verdict.state
            }
        }
    }

    /// What one sample saw, beyond what the classifier needs.
    struct RawSample: Sendable {
        var sample: ReplicaSample
        var receiver: ReceiverView?
        var standbys: [StandbyView]?
        var slots: [SlotView]?
        var receiveLSN: String?
        var replayLSN: String?
    }

    /// One sample, on the sampler thread: connects when needed, drops the connection on error.
    static func take(connection holder: borrowing Mutex<PostgresConnection?>, conninfo: String, at: Double) -> RawSample
    {
        do throws(AgentError) {
            return try using(holder, conninfo: conninfo, setup: ["SET statement_timeout = 5000"]) {
                connection throws(AgentError) in
                try query(connection, at: at)
            }
        } catch {
            return RawSample(sample: ReplicaSample(at: at, .down(error.message)))
        }
    }

    /// Runs `body` on the held connection, connecting (and running `setup`) when there is none
    /// or it broke; a failure drops the connection so the next call connects again.
    static func using<R>(
        _ holder: borrowing Mutex<PostgresConnection?>, conninfo: String, setup: [String],
        _ body: (PostgresConnection) throws(AgentError) -> R
    ) throws(AgentError) -> R {
        let connection: PostgresConnection
        if let existing = holder.withLock({ $0 }), existing.isConnected {
            connection = existing
        } else {
            connection = try PostgresConnection(conninfo: conninfo, connectTimeoutSeconds: 2)
            for statement in setup { _ = try connection.execute(statement) }
            holder.withLock { $0 = connection }
        }
        do {
            return try body(connection)
        } catch {
            holder.withLock { $0 = nil }
            throw error
        }
    }

    /// Asks whether the server is in recovery; a primary goes on to ``primary(_:at:)``, a standby
    /// reads its WAL receiver, the LSNs received and replayed, and the heartbeat row's age (time lag).
    private static func query(_ connection: PostgresConnection, at: Double) throws(AgentError) -> RawSample {
        let row =
            try connection.execute(
                """
                SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
                       r.status, r.latest_end_lsn::text, r.sender_host, r.sender_port::text,
                       extract(epoch FROM clock_timestamp() - r.last_msg_receipt_time)::float8::text, r.slot_name,
                       to_regclass('\(heartbeatTable)') IS NOT NULL
                FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
                """
            ).rows.first ?? []
        func column(_ index: Int) -> String? { index < row.count ? row[index] : nil }
        guard column(0) == "f" || column(0) == "t" else {
            throw AgentError(.store, "unexpected answer to the sample query")
        }
        if column(0) == "f" {
            return try primary(connection, at: at)
        }
        var heartbeatAge: Double?
        if column(9) == "t" {
            heartbeatAge = try connection.execute(
                "SELECT extract(epoch FROM clock_timestamp() - at)::float8::text FROM \(heartbeatTable) WHERE id = 1"
            ).scalar.flatMap(Double.init)
        }
        let status = column(3)
        let sender = column(5).map { host in column(6).map { "\(host):\($0)" } ?? host }
        let standby = ReplicaSample.Standby(
            receiverStatus: status, receiveLSN: column(1).flatMap(LSN.init), replayLSN: column(2).flatMap(LSN.init),
            primaryEndLSN: column(4).flatMap(LSN.init), lastMessageAgeS: column(7).flatMap(Double.init),
            heartbeatAgeS: heartbeatAge)
        return RawSample(
            sample: ReplicaSample(at: at, .standby(standby)),
            receiver: status.map {
                ReceiverView(
                    status: $0, sender: sender, lastMsgAgeS: column(7).flatMap(Double.init).map(Self.round),
                    slot: column(8))
            },
            receiveLSN: column(1), replayLSN: column(2))
    }

    /// A primary's standbys (`pg_stat_replication`: lag in bytes and seconds) and its replication
    /// slots with the WAL each retains, in bytes.
    private static func primary(_ connection: PostgresConnection, at: Double) throws(AgentError) -> RawSample {
        let standbys = try connection.execute(
            """
            SELECT r.application_name, host(r.client_addr), r.state, r.sent_lsn::text, r.write_lsn::text, r.flush_lsn::text,
                   r.replay_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint::text,
                   extract(epoch FROM r.write_lag)::float8::text, extract(epoch FROM r.flush_lag)::float8::text,
                   extract(epoch FROM r.replay_lag)::float8::text, s.slot_name
            FROM pg_stat_replication AS r LEFT JOIN pg_replication_slots AS s ON s.active_pid = r.pid
            ORDER BY r.application_name, r.pid
            """
        ).rows.map { row in
            StandbyView(
                applicationName: row[0] ?? "", clientAddr: row[1], state: row[2] ?? "unknown", sentLSN: row[3],
                writeLSN: row[4],
                flushLSN: row[5], replayLSN: row[6], lagBytes: row[7].flatMap { Int64($0) },
                writeLagS: row[8].flatMap(Double.init).map(round), flushLagS: row[9].flatMap(Double.init).map(round),
                replayLagS: row[10].flatMap(Double.init).map(round), slot: row[11])
        }
        let slots = try connection.execute(
            """
            SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text
            FROM pg_replication_slots ORDER BY slot_name
            """
        ).rows.map { row in
            SlotView(name: row[0] ?? "", active: row[1] == "t", retainedBytes: row[2].flatMap { Int64($0) })
        }
        return RawSample(sample: ReplicaSample(at: at, .primary), standbys: standbys, slots: slots)
    }

    /// The API's view of a verdict and what the sample saw.
    /// `degraded` is true for every state but `streaming` and `primary`, and for those too when
    /// an inactive slot retains more than `slotLimit` bytes of WAL.
    static func health(
        _ verdict: ReplicaVerdict, _ raw: RawSample, thresholds: ReplicaThresholds, slotLimit: UInt64,
        now: Date = Date()
    ) -> ReplicaHealth {
        let role: ReplicaHealth.Role =
            switch raw.sample.server {
            case .down: .unknown
            case .primary: .primary
            case .standby: .replica
            }
        let inactive = raw.slots.map { slots in
            SlotCheck.inactive(
                slots.map {
                    SlotCheck.Slot(
                        name: $0.name, active: $0.active, retainedBytes: $0.retainedBytes.map { UInt64(max(0, $0)) })
                },
                retainingMoreThan: slotLimit
            )
            .map { SlotView(name: $0.name, active: false, retainedBytes: $0.retainedBytes.map { Int64($0) }) }
        }
        let degraded =
            switch verdict.state {
            case .streaming, .primary: !(inactive ?? []).isEmpty
            default: true
            }
        return ReplicaHealth(
            role: role, state: verdict.state.rawValue, reason: verdict.reason, degraded: degraded,
            lagBytes: verdict.lagBytes.map { Int64(clamping: $0) }, lagS: verdict.lagS.map(round),
            receiveLSN: raw.receiveLSN, replayLSN: raw.replayLSN, receiver: raw.receiver, standbys: raw.standbys,
            slots: raw.slots,
            inactiveSlots: inactive, sampledAt: ISOTime.string(now), maxLagS: thresholds.maxLagS,
            maxLagBytes: Int64(clamping: thresholds.maxLagBytes))
    }

    /// Seconds to the millisecond, as the API shows lags.
    static func round(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }

    // MARK: Heartbeat row

    /// Every second, while the server is a primary: upsert the heartbeat row.
    private func writeHeartbeats() async {
        var failing = false
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            guard state.postgres?.health.role == .primary else { continue }
            let error: String? = await firstOf(
                { deliver in
                    writer.submit { [self] outcome in
                        guard case .active = outcome else { return deliver(nil) }
                        deliver(
                            Self.writeHeartbeat(
                                connection: writerConnection, conninfo: config.conninfo, node: state.config.name))
                    }
                }, orAfter: .seconds(3)
            ) { "no answer within 3 s" }
            if let error, !failing {
                logger.warning(
                    "cannot write the replica heartbeat row; standbys may show time lag",
                    metadata: ["nodeagent.error": "\(error)"])
            } else if error == nil, failing {
                logger.info("replica heartbeat row written again")
            }
            failing = error != nil
        }
    }

    /// One upsert of the heartbeat row with the server's clock (`clock_timestamp()`), on the writer
    /// thread, with a 2 s statement timeout; returns the error's message, nil when it was written.
    static func writeHeartbeat(connection holder: borrowing Mutex<PostgresConnection?>, conninfo: String, node: String)
        -> String?
    {
        do throws(AgentError) {
            let setup = [
                "SET statement_timeout = 2000",
                "CREATE TABLE IF NOT EXISTS \(heartbeatTable) (id integer PRIMARY KEY, at timestamptz NOT NULL, node text NOT NULL)",
            ]
            _ = try using(holder, conninfo: conninfo, setup: setup) { connection throws(AgentError) in
                try connection.execute(
                    """
                    INSERT INTO \(heartbeatTable) VALUES (1, clock_timestamp(), $1)
                    ON CONFLICT (id) DO UPDATE SET at = excluded.at, node = excluded.node
                    """, [node], prepared: "replica_heartbeat")
            }
            return nil
        } catch {
            return error.message
        }
    }
}

/// Whether a sample submitted to the sampler thread has come back, and since when it waits.
final class SampleInFlight: Sendable {
    private let finished = Atomic<Bool>(false)
    private let started = ContinuousClock.now

    /// True once the sampler thread delivered, even after ``firstOf(_:orAfter:_:)`` gave up waiting.
    var done: Bool { finished.load(ordering: .acquiring) }
    /// How long since the sample was submitted.
    var age: Duration { started.duration(to: .now) }

    func finish() { finished.store(true, ordering: .releasing) }
}
