/* connect() for the program: the daemon answers where a virtual destination really is (AS_CONNECT); the generator
 * connects our duplicate of the program's socket there, skips refusing instances, takes the same-host fast path
 * (gen_fast.c) and reports connections to virtual endpoints (AS_CONNECTED). connect(2), tcp(7), udp(7). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gen_internal.h"

/* The first step of connect(2) on any file (__sys_connect: fdget, then move_addr_to_kernel): a length outside
 * [0, sizeof(sockaddr_storage)] is EINVAL, an unreadable address EFAULT. Returns 0 or -errno; *fam gets the family. */
static int move_addr(pid_t pid, uint64_t uaddr, int64_t ulen, int *fam) {
  struct sockaddr_storage ss;
  if (ulen < 0 || ulen > (int64_t)sizeof(ss)) return -EINVAL;
  memset(&ss, 0, sizeof(ss));
  int r = as_mem_read(pid, uaddr, &ss, (size_t)ulen);
  if (r < 0) return r == -ESRCH ? -EFAULT : r;
  *fam = ulen < (int64_t)sizeof(sa_family_t) ? -1 : ss.ss_family;
  return 0;
}

/* connect(2) on a socket that already has a connection (or listens) is EISCONN once the address was copied in and
 * has a family (__inet_stream_connect checks the state before the family and length of the address); AF_UNSPEC
 * still dissolves the association. Returns 1 when the notification is answered. A fast-path connection is a
 * connected TCP socket to the program, so it answers the same way. */
static int connect_busy(struct as_gen *g, struct seccomp_notif *req, int s, int fast) {
  struct sockaddr_storage ps;
  socklen_t pl = sizeof(ps);
  int listening = 0;
  socklen_t l = sizeof(listening);
  if (!fast && getpeername(s, (struct sockaddr *)&ps, &pl) < 0 &&
      (getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0 || !listening))
    return 0;
  int fam = -1;
  int r = move_addr((pid_t)req->pid, req->data.args[1], (int64_t)(int32_t)req->data.args[2], &fam);
  if (r == 0 && fam < 0) r = -EINVAL;
  if (r == 0 && fam == AF_UNSPEC) return 0;
  if (as_notif_id_valid(g->notif_fd, req->id) < 0) return 1;
  if (r == 0 && !fast && !listening) /* connected: the kernel's own answer (0 once after a non-blocking connect
                                      * completed, then EISCONN) does not depend on the address: ask it */
    r = connect(s, (struct sockaddr *)&ps, pl) < 0 ? -errno : 0;
  else if (r == 0)
    r = -EISCONN;
  as_reply(g, req->id, r);
  return 1;
}

void as_h_connect(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  uint64_t ino = 0;
  int s = as_get_socket(g, (pid_t)req->pid, (int)req->data.args[0], &family, &type, &ino);
  if (s == -ESRCH) return;
  if (s == -ENOTSOCK) { /* the address is copied in before the kernel looks at what the file is */
    int fam;
    int r = move_addr((pid_t)req->pid, req->data.args[1], (int64_t)(int32_t)req->data.args[2], &fam);
    as_reply(g, req->id, r < 0 ? r : -ENOTSOCK);
    return;
  }
  if (s < 0) {
    as_reply(g, req->id, s);
    return;
  }
  if (!as_is_inet(family)) {
    int fast = g->ftab.count && as_ftab_get(&g->ftab, as_sock_cookie(s)) != NULL;
    if (!fast || !connect_busy(g, req, s, 1)) as_reply_continue(g, req->id); /* decided on the family alone */
    close(s);
    return;
  }
  if (type == SOCK_STREAM && connect_busy(g, req, s, 0)) {
    close(s);
    return;
  }
  struct sockaddr_storage a;
  uint32_t alen;
  if (as_take_addr(g, req, s, family, 1, &a, &alen) < 0) return;
  if (a.ss_family == AF_UNSPEC) { /* dissolve the association: done here on our copy, never CONTINUEd */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    int r = connect(s, &unspec, sizeof(unspec)) < 0 ? -errno : 0;
    close(s);
    as_reply(g, req->id, r);
    return;
  }
  struct as_pending *p = as_pend_open(g, req, OP_CONNECT, s); /* s is the entry's now */
  if (!p) return;
  p->family = family;
  p->type = type;
  p->ino = ino;
  p->pfd = (int)req->data.args[0];
  memcpy(p->u.connect.dst, &a, alen);
  p->u.connect.dst_len = alen;
  if (type == SOCK_STREAM) {
    struct as_msg ans;
    int v = as_connect_local(g, p, &ans); /* decided from the decision table (gen_decide.c): the daemon is not asked */
    if (v == AS_LOCAL_REFUSED) as_pend_finish(g, p, -ECONNREFUSED);
    if (v == AS_LOCAL_ANSWER) as_on_connect_reply(g, p, &ans);
    if (v != AS_LOCAL_ASK) return;
    as_spec_prepare(g, p);
  }
  struct as_msg *m = as_pend_msg(p, AS_CONNECT, 0);
  memcpy(m->addr, &a, alen);
  m->addr_len = alen;
  as_pend_send(g, p);
}

void as_connect_retry(struct as_gen *g, struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  struct as_msg ans;
  int v = as_connect_local_retry(g, p, &ans);
  if (v == AS_LOCAL_REFUSED) as_pend_finish(g, p, -ECONNREFUSED);
  if (v == AS_LOCAL_ANSWER) as_on_connect_reply(g, p, &ans);
  if (v != AS_LOCAL_ASK) return;
  p->msg.flags |= AS_F_RETRY;
  memcpy(p->msg.addr2, c->real, c->real_len); /* the real destination that refused */
  p->msg.addr2_len = c->real_len;
  as_pend_send(g, p);
}

/* Tells the daemon which real endpoint a connection to a virtual endpoint leaves from, so the server's daemon can
 * learn the client's identity before the server's accept() returns. */
static void report_connected(struct as_gen *g, struct as_pending *p) {
  if (!p->u.connect.virtual_dest || p->type != SOCK_STREAM) return;
  struct sockaddr_storage loc;
  socklen_t l = sizeof(loc);
  if (getsockname(p->sock, (struct sockaddr *)&loc, &l) < 0 || l > AS_ADDR_MAX) return;
  if (as_report_same_host(g, p, &loc, l)) return; /* the server's generator reads who it is itself */
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_CONNECTED;
  m.pid = (uint32_t)p->pid;
  m.cookie = p->ino; /* as in the CONNECT: the daemon pairs the two (an egress connection's asked destination) */
  if (p->u.connect.local) { /* decided here: the daemon counts the connect too */
    m.flags |= AS_F_DECIDED;
    m.arg = p->u.connect.ntried;
  }
  m.addr_len = l;
  memcpy(m.addr, &loc, l);
  m.addr2_len = p->u.connect.real_len;
  memcpy(m.addr2, p->u.connect.real, p->u.connect.real_len);
  as_daemon_send(g, &m, NULL, NULL, 0);
}

void as_on_connect_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  struct as_p_connect *c = &p->u.connect;
  if (c->spec_sent && !(m->flags & AS_F_OFFER)) as_spec_drop(p); /* not taken: the daemon closed its copies */
  if (m->result < 0) {
    as_pend_finish(g, p, m->result);
    return;
  }
  if ((m->flags & AS_F_NOWHERE) && p->type == SOCK_DGRAM) {
    /* the local host, nothing there: a datagram connect succeeds and leaves the socket unconnected (the kernel's UDP
     * connect sends nothing); a send is refused as before (it is never sent: as_on_send_reply) */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(p->sock, &unspec, sizeof(unspec));
    as_pend_finish(g, p, 0);
    return;
  }
  /* remember destinations that are elsewhere (other hosts, and egress: no virtual peer) so that their next connects
   * carry no speculative offer */
  if (p->type == SOCK_STREAM) as_hint_set(g, p, !(m->flags & AS_F_FASTPATH));
  struct as_ep real, virt;
  if (m->addr_len > sizeof(c->real) || as_ep_from_sockaddr(m->addr, m->addr_len, &real) < 0) {
    as_pend_finish(g, p, -EINVAL);
    return;
  }
  struct sockaddr_storage dst;
  int dlen = as_ep_to_sockaddr(&real, p->family, &dst);
  if (dlen < 0) {
    as_pend_finish(g, p, -ENETUNREACH);
    return;
  }
  if (m->addr2_len && as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) == 0) {
    if (m->flags & AS_F_EGRESS) as_pmap_put(&g->pmap, as_sock_cookie(p->sock), &virt); /* its own peer, see peermap.h */
    else as_vmap_put(g->vmap, &real, &virt);
  } else if (p->type == SOCK_DGRAM) {
    as_urecv_sent_direct(g, &real); /* replies from there show that address */
  }
  memcpy(c->real, &dst, (size_t)dlen);
  c->real_len = (uint32_t)dlen;
  if (p->type == SOCK_DGRAM) as_urecv_before_send(g, p->sock, p->family); /* who sends from here, before it does */
  /* With other instances to fall back on, wait for the outcome even on a non-blocking socket, so that a refusing
   * instance can be skipped before the program sees anything (it then sees an immediate success). */
  c->alt = (m->flags & AS_F_ALTERNATIVES) != 0;
  c->virtual_dest = m->addr2_len > 0;
  if ((m->flags & AS_F_OFFER) && c->spec_sent && c->spec_fd >= 0 && c->conn >= 0) { /* connect the placeholder */
    as_fast_connect(g, p, &dst, dlen);
    return;
  }
  if ((m->flags & AS_F_FASTPATH) && p->type == SOCK_STREAM && c->virtual_dest && as_may_swap(g, p)) {
    as_start_fast(g, p, &dst, dlen);
    return;
  }
  int fl = fcntl(p->sock, F_GETFL);
  if (p->type != SOCK_STREAM || (!c->alt && fl >= 0 && (fl & O_NONBLOCK))) {
    /* datagram sockets never block; a non-blocking stream gets EINPROGRESS and later SO_ERROR, as usual */
    int rc = connect(p->sock, (struct sockaddr *)&dst, (socklen_t)dlen) < 0 ? -errno : 0;
    if (rc == 0 || rc == -EINPROGRESS) report_connected(g, p);
    as_pend_finish(g, p, rc);
    return;
  }
  /* A blocking connect must block only the calling thread: start it non-blocking on the shared socket,
   * restore the flag at once, and answer when the socket becomes writable. */
  fcntl(p->sock, F_SETFL, fl | O_NONBLOCK);
  int rc = connect(p->sock, (struct sockaddr *)&dst, (socklen_t)dlen);
  int e = errno;
  fcntl(p->sock, F_SETFL, fl);
  if (rc == 0 || e == EINPROGRESS) report_connected(g, p);
  if (rc == 0) {
    as_pend_finish(g, p, 0);
    return;
  }
  if (e != EINPROGRESS && e != EALREADY) {
    as_pend_finish(g, p, -e);
    return;
  }
  int r = as_pend_watch(g, p, p->sock, EPOLLOUT);
  if (r < 0) as_pend_finish(g, p, r);
}

void as_on_connect_ready(struct as_gen *g, struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  if (c->fast) {
    as_fast_ready(g, p);
    return;
  }
  int err = 0;
  socklen_t l = sizeof(err);
  if (getsockopt(p->sock, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
  if (err == ECONNREFUSED && c->alt && ++c->tries < CONNECT_TRIES) {
    /* that instance refused: reset the socket (tcp_disconnect) and ask the daemon for another */
    as_pend_unwatch(g, p);
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(p->sock, &unspec, sizeof(unspec));
    as_connect_retry(g, p);
    return;
  }
  as_pend_finish(g, p, err ? -err : 0);
}
