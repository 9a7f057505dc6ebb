import Foundation

#if canImport(Glibc)
#endif

/// The agent's data directory: created on first start, exclusively locked for the agent's
/// lifetime (a second agent on the same directory is refused), and the home of every file the
/// agent must keep.
///
/// The directory is 0711: others may traverse it (the managed PostgreSQL, run as its own user,
/// must reach `postgres/`) but not list it; every secret file in it is 0600.
public final class DataDirectory: Sendable {
    /// Absolute path.
    public let path: String
    /// The descriptor holding the `flock`; closed (and so released) when the process ends.
    private let lockDescriptor: Int32

    /// Creates the directory if needed, checks it is writable, and takes the lock.
    public init(path: String) throws(AgentError) {
        self.path = path
        try Self.createDirectory(path, mode: 0o711, what: "data dir")
        // Writable? A probe file answers for root and non-root alike (read-only mounts too).
        let probe = path + "/.write-probe-\(getpid())"
        let fd = open(probe, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AgentError(.dataDir, "data dir \(path) is not writable: \(String(cString: strerror(errno)))")
        }
        close(fd)
        unlink(probe)

        let lockPath = path + "/agent.lock"
        let descriptor = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AgentError(.dataDir, "cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder =
                (try? String(contentsOfFile: lockPath, encoding: .utf8))?.trimmingCharacters(
                    in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            throw AgentError(
                .dataDirLocked,
                "data dir \(path) is in use by another nodeagent\(holder.isEmpty ? "" : " (pid \(holder))"); stop it or use another --data-dir"
            )
        }
        let pid = "\(getpid())\n"
        ftruncate(descriptor, 0)
        _ = pid.withCString { pwrite(descriptor, $0, strlen($0), 0) }
        self.lockDescriptor = descriptor
    }

    deinit {
        close(lockDescriptor)
    }

    /// `path/relative`.
    public func file(_ relative: String) -> String { path + "/" + relative }

    /// Creates `path` (with `mode`) and missing parents (0755); an existing directory is kept
    /// as it is. Errors name `path` and, when a parent is the problem, that parent.
    static func createDirectory(_ path: String, mode: mode_t, what: String) throws(AgentError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw AgentError(.dataDir, "\(what) \(path) exists and is not a directory")
            }
            return
        }
        var missing: [String] = []
        var current = path
        while !current.isEmpty, current != "/",
            !FileManager.default.fileExists(atPath: current, isDirectory: &isDirectory)
        {
            missing.append(current)
            current = (current as NSString).deletingLastPathComponent
        }
        if !current.isEmpty, current != "/", !isDirectory.boolValue {
            throw AgentError(.dataDir, "cannot create \(what) \(path): \(current) is not a directory")
        }
        for directory in missing.reversed() {
            let directoryMode: mode_t = directory == path ? mode : 0o755
            guard mkdir(directory, directoryMode) == 0 || errno == EEXIST else {
                throw AgentError(.dataDir, "cannot create \(what) \(path): \(String(cString: strerror(errno)))")
            }
            chmod(directory, directoryMode)  // not subject to the umask
        }
    }
}

/// Small, careful file operations for files that must survive a crash and stay private.
enum SecureFile {
    /// Writes `contents` to `path` atomically (temp file, fsync, rename, fsync of the directory)
    /// with `mode`. An existing file is replaced.
    static func write(_ contents: String, to path: String, mode: mode_t = 0o600) throws(AgentError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw AgentError(.dataDir, "cannot write \(path): \(String(cString: strerror(errno)))") }
        fchmod(fd, mode)
        let bytes = Array(contents.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw AgentError(.dataDir, "cannot write \(path): \(reason)")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw AgentError(.dataDir, "cannot write \(path): \(reason)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw AgentError(.dataDir, "cannot write \(path): \(reason)")
        }
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }

    /// Reads a small text file; nil when it does not exist.
    static func read(_ path: String) throws(AgentError) -> String? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AgentError(.dataDir, "cannot read \(path): \(posixReason(error))")
        }
    }

    /// The permission bits of `path`.
    static func mode(_ path: String) -> mode_t? {
        FileStatus.of(path)?.permissions
    }
}
