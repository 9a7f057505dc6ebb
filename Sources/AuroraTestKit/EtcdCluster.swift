import AsyncHTTPClient
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A throw-away etcd cluster of `size` members (3 by default) on 127.0.0.1 for tests: each
/// member runs `etcd` in the foreground (so the test owns its PID) with a client and a peer port
/// of its own and its data directory in the scratch directory. Fast raft timing (heartbeat
/// 100 ms, election timeout 1 s) so an etcd leader's death is noticed in about a second; etcd
/// then raises lease TTLs below 1.5 s to 2 s (PLATFORM.md).
///
/// Members are stopped (SIGTERM), killed (SIGKILL), frozen (SIGSTOP) and started again one by
/// one; a restarted member keeps its data directory and rejoins.
public final class EtcdCluster: Sendable {
    public static let serverPath = "/usr/bin/etcd"

    /// One member's ports and directory.
    public struct Member: Sendable {
        public let name: String
        public let clientPort: Int
        public let peerPort: Int
        public let dataDirectory: String

        /// `http://127.0.0.1:CLIENT_PORT`: the member's client (and JSON gateway) URL.
        public var endpoint: String { "http://127.0.0.1:\(clientPort)" }
        var peerURL: String { "http://127.0.0.1:\(peerPort)" }
    }

    public let members: [Member]
    let token: String
    let outputDirectory: String
    private let processes: Mutex<[ChildProcess?]>

    /// Every member's client URL, in member order.
    public var endpoints: [String] { members.map(\.endpoint) }

    /// ``init(in:size:name:)``, tried up to three times on fresh ports and directories: another
    /// process may take a port between ``freePort()`` and etcd's bind on a busy machine.
    public static func start(in scratch: ScratchDirectory, size: Int = 3, name: String = "etcd") async throws
        -> EtcdCluster
    {
        var attempt = 1
        while true {
            do {
                return try await EtcdCluster(in: scratch, size: size, name: attempt == 1 ? name : "\(name)-\(attempt)")
            } catch  where attempt < 3 {
                attempt += 1
            }
        }
    }

    /// Starts `size` members at once (a new cluster needs its quorum to come up) and waits
    /// until every one answers `/health` as healthy.
    public init(in scratch: ScratchDirectory, size: Int = 3, name: String = "etcd") async throws {
        try Binaries.requireTool(Self.serverPath, hint: "install etcd-server (./bootstrap does)")
        precondition(size > 0, "an etcd cluster needs at least one member")
        var members: [Member] = []
        for index in 0..<size {
            let member = Member(
                name: "\(name)-\(index)", clientPort: try freePort(), peerPort: try freePort(),
                dataDirectory: scratch.path + "/\(name)-\(index)")
            try FileManager.default.createDirectory(atPath: member.dataDirectory, withIntermediateDirectories: true)
            chmod(member.dataDirectory, 0o700)
            members.append(member)
        }
        self.members = members
        token = "\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        outputDirectory = scratch.path
        processes = Mutex(Array(repeating: nil, count: size))
        do {
            for index in members.indices { try launch(index) }
            for index in members.indices { try await waitHealthy(index) }
        } catch {
            await stopAll()
            throw error
        }
    }

    // MARK: Members

    /// Starts member `member` again (after a stop or kill) and waits until it is healthy.
    public func start(member: Int) async throws {
        guard !isRunning(member: member) else { return }
        try launch(member)
        try await waitHealthy(member)
    }

    /// Starts every member that is not running, all at once (a lone member of a stopped cluster
    /// is never healthy: it has no quorum), and waits until each is healthy.
    public func startAll() async throws {
        let stopped = members.indices.filter { !isRunning(member: $0) }
        for index in stopped { try launch(index) }
        for index in stopped { try await waitHealthy(index) }
    }

    /// Stops member `member` with SIGTERM and waits until it has exited.
    public func stop(member: Int) async throws {
        guard let child = processes.withLock({ $0[member] }) else { return }
        child.signal(SIGCONT)
        child.signal(SIGTERM)
        try await child.waitForExit(timeout: .seconds(10))
    }

    /// Kills member `member` with SIGKILL (no goodbye to its peers) and waits until it is gone.
    public func kill(member: Int) async throws {
        guard let child = processes.withLock({ $0[member] }) else { return }
        child.signal(SIGKILL)
        try await child.waitForExit(timeout: .seconds(5))
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) member `member`: its sockets stay open, it answers nothing.
    public func pause(member: Int) { processes.withLock { $0[member] }?.signal(SIGSTOP) }
    public func resume(member: Int) { processes.withLock { $0[member] }?.signal(SIGCONT) }

    /// Whether member `member` runs.
    public func isRunning(member: Int) -> Bool { processes.withLock { $0[member] }?.isRunning ?? false }

    /// Kills every member that still runs; for cleanup paths, never throws.
    public func stopAll() async {
        for index in members.indices {
            guard let child = processes.withLock({ $0[index] }), child.isRunning else { continue }
            child.signal(SIGCONT)
            child.signal(SIGKILL)
            _ = try? await child.waitForExit(timeout: .seconds(5))
        }
    }

    /// The last lines member `member` logged, for a failing test's message.
    public func log(member: Int) -> String { String((processes.withLock { $0[member] }?.stderr ?? "").suffix(2000)) }

    // MARK: Starting

    private func launch(_ index: Int) throws {
        let member = members[index]
        let cluster = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        let child = try ChildProcess(
            Self.serverPath,
            [
                "--name", member.name, "--data-dir", member.dataDirectory,
                "--listen-client-urls", member.endpoint, "--advertise-client-urls", member.endpoint,
                "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--log-level", "warn", "--logger", "zap",
            ], outputDirectory: outputDirectory)
        processes.withLock { $0[index] = child }
    }

    /// Polls `GET /health` on member `index` until it says healthy (it has a leader and its
    /// quorum answers), for up to 30 s.
    private func waitHealthy(_ index: Int) async throws {
        let member = members[index]
        guard let child = processes.withLock({ $0[index] }) else { return }
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(50), "etcd \(member.name) to be healthy") {
            () async throws -> Bool? in
            if let code = child.exitCode {
                throw PollStop(TestKitError("etcd \(member.name) exited with \(code): \(child.stderr.suffix(600))"))
            }
            let answer = try? await http(member.endpoint + "/health", timeout: .seconds(2))
            return answer?.status == 200 && answer?.text.contains("\"true\"") == true ? true : nil
        }
    }
}
