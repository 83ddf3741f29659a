/* Access to a trapped task: its memory (process_vm_readv/writev(2)) and its file descriptors (pidfd_getfd(2)). */
#define _GNU_SOURCE
#include "procmem.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD 0x80 /* O_EXCL: a pidfd for a thread, kernel >= 6.9 */
#endif

int as_mem_read(pid_t pid, uint64_t addr, void *buf, size_t len) {
  if (len == 0) return 0;
  if (addr == 0) return -EFAULT;
  struct iovec local = {.iov_base = buf, .iov_len = len};
  struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
  ssize_t r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (r == (ssize_t)len) return 0;
  if (r < 0 && errno == ESRCH) return -ESRCH;
  return -EFAULT;
}

int as_mem_write(pid_t pid, uint64_t addr, const void *buf, size_t len) {
  if (len == 0) return 0;
  if (addr == 0) return -EFAULT;
  struct iovec local = {.iov_base = (void *)buf, .iov_len = len};
  struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
  ssize_t r = process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (r == (ssize_t)len) return 0;
  if (r < 0 && errno == ESRCH) return -ESRCH;
  return -EFAULT;
}

int as_mem_write2(pid_t pid, uint64_t a1, const void *b1, size_t l1, uint64_t a2, const void *b2, size_t l2) {
  if ((l1 && a1 == 0) || (l2 && a2 == 0)) return -EFAULT;
  struct iovec local[2] = {{.iov_base = (void *)b1, .iov_len = l1}, {.iov_base = (void *)b2, .iov_len = l2}};
  struct iovec remote[2] = {{.iov_base = (void *)(uintptr_t)a1, .iov_len = l1},
                            {.iov_base = (void *)(uintptr_t)a2, .iov_len = l2}};
  ssize_t r = process_vm_writev(pid, local, 2, remote, 2, 0);
  if (r == (ssize_t)(l1 + l2)) return 0;
  if (r < 0 && errno == ESRCH) return -ESRCH;
  return -EFAULT;
}

void as_pidfds_init(struct as_pidfds *c) {
  for (int i = 0; i < AS_PIDFD_SLOTS; i++) {
    c->tid[i] = 0;
    c->fd[i] = -1;
  }
}

void as_pidfds_close(struct as_pidfds *c) {
  for (int i = 0; i < AS_PIDFD_SLOTS; i++) {
    if (c->fd[i] >= 0) close(c->fd[i]);
    c->fd[i] = -1;
    c->tid[i] = 0;
  }
}

static int open_pidfd(pid_t tid) {
  int fd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
  if (fd < 0 && errno == EINVAL) fd = (int)syscall(SYS_pidfd_open, tid, 0); /* older kernel: leaders only */
  return fd < 0 ? -errno : fd;
}

int as_task_getfd(struct as_pidfds *c, pid_t tid, int fd) {
  if (fd < 0) return -EBADF;
  int slot = (int)((unsigned)tid % AS_PIDFD_SLOTS);
  for (int attempt = 0; attempt < 2; attempt++) {
    if (c->tid[slot] != tid || c->fd[slot] < 0) {
      if (c->fd[slot] >= 0) close(c->fd[slot]);
      c->tid[slot] = 0;
      c->fd[slot] = open_pidfd(tid);
      if (c->fd[slot] < 0) {
        int err = c->fd[slot];
        c->fd[slot] = -1;
        return err == -EINVAL ? -ESRCH : err;
      }
      c->tid[slot] = tid;
    }
    int r = (int)syscall(SYS_pidfd_getfd, c->fd[slot], fd, 0);
    if (r >= 0) return r;
    if (errno != ESRCH) return -errno; /* EBADF: no such fd in the task */
    close(c->fd[slot]);                /* a stale pidfd from a task that died; its tid was reused */
    c->fd[slot] = -1;
    c->tid[slot] = 0;
  }
  return -ESRCH;
}
