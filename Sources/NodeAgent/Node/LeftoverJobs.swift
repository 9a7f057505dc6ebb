import Foundation
import Glibc

/// Job processes an earlier run of this agent left behind.
///
/// Every job carries `AURORA_JOB_AGENT=<the agent's data directory>` in its environment. A job's
/// shepherd ends the job's process group when its agent dies, so leftovers are rare: a shepherd
/// that was itself killed, or a job that left its group. Before the GPU worker takes work it ends
/// every process of this user that still carries the tag, with its process group, so a job that
/// was requeued elsewhere cannot go on running here beside its next attempt.
enum LeftoverJobs {
    /// The environment variable that names the agent a job belongs to.
    static let variable = "AURORA_JOB_AGENT"

    /// The tag's value for the agent with data directory `dataDir`: the absolute path.
    static func tag(dataDir: String) -> String {
        URL(fileURLWithPath: dataDir).standardizedFileURL.path
    }

    /// Sends SIGKILL to every visible process whose environment holds `AURORA_JOB_AGENT=tag`,
    /// and to its process group unless that is the agent's own; returns the processes found.
    /// Processes of other users (whose environment cannot be read) are never touched.
    static func end(tag: String) -> [pid_t] {
        let entry = Array("\(variable)=\(tag)".utf8)
        let own = getpid(), ownGroup = getpgrp()
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [pid_t] = []
        for name in names {
            guard let pid = pid_t(name), pid > 1, pid != own,
                let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                environ.split(separator: 0).contains(where: { $0.elementsEqual(entry) })
            else { continue }
            found.append(pid)
            let group = getpgid(pid)
            if group > 1, group != ownGroup { kill(-group, SIGKILL) }
            kill(pid, SIGKILL)
        }
        return found
    }
}
