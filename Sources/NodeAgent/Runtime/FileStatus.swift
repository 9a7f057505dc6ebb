import CSpawn
import Glibc

/// What `stat(2)`/`lstat(2)` says of a path: the few fields the agent checks. (Through a C
/// helper: with MemberImportVisibility, Swift resolves `struct stat` through whichever C module
/// imported it first, which changes with the import graph.)
struct FileStatus: Sendable, Equatable {
    /// `st_mode`: type and permission bits.
    var mode: mode_t
    /// `st_size`, in bytes.
    var size: Int64
    /// Owner and group: the managed PostgreSQL's start checks that its OS user can enter every parent.
    var uid: uid_t
    var gid: gid_t

    /// Permission bits only.
    var permissions: mode_t { mode & 0o7777 }
    /// A regular file (not a link, directory or device).
    var isRegularFile: Bool { mode & S_IFMT == S_IFREG }

    /// The status of `path`, following a final symbolic link unless `followingLinks` is false;
    /// nil when it cannot be read.
    static func of(_ path: String, followingLinks: Bool = true) -> FileStatus? {
        var mode: UInt32 = 0, size: Int64 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        guard aurora_stat(path, followingLinks ? 1 : 0, &mode, &size, &uid, &gid) == 0 else { return nil }
        return FileStatus(mode: mode, size: size, uid: uid, gid: gid)
    }
}
