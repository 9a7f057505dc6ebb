import Foundation
import Logging
import NIOPosix

// A lead's managed PostgreSQL streams its WAL to a standby lead: the lead listens for
// replication connections over TLS with its own self-signed certificate, and the standby, which
// holds that certificate (pinned, as peers pin the lead), clones the lead with pg_basebackup and
// streams from it until it is promoted. ReplicationSQL.swift has the SQL side (roles, slots,
// synchronous commit, status).

// MARK: - The lead's listener

/// Lead side: a TLS-only TCP listener for replication connections.
///
/// The managed cluster's `port` becomes ``port`` (PostgreSQL's port also names its socket file).
/// The server presents ``certificatePath`` with ``keyPath``: the agent's own self-signed P-256
/// certificate (`DATA/keys/tls.crt` and `tls.key`), which standbys pin. Over TCP only
/// `hostssl replication` connections of standby roles (``ReplicationSQL/roleName(for:)``) with
/// SCRAM are admitted; plain connections, other roles and other databases match no line of
/// `pg_hba.conf` and are refused.
struct ReplicationListener: Sendable, Equatable {
    /// The address to listen on, an IPv4 or IPv6 literal: `127.0.0.1` or the node's VPN address.
    var host: String
    /// The TCP port.
    var port: Int
    /// The PEM certificate the server presents.
    var certificatePath: String
    /// The PEM private key of that certificate.
    var keyPath: String

    /// Checks what goes into the server's configuration: an IP literal, a port in 1...65535,
    /// and both paths given. ``AgentError`` with code `config` otherwise.
    func validate() throws(AgentError) {
        var scratch = in6_addr()
        guard inet_pton(AF_INET, host, &scratch) == 1 || inet_pton(AF_INET6, host, &scratch) == 1 else {
            throw AgentError(.config, "the replication listener's address must be an IP address, not '\(host)'")
        }
        guard (1...65_535).contains(port) else {
            throw AgentError(.config, "the replication listener's port \(port) is not in 1...65535")
        }
        guard !certificatePath.isEmpty, !keyPath.isEmpty else {
            throw AgentError(.config, "the replication listener needs a certificate and a key file")
        }
    }
}

// MARK: - Files

extension ManagedPostgres {
    /// `DATA/postgres.replication`: the server's copies of its certificate and key (a lead with a
    /// listener), or the lead's pinned certificate and the password file (a standby). Owned by the
    /// server's OS user, 0700. It is beside the cluster, not in it, because pg_basebackup copies
    /// every file of the cluster directory to the standby: the lead's private key must not go.
    var replicationFilesDirectory: String { directory + ".replication" }

    /// The file in the cluster directory, included last from `aurora.conf`, that makes a standby
    /// stream: `primary_conninfo` and `primary_slot_name`. Only a standby has one.
    static let standbySettingsFile = "aurora-standby.conf"

    /// The group role whose members `pg_hba.conf` admits over TCP (``ReplicationSQL`` makes it
    /// and adds each standby role to it; PostgreSQL 15's pg_hba.conf has no role patterns).
    static let replicationGroup = "aurora_replication"

    /// Creates ``replicationFilesDirectory`` (0700, the server's user's) if it is missing.
    private func makeReplicationFilesDirectory(owner: Account?) throws(AgentError) {
        let path = replicationFilesDirectory
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw AgentError(.store, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        chmod(path, 0o700)
        if let owner { chown(path, owner.uid, owner.gid) }
    }

    /// Writes `contents` to `path` with `mode` and gives it to the server's user.
    private func writeServerFile(_ contents: String, to path: String, owner: Account?, mode: mode_t = 0o600)
        throws(AgentError)
    {
        try SecureFile.write(contents, to: path, mode: mode)
        if let owner { chown(path, owner.uid, owner.gid) }
    }

    /// Copies the listener's certificate and key into ``replicationFilesDirectory`` (the agent's
    /// key directory is not the server's to read; PostgreSQL wants its key 0600 and its own) at
    /// every start, so a renewed certificate is served after a restart. Returns the copies' paths.
    func installServerCertificate(_ listener: ReplicationListener, owner: Account?) throws(AgentError) -> (
        certificate: String, key: String
    ) {
        guard let certificate = try SecureFile.read(listener.certificatePath) else {
            throw AgentError(
                .store, "the replication listener's certificate \(listener.certificatePath) does not exist")
        }
        guard let key = try SecureFile.read(listener.keyPath) else {
            throw AgentError(.store, "the replication listener's key \(listener.keyPath) does not exist")
        }
        try makeReplicationFilesDirectory(owner: owner)
        let certificatePath = replicationFilesDirectory + "/server.crt"
        let keyPath = replicationFilesDirectory + "/server.key"
        try writeServerFile(certificate, to: certificatePath, owner: owner)
        try writeServerFile(key, to: keyPath, owner: owner)
        return (certificatePath, keyPath)
    }

    /// `pg_hba.conf` of a lead with a listener: the `local` lines as initdb made them (the agent's
    /// trust over the socket only its owner reaches), then the one TCP line:
    /// `hostssl replication +aurora_replication all scram-sha-256`. Rewritten at every start.
    func writeReplicationHBA(owner: Account?) throws(AgentError) {
        let path = directory + "/pg_hba.conf"
        var local = ((try SecureFile.read(path)) ?? "").split(separator: "\n").map(String.init).filter {
            $0.split(whereSeparator: \.isWhitespace).first == "local"
        }
        if local.isEmpty {
            local = [
                "local   all             all                                     trust",
                "local   replication     all                                     trust",
            ]
        }
        let text =
            """
            # Written by nodeagent at every start of a lead with a replication listener.
            # The socket (in the cluster directory, reachable only by its owner), as initdb made it:
            \(local.joined(separator: "\n"))
            # TCP: only standbys' replication connections, over TLS, with a SCRAM password.
            hostssl replication     +\(Self.replicationGroup) all                     scram-sha-256

            """
        try writeServerFile(text, to: path, owner: owner)
    }
}

// MARK: - Standby

extension ManagedPostgres {
    /// Standby side: makes `DATA/postgres` a streaming replica of the primary at `host`:`port`.
    ///
    /// `pg_basebackup -X stream -S slot -R -c fast` as `user` runs into `DATA/postgres.clone`,
    /// renamed into place only when complete (crash-safe like initdb's staging). TLS is
    /// `sslmode=verify-ca` with `sslrootcert` holding `certificatePEM`, the lead's self-signed
    /// certificate: OpenSSL accepts a self-signed leaf that is itself in the root file (verified
    /// with OpenSSL 3.0), and refuses any other certificate, one with the same name included.
    /// Host names are not checked (verify-full would): the pin is the certificate itself.
    /// The password is only in a 0600 password file of the server's user (`PGPASSFILE` of
    /// pg_basebackup, `passfile` of `primary_conninfo`): never in argv, another process's
    /// environment, a log or an error.
    ///
    /// It then writes `aurora-standby.conf` (`primary_conninfo` with `application_name`,
    /// `primary_slot_name`) so that every later ``start()`` streams, and takes out of the copied
    /// `postgresql.auto.conf` what belongs to the lead: the `primary_conninfo` that `-R` wrote
    /// (it holds the password in clear) and `synchronous_standby_names` (a promoted standby must
    /// not wait for standbys it does not have). The server must not be running. An existing
    /// cluster is refused unless `replacingExisting`, in which case it is removed only once the
    /// clone is complete. Throws ``AgentError`` with code `store` (or `invalidInput`) on failure.
    func cloneFromPrimary(
        host: String, port primaryPort: Int, user: String, password: String, slot: String,
        applicationName: String, certificatePEM: String, replacingExisting: Bool = false
    ) async throws(AgentError) {
        try Self.validateClone(
            host: host, port: primaryPort, user: user, password: password, slot: slot,
            applicationName: applicationName, certificatePEM: certificatePEM)
        let tool = binDirectory + "/pg_basebackup"
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            throw AgentError(.store, "\(tool) not found; install postgresql or set store.pg_bin")
        }
        guard !(await isRunning()) else {
            throw AgentError(
                .store, "the managed PostgreSQL is running; stop it before cloning the lead into \(directory)")
        }
        let hasCluster = FileManager.default.fileExists(atPath: directory + "/PG_VERSION")
        if hasCluster && !replacingExisting {
            throw AgentError(
                .store, "\(directory) already holds a PostgreSQL cluster; remove it or clone with replacingExisting")
        }
        if !hasCluster, let contents = try? FileManager.default.contentsOfDirectory(atPath: directory),
            !contents.isEmpty
        {
            throw AgentError(
                .store,
                "\(directory) exists but holds no PostgreSQL cluster (no PG_VERSION); move it away to clone the lead")
        }
        let owner = try runAs.map { name throws(AgentError) in try Self.account(name) }
        if let owner { try checkReachable(by: owner) }

        // The pinned certificate and the password file, the server's user's.
        try makeReplicationFilesDirectory(owner: owner)
        let rootCertificate = replicationFilesDirectory + "/primary.crt"
        let passwordFile = replicationFilesDirectory + "/primary.pgpass"
        try writeServerFile(
            certificatePEM.hasSuffix("\n") ? certificatePEM : certificatePEM + "\n", to: rootCertificate, owner: owner)
        try writeServerFile(
            "\(Self.passfileField(host)):\(primaryPort):*:\(Self.passfileField(user)):\(Self.passfileField(password))\n",
            to: passwordFile, owner: owner)

        let staging = directory + ".clone"
        if FileManager.default.fileExists(atPath: staging) { try? FileManager.default.removeItem(atPath: staging) }
        guard mkdir(staging, 0o700) == 0 else {
            throw AgentError(.store, "cannot create \(staging): \(String(cString: strerror(errno)))")
        }
        if let owner { chown(staging, owner.uid, owner.gid) }

        let connection = Conninfo([
            .init(key: "host", value: host), .init(key: "port", value: String(primaryPort)),
            .init(key: "user", value: user), .init(key: "sslmode", value: "verify-ca"),
            .init(key: "sslrootcert", value: rootCertificate),
            .init(key: "ssl_min_protocol_version", value: "TLSv1.3"),
            .init(key: "application_name", value: applicationName), .init(key: "connect_timeout", value: "10"),
        ])
        // Only PGPASSFILE of the PG* variables: an inherited PGPASSWORD or PGSSLMODE must not win.
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        environment["PGPASSFILE"] = passwordFile
        let started = ContinuousClock.now
        let result = try await ProcessRunner.run(
            tool,
            [
                "-D", staging, "-d", connection.keywordString, "-X", "stream", "-S", slot, "-R", "-c", "fast",
                "--no-password",
            ], asUser: runAs, environment: environment)
        guard result.status == 0 else {
            try? FileManager.default.removeItem(atPath: staging)
            unlink(passwordFile)
            // pg_basebackup's error, not its last line ("removing contents of data directory").
            let error = result.output.split(separator: "\n").first { $0.contains("error:") }.map(String.init)
            let line = (error ?? result.lastLine).replacingOccurrences(of: password, with: "***")
            let hint =
                line.contains("certificate verify failed")
                ? " (the server's certificate is not the lead's pinned certificate)" : ""
            throw AgentError(.store, "cloning the lead at \(host):\(primaryPort) failed: \(line)\(hint)")
        }

        // What belongs to the lead, not to this standby.
        for leftover in ["server.log", "postmaster.opts", "current_logfiles"] {
            unlink(staging + "/" + leftover)
        }
        try stripAutoConf(in: staging, owner: owner)
        let standbySettings = """
            # Written by nodeagent when this cluster was cloned from the lead; removed at promotion.
            primary_conninfo = \(Self.settingLiteral(connection.setting("passfile", passwordFile).keywordString))
            primary_slot_name = \(Self.settingLiteral(slot))

            """
        try writeServerFile(standbySettings, to: staging + "/" + Self.standbySettingsFile, owner: owner)
        guard FileManager.default.fileExists(atPath: staging + "/standby.signal") else {
            try? FileManager.default.removeItem(atPath: staging)
            throw AgentError(.store, "pg_basebackup -R left no standby.signal in \(staging)")
        }

        let previous = directory + ".replaced"
        if hasCluster {
            try? FileManager.default.removeItem(atPath: previous)
            guard rename(directory, previous) == 0 else {
                throw AgentError(.store, "cannot move the old cluster aside: \(String(cString: strerror(errno)))")
            }
        } else if FileManager.default.fileExists(atPath: directory) {
            try? FileManager.default.removeItem(atPath: directory)  // empty, checked above
        }
        guard rename(staging, directory) == 0 else {
            throw AgentError(
                .store, "cannot move the cloned cluster into \(directory): \(String(cString: strerror(errno)))")
        }
        if hasCluster { try? FileManager.default.removeItem(atPath: previous) }
        logger.info(
            "cloned the lead's PostgreSQL",
            metadata: [
                "nodeagent.dir": "\(directory)", "nodeagent.primary": "\(host):\(primaryPort)",
                "nodeagent.slot": "\(slot)", "nodeagent.ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
    }

    /// Promotes a standby: `pg_ctl promote -w`, then waits (up to 60 s) until
    /// `pg_is_in_recovery()` is false over the socket, and removes what made it stream
    /// (`aurora-standby.conf`, the password file). A cluster that is no standby is left as it is.
    func promote() async throws(AgentError) {
        if FileManager.default.fileExists(atPath: directory + "/standby.signal") {
            let result = try await pgctl(["promote", "-D", directory, "-w", "-t", "60", "-s"])
            guard result.status == 0 else {
                throw AgentError(.store, "pg_ctl promote failed: \(result.lastLine)")
            }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while try await isInRecovery() {
            guard ContinuousClock.now < deadline else {
                throw AgentError(.store, "the managed PostgreSQL was promoted but is still in recovery after 60 s")
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        unlink(directory + "/" + Self.standbySettingsFile)
        unlink(replicationFilesDirectory + "/primary.pgpass")
        logger.notice("promoted the managed PostgreSQL: it is a primary now")
    }

    /// `pg_is_in_recovery()` over the socket, on a thread-pool thread.
    private func isInRecovery() async throws(AgentError) -> Bool {
        let conninfo = "host=\(directory) port=\(port) dbname=postgres user=\(Self.superuser)"
        do {
            return try await NIOThreadPool.singleton.runIfActive { () throws(AgentError) -> Bool in
                let connection = try PostgresConnection(conninfo: conninfo)
                return try connection.execute("SELECT pg_is_in_recovery()").scalar == "t"
            }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.store, "cannot ask the managed PostgreSQL whether it is in recovery: \(error)")
        }
    }

    /// Takes the lead's `primary_conninfo` (with its password in clear), `primary_slot_name` and
    /// `synchronous_standby_names` out of the cloned `postgresql.auto.conf`.
    private func stripAutoConf(in cluster: String, owner: Account?) throws(AgentError) {
        let path = cluster + "/postgresql.auto.conf"
        guard let text = try SecureFile.read(path) else { return }
        let dropped: Set<String> = ["primary_conninfo", "primary_slot_name", "synchronous_standby_names"]
        let kept = text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            let key = line.split(separator: "=", maxSplits: 1).first?.trimmingCharacters(in: .whitespaces)
            return !dropped.contains(key ?? "")
        }
        try writeServerFile(kept.joined(separator: "\n"), to: path, owner: owner)
    }

    /// A `.pgpass` field: `\` and `:` escaped with `\`.
    private static func passfileField(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
    }

    /// The clone's inputs, checked before anything is written: they go into a connection string,
    /// a password file and the server's configuration. Messages never quote the password.
    private static func validateClone(
        host: String, port: Int, user: String, password: String, slot: String, applicationName: String,
        certificatePEM: String
    ) throws(AgentError) {
        func plain(_ value: String, _ allowed: String, maxLength: Int = 63) -> Bool {
            !value.isEmpty && value.utf8.count <= maxLength
                && value.unicodeScalars.allSatisfy {
                    ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                        || allowed.unicodeScalars.contains($0)
                }
        }
        guard plain(host, ".:-", maxLength: 253) else {
            throw AgentError(.invalidInput, "the lead's address '\(host)' is not a host name or an IP address")
        }
        guard (1...65_535).contains(port) else {
            throw AgentError(.invalidInput, "the lead's replication port \(port) is not in 1...65535")
        }
        guard plain(user, "_") else { throw AgentError(.invalidInput, "replication user '\(user)' is not valid") }
        guard plain(slot, "_"), slot == slot.lowercased() else {
            throw AgentError(.invalidInput, "replication slot '\(slot)' is not valid (a-z, 0-9, _)")
        }
        guard plain(applicationName, "-_.") else {
            throw AgentError(.invalidInput, "application name '\(applicationName)' is not valid")
        }
        guard !password.isEmpty, !password.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            throw AgentError(.invalidInput, "the replication password is empty or holds control characters")
        }
        guard certificatePEM.contains("-----BEGIN CERTIFICATE-----") else {
            throw AgentError(.invalidInput, "the lead's certificate is not a PEM certificate")
        }
    }
}
