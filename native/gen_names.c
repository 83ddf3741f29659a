/* socket(), getsockname()/getpeername() and setsockopt()/getsockopt() for the program: sockets made in the host's
 * namespace, the names the program must see (virtual endpoints), and the options the fast path and sockopt_emul.h
 * answer. socket(2), getsockname(2), getpeername(2), getsockopt(2), seccomp_unotify(2) (SECCOMP_ADDFD_FLAG_SEND). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "gen_internal.h"

/* The local address of a connection accepted on a wildcard listener (:: or 0.0.0.0) is the app's identity: changes
 * *local when it is a wildcard and the app has an identity. Returns whether it did. */
int as_wildcard_to_identity(const struct as_gen *g, struct as_ep *local) {
  static const uint8_t zero[16], v4any[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
  if (!g->has_identity || (memcmp(local->ip, zero, 16) && memcmp(local->ip, v4any, 16))) return 0;
  memcpy(local->ip, g->identity.ip, 16);
  return 1;
}

/* The name the program must see for its socket: the virtual endpoint when we know one, else the real one. */
int as_virtual_name(struct as_gen *g, int sock, int peer, struct sockaddr_storage *out) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  if ((peer ? getpeername(sock, (struct sockaddr *)&ss, &l) : getsockname(sock, (struct sockaddr *)&ss, &l)) < 0)
    return -errno; /* ENOTSOCK for a non-socket: no separate check needed on this hot path */
  int family = ss.ss_family;
  if (family == AF_UNIX && g->ftab.count) { /* a fast-path connection shows the TCP endpoints it stands for */
    struct as_fsock *e = as_ftab_get(&g->ftab, as_sock_cookie(sock));
    if (e) return as_ep_to_sockaddr(peer ? &e->peer : &e->local, e->family, out);
  }
  if (!as_is_inet(family)) return -EAFNOSUPPORT; /* not ours: the caller lets the kernel answer */
  struct as_ep real, virt;
  if (peer && g->pmap.slots && as_pmap_get(&g->pmap, as_sock_cookie(sock), &virt)) return as_ep_to_sockaddr(&virt, family, out);
  if (as_ep_from_sockaddr(&ss, l, &real) == 0) {
    if (as_vmap_get(g->vmap, &real, &virt)) {
      /* A connection accepted on a wildcard listener has a concrete local address; the listener itself (no peer)
       * keeps its wildcard. */
      struct as_ep named = virt;
      struct sockaddr_storage ps;
      socklen_t pl = sizeof(ps);
      if (!peer && as_wildcard_to_identity(g, &named) && getpeername(sock, (struct sockaddr *)&ps, &pl) == 0) virt = named;
      return as_ep_to_sockaddr(&virt, family, out);
    }
    if (!peer && g->has_identity && real.port != 0) {
      /* A client socket talking to a virtual endpoint shows the app's identity as its own address. */
      struct sockaddr_storage ps;
      socklen_t pl = sizeof(ps);
      struct as_ep pr, pv;
      if (getpeername(sock, (struct sockaddr *)&ps, &pl) == 0 && as_ep_from_sockaddr(&ps, pl, &pr) == 0 &&
          as_vmap_get(g->vmap, &pr, &pv)) {
        virt = g->identity;
        virt.port = real.port;
        int n = as_ep_to_sockaddr(&virt, family, out);
        if (n > 0) return n;
      }
    }
  }
  memcpy(out, &ss, l);
  return (int)l;
}

/* ---- socket() ----------------------------------------------------------------------------------------------- */

void as_h_socket(struct as_gen *g, struct seccomp_notif *req) {
  int domain = (int)req->data.args[0];
  int type = (int)req->data.args[1];
  int proto = (int)req->data.args[2];
  /* Only TCP and UDP: for them the kernel runs the socket guard's hooks (sockguard.h) on every path that picks an
   * address (connect, TCP fast open, UDP sendmsg with a destination, bind). ICMP echo sockets, SCTP and MPTCP have
   * sends or connects those hooks do not see, so a program could race a CONTINUEd call onto one of them. */
  int kind = type & 0xf;
  if (!(proto == 0 || (kind == SOCK_STREAM && proto == IPPROTO_TCP) || (kind == SOCK_DGRAM && proto == IPPROTO_UDP))) {
    as_reply(g, req->id, -EPROTONOSUPPORT);
    return;
  }
  int s = socket(domain, type | SOCK_CLOEXEC, proto); /* in our (the host's) network namespace */
  if (s < 0) {
    as_reply(g, req->id, -errno);
    return;
  }
  int r = as_notif_addfd_send(g->notif_fd, req->id, s, (type & SOCK_CLOEXEC) != 0);
  if (r >= 0) as_tstats_end(&g->tstats, &g->cur, 0);
  if (r < 0 && r != -ENOENT) as_reply(g, req->id, r); /* e.g. EMFILE: the program's fd limit */
  close(s);
  g->stats_local++;
}

/* ---- getsockname() / getpeername() ------------------------------------------------------------------------ */

void as_h_getname(struct as_gen *g, struct seccomp_notif *req, int peer) {
  int s = as_task_getfd(&g->pidfds, (pid_t)req->pid, (int)req->data.args[0]);
  if (s < 0) {
    if (s != -ESRCH) as_reply(g, req->id, s);
    return;
  }
  struct sockaddr_storage out;
  int n = as_virtual_name(g, s, peer, &out);
  if (n == -EAFNOSUPPORT) { /* AF_UNIX and friends: the kernel's own answer, asked on our duplicate. Never CONTINUE:
                             * the fd could be an inet socket by then, and the program would see its real name. */
    socklen_t l = sizeof(out);
    n = (peer ? getpeername(s, (struct sockaddr *)&out, &l) : getsockname(s, (struct sockaddr *)&out, &l)) < 0 ? -errno : (int)l;
  }
  close(s);
  if (n < 0) {
    as_reply(g, req->id, n);
    return;
  }
  pid_t pid = (pid_t)req->pid;
  uint64_t uaddr = req->data.args[1], ulenp = req->data.args[2];
  int32_t ulen;
  int r = as_mem_read(pid, ulenp, &ulen, sizeof(ulen));
  if (r == 0 && ulen < 0) r = -EINVAL;
  int32_t full = n;
  if (r == 0) r = as_mem_write2(pid, uaddr, &out, (size_t)((int32_t)n < ulen ? n : ulen), ulenp, &full, sizeof(full));
  g->stats_local++;
  as_reply(g, req->id, r < 0 ? (r == -ESRCH ? -EFAULT : r) : 0);
}

/* ---- setsockopt() / getsockopt() at TCP/IP level, SO_DOMAIN, SO_PROTOCOL ---------------------------------- */

/* The fast path's Unix sockets need our answer, and so do the few options we keep for real inet sockets
 * (sockopt_emul.h: TCP_DEFER_ACCEPT, IPV6_V6ONLY after a bind); every other call gets the kernel's (CONTINUE: the
 * decision looked at the option's name and which socket the fd is, never at program memory). */
void as_h_sockopt(struct as_gen *g, struct seccomp_notif *req, int set) {
  int level = (int)req->data.args[1], name = (int)req->data.args[2];
  int emulated = as_oemu_wants(&g->oemu, level, name, set); /* kept by us on real inet sockets too */
  if (!g->ftab.count && !emulated) {
    as_reply_continue(g, req->id);
    return;
  }
  pid_t pid = (pid_t)req->pid;
  int s = as_task_getfd(&g->pidfds, pid, (int)req->data.args[0]);
  if (s < 0) {
    if (s != -ESRCH) as_reply_continue(g, req->id); /* EBADF and the like: the kernel says it */
    return;
  }
  uint64_t cookie = as_sock_cookie(s);
  struct as_fsock *e = g->ftab.count ? as_ftab_get(&g->ftab, cookie) : NULL;
  if (!e && emulated) {
    int result;
    int r = as_oemu_serve(&g->oemu, s, cookie, pid, req->data.args, set, g->notif_fd, req->id, &result);
    close(s);
    if (r < 0) return; /* the notification is gone */
    if (r == 0) as_reply_continue(g, req->id);
    else {
      g->stats_local++;
      as_reply(g, req->id, result == -ESRCH ? -EFAULT : result);
    }
    return;
  }
  close(s);
  if (!e) {
    as_reply_continue(g, req->id);
    return;
  }
  uint64_t uval = req->data.args[3];
  g->stats_local++;
  int r = 0;
  if (set) { /* do_tcp_setsockopt's order: length, then the read (EFAULT), then the option */
    int len = (int)req->data.args[4];
    uint8_t val[sizeof(e->cc)];
    memset(val, 0, sizeof(val));
    int string = level == IPPROTO_TCP && name == TCP_CONGESTION;
    if (len < 0 || (!string && len < (int)sizeof(int) && level != SOL_SOCKET)) r = -EINVAL;
    if (!r && level != SOL_SOCKET)
      r = as_mem_read(pid, uval, val, string ? (size_t)(len < (int)sizeof(val) - 1 ? len : (int)sizeof(val) - 1) : sizeof(int));
    if (as_notif_id_valid(g->notif_fd, req->id) < 0) return;
    if (!r) r = as_fsock_setopt(e, level, name, val, len);
    as_reply(g, req->id, r);
    return;
  }
  uint64_t ulenp = req->data.args[4];
  int32_t len;
  uint8_t out[512]; /* every answer is clamped to its type: int, tcp_info, a congestion-control name */
  r = as_mem_read(pid, ulenp, &len, sizeof(len));
  if (!r) r = as_fsock_getopt(e, level, name, out, &len);
  if (!r) r = as_mem_write2(pid, uval, out, (size_t)len, ulenp, &len, sizeof(len));
  as_reply(g, req->id, r == -ESRCH ? -EFAULT : r);
}
