/* The offer channel between generators (design: offer_chan.h). unix(7): abstract names, SCM_RIGHTS, SO_PASSCRED. */
#define _GNU_SOURCE
#include "offer_chan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t abstract_addr(struct sockaddr_un *a, const char *name) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  size_t n = strnlen(name, sizeof(a->sun_path) - 1);
  memcpy(a->sun_path + 1, name, n);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

int as_ochan_open(char *name_out, size_t cap) {
  uint8_t rnd[16];
  if (cap < 48) return -EINVAL;
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) return -EIO;
  int n = snprintf(name_out, cap, "appswitch-gen-");
  for (int i = 0; i < 16; i++) n += snprintf(name_out + n, cap - (size_t)n, "%02x", rnd[i]);
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  int one = 1;
  struct sockaddr_un a;
  socklen_t al = abstract_addr(&a, name_out);
  if (setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 || bind(s, (struct sockaddr *)&a, al) < 0) {
    int e = errno;
    close(s);
    return -e;
  }
  return s;
}

int as_ochan_send(int s, const char *to, const struct as_ochan_msg *m, int fd) {
  struct sockaddr_un a;
  socklen_t al = abstract_addr(&a, to);
  struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof(*m)};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
  } c;
  memset(&c, 0, sizeof(c));
  struct msghdr mh = {.msg_name = &a, .msg_namelen = al, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf)};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  /* Our effective ids, said explicitly: the kernel's default is the real uid, which for the setuid launcher of a
   * member (caller.h) is the member's, and the receiver wants its own effective uid (root). The kernel lets a sender
   * name only its own real, effective or saved ids (unix(7)), so the member's own processes still cannot pass. */
  cm = CMSG_NXTHDR(&mh, cm);
  struct ucred me = {.pid = getpid(), .uid = geteuid(), .gid = getegid()};
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_CREDENTIALS;
  cm->cmsg_len = CMSG_LEN(sizeof(me));
  memcpy(CMSG_DATA(cm), &me, sizeof(me));
  return sendmsg(s, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(*m) ? 0 : -errno;
}

int as_ochan_recv(int s, struct as_ochan_msg *m, int *fd) {
  for (;;) {
    struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
    union {
      struct cmsghdr h;
      char buf[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(struct ucred))];
    } c;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf)};
    ssize_t n = recvmsg(s, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    int got = -1, more = 0, cred_ok = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
      if (cm->cmsg_level != SOL_SOCKET) continue;
      if (cm->cmsg_type == SCM_RIGHTS) {
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
          int f;
          memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
          if (got < 0) got = f;
          else {
            close(f);
            more = 1;
          }
        }
      } else if (cm->cmsg_type == SCM_CREDENTIALS) {
        struct ucred u;
        memcpy(&u, CMSG_DATA(cm), sizeof(u));
        static uid_t me = (uid_t)-1;
        if (me == (uid_t)-1) me = geteuid(); /* the generator's uid never changes */
        cred_ok = u.uid == me;
      }
    }
    if (n == (ssize_t)sizeof(*m) && m->magic == AS_OCHAN_MAGIC && got >= 0 && !more && cred_ok &&
        !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
      *fd = got;
      return 1;
    }
    if (got >= 0) close(got); /* not an offer from one of ours: dropped */
  }
}
