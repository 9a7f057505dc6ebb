// posix_spawn helpers glibc declares only under _GNU_SOURCE, which Swift's Glibc module does
// not set. One function; see spawn.c.
#ifndef AURORA_CSPAWN_H
#define AURORA_CSPAWN_H
#include <spawn.h>

/// Adds a file action that closes every descriptor >= `lowfd` in the child
/// (posix_spawn_file_actions_addclosefrom_np, glibc 2.34+).
int aurora_spawn_closefrom(posix_spawn_file_actions_t *actions, int lowfd);

#endif
