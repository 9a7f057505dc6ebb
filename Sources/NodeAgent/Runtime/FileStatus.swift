import CNIOLinux  // with MemberImportVisibility, `struct stat` resolves through whichever C module
import CoreFoundation  // imported it first; naming both here keeps that quirk in this one file.
import Glibc

/// What `stat(2)`/`lstat(2)` says of a path: the few fields the agent checks.
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
        var info = stat()
        guard (followingLinks ? stat(path, &info) : lstat(path, &info)) == 0 else { return nil }
        return FileStatus(mode: info.st_mode, size: Int64(info.st_size), uid: info.st_uid, gid: info.st_gid)
    }
}
