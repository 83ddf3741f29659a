/* Access to a trapped task: its memory (process_vm_readv/writev(2)) and its file descriptors (pidfd_getfd(2)). */
#ifndef APPSWITCH_PROCMEM_H
#define APPSWITCH_PROCMEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads/writes exactly len bytes at addr in task pid. Returns 0, -EFAULT (bad or partial range) or -ESRCH. */
int as_mem_read(pid_t pid, uint64_t addr, void *buf, size_t len);
int as_mem_write(pid_t pid, uint64_t addr, const void *buf, size_t len);

/* Two writes in one system call (the hot path of getsockname: the address and its length). */
int as_mem_write2(pid_t pid, uint64_t a1, const void *b1, size_t l1, uint64_t a2, const void *b2, size_t l2);

/* A small cache of pidfds by tid: one pidfd_open per task, not per trapped call. */
#define AS_PIDFD_SLOTS 64
struct as_pidfds {
  pid_t tid[AS_PIDFD_SLOTS];
  int fd[AS_PIDFD_SLOTS];
};
void as_pidfds_init(struct as_pidfds *c);
void as_pidfds_close(struct as_pidfds *c);
/* Duplicates the task's descriptor `fd` into this process (O_CLOEXEC). Returns our fd, -EBADF, or -ESRCH. */
int as_task_getfd(struct as_pidfds *c, pid_t tid, int fd);

#endif
