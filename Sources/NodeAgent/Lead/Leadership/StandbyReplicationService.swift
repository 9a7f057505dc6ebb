import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import NIOPosix
import Secrets
import ServiceLifecycle
import Synchronization

/// A lead's streaming standbys (a managed store with `store.replication_listen`): hands a joining
/// standby its replication credentials, and every second applies ``SynchronousStandbyRule`` to
/// the primary's replication status: synchronous replication to the designated standby while it
/// keeps up, an ineligibility record and asynchronous commits once it has been gone too long.
///
/// It has its own connection on its own thread, not the store's: while the synchronous standby
/// is gone every commit on the store's connection waits for it, and the statements that end the
/// wait (`ALTER SYSTEM`, a locally committed record) must not queue behind them.
final class StandbyReplicationService: Service, Sendable {
    /// What `GET /api/lead` shows of one standby's replica.
    struct ReplicaView: Sendable, Equatable {
        /// `streaming`, `catching_up`, `disconnected` or `none`.
        var replication: String
        var sync: Bool
        /// nil for a standby without replication (`none`).
        var eligible: Bool?
        var lagBytes: UInt64?
    }

    let listener: ReplicationListener
    private let conninfo: String
    private let store: Store
    private let registry: Registry
    private let hub: EventHub
    private let certificatePEM: String
    private let ineligibleAfter: Duration
    private let isFenced: @Sendable () -> Bool
    private let logger: Logger
    private let thread = NIOThreadPool(numberOfThreads: 1)
    /// Used only on ``thread``.
    private let connection = Mutex<PostgresConnection?>(nil)
    private let views = Mutex<[String: ReplicaView]>([:])

    /// Reads the lead's certificate (`DATA/keys/tls.crt`, which the listener serves and standbys
    /// pin); throws ``AgentError`` with code `store` when it is missing.
    init(
        managed: ManagedPostgres, listener: ReplicationListener, store: Store, registry: Registry, hub: EventHub,
        ineligibleAfterS: Int, isFenced: @escaping @Sendable () -> Bool, logger: Logger
    ) throws(AgentError) {
        guard let pem = try SecureFile.read(listener.certificatePath) else {
            throw AgentError(
                .store, "the replication listener's certificate \(listener.certificatePath) does not exist")
        }
        self.listener = listener
        self.conninfo = managed.conninfo
        self.store = store
        self.registry = registry
        self.hub = hub
        self.certificatePEM = pem
        self.ineligibleAfter = .seconds(ineligibleAfterS)
        self.isFenced = isFenced
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "replication"
        self.logger = logger
    }

    // MARK: Joining standbys

    /// Makes (or renews) standby `name`'s replication role and slot with a new random password
    /// (32 bytes, hex) on the store, and answers the credentials with the password sealed to the
    /// standby's box key. The password exists in the clear only here and in the sealed box.
    ///
    /// The host is the listener's, or, when it listens on every address (`0.0.0.0`, `::`), the
    /// address of this lead the standby reached with its join (`reached`).
    func credentials(for name: String, box: PublicKey, reached: String? = nil) async throws(AgentError)
        -> JoinResponse.Replication
    {
        var generator = SystemRandomNumberGenerator()
        let password = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }
            .joined()
        let user = try ReplicationSQL.roleName(for: name), slot = try ReplicationSQL.slotName(for: name)
        try await store.withConnection { connection throws(AgentError) in
            try ReplicationSQL.ensureStandby(name: name, password: password, on: connection)
        }
        logger.info(
            "gave a standby its replication role",
            metadata: ["nodeagent.standby": "\(name)", "nodeagent.role": "\(user)"]
        )
        return JoinResponse.Replication(
            host: Self.advertisedHost(listener: listener.host, reached: reached), port: listener.port, user: user,
            slot: slot, certificate: certificatePEM,
            sealedPassword: Data(BoxKey.seal(Array(password.utf8), to: box)).base64EncodedString())
    }

    /// Drops removed standby `name`'s replication slot and role (its WAL sender ends) and its
    /// eligibility record, so the lead keeps no WAL for it. Logged, never thrown: the removal
    /// itself is done; the next removal or a restart's check tries again.
    func drop(standby name: String) async {
        do throws(AgentError) {
            try await store.withConnection { connection throws(AgentError) in
                try ReplicationSQL.dropStandby(name: name, on: connection)
                _ = try connection.execute("DELETE FROM standby_eligibility WHERE name = $1", [name])
            }
            logger.notice(
                "dropped a removed standby's replication slot and role", metadata: ["nodeagent.standby": "\(name)"])
        } catch {
            logger.error(
                "cannot drop a removed standby's replication slot and role",
                metadata: ["nodeagent.standby": "\(name)", "nodeagent.error": "\(error.message)"])
        }
    }

    /// `listener`, unless it is the unspecified address: then `reached` (an IPv4-mapped IPv6
    /// address as IPv4), else `listener` all the same.
    static func advertisedHost(listener: String, reached: String?) -> String {
        guard ["0.0.0.0", "::", "0:0:0:0:0:0:0:0"].contains(listener), var reached, !reached.isEmpty else {
            return listener
        }
        if reached.hasPrefix("::ffff:"), reached.contains(".") { reached.removeFirst(7) }
        return reached
    }

    /// The replicas as last sampled, by standby name.
    var replicas: [String: ReplicaView] { views.withLock { $0 } }

    // MARK: The loop

    /// Every second until graceful shutdown: one sample and the rule's directives.
    func run() async throws {
        thread.start()
        var rule: SynchronousStandbyRule?
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            guard !isFenced() else { continue }
            do throws(AgentError) {
                try await tick(&rule)
            } catch {
                logger.warning(
                    "cannot check the standbys' replication", metadata: ["nodeagent.error": "\(error.message)"])
            }
        }
        connection.withLock { $0 = nil }
        try? await thread.shutdownGracefully()
    }

    /// One sample: the primary's status, the designated standby (the first standby by name with a
    /// replication slot), the rule's directives carried out in order, and the views updated.
    private func tick(_ rule: inout SynchronousStandbyRule?) async throws(AgentError) {
        if rule == nil {
            // A new lead process waits for no standby until one has caught up with it.
            let recorded = try await onConnection { connection throws(AgentError) -> [String: Bool] in
                try ReplicationSQL.setSynchronousStandby(nil, on: connection)
                var recorded: [String: Bool] = [:]
                for row in try connection.execute("SELECT name, eligible FROM standby_eligibility").rows {
                    if let name = row[0] { recorded[name] = row[1] == "t" }
                }
                return recorded
            }
            rule = SynchronousStandbyRule(ineligibleAfter: ineligibleAfter, eligibility: recorded)
        }
        guard var next = rule else { return }
        let status = try await onConnection { connection throws(AgentError) in
            try ReplicationSQL.primaryStatus(on: connection)
        }
        let standbys = ((try? await registry.list().nodes) ?? []).filter { $0.role == .standby }.map(\.name).sorted()
        let slots = Set(status.slots.map(\.name))
        func hasSlot(_ name: String) -> Bool {
            (try? ReplicationSQL.slotName(for: name)).map { slots.contains($0) } ?? false
        }
        let designated = standbys.first(where: hasSlot)
        let live = designated.flatMap { status.standby(named: $0) }
        let directives = next.onSample(
            .init(
                standby: designated, connected: live != nil,
                caughtUp: live?.state == "streaming" && live?.replayLagBytes == 0),
            now: .now)
        for directive in directives {
            try await carryOut(directive)
        }
        rule = next
        views.withLock { views in
            views = [:]
            for name in standbys {
                let connected = status.standby(named: name)
                let replicating = hasSlot(name)
                views[name] = ReplicaView(
                    replication: connected.map { $0.state == "streaming" ? "streaming" : "catching_up" }
                        ?? (replicating ? "disconnected" : "none"),
                    sync: connected?.syncState == "sync", eligible: replicating ? next.isEligible(name) : nil,
                    lagBytes: connected?.replayLagBytes)
            }
        }
    }

    /// Carries out one directive of the rule.
    private func carryOut(_ directive: SynchronousStandbyRule.Directive) async throws(AgentError) {
        switch directive {
        case .setSynchronous(let name):
            try await onConnection { connection throws(AgentError) in
                try ReplicationSQL.setSynchronousStandby(name, on: connection)
            }
            if let name {
                logger.notice(
                    "commits wait for the synchronous standby now", metadata: ["nodeagent.standby": "\(name)"])
            } else {
                logger.warning("commits no longer wait for a standby (asynchronous replication)")
            }
        case .markIneligible(let name, let reason):
            try await record(name, eligible: false, reason: reason, event: EventType.leadStandbyIneligible)
            logger.warning(
                "the synchronous standby is ineligible",
                metadata: ["nodeagent.standby": "\(name)", "nodeagent.reason": "\(reason)"])
        case .markEligible(let name):
            try await record(
                name, eligible: true, reason: "streaming and caught up", event: EventType.leadStandbyEligible)
            logger.notice("the standby is eligible again", metadata: ["nodeagent.standby": "\(name)"])
        }
    }

    /// Records standby `name`'s eligibility and its event in one transaction committed locally
    /// (`SET LOCAL synchronous_commit = local`): it must not wait for the standby it is about.
    /// The event is published once committed.
    private func record(_ name: String, eligible: Bool, reason: String, event type: String) async throws(AgentError) {
        let event = try await onConnection { connection throws(AgentError) -> MeshEvent in
            _ = try connection.execute("BEGIN")
            do throws(AgentError) {
                _ = try connection.execute("SET LOCAL synchronous_commit = local")
                _ = try connection.execute(
                    """
                    INSERT INTO standby_eligibility (name, eligible, since, reason) VALUES ($1, $2, now(), $3)
                    ON CONFLICT (name) DO UPDATE SET eligible = excluded.eligible, since = excluded.since,
                        reason = excluded.reason
                    """, [name, eligible ? "true" : "false", reason])
                let event = try EventLog.insert(
                    .init(type: type, node: name, data: ["standby": .string(name), "reason": .string(reason)]),
                    on: connection)
                _ = try connection.execute("COMMIT")
                return event
            } catch {
                _ = try? connection.execute("ROLLBACK")
                throw error
            }
        }
        hub.publish([event])
    }

    /// Runs `body` on the service's thread with its connection, connecting first when there is
    /// none; a broken connection is dropped so that the next call connects again.
    private func onConnection<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws(AgentError) -> R)
        async throws(AgentError) -> R
    {
        do {
            return try await thread.runIfActive { () throws -> R in
                let connection: PostgresConnection
                if let open = self.connection.withLock({ $0 }), open.isConnected {
                    connection = open
                } else {
                    connection = try PostgresConnection(conninfo: self.conninfo)
                    self.connection.withLock { $0 = connection }
                }
                do {
                    return try body(connection)
                } catch {
                    if !connection.isConnected { self.connection.withLock { $0 = nil } }
                    throw error
                }
            }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.store, "the replication thread is not running")
        }
    }
}
