import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import NIOSSL
import Secrets
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - The credentials a standby keeps

/// `DATA/standby.json` (0600): the replication credentials a standby lead's join answer carried
/// (``JoinResponse/Replication``), checked before they were kept. The password stays sealed to
/// the node's box key; it is opened only to clone the lead.
struct StandbyReplication: Codable, Sendable, Equatable {
    var host: String
    var port: Int
    var user: String
    var slot: String
    var certificate: String
    var sealedPassword: String

    static func path(dataDir: String) -> String { dataDir + "/standby.json" }

    /// The kept credentials, or nil when this standby was given none.
    static func load(dataDir: String) throws(AgentError) -> StandbyReplication? {
        guard let text = try SecureFile.read(path(dataDir: dataDir)) else { return nil }
        guard let kept = SQL.decode(StandbyReplication.self, text) else {
            throw AgentError(.identity, "\(path(dataDir: dataDir)) is not readable replication data")
        }
        return kept
    }

    func save(dataDir: String) throws(AgentError) {
        try SecureFile.write(SQL.json(self) + "\n", to: Self.path(dataDir: dataDir))
    }

    /// Checks what the lead sent as hostile input: the host an IP literal, the port in range,
    /// this node's own role and slot names, a certificate of at most 16 KiB that parses as PEM,
    /// and a sealed password that opens with `box` to 64 hex digits. ``AgentError`` with code
    /// `identity` otherwise; no message holds the password.
    init(checking offer: JoinResponse.Replication, node: String, box: BoxKey) throws(AgentError) {
        func refuse(_ what: String) -> AgentError {
            AgentError(.identity, "the lead's replication credentials are not valid: \(what)")
        }
        var scratch = in6_addr()
        guard offer.host.utf8.count <= 45,
            inet_pton(AF_INET, offer.host, &scratch) == 1 || inet_pton(AF_INET6, offer.host, &scratch) == 1
        else { throw refuse("the host is not an IP address") }
        guard (1...65_535).contains(offer.port) else { throw refuse("the port is not in 1...65535") }
        let role = try ReplicationSQL.roleName(for: node), slot = try ReplicationSQL.slotName(for: node)
        guard offer.user == role else {
            throw refuse("the user is not this standby's replication role")
        }
        guard offer.slot == slot else {
            throw refuse("the slot is not this standby's replication slot")
        }
        guard offer.certificate.utf8.count <= 16_384,
            offer.certificate.contains("-----BEGIN CERTIFICATE-----"),
            (try? NIOSSLCertificate(bytes: Array(offer.certificate.utf8), format: .pem)) != nil
        else { throw refuse("the certificate is not a PEM certificate") }
        self.init(
            host: offer.host, port: offer.port, user: offer.user, slot: offer.slot, certificate: offer.certificate,
            sealedPassword: offer.sealedPassword)
        _ = try password(box: box)
    }

    init(host: String, port: Int, user: String, slot: String, certificate: String, sealedPassword: String) {
        self.host = host
        self.port = port
        self.user = user
        self.slot = slot
        self.certificate = certificate
        self.sealedPassword = sealedPassword
    }

    /// The password, opened with this node's box key: 64 lower-case hex digits.
    func password(box: BoxKey) throws(AgentError) -> String {
        guard sealedPassword.utf8.count <= 512, let bytes = Data(base64Encoded: sealedPassword),
            let opened = try? box.open(sealed: [UInt8](bytes))
        else {
            throw AgentError(.identity, "the replication password does not open with this node's box key")
        }
        let text = opened.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        guard text.utf8.count == 64, text.unicodeScalars.allSatisfy({ "0123456789abcdef".unicodeScalars.contains($0) })
        else {
            throw AgentError(.identity, "the replication password the lead sealed is not 64 hex digits")
        }
        return text
    }
}

// MARK: - The replica's service

/// A standby lead's streaming replica of the lead's PostgreSQL (role `standby` without
/// `store.url`): once `DATA/standby.json` holds credentials (kept at the join), it clones the
/// lead into `DATA/postgres` once (never again: a cluster there is reused), starts the server
/// (a server left running is reused), restarts it when it dies, watches it with a
/// ``ReplicaMonitor`` (its health goes out in heartbeats), and stops it on graceful shutdown.
final class StandbyReplicaService: Service, Sendable {
    let managed: ManagedPostgres
    private let dataDir: String
    private let name: String
    private let box: BoxKey
    private let monitor: ReplicaMonitor
    private let logger: Logger

    /// Finds the PostgreSQL binaries; throws ``AgentError`` with code `store` before anything starts.
    init(config: NodeConfig, identity: NodeIdentity, state: AgentState, logger: Logger) throws(AgentError) {
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "replica"
        self.managed = try ManagedPostgres(
            dataDir: config.dataDir, binDirectory: config.pgBinDirectory, runAs: config.storeRunAs, logger: logger)
        self.dataDir = config.dataDir
        self.name = config.name
        self.box = identity.box
        let template = config.standbyReplicaMonitor
        self.monitor = ReplicaMonitor(
            config: PostgresMonitorConfig(
                conninfo: managed.conninfo, interval: template.interval, expectPrimary: false,
                thresholds: template.thresholds, slotMaxRetainedBytes: template.slotMaxRetainedBytes),
            state: state, logger: logger)
        self.logger = logger
    }

    /// Waits (a check a second) for credentials and a started replica, then watches the server
    /// and its replication until graceful shutdown, and stops the server.
    func run() async throws {
        var ready = false
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            do throws(AgentError) {
                if try await prepare() {
                    ready = true
                    break
                }
            } catch {
                logger.warning("the replica is not ready; retrying", metadata: ["nodeagent.error": "\(error.message)"])
            }
        }
        guard ready else { return }
        await withDiscardingTaskGroup { group in
            group.addTask { try? await self.monitor.run() }
            group.addTask {
                for await _ in AsyncTimerSequence(interval: .seconds(2), clock: .continuous).cancelOnGracefulShutdown()
                {
                    guard !(await self.managed.isRunning()) else { continue }
                    do throws(AgentError) {
                        _ = try await self.managed.start()
                    } catch {
                        self.logger.error(
                            "cannot restart the replica", metadata: ["nodeagent.error": "\(error.message)"])
                    }
                }
            }
        }
        do throws(AgentError) { try await managed.stop() } catch {
            logger.error("could not stop the replica", metadata: ["nodeagent.error": "\(error.message)"])
        }
    }

    /// False while there are no credentials yet; clones the lead when `DATA/postgres` holds no
    /// cluster, then starts the server. True once it runs.
    private func prepare() async throws(AgentError) -> Bool {
        guard let kept = try StandbyReplication.load(dataDir: dataDir) else { return false }
        if !FileManager.default.fileExists(atPath: managed.directory + "/PG_VERSION") {
            try await managed.cloneFromPrimary(
                host: kept.host, port: kept.port, user: kept.user, password: try kept.password(box: box),
                slot: kept.slot, applicationName: name, certificatePEM: kept.certificate)
        }
        _ = try await managed.start()
        logger.info(
            "the replica of the lead's PostgreSQL runs", metadata: ["nodeagent.primary": "\(kept.host):\(kept.port)"])
        return true
    }
}
