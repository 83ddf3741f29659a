/* A duplicate of another process's descriptor (see taskfd.h). pidfd_open(2), pidfd_getfd(2). */
#define _GNU_SOURCE
#include "taskfd.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

int as_task_dup_fd(pid_t pid, int fd) {
  if (pid <= 0 || fd < 0) return -EINVAL;
  int p = (int)syscall(SYS_pidfd_open, pid, 0);
  if (p < 0) return -errno;
  int d = (int)syscall(SYS_pidfd_getfd, p, fd, 0); /* close-on-exec by definition */
  int e = errno;
  close(p);
  return d < 0 ? -e : d;
}
