/* The generator's view of a trapped call's socket and address arguments: our duplicate of the program's socket
 * (pidfd_getfd(2)), and sockaddr arguments read the way the kernel reads them (bind(2), connect(2)). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen_internal.h"

/* Duplicates the program's fd and checks it is a socket: SO_DOMAIN fails with ENOTSOCK on anything else, which
 * spares an fstat on the hot path. type and ino are looked up only when asked for.
 * Returns our fd or -errno (EBADF, ENOTSOCK, ESRCH). */
int as_get_socket(struct as_gen *g, pid_t pid, int fd, int *family, int *type, uint64_t *ino) {
  int s = as_task_getfd(&g->pidfds, pid, fd);
  if (s < 0) return s;
  socklen_t l = sizeof(int);
  if (getsockopt(s, SOL_SOCKET, SO_DOMAIN, family, &l) < 0) {
    int e = errno;
    close(s);
    return e == ENOTSOCK ? -ENOTSOCK : -e;
  }
  if (type) {
    l = sizeof(int);
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, type, &l) < 0) *type = -1;
  }
  if (ino) {
    struct stat st;
    *ino = fstat(s, &st) == 0 ? (uint64_t)st.st_ino : 0;
  }
  return s;
}

/* The common start of every socket handler: our duplicate of the program's inet socket, or -1 when the
 * notification is already answered (an errno, or CONTINUE for non-inet sockets: that decision looked only at the
 * socket's family, never at program memory). */
int as_take_inet_socket(struct as_gen *g, struct seccomp_notif *req, int *family, int *type, uint64_t *ino) {
  int s = as_get_socket(g, (pid_t)req->pid, (int)req->data.args[0], family, type, ino);
  if (s < 0) {
    if (s != -ESRCH) as_reply(g, req->id, s);
    return -1;
  }
  if (!as_is_inet(*family)) {
    close(s);
    as_reply_continue(g, req->id);
    return -1;
  }
  return s;
}

/* Reads a sockaddr argument the way move_addr_to_kernel() does: len outside [0, sizeof(sockaddr_storage)]
 * is EINVAL, an unreadable range EFAULT. Then applies the family's own checks (inet_bind/tcp_v4_connect,
 * inet6_bind/tcp_v6_connect): too short is EINVAL, another family EAFNOSUPPORT. */
int as_read_inet_addr(pid_t pid, uint64_t uaddr, int64_t ulen, int family, int allow_unspec,
                      struct sockaddr_storage *out, uint32_t *out_len) {
  if (ulen < 0 || ulen > (int64_t)sizeof(struct sockaddr_storage)) return -EINVAL;
  memset(out, 0, sizeof(*out));
  int r = as_mem_read(pid, uaddr, out, (size_t)ulen);
  if (r < 0) return r;
  if (ulen < (int64_t)sizeof(sa_family_t)) return -EINVAL;
  if (allow_unspec && out->ss_family == AF_UNSPEC) {
    *out_len = (uint32_t)ulen;
    return 0;
  }
  size_t need = family == AF_INET ? sizeof(struct sockaddr_in) : 24;
  if ((size_t)ulen < need) return -EINVAL;
  if (out->ss_family != family) return -EAFNOSUPPORT;
  *out_len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  return 0;
}

/* Reads the address argument (args[1], args[2]) of bind/connect, then checks that the notification is still
 * valid before anything acts on what was read. Returns 0, or -1 when the notification is answered (an errno) or
 * gone; s is closed then. */
int as_take_addr(struct as_gen *g, struct seccomp_notif *req, int s, int family, int allow_unspec,
                 struct sockaddr_storage *a, uint32_t *alen) {
  int r = as_read_inet_addr((pid_t)req->pid, req->data.args[1], (int64_t)(int32_t)req->data.args[2], family,
                            allow_unspec, a, alen);
  if (as_notif_id_valid(g->notif_fd, req->id) < 0) { /* the memory we read may not be the task's any more */
    close(s);
    return -1;
  }
  if (r < 0) {
    close(s);
    as_reply(g, req->id, r);
    return -1;
  }
  return 0;
}
