import CSpawn
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A child process for tests: spawned with posix_spawn, its stdout and stderr in files, reaped
/// with `waitpid` for exactly its PID. Tests poll it with deadlines; nothing sleeps blindly.
/// While it runs it is in ``StartedProcesses``, so an interrupted benchmark can end it.
public final class ChildProcess: @unchecked Sendable {  // PID and exit status guarded by `lock`
    public let pid: pid_t
    public let stdoutPath: String
    public let stderrPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?
    private let registration: UInt64

    /// Starts `executable` with `arguments`; `environment` adds to (or, with nil values, removes
    /// from) this process's environment.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String?] = [:], outputDirectory: String
    ) throws {
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        let id = UUID().uuidString.prefix(8)
        stdoutPath = "\(outputDirectory)/\((executable as NSString).lastPathComponent)-\(id).out"
        stderrPath = "\(outputDirectory)/\((executable as NSString).lastPathComponent)-\(id).err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // Nothing else of this process: a socket another test has bound at this instant (a
        // port being checked, a held port) would otherwise stay bound in the child for as long
        // as it lives, and the agent given that port could not listen on it.
        aurora_spawn_closefrom(&actions, 3)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        // Swift's executor threads block most signals, and a child inherits the mask: without
        // this a child such as redis-server would never see the SIGTERM a test sends.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw TestKitError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        let spawned = pid
        registration = StartedProcesses.register(.init(isChild: true, stopSignal: SIGTERM) { spawned })
    }

    deinit {
        if exitCode == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        StartedProcesses.unregister(registration)
    }

    /// The exit code once the process has ended (128 + signal for a signal), else nil.
    public var exitCode: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid else { return nil }
        exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        StartedProcesses.unregister(registration)
        return exitStatus
    }

    public var isRunning: Bool { exitCode == nil }

    /// Sends `signal`.
    public func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Waits for the exit, polling every `interval`; throws when `timeout` passes first.
    @discardableResult
    public func waitForExit(timeout: Duration, every interval: Duration = .milliseconds(10)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let code = exitCode { return code }
            try await Task.sleep(for: interval)
        }
        throw TestKitError("pid \(pid) did not exit within \(timeout); stderr: \(stderr.suffix(500))")
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Runs to completion and returns the exit code with both outputs.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String?] = [:],
        outputDirectory: String, timeout: Duration = .seconds(60)
    ) async throws -> (code: Int32, stdout: String, stderr: String) {
        let child = try ChildProcess(executable, arguments, environment: environment, outputDirectory: outputDirectory)
        let code = try await child.waitForExit(timeout: timeout)
        return (code, child.stdout, child.stderr)
    }
}

/// A test-harness failure with a message that says what to fix.
public struct TestKitError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
