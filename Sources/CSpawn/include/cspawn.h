// posix_spawn helpers glibc declares only under _GNU_SOURCE, which Swift's Glibc module does
// not set; and stat(2) without `struct stat` in Swift (see aurora_stat). See spawn.c.
#ifndef AURORA_CSPAWN_H
#define AURORA_CSPAWN_H
#include <spawn.h>

/// Adds a file action that closes every descriptor >= `lowfd` in the child
/// (posix_spawn_file_actions_addclosefrom_np, glibc 2.34+).
int aurora_spawn_closefrom(posix_spawn_file_actions_t *actions, int lowfd);

/// stat(2) (or lstat(2) when `follow` is 0) into plain integers: with MemberImportVisibility,
/// Swift resolves `struct stat` through whichever C module happened to import it first.
/// Returns 0, or -1 with errno set.
int aurora_stat(const char *path, int follow, unsigned int *mode, long long *size, unsigned int *uid, unsigned int *gid);

/// Starts `path` (an absolute path) with exactly `argv` and `envp` as a job: stdin from
/// /dev/null, stdout and stderr to `out` and `err`, no other descriptor, default signal
/// handling, in directory `cwd` (NULL: the agent's; a `chdir` that fails shows as exit code 126).
/// Between the agent and the job sits a shepherd, the leader of the job's new process
/// group: it exits with the job's status (or dies of its signal), and when the agent dies, even
/// by kill -9, it kills the whole group at once. With `cgroup` (an O_DIRECTORY descriptor of a
/// cgroup v2 directory; -1 for none) the shepherd moves itself, and so the job and everything it
/// starts, into that cgroup before the job starts, and when the agent dies it also writes
/// `cgroup.kill`, which ends processes that left the job's process group (setsid). The
/// descriptor stays the caller's. `*pid` is the shepherd's pid, which is also the group's id.
/// Returns 0, or an errno value when nothing was started; an `execve` that fails shows as exit
/// code 127.
int aurora_spawn_job(
    const char *path, char *const argv[], char *const envp[], int out, int err, const char *cwd, int cgroup,
    int *pid);

#endif
