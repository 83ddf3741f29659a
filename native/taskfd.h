/* A duplicate of another process's file descriptor, for the daemon: pidfd_open(2) + pidfd_getfd(2) (kernel >= 5.6;
 * PTRACE_MODE_ATTACH_REALCREDS over the target: CAP_SYS_PTRACE, as root). The launcher has its own cached variant
 * (procmem.h); this one holds nothing. */
#ifndef APPSWITCH_TASKFD_H
#define APPSWITCH_TASKFD_H

#include <sys/types.h>

/* Returns a new O_CLOEXEC descriptor for the file that process pid holds as fd, or -errno (-ESRCH: no such process,
 * -EBADF: it holds no such fd, -EPERM: not allowed). */
int as_task_dup_fd(pid_t pid, int fd);

#endif
