import AuroraAPI
import CSpawn
import Foundation
import NIOPosix

/// What a finished child process left behind.
struct ProcessResult: Sendable {
    /// The exit status, or 128 + the signal number for a child that a signal ended (as a shell has it).
    var status: Int32
    /// stdout and stderr together, trimmed.
    var output: String

    /// The last non-empty line of the output, for one-line errors.
    var lastLine: String {
        output.split(separator: "\n").last.map { String($0).trimmingCharacters(in: .whitespaces) } ?? "no output"
    }
}

/// Runs short-lived helper programs (initdb, pg_ctl, runuser) without blocking Swift's
/// cooperative pool: the wait happens on a NIO thread-pool thread.
enum ProcessRunner {
    /// Runs `executable` with `arguments`; as `user` (through runuser) when given and the agent
    /// runs as root. Output goes through an unlinked temporary file, so a daemon the child leaves
    /// behind (pg_ctl start) cannot hold a pipe open.
    static func run(
        _ executable: String, _ arguments: [String], asUser user: String? = nil,
        environment: [String: String]? = nil, timeout: Duration? = nil
    ) async throws(AgentError) -> ProcessResult {
        var program = executable
        var argv = arguments
        if let user, geteuid() == 0 {
            guard
                let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].first(
                    where: FileManager.default.isExecutableFile(atPath:))
            else {
                throw AgentError(
                    .process,
                    "runuser not found; it is needed to run \((executable as NSString).lastPathComponent) as '\(user)'")
            }
            program = runuser
            argv = ["-u", user, "--", executable] + arguments
        }
        let finalProgram = program, finalArguments = argv
        do {
            return try await NIOThreadPool.singleton.runIfActive { () throws(AgentError) in
                try runBlocking(finalProgram, finalArguments, environment: environment, timeout: timeout)
            }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.process, "cannot run \((executable as NSString).lastPathComponent): \(error)")
        }
    }

    /// posix_spawn and a blocking waitpid for exactly this child, on a thread-pool thread.
    /// Output beyond 1 MiB is not read. Throws ``AgentError`` with code `process` when the child
    /// cannot be started or waited for, or (with `timeout`) ran longer and was killed; a failing
    /// child is a result with its status.
    private static func runBlocking(
        _ program: String, _ arguments: [String], environment: [String: String]?, timeout: Duration?
    ) throws(AgentError) -> ProcessResult {
        let outputPath = NSTemporaryDirectory() + "nodeagent-\(getpid())-\(UUID().uuidString).out"
        let outputFD = open(outputPath, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0o600)
        guard outputFD >= 0 else {
            throw AgentError(.process, "cannot create \(outputPath): \(String(cString: strerror(errno)))")
        }
        unlink(outputPath)  // the descriptor keeps it; nothing is left behind
        defer { close(outputFD) }

        var actions = posix_spawn_file_actions_t()
        SpawnActions.setUp(&actions, stdout: outputFD, stderr: outputFD)
        defer { posix_spawn_file_actions_destroy(&actions) }

        // Run from "/" so a working directory the child's user cannot enter (root's home, for
        // the postgres user) never matters: `sh -c 'cd / && exec "$@"' sh PROGRAM ARGS...`.
        let argv = (["/bin/sh", "-c", "cd / && exec \"$@\"", "sh", program] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // Children (initdb, pg_ctl and the server they start) never see the agent's own
        // variables: AURORA_JOIN_TOKEN and AURORA_STORE may hold secrets.
        let inherited = (environment ?? ProcessInfo.processInfo.environment).filter { !$0.key.hasPrefix("AURORA_") }
        let environmentPairs = inherited.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { environmentPairs.forEach { free($0) } }

        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environmentPairs)
        guard spawned == 0 else {
            throw AgentError(.process, "cannot start \(program): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        if let timeout {
            // Polled (1 ms, growing to 20 ms) so a hung tool cannot hold this thread, or its
            // caller, for ever: past the deadline it is killed and the call fails.
            let deadline = ContinuousClock.now + timeout
            var pause: UInt32 = 1000
            while true {
                let reaped = waitpid(pid, &status, WNOHANG)
                if reaped == pid { break }
                if reaped < 0, errno != EINTR {
                    throw AgentError(.process, "waiting for \(program) failed: \(String(cString: strerror(errno)))")
                }
                if ContinuousClock.now >= deadline {
                    kill(pid, SIGKILL)
                    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
                    throw AgentError(
                        .process,
                        "\((program as NSString).lastPathComponent) did not finish within \(timeout) and was killed")
                }
                usleep(pause)
                pause = min(pause * 2, 20_000)
            }
        } else {
            while waitpid(pid, &status, 0) < 0 {
                guard errno == EINTR else {
                    throw AgentError(.process, "waiting for \(program) failed: \(String(cString: strerror(errno)))")
                }
            }
        }
        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)

        var output = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 8192)
        lseek(outputFD, 0, SEEK_SET)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(outputFD, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            output.append(contentsOf: buffer[0..<n])
            if output.count > 1 << 20 { break }
        }
        return ProcessResult(
            status: exitCode,
            output: String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

extension ProcessRunner {
    /// The executable `program` names: itself when it holds a `/`, else the first executable
    /// regular file of that name on the agent's `PATH`, as `execvp` would find it. The one PATH
    /// search of the daemon (jobs and checks, `nvidia-smi`, the binary's own location).
    static func find(_ program: String) -> String? {
        if program.contains("/") { return program }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (directory.isEmpty ? "." : String(directory)) + "/" + program
            if let status = FileStatus.of(candidate), status.isRegularFile, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    /// Runs a long helper (pg_dump, pg_restore) that the caller watches as it goes: every
    /// `interval`, `onPoll` gets the complete lines the child wrote since the last call (stdout
    /// and stderr together, through an unlinked file). The child runs in its own process group
    /// from "/"; cancelling the calling task kills the group and throws. No thread is held
    /// while it runs. The result keeps the last 64 KiB of output, for error messages.
    static func watch(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        every interval: Duration = .milliseconds(100),
        onPoll: @Sendable ([String]) async -> Void = { _ in }
    ) async throws(AgentError) -> ProcessResult {
        let name = (executable as NSString).lastPathComponent
        let outputPath = NSTemporaryDirectory() + "nodeagent-\(getpid())-\(UUID().uuidString).out"
        let outputFD = open(outputPath, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0o600)
        guard outputFD >= 0 else {
            throw AgentError(.process, "cannot create \(outputPath): \(String(cString: strerror(errno)))")
        }
        unlink(outputPath)
        defer { close(outputFD) }

        var actions = posix_spawn_file_actions_t()
        SpawnActions.setUp(&actions, stdout: outputFD, stderr: outputFD)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv = (["/bin/sh", "-c", "cd / && exec \"$@\"", "sh", executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let inherited = (environment ?? ProcessInfo.processInfo.environment).filter { !$0.key.hasPrefix("AURORA_") }
        let environmentPairs = inherited.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { environmentPairs.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environmentPairs)
        guard spawned == 0 else {
            throw AgentError(.process, "cannot start \(name): \(String(cString: strerror(spawned)))")
        }

        var offset: off_t = 0
        var partial: [UInt8] = [], tail: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        /// The complete lines written since the last call (all of them at the end).
        func newLines(final: Bool) -> [String] {
            while true {
                let count = chunk.withUnsafeMutableBytes { pread(outputFD, $0.baseAddress!, $0.count, offset) }
                if count <= 0 { break }
                offset += off_t(count)
                partial.append(contentsOf: chunk[0..<count])
                tail.append(contentsOf: chunk[0..<count])
                if tail.count > 131_072 { tail.removeFirst(tail.count - 65_536) }
            }
            guard let lastNewline = final ? partial.indices.last : partial.lastIndex(of: UInt8(ascii: "\n")) else {
                return []
            }
            let lines = partial[...lastNewline].split(separator: UInt8(ascii: "\n")).map {
                String(decoding: $0, as: UTF8.self)
            }
            partial.removeFirst(lastNewline + 1)
            return lines
        }

        var status: Int32 = 0
        while true {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { break }
            if reaped < 0 && errno != EINTR {
                throw AgentError(.process, "waiting for \(name) failed: \(String(cString: strerror(errno)))")
            }
            if Task.isCancelled {
                kill(-pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                throw AgentError(
                    .process, "\(name) was stopped: the request was cancelled or the agent is shutting down")
            }
            await onPoll(newLines(final: false))
            try? await Task.sleep(for: interval)
        }
        kill(-pid, SIGKILL)  // anything the tool left behind in its group
        await onPoll(newLines(final: true))
        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let output = String(decoding: tail.suffix(65_536), as: UTF8.self).trimmingCharacters(
            in: .whitespacesAndNewlines)
        return ProcessResult(status: exitCode, output: output)
    }
}

/// The file actions every child of the agent gets.
enum SpawnActions {
    /// stdin from /dev/null, stdout and stderr to these descriptors, and nothing else of the
    /// agent's: a server a child leaves running (pg_ctl start) must not keep the agent's
    /// listening socket after the agent is gone, and no socket or key file reaches a job.
    static func setUp(_ actions: inout posix_spawn_file_actions_t, stdout: Int32, stderr: Int32) {
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        aurora_spawn_closefrom(&actions, 3)
    }
}

/// Runs a job's command: its own process group, a timeout, stdout and stderr captured up to a
/// bound each. The child is watched with `waitpid(WNOHANG)` from an async loop, so a long job
/// holds no thread; cancelling the task kills the whole group.
enum ExecRunner {
    /// What a job's command did: how it ended, the captured output (at most `maxOutput` bytes
    /// each, `…Truncated` when more was written) and how long it ran.
    struct Outcome: Sendable {
        /// Set when the command exited; nil when a signal (`signal`) ended it, our SIGKILL included.
        var exitCode: Int32?
        var signal: Int32?
        var stdout: [UInt8]
        var stderr: [UInt8]
        var stdoutTruncated: Bool
        var stderrTruncated: Bool
        /// True when `timeout` passed and the group was killed; `cancelled` when the task was.
        var timedOut: Bool
        var cancelled: Bool
        var duration: Duration
    }

    /// Runs `argv` (found on `PATH` like a shell does) with exactly `environment`, polling every
    /// 10 ms; kills the process group at `timeout` or on cancellation, and always once more at the
    /// end for anything left behind. Called by the GPU worker (jobs) and the health checks.
    /// Throws ``AgentError`` with code `process` only when the command cannot be started.
    /// `groups` holds the child's process group while it runs (its GPU memory is the job's).
    ///
    /// `directory` is the command's working directory (nil: the agent's). `onOutput`, when given,
    /// gets what the command wrote to each stream as it comes (every poll, and once more at the end),
    /// in the order read, with the count of bytes skipped just before them: of more than `outputTail`
    /// new bytes only the last `outputTail` are read. It must not block.
    static func run(
        _ argv: [String], environment: [String: String], timeout: Duration, maxOutput: Int,
        groups: JobGroups? = nil, directory: String? = nil, outputTail: Int = 65_536,
        onOutput: (@Sendable (JobOutputStream, Int, [UInt8]) -> Void)? = nil
    ) async throws(AgentError) -> Outcome {
        guard let program = argv.first, !program.isEmpty else { throw AgentError(.process, "payload.argv is empty") }
        func capture(_ label: String) throws(AgentError) -> Int32 {
            let path = NSTemporaryDirectory() + "nodeagent-job-\(getpid())-\(UUID().uuidString).\(label)"
            let fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw AgentError(.process, "cannot create \(path): \(String(cString: strerror(errno)))")
            }
            unlink(path)
            return fd
        }
        let out = try capture("out")
        defer { close(out) }
        let err = try capture("err")
        defer { close(err) }

        guard let path = ProcessRunner.find(program) else {
            throw AgentError(.process, "cannot start \(program): \(String(cString: strerror(ENOENT)))")
        }
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cEnvironment.forEach { free($0) } }
        let started = ContinuousClock.now
        // Under a shepherd that leads the job's process group and ends it when the agent dies
        // (aurora_spawn_job): a job never outlives its agent, so a requeued job never runs twice.
        // A job (it carries its agent's tag and id) also gets a cgroup where the machine allows
        // one (``JobCgroup``): what leaves the process group ends with the job too.
        let cgroup = environment[LeftoverJobs.variable].flatMap { tag in
            environment["AURORA_JOB_ID"].flatMap { id in
                JobCgroup.create(tag: tag, id: id + "." + (environment["AURORA_JOB_ATTEMPT"] ?? "1"))
            }
        }
        defer { cgroup?.remove() }
        var pid: Int32 = 0
        let cgroupFD = cgroup?.descriptor ?? -1
        let spawned =
            directory.map { aurora_spawn_job(path, cArguments, cEnvironment, out, err, $0, cgroupFD, &pid) }
            ?? aurora_spawn_job(path, cArguments, cEnvironment, out, err, nil, cgroupFD, &pid)
        guard spawned == 0 else {
            throw AgentError(.process, "cannot start \(program): \(String(cString: strerror(spawned)))")
        }
        groups?.add(pid)
        defer { groups?.remove(pid) }

        // What was handed to onOutput so far, per stream.
        var delivered: [JobOutputStream: off_t] = [.stdout: 0, .stderr: 0]
        var chunk = onOutput == nil ? [] : [UInt8](repeating: 0, count: 65_536)
        func deliverNew() {
            guard let onOutput else { return }
            for (stream, fd) in [(JobOutputStream.stdout, out), (.stderr, err)] {
                // The descriptor's offset is where the command writes next (it shares the open
                // file): SEEK_CUR reads it without moving it.
                let written = lseek(fd, 0, SEEK_CUR)
                guard var offset = delivered[stream], written > offset else { continue }
                var skipped = 0
                if written - offset > off_t(max(outputTail, 1)) {
                    skipped = Int(written - offset) - max(outputTail, 1)
                    offset += off_t(skipped)
                }
                while offset < written {
                    let n = chunk.withUnsafeMutableBytes {
                        pread(fd, $0.baseAddress!, min($0.count, Int(written - offset)), offset)
                    }
                    if n <= 0 { break }
                    offset += off_t(n)
                    onOutput(stream, skipped, Array(chunk[0..<n]))
                    skipped = 0
                }
                delivered[stream] = offset
            }
        }
        var status: Int32 = 0
        var timedOut = false, cancelled = false
        while true {
            deliverNew()
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid || (reaped < 0 && errno != EINTR) { break }
            if started.duration(to: .now) >= timeout {
                timedOut = true
            } else if Task.isCancelled {
                cancelled = true
            } else {
                try? await Task.sleep(for: .milliseconds(10))
                continue
            }
            kill(-pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            break
        }
        kill(-pid, SIGKILL)  // what the command left behind in its group
        deliverNew()
        func read(_ fd: Int32) -> ([UInt8], Bool) {
            let size = Int(lseek(fd, 0, SEEK_END))
            lseek(fd, 0, SEEK_SET)
            var bytes = [UInt8](repeating: 0, count: min(max(size, 0), maxOutput))
            let n = bytes.isEmpty ? 0 : bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            return (Array(bytes.prefix(max(n, 0))), size > maxOutput)
        }
        let (stdout, stdoutTruncated) = read(out)
        let (stderr, stderrTruncated) = read(err)
        let exited = (status & 0x7f) == 0
        return Outcome(
            exitCode: exited ? (status >> 8) & 0xff : nil, signal: exited ? nil : status & 0x7f, stdout: stdout,
            stderr: stderr,
            stdoutTruncated: stdoutTruncated, stderrTruncated: stderrTruncated, timedOut: timedOut,
            cancelled: cancelled,
            duration: started.duration(to: .now))
    }
}
