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

#endif
