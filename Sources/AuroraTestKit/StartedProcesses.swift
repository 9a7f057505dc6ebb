import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Everything this process started that must not outlive it when it is interrupted: its child
/// processes (``ChildProcess`` registers each one while it runs), servers that run on their own
/// (a PostgreSQL postmaster started with `pg_ctl`, or one a `nodeagent` lead manages), and
/// scratch directories. Tests never call ``endAll(grace:)``; a benchmark's SIGTERM/SIGINT
/// handler does, then exits.
public enum StartedProcesses {
    /// How a registered process is found and stopped.
    struct Entry: Sendable {
        /// A direct child (stopped first, with SIGTERM) or a server running on its own (stopped
        /// after the children, which may stop it themselves: a lead stops its PostgreSQL).
        var isChild: Bool
        var stopSignal: Int32
        /// The PID now, or nil when it is not running.
        var pid: @Sendable () -> pid_t?
    }

    private static let entries = Mutex<[UInt64: Entry]>([:])
    private static let scratchDirectories = Mutex<Set<String>>([])
    private static let nextKey = Atomic<UInt64>(0)

    /// Registers a process; the key unregisters it.
    static func register(_ entry: Entry) -> UInt64 {
        let key = nextKey.add(1, ordering: .relaxed).newValue
        entries.withLock { $0[key] = entry }
        return key
    }

    static func unregister(_ key: UInt64) {
        _ = entries.withLock { $0.removeValue(forKey: key) }
    }

    /// A PostgreSQL server whose data directory is `directory`: its postmaster, from
    /// `postmaster.pid`, stopped with SIGINT (fast shutdown). Returns the registration key.
    static func registerPostmaster(dataDirectory directory: String) -> UInt64 {
        register(Entry(isChild: false, stopSignal: SIGINT) { postmasterPID(dataDirectory: directory) })
    }

    static func addScratch(_ path: String) { _ = scratchDirectories.withLock { $0.insert(path) } }
    static func removeScratch(_ path: String) { _ = scratchDirectories.withLock { $0.remove(path) } }

    /// Ends everything registered, synchronously (for a signal handler's thread): SIGTERM to
    /// every child, up to `grace` for them to exit, SIGKILL to the rest; then the servers that
    /// still run (fast shutdown, then SIGKILL); then removes the scratch directories.
    public static func endAll(grace: Duration = .seconds(10)) {
        let all = entries.withLock { Array($0.values) }
        stop(all.filter(\.isChild), grace: grace)
        stop(all.filter { !$0.isChild }, grace: .seconds(5))
        // The benchmark's own clean-up may be removing the same tree at the same time (its
        // requests fail once the children are gone): a few tries, until the tree is gone.
        for path in scratchDirectories.withLock({ Array($0) }) {
            for _ in 0..<5 where FileManager.default.fileExists(atPath: path) {
                try? FileManager.default.removeItem(atPath: path)
                usleep(50_000)
            }
        }
    }

    private static func stop(_ group: [Entry], grace: Duration) {
        let targets = group.compactMap { entry in entry.pid().map { ($0, entry.stopSignal) } }.filter {
            processExists($0.0)
        }
        for (pid, signal) in targets { kill(pid, signal) }
        let deadline = ContinuousClock.now + grace
        while targets.contains(where: { processExists($0.0) }), ContinuousClock.now < deadline { usleep(20_000) }
        for (pid, _) in targets where processExists(pid) { kill(pid, SIGKILL) }
        let killDeadline = ContinuousClock.now + .seconds(2)
        while targets.contains(where: { processExists($0.0) }), ContinuousClock.now < killDeadline { usleep(20_000) }
    }
}

/// The postmaster of the PostgreSQL data directory `directory` while it runs (its
/// `postmaster.pid` names a live `postgres` process), else nil.
public func postmasterPID(dataDirectory directory: String) -> pid_t? {
    guard let text = try? String(contentsOfFile: directory + "/postmaster.pid", encoding: .utf8),
        let pid = text.split(separator: "\n").first.flatMap({ pid_t($0) }), processExists(pid),
        let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8), name.hasPrefix("postgres")
    else { return nil }
    return pid
}
