/* Seccomp user-notification primitives: receive, reply, validate, inject fds. seccomp_unotify(2). */
#define _GNU_SOURCE
#include "notif.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

int as_notif_init(struct as_notif *n, int fd) {
  struct seccomp_notif_sizes sizes;
  memset(n, 0, sizeof(*n));
  n->fd = fd;
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) return -errno;
  n->req_size = sizes.seccomp_notif > sizeof(*n->req) ? sizes.seccomp_notif : sizeof(*n->req);
  n->resp_size = sizes.seccomp_notif_resp > sizeof(*n->resp) ? sizes.seccomp_notif_resp : sizeof(*n->resp);
  n->req = calloc(1, n->req_size);
  n->resp = calloc(1, n->resp_size);
  if (!n->req || !n->resp) {
    as_notif_free(n);
    return -ENOMEM;
  }
  return 0;
}

void as_notif_free(struct as_notif *n) {
  free(n->req);
  free(n->resp);
  n->req = NULL;
  n->resp = NULL;
}

int as_notif_set_sync_wakeup(int fd) {
  if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0) < 0) return -errno;
  return 0;
}

int as_notif_recv(struct as_notif *n) {
  for (;;) {
    memset(n->req, 0, n->req_size); /* the kernel insists on a zeroed buffer */
    if (ioctl(n->fd, SECCOMP_IOCTL_NOTIF_RECV, n->req) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

static int send_resp(struct as_notif *n, uint64_t id, int64_t val, int error, uint32_t flags) {
  memset(n->resp, 0, n->resp_size);
  n->resp->id = id;
  n->resp->val = val;
  n->resp->error = error;
  n->resp->flags = flags;
  for (;;) {
    if (ioctl(n->fd, SECCOMP_IOCTL_NOTIF_SEND, n->resp) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

int as_notif_reply(struct as_notif *n, uint64_t id, int64_t val, int error) {
  return send_resp(n, id, error < 0 ? 0 : val, error < 0 ? error : 0, 0);
}

int as_notif_continue(struct as_notif *n, uint64_t id) {
  return send_resp(n, id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
}

int as_notif_id_valid(int fd, uint64_t id) {
  if (ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0) return 0;
  return -errno;
}

int as_notif_addfd_send(int fd, uint64_t id, int srcfd, int cloexec) {
  struct seccomp_notif_addfd a;
  memset(&a, 0, sizeof(a));
  a.id = id;
  a.flags = SECCOMP_ADDFD_FLAG_SEND;
  a.srcfd = (uint32_t)srcfd;
  a.newfd_flags = cloexec ? O_CLOEXEC : 0;
  for (;;) {
    int r = ioctl(fd, SECCOMP_IOCTL_NOTIF_ADDFD, &a);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

int as_notif_addfd_at(int fd, uint64_t id, int srcfd, int newfd, int cloexec) {
  struct seccomp_notif_addfd a;
  memset(&a, 0, sizeof(a));
  a.id = id;
  a.flags = SECCOMP_ADDFD_FLAG_SETFD;
  a.srcfd = (uint32_t)srcfd;
  a.newfd = (uint32_t)newfd;
  a.newfd_flags = cloexec ? O_CLOEXEC : 0;
  for (;;) {
    int r = ioctl(fd, SECCOMP_IOCTL_NOTIF_ADDFD, &a);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}
