/* What a program's descriptor is, seen from its generator: the open flags and inode behind a fd number
 * (/proc/PID/fdinfo), and whether the socket there is registered in one of the program's epoll instances. The fast
 * path (fastpath.h) asks both before it replaces a socket at its fd number. */
#ifndef APPSWITCH_FD_INSPECT_H
#define APPSWITCH_FD_INSPECT_H

#include <stdint.h>
#include <sys/types.h>

/* Telling whether a socket is in one of the program's epoll instances costs a look at each of its descriptors (about
 * 1 µs each: there is no way to list only the epoll ones). A program holding more than this many is not looked
 * through: -E2BIG, and its connection stays TCP. */
#define AS_FD_SCAN_MAX 256

/* 1 when fd of task tid is registered, under that number, in one of the task's epoll instances; 0 when not; -errno
 * when it could not be told, -E2BIG for more than AS_FD_SCAN_MAX descriptors (callers treat all those as
 * "registered": no swap). ino is the socket's inode, for the fallback that reads the instances' fdinfo where kcmp(2)
 * is missing. */
int as_fd_in_epoll(pid_t tid, int fd, uint64_t ino);
/* Reads /proc/<tid>/fdinfo/<fd>: *flags (open flags, O_CLOEXEC included) and *ino. Returns 0 or -errno. */
int as_fd_info(pid_t tid, int fd, int *flags, uint64_t *ino);

#endif
