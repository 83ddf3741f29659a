/* Descriptor inspection (fd_inspect.h). kcmp(2) (KCMP_EPOLL_TFD), proc(5) (/proc/PID/fd, /proc/PID/fdinfo),
 * getdents64(2). */
#define _GNU_SOURCE
#include "fd_inspect.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int as_fd_info(pid_t tid, int fd, int *flags, uint64_t *ino) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)tid, fd);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return -errno;
  ssize_t n = read(f, buf, sizeof(buf) - 1);
  close(f);
  if (n <= 0) return -EIO;
  buf[n] = 0;
  char *p = strstr(buf, "flags:");
  if (!p) return -EIO;
  *flags = (int)strtol(p + 6, NULL, 8);
  p = strstr(buf, "ino:");
  *ino = p ? strtoull(p + 4, NULL, 10) : 0;
  return 0;
}

/* Whether kcmp(2) answers here: -1 not yet known, 0 no (ENOSYS: a kernel without CONFIG_KCMP), 1 yes. */
static int kcmp_works = -1;

/* By kcmp: 1 when descriptor `ep` of tid is an epoll instance holding fd (the same open file, registered under that
 * number); 0 when `ep` is open and does not (not an epoll: EINVAL; no such item: ENOENT); -EBADF when `ep` is not
 * open; -errno otherwise. An instance can hold several items under one number (the first file dup()ed elsewhere and
 * the number reused): `toff` walks them. The instance is searched by the kernel, not printed and parsed. */
static int kcmp_has(pid_t tid, int ep, int fd) {
  for (uint32_t toff = 0;; toff++) {
    struct kcmp_epoll_slot slot = {.efd = (uint32_t)ep, .tfd = (uint32_t)fd, .toff = toff};
    long r = syscall(SYS_kcmp, tid, tid, KCMP_EPOLL_TFD, fd, (unsigned long)&slot);
    int e = errno;
    if (r >= 0 || e == EINVAL || e == ENOENT || e == EBADF) kcmp_works = 1;
    else if (e == ENOSYS) kcmp_works = 0; /* EPERM is about this task (not ours to inspect): no swap for it */
    if (r == 0) return 1;
    if (r > 0) continue; /* another file under that number */
    return e == EINVAL || e == ENOENT ? 0 : -e;
  }
}

/* By /proc: descriptor `ep` is an epoll instance (its link reads anon_inode:[eventpoll]) whose fdinfo lists fd
 * ("tfd: N events: .. data: .. pos:.. ino:HEX sdev:..") with inode ino. For kernels without kcmp(2). */
static int fdinfo_has(pid_t tid, int dir, const char *ep, int fd, uint64_t ino) {
  char link[64];
  ssize_t n = readlinkat(dir, ep, link, sizeof(link) - 1);
  if (n <= 0) return 0;
  link[n] = 0;
  if (strcmp(link, "anon_inode:[eventpoll]")) return 0;
  char path[320];
  snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)tid, ep);
  FILE *f = fopen(path, "re");
  if (!f) return errno == ENOENT ? 0 : -errno; /* closed since we listed it */
  char line[256];
  int found = 0;
  while (!found && fgets(line, sizeof(line), f)) {
    if (strncmp(line, "tfd:", 4)) continue;
    if ((int)strtol(line + 4, NULL, 10) != fd) continue;
    char *p = strstr(line, "ino:");
    if (!p || strtoull(p + 4, NULL, 16) == ino) found = 1;
  }
  fclose(f);
  return found;
}

/* The numbered walk: descriptors 0, 1, 2, ... asked by kcmp until `open` of them have answered as open (the count
 * /proc gave). A closed number costs one failed call, so a dense table (the usual one) costs its size, with no listing
 * of /proc/PID/fd (which builds an entry per descriptor). 0 or 1 as as_fd_in_epoll; -EAGAIN when the walk ran past a
 * few closed numbers short of the count (a sparse table: a descriptor far above the others, or one opened
 * meanwhile), with *end the first number not asked; -ENOSYS when kcmp cannot be used; another -errno (EPERM: a task
 * we may not inspect) as it came. */
static int walk(pid_t tid, int fd, int open, int *end) {
  int seen = 0, ep = 0;
  for (; seen < open && ep < open + 8; ep++) {
    if (ep == fd) { /* the socket itself is no epoll */
      seen++;
      continue;
    }
    int r = kcmp_has(tid, ep, fd);
    if (r == 1) return 1;
    if (r == 0) seen++;
    else if (r != -EBADF) return kcmp_works == 0 ? -ENOSYS : r;
  }
  *end = ep;
  return seen >= open ? 0 : -EAGAIN;
}

struct dirent64_raw {
  uint64_t ino;
  int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[];
};

/* The listing: every descriptor /proc/PID/fd names from number `from` on, by kcmp or (without it) by its link and
 * fdinfo. */
static int listed(pid_t tid, int fd, uint64_t ino, int from) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", (int)tid);
  int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -errno;
  char buf[8192] __attribute__((aligned(8)));
  int r = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof(buf));
    if (n <= 0) {
      if (n < 0) r = -errno;
      break;
    }
    for (long off = 0; off < n && r == 0;) {
      const struct dirent64_raw *de = (const struct dirent64_raw *)(buf + off);
      off += de->reclen;
      int ep = atoi(de->name);
      if (de->name[0] == '.' || ep == fd || ep < from) continue; /* the socket itself is no epoll */
      r = kcmp_works != 0 ? kcmp_has(tid, ep, fd) : 0;
      if (r == -EBADF) r = 0; /* closed since listed */
      else if (kcmp_works == 0) r = fdinfo_has(tid, dir, de->name, fd, ino);
    }
    if (r) break;
  }
  close(dir);
  return r;
}

int as_fd_in_epoll(pid_t tid, int fd, uint64_t ino) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", (int)tid);
  struct stat st; /* the directory's size is the number of open descriptors (Linux 6.2; 0 before: then we list) */
  if (stat(path, &st) < 0) return -errno;
  if (st.st_size > AS_FD_SCAN_MAX) return -E2BIG;
  int from = 0;
  if (st.st_size > 0 && kcmp_works != 0) {
    int r = walk(tid, fd, (int)st.st_size, &from); /* sets `from` only for -EAGAIN */
    if (r != -EAGAIN && r != -ENOSYS) return r;
  }
  return listed(tid, fd, ino, from);
}
