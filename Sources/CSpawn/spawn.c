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
