/* The daemon's claim on its state directory: an exclusive flock(2) on one file, held by an open descriptor for the
 * daemon's life, with the holder's pid written in the file so that a second daemon can name it. flock(2), open(2). */
#ifndef APPSWITCH_STATELOCK_H
#define APPSWITCH_STATELOCK_H

#include <sys/types.h>

/* Opens (creating, mode 0644) the lock file at path and takes an exclusive, non-blocking flock on it. On success
 * writes `self` (decimal, newline) as the file's whole content and returns the descriptor (O_CLOEXEC): the lock lasts
 * until it is closed or the process ends. When another open file holds the lock returns -EWOULDBLOCK and sets
 * *holder to the pid written in the file (0 when none could be read). Any other failure: -errno. */
int as_statelock_take(const char *path, pid_t self, pid_t *holder);

#endif
