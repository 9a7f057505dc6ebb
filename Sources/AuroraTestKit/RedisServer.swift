import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A throw-away Redis server on 127.0.0.1 for tests: `redis-server --port P --bind 127.0.0.1
/// --save "" --appendonly no` in the foreground (so the test owns its PID), stopped with
/// `stop()` and started again on the same port with `start()`. `redis-cli` reads it.
public final class RedisServer: Sendable {
    public static let serverPath = "/usr/bin/redis-server"
    public static let cliPath = "/usr/bin/redis-cli"

    public let port: Int
    let directory: String
    let outputDirectory: String
    private let process = Mutex<ChildProcess?>(nil)

    /// `redis://127.0.0.1:PORT`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    public init(in scratch: ScratchDirectory, port: Int? = nil, name: String = "redis") async throws {
        try Binaries.requireTool(Self.serverPath, hint: "install redis-server (./bootstrap does)")
        try Binaries.requireTool(Self.cliPath, hint: "install redis-tools (./bootstrap does)")
        self.port = try port ?? freePort()
        directory = scratch.path + "/" + name
        outputDirectory = scratch.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try await start()
    }

    /// Starts the server (empty: nothing is persisted) and waits until it answers PING.
    public func start() async throws {
        let child = try ChildProcess(
            Self.serverPath,
            [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory, "--protected-mode", "no",
            ], outputDirectory: outputDirectory)
        process.withLock { $0 = child }
        _ = try await poll(
            timeout: .seconds(30), every: .milliseconds(20), "redis-server on port \(port) to answer PING"
        ) { () async throws -> Bool? in
            if let code = child.exitCode {
                throw PollStop(TestKitError("redis-server exited with \(code): \(child.stdout.suffix(400))"))
            }
            return (try? await self.cli(["PING"])) == "PONG" ? true : nil
        }
    }

    /// Stops the server (SIGTERM) and waits until it has exited; everything in it is gone.
    public func stop() async throws {
        guard let child = process.withLock({ $0 }) else { return }
        child.signal(SIGTERM)
        try await child.waitForExit(timeout: .seconds(10))
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: its connections stay open, it answers nothing.
    public func pause() { process.withLock { $0 }?.signal(SIGSTOP) }
    public func resume() { process.withLock { $0 }?.signal(SIGCONT) }

    /// Stops the server if it runs; for cleanup paths, never throws.
    public func stopIfRunning() async {
        guard let child = process.withLock({ $0 }), child.isRunning else { return }
        child.signal(SIGCONT)
        child.signal(SIGKILL)
        _ = try? await child.waitForExit(timeout: .seconds(5))
    }

    /// `redis-cli -p PORT --raw ARGS...`, trimmed output; throws on a non-zero exit.
    @discardableResult
    public func cli(_ arguments: [String]) async throws -> String {
        let outcome = try await ChildProcess.run(
            Self.cliPath, ["-h", "127.0.0.1", "-p", String(port), "--raw"] + arguments,
            outputDirectory: outputDirectory, timeout: .seconds(10))
        guard outcome.code == 0 else {
            throw TestKitError(
                "redis-cli \(arguments.joined(separator: " ")) exited \(outcome.code): \(outcome.stderr)")
        }
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The `seq` field of every entry of `stream`, in stream order.
    public func streamSeqs(_ stream: String) async throws -> [Int64] {
        let lines = try await cli(["XRANGE", stream, "-", "+"]).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
        var seqs: [Int64] = []
        var index = 0
        while index + 1 < lines.count {
            if lines[index] == "seq", let seq = Int64(lines[index + 1]) {
                seqs.append(seq)
                index += 2
            } else {
                index += 1
            }
        }
        return seqs
    }

    /// A `redis-cli SUBSCRIBE CHANNEL` child process; its stdout collects the messages.
    public func subscribe(_ channel: String) throws -> ChildProcess {
        try ChildProcess(
            Self.cliPath, ["-h", "127.0.0.1", "-p", String(port), "--raw", "SUBSCRIBE", channel],
            outputDirectory: outputDirectory)
    }
}
