import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A throw-away PostgreSQL server on 127.0.0.1 for tests that need an external store:
/// initdb into a scratch directory, `pg_ctl start` on a free port, `stop()` to end it.
/// As root it runs as the `postgres` user, since PostgreSQL refuses root.
public final class PostgresServer: Sendable {
    public let directory: String
    public let port: Int
    let binDirectory: String
    let runAs: String?
    let outputDirectory: String
    private let registration: UInt64

    /// `postgres://aurora@127.0.0.1:PORT/postgres` (trust authentication on loopback).
    public var url: String { "postgres://aurora@127.0.0.1:\(port)/postgres" }

    public static func binDirectory() throws -> String {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(
            Int.init
        ).sorted()
        guard let newest = versions.last else {
            throw TestKitError(
                "PostgreSQL server binaries are not installed under /usr/lib/postgresql; run ./bootstrap")
        }
        return "/usr/lib/postgresql/\(newest)/bin"
    }

    public init(in scratch: ScratchDirectory, port: Int? = nil, name: String = "external-pg") async throws {
        binDirectory = try Self.binDirectory()
        directory = scratch.path + "/" + name
        outputDirectory = scratch.path
        self.port = try port ?? freePort()
        runAs = geteuid() == 0 ? "postgres" : nil
        registration = StartedProcesses.registerPostmaster(dataDirectory: directory)
        try makeDirectory()
        try await run(
            "initdb",
            ["-D", directory, "-U", "aurora", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"])
        try await start()
    }

    /// A streaming standby of `primary`: `pg_basebackup -R` through a new replication slot
    /// `slot`, started on its own port.
    public init(
        standbyOf primary: PostgresServer, slot: String, in scratch: ScratchDirectory, name: String = "standby-pg"
    ) async throws {
        binDirectory = primary.binDirectory
        directory = scratch.path + "/" + name
        outputDirectory = scratch.path
        port = try freePort()
        runAs = primary.runAs
        registration = StartedProcesses.registerPostmaster(dataDirectory: directory)
        try makeDirectory()
        try await run(
            "pg_basebackup",
            [
                "-h", "127.0.0.1", "-p", String(primary.port), "-U", "aurora", "-D", directory,
                "-R", "-C", "-S", slot, "-X", "stream", "-c", "fast",
            ])
        try await start()
    }

    deinit { StartedProcesses.unregister(registration) }

    private func makeDirectory() throws {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        if let runAs {
            try FileManager.default.setAttributes(
                [.ownerAccountName: runAs, .groupOwnerAccountName: runAs], ofItemAtPath: directory)
        }
    }

    /// `pg_ctl start` on this server's port, loopback only; waits until it accepts connections.
    public func start() async throws {
        try await run(
            "pg_ctl",
            [
                "start", "-D", directory, "-l", directory + "/server.log", "-w", "-t", "30", "-s",
                "-o", "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories=''",
            ])
    }

    /// Fast shutdown; waits for it.
    public func stop() async throws {
        try await run("pg_ctl", ["stop", "-D", directory, "-m", "fast", "-w", "-s"])
    }

    /// Stops the server if it runs; for cleanup paths, never throws.
    public func stopIfRunning() async {
        guard FileManager.default.fileExists(atPath: directory + "/postmaster.pid") else { return }
        _ = try? await run("pg_ctl", ["stop", "-D", directory, "-m", "immediate", "-w", "-s"])
    }

    /// `pg_ctl promote`: a standby leaves recovery and becomes writable.
    public func promote() async throws {
        try await run("pg_ctl", ["promote", "-D", directory, "-w", "-s"])
    }

    /// The libpq keyword string of the `postgres` database as the superuser `aurora`.
    public var conninfo: String { "host=127.0.0.1 port=\(port) dbname=postgres user=aurora" }

    /// Runs SQL with psql and returns its unaligned, tuples-only output.
    @discardableResult
    public func sql(_ text: String) async throws -> String {
        try await run(
            "psql",
            [
                "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port), "-U", "aurora",
                "-d", "postgres", "-c", text,
            ])
    }

    @discardableResult
    private func run(_ tool: String, _ arguments: [String]) async throws -> String {
        let program = binDirectory + "/" + tool
        let command =
            runAs.map { user in ["/usr/sbin/runuser", "-u", user, "--", program] + arguments } ?? [program] + arguments
        // From "/": the server's user may not be able to enter the test's working directory
        // (a checkout under a 0700 directory).
        let outcome = try await ChildProcess.run(
            "/bin/sh", ["-c", "cd / && exec \"$@\"", "sh"] + command, outputDirectory: outputDirectory)
        guard outcome.code == 0 else {
            throw TestKitError(
                "\(tool) failed (\(outcome.code)): \(outcome.stderr.suffix(400)) \(outcome.stdout.suffix(400))")
        }
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

extension PostgresServer {
    /// A primary (`primary-pg`) and a standby streaming from it through `slot`, both in `scratch`,
    /// for `body`. Afterwards, whether `body` threw or not, every agent it appended to its list is
    /// killed and both servers are stopped.
    public static func withStreamingPair(
        in scratch: ScratchDirectory, slot: String,
        _ body: (_ primary: PostgresServer, _ standby: PostgresServer, _ agents: inout [AgentHarness]) async throws
            -> Void
    ) async throws {
        let primary = try await PostgresServer(in: scratch, name: "primary-pg")
        var servers = [primary]
        var agents: [AgentHarness] = []
        func cleanUp() async {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            for server in servers { await server.stopIfRunning() }
        }
        do {
            let standby = try await PostgresServer(standbyOf: primary, slot: slot, in: scratch)
            servers.append(standby)
            try await body(primary, standby, &agents)
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }
}
