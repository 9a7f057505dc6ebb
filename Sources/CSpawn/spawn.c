#define _GNU_SOURCE
#include <spawn.h>
#include <sys/stat.h>
#include "cspawn.h"

int aurora_spawn_closefrom(posix_spawn_file_actions_t *actions, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowfd);
}

int aurora_stat(const char *path, int follow, unsigned int *mode, long long *size, unsigned int *uid, unsigned int *gid) {
    struct stat info;
    int result = follow ? stat(path, &info) : lstat(path, &info);
    if (result != 0) return -1;
    *mode = (unsigned int)info.st_mode;
    *size = (long long)info.st_size;
    *uid = (unsigned int)info.st_uid;
    *gid = (unsigned int)info.st_gid;
    return 0;
}

// MARK: - Jobs under a shepherd

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

// The agent's lifeline: the agent holds the write end for as long as it lives; every shepherd
// holds only the read end, which reads end-of-file the moment the agent is gone (also kill -9).
static int lifeline_read = -1, lifeline_write = -1, lifeline_error = 0;
static pthread_once_t lifeline_once = PTHREAD_ONCE_INIT;

static void lifeline_open(void) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        lifeline_error = errno;
        return;
    }
    lifeline_read = fds[0];
    lifeline_write = fds[1];
}

// Closes every descriptor from 3 up except the `count` in `keep` (sorted, all >= 3).
static void close_all_but(const int *keep, int count) {
    unsigned int from = 3;
    for (int i = 0; i < count; i++) {
        if ((unsigned int)keep[i] > from) close_range(from, (unsigned int)keep[i] - 1, 0);
        if ((unsigned int)keep[i] >= from) from = (unsigned int)keep[i] + 1;
    }
    close_range(from, ~0U, 0);
}

// The shepherd's SIGCHLD handler: it only interrupts ppoll, so the job's exit is seen at once.
static void on_child(int sig) { (void)sig; }

static void sort_fds(int *v, int count) {
    for (int i = 1; i < count; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            int t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

static void reset_signals(void) {
    struct sigaction dfl;
    dfl.sa_handler = SIG_DFL;
    dfl.sa_flags = 0;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

// Writes `text` to the file `name` in the directory `dir` (a cgroup's control files). Async-signal-safe.
static int write_at(int dir, const char *name, const char *text, size_t length) {
    int fd = openat(dir, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t written = write(fd, text, length);
    close(fd);
    return written == (ssize_t)length ? 0 : -1;
}

int aurora_spawn_job(
    const char *path, char *const argv[], char *const envp[], int out, int err, const char *cwd, int cgroup,
    int *pid) {
    pthread_once(&lifeline_once, lifeline_open);
    if (lifeline_read < 0) return lifeline_error ? lifeline_error : EBADF;
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0) return errno;
    pid_t shepherd = fork();
    if (shepherd < 0) {
        int error = errno;
        close(null);
        return error;
    }
    if (shepherd == 0) {
        // The shepherd, a copy of a multithreaded process: async-signal-safe calls only. It keeps
        // none of the agent's descriptors (listening sockets, store connections) but its own.
        int keep[5] = {lifeline_read, null, out, err, cgroup >= 0 ? cgroup : lifeline_read};
        sort_fds(keep, 5);
        close_all_but(keep, 5);
        setpgid(0, 0);
        // Into the job's cgroup before the job starts, so everything it starts is in it too,
        // also what leaves the process group. If that fails the group still holds the job.
        if (cgroup >= 0 && write_at(cgroup, "cgroup.procs", "0", 1) != 0) {
            close(cgroup);
            cgroup = -1;
        }
        // SIGCHLD blocked until ppoll: the job's exit interrupts the wait at once, also when it
        // comes between waitpid and ppoll.
        struct sigaction child;
        child.sa_handler = on_child;
        child.sa_flags = 0;
        sigemptyset(&child.sa_mask);
        sigaction(SIGCHLD, &child, NULL);
        sigset_t chld, waiting;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        sigprocmask(SIG_BLOCK, &chld, &waiting);
        sigdelset(&waiting, SIGCHLD);
        pid_t job = fork();
        if (job < 0) _exit(127);
        if (job == 0) {
            close(lifeline_read);
            dup2(null, 0);
            dup2(out, 1);
            dup2(err, 2);
            close_range(3, ~0U, 0);
            reset_signals();
            if (cwd != NULL && chdir(cwd) != 0) _exit(126);
            execve(path, argv, envp);
            _exit(127);
        }
        close(null);
        struct pollfd lifeline = {.fd = lifeline_read, .events = POLLIN};
        struct timespec second = {.tv_sec = 1, .tv_nsec = 0};
        int status = 0;
        for (;;) {
            pid_t done = waitpid(job, &status, WNOHANG);
            if (done == job) break;
            if (done < 0 && errno != EINTR) _exit(127);
            if (ppoll(&lifeline, 1, &second, &waiting) > 0 && lifeline.revents != 0) {
                // The agent is gone: the job's cgroup (what left the group too) and its whole
                // process group end, the shepherd with them.
                if (cgroup >= 0) write_at(cgroup, "cgroup.kill", "1", 1);
                kill(0, SIGKILL);
                _exit(137);
            }
        }
        if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
        // Die of the job's signal, so the agent sees what the job saw.
        int sig = WTERMSIG(status);
        reset_signals();
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    close(null);
    setpgid(shepherd, shepherd);  // also here: a kill(-pid) right after this call must reach the group
    *pid = shepherd;
    return 0;
}
