/* The state directory lock (see statelock.h). flock(2), open(2), pread(2), pwrite(2). */
#define _GNU_SOURCE
#include "statelock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
}

/* The pid written in the lock file by its holder, or 0 when there is none (not yet written, or not a number). */
static pid_t read_holder(int fd) {
  char buf[24];
  ssize_t n;
  do n = pread(fd, buf, sizeof(buf) - 1, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *end = NULL;
  long v = strtol(buf, &end, 10);
  if (end == buf || v <= 0 || v > 0x7fffffff) return 0;
  return (pid_t)v;
}

int as_statelock_take(const char *path, pid_t self, pid_t *holder) {
  *holder = 0;
  int fd __attribute__((cleanup(close_fd))) = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return -errno;
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    if (e == EWOULDBLOCK) *holder = read_holder(fd);
    return -e;
  }
  char buf[24];
  int len = snprintf(buf, sizeof(buf), "%d\n", (int)self);
  if (ftruncate(fd, 0) < 0) return -errno;
  ssize_t w;
  do w = pwrite(fd, buf, (size_t)len, 0);
  while (w < 0 && errno == EINTR);
  if (w < 0) return -errno;
  if (w != len) return -EIO;
  int out = fd;
  fd = -1; /* ownership moves to the caller, whose descriptor now holds the lock */
  return out;
}
