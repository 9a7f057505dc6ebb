import Foundation
import Glibc

/// A cgroup v2 per exec job, where the agent may make one: under the agent's own cgroup, in
/// `aurora-jobs.<hash of the agent's tag>/job.<id>`. The job's shepherd joins it before the job
/// starts, so everything the job starts is in it, also a process that left the job's process
/// group with `setsid`; ending the job writes `cgroup.kill`, which ends all of them. When the
/// agent dies the shepherd writes `cgroup.kill` itself, and an agent that starts ends and removes
/// what an earlier run left (``sweep(tag:)``).
///
/// Without a writable cgroup v2 hierarchy (no cgroup2 mount, not root and no delegation — under
/// systemd the unit needs `Delegate=yes`) jobs run in their process group only, as before: the
/// agent logs that once (``available``).
struct JobCgroup: Sendable {
    /// The job's cgroup directory.
    let path: String
    /// Open on `path` (O_DIRECTORY), for the shepherd.
    let descriptor: Int32

    /// Where the agent's job cgroups go, or nil when cgroup v2 is not usable here.
    static func parent(tag: String) -> String? {
        guard let root = mountPoint, let own = ownPath else { return nil }
        return root + (own == "/" ? "" : own) + "/aurora-jobs." + hash(tag)
    }

    /// Whether jobs get a cgroup on this machine (the parent can be made and written).
    static func available(tag: String) -> Bool {
        guard let parent = parent(tag: tag) else { return false }
        if mkdir(parent, 0o755) != 0 && errno != EEXIST { return false }
        return access(parent + "/cgroup.procs", W_OK) == 0
    }

    /// A new cgroup for job `id` (a UUID and its attempt), or nil when none can be made.
    static func create(tag: String, id: String) -> JobCgroup? {
        guard let parent = parent(tag: tag), id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }),
            !id.isEmpty, id.count <= 80
        else { return nil }
        if mkdir(parent, 0o755) != 0 && errno != EEXIST { return nil }
        let path = parent + "/job." + id
        if mkdir(path, 0o755) != 0 && errno != EEXIST { return nil }
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            rmdir(path)
            return nil
        }
        return JobCgroup(path: path, descriptor: descriptor)
    }

    /// Ends every process in the cgroup and removes it (waiting up to a second for the kernel
    /// to let go of the processes); a cgroup that stays busy is left for the next ``sweep(tag:)``.
    func remove() {
        Self.end(path)
        close(descriptor)
        // The agent's directory goes too once it holds no job (it fails while another runs).
        rmdir((path as NSString).deletingLastPathComponent)
    }

    /// Ends and removes every job cgroup an earlier run of the agent `tag` left; returns how many.
    @discardableResult
    static func sweep(tag: String) -> Int {
        guard let parent = parent(tag: tag),
            let names = try? FileManager.default.contentsOfDirectory(atPath: parent)
        else { return 0 }
        var ended = 0
        for name in names where name.hasPrefix("job.") {
            end(parent + "/" + name)
            ended += 1
        }
        rmdir(parent)
        return ended
    }

    /// `cgroup.kill` (Linux 5.14+), else SIGKILL to each process listed; then rmdir, retried while
    /// the processes are still being reaped.
    private static func end(_ path: String) {
        if !write(path + "/cgroup.kill", "1") {
            for pid in procs(path) where pid > 1 { kill(pid, SIGKILL) }
        }
        let deadline = ContinuousClock.now + .seconds(1)
        while rmdir(path) != 0 && errno == EBUSY && ContinuousClock.now < deadline {
            usleep(5_000)
        }
    }

    private static func procs(_ path: String) -> [pid_t] {
        ((try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n")
            .compactMap { pid_t($0) }
    }

    private static func write(_ file: String, _ text: String) -> Bool {
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { Glibc.write(fd, $0, strlen($0)) } == text.utf8.count
    }

    /// The cgroup2 mount point, from /proc/self/mountinfo (field 5; fstype after ` - `).
    static let mountPoint: String? = {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count >= 5 { return String(fields[4]) }
        }
        return nil
    }()

    /// The agent's own cgroup v2 path (`0::/…` in /proc/self/cgroup).
    static let ownPath: String? = {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            let path = String(line.dropFirst(3))
            // A path that has been removed, or with odd characters, is no place to make groups.
            guard path.hasPrefix("/"), !path.contains(" (deleted)"), !path.contains("..") else { return nil }
            return path
        }
        return nil
    }()

    /// FNV-1a of the tag, 16 hex digits: one directory per agent, whatever its data directory.
    static func hash(_ text: String) -> String {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value &*= 0x0000_0100_0000_01b3
        }
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
