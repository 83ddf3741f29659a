/* Message + file-descriptor passing over Unix sockets (SCM_RIGHTS). unix(7), cmsg(3). */
#define _GNU_SOURCE
#include "scm_rights.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

ssize_t as_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags) {
  if (nfds < 0 || nfds > AS_MAX_FDS) return -EINVAL;
  union {
    char buf[CMSG_SPACE(sizeof(int) * AS_MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  for (;;) {
    ssize_t r = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

ssize_t as_recv_fds_ex(int sock, void *buf, size_t cap, int *fds, int *nfds, int flags, int *lost) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * AS_MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = buf, .iov_len = cap};
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof(ctl.buf);
  *nfds = 0;
  if (lost) *lost = 0;
  ssize_t r;
  for (;;) {
    r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (r >= 0) break;
    if (errno != EINTR) return -errno;
  }
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (size_t)i, sizeof(int));
      if (*nfds < AS_MAX_FDS) fds[(*nfds)++] = fd;
      else close(fd);
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    for (int i = 0; i < *nfds; i++) close(fds[i]);
    *nfds = 0;
    if (!(msg.msg_flags & MSG_TRUNC) && lost) {
      *lost = 1;
      return r;
    }
    return -EMSGSIZE;
  }
  return r;
}

ssize_t as_recv_fds(int sock, void *buf, size_t cap, int *fds, int *nfds, int flags) {
  return as_recv_fds_ex(sock, buf, cap, fds, nfds, flags, NULL);
}
