/* The same-host fast path, the client's side (design: fastpath.h): a connect to a service on this host gets a Unix
 * socket pair instead of TCP. A placeholder TCP connection wakes the server's accept(); its end of the pair goes to
 * the daemon (AS_CONNECTED with AS_F_FASTPATH), ours replaces the program's socket at its fd number.
 * unix(7), seccomp_unotify(2) (SECCOMP_IOCTL_NOTIF_ADDFD), socket(7) (SO_LINGER). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen_internal.h"

/* Whether the program's socket may be replaced by a Unix socket: not bound (its local address is part of what the
 * program set up), and not registered in an epoll instance (the swap would silently drop the registration). */
int as_may_swap(struct as_gen *g, struct as_pending *p) {
  struct sockaddr_storage cur;
  socklen_t cl = sizeof(cur);
  struct as_ep ep;
  if (getsockname(p->sock, (struct sockaddr *)&cur, &cl) < 0 || as_ep_from_sockaddr(&cur, cl, &ep) < 0 || ep.port)
    return 0;
  int r = as_fd_in_epoll(p->pid, p->pfd, p->ino);
  if (r != 0) {
    g->stats_fast_declined++;
    as_dbg(g, "fd %d of %d is in an epoll set (or unknown: %d): TCP instead of the fast path", p->pfd, p->pid, r);
    return 0;
  }
  return 1;
}

/* Options the program set on the socket being replaced: SOL_SOCKET ones move to the Unix socket, TCP/IP ones are
 * remembered for the emulation. */
void as_inherit_options(int from, int to, struct as_fsock *e) {
  static const int sol_ints[] = {SO_KEEPALIVE, SO_PRIORITY, SO_OOBINLINE};
  for (size_t i = 0; i < sizeof(sol_ints) / sizeof(sol_ints[0]); i++) {
    int v;
    socklen_t l = sizeof(v);
    if (getsockopt(from, SOL_SOCKET, sol_ints[i], &v, &l) == 0 && v) setsockopt(to, SOL_SOCKET, sol_ints[i], &v, l);
  }
  static const int sol_tv[] = {SO_RCVTIMEO, SO_SNDTIMEO};
  for (size_t i = 0; i < 2; i++) {
    struct timeval tv;
    socklen_t l = sizeof(tv);
    if (getsockopt(from, SOL_SOCKET, sol_tv[i], &tv, &l) == 0 && (tv.tv_sec || tv.tv_usec))
      setsockopt(to, SOL_SOCKET, sol_tv[i], &tv, l);
  }
  struct linger lg;
  socklen_t ll = sizeof(lg);
  if (getsockopt(from, SOL_SOCKET, SO_LINGER, &lg, &ll) == 0 && lg.l_onoff) setsockopt(to, SOL_SOCKET, SO_LINGER, &lg, ll);
  static const int tcp[] = {TCP_NODELAY, TCP_CORK, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT};
  for (size_t i = 0; i < sizeof(tcp) / sizeof(tcp[0]); i++) {
    int v;
    socklen_t l = sizeof(v);
    if (getsockopt(from, IPPROTO_TCP, tcp[i], &v, &l) == 0) as_fsock_store(e, IPPROTO_TCP, tcp[i], v);
  }
  int tos;
  socklen_t tl = sizeof(tos);
  if (getsockopt(from, SOL_IP, IP_TOS, &tos, &tl) == 0 && tos) as_fsock_store(e, SOL_IP, IP_TOS, tos);
}

int as_fast_register(struct as_gen *g, int s, struct as_fsock *e) {
  struct stat st;
  e->cookie = as_sock_cookie(s);
  e->ino = fstat(s, &st) == 0 ? (uint64_t)st.st_ino : 0;
  return e->cookie ? as_ftab_put(&g->ftab, e) : -EINVAL;
}

static void fast_failed(struct as_gen *g, struct as_pending *p, int err) {
  struct as_p_connect *c = &p->u.connect;
  as_pend_unwatch(g, p);
  close(c->conn);
  c->conn = -1;
  c->fast = 0;
  as_spec_drop(p);
  if (err == ECONNREFUSED && c->alt && ++c->tries < CONNECT_TRIES) {
    as_connect_retry(g, p); /* that instance is gone: ask for another */
    return;
  }
  as_pend_finish(g, p, -err);
}

/* The placeholder is connected (it sits in the server's accept queue): make the socket pair, hand the server's end
 * and the placeholder to the daemon, install the client's end at the program's fd number. */
static void fast_done(struct as_gen *g, struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  as_pend_unwatch(g, p);
  struct sockaddr_storage loc;
  socklen_t ll = sizeof(loc);
  struct as_ep lep;
  if (getsockname(c->conn, (struct sockaddr *)&loc, &ll) < 0 || ll > AS_ADDR_MAX || as_ep_from_sockaddr(&loc, ll, &lep) < 0) {
    as_pend_finish(g, p, -ECONNABORTED);
    return;
  }
  int pflags;
  uint64_t pino;
  if (as_fd_info(p->pid, p->pfd, &pflags, &pino) < 0 || pino != p->ino) { /* the fd was closed or reused meanwhile */
    as_pend_finish(g, p, -EBADF);
    return;
  }
  int offered = c->spec_sent && c->spec_fd >= 0; /* the daemon has the server's end already (AS_F_OFFER) */
  int sv[2] = {-1, -1};
  if (offered) {
    sv[0] = c->spec_fd;
    c->spec_fd = -1; /* ownership moves */
  } else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    as_pend_finish(g, p, -errno);
    return;
  }
  struct as_fsock e;
  memset(&e, 0, sizeof(e));
  e.family = p->family;
  e.local = g->identity;
  e.local.port = lep.port;
  as_ep_from_sockaddr(c->dst, c->dst_len, &e.peer);
  as_inherit_options(p->sock, sv[0], &e);
  int fl = fcntl(p->sock, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);

  /* The sentinel (proto.h AS_F_SENTINEL): should the server's end be closed before anyone took it (the daemon had no
   * room for it, or nobody accepted), the program's next read or write fails with ECONNRESET, not a clean EOF. The
   * pair is new and empty, so the byte always fits. */
  static const char sentinel = 0;
  int sent_byte = !offered && send(sv[0], &sentinel, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1; /* offered: spec_prepare did */
  int sent = 0;
  if (!offered) {
    struct as_msg m;
    memset(&m, 0, sizeof(m));
    m.type = AS_CONNECTED;
    m.flags = AS_F_FASTPATH | (sent_byte ? AS_F_SENTINEL : 0);
    m.pid = (uint32_t)p->pid;
    m.addr_len = ll;
    memcpy(m.addr, &loc, ll);
    m.addr2_len = c->real_len;
    memcpy(m.addr2, c->real, c->real_len);
    int give[2] = {sv[1], c->conn};
    sent = as_daemon_send(g, &m, NULL, give, 2); /* failed: nobody could vouch for this connection at the server's
                                                    accept, so it fails */
    close(sv[1]);
  } else {
    g->stats_offers_taken++;
  }
  close(c->conn);
  c->conn = -1;
  int r = sent < 0 ? -ENETDOWN : as_fast_register(g, sv[0], &e);
  if (r == 0) {
    r = as_notif_addfd_at(g->notif_fd, p->id, sv[0], p->pfd, (pflags & O_CLOEXEC) != 0);
    if (r < 0) as_ftab_del(&g->ftab, e.cookie);
  }
  close(sv[0]);
  if (r < 0) {
    as_pend_finish(g, p, r == -ENOENT ? -ECONNABORTED : r);
    return;
  }
  g->stats_fast++;
  /* loopback TCP never completes a non-blocking connect at once: answer as it would (the socket is writable and
   * SO_ERROR is 0, so the program's completion check succeeds on its first poll) */
  as_pend_finish(g, p, fl >= 0 && (fl & O_NONBLOCK) ? -EINPROGRESS : 0);
}

void as_fast_connect(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *dst, int dlen) {
  struct as_p_connect *c = &p->u.connect;
  c->fast = 1;
  if (connect(c->conn, (const struct sockaddr *)dst, (socklen_t)dlen) == 0) {
    fast_done(g, p);
    return;
  }
  if (errno != EINPROGRESS) {
    fast_failed(g, p, errno);
    return;
  }
  /* Over loopback the handshake is done by the time connect() returns, unless the listener's queue is full: one look
   * (no wait) spares the epoll round (add, wait, delete) on nearly every connection */
  struct pollfd pf = {.fd = c->conn, .events = POLLOUT};
  if (poll(&pf, 1, 0) == 1) {
    as_fast_ready(g, p);
    return;
  }
  int r = as_pend_watch(g, p, c->conn, EPOLLOUT);
  if (r < 0) as_pend_finish(g, p, r);
}

void as_start_fast(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *dst, int dlen) {
  int c = socket(p->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c < 0) {
    as_pend_finish(g, p, -errno);
    return;
  }
  p->u.connect.conn = c; /* ownership moves to the entry */
  /* The placeholder only wakes the server: when its last holder closes it, a reset instead of a FIN, so that no
   * TIME_WAIT keeps its ephemeral port. At thousands of connections a second, TIME_WAIT placeholders exhaust the
   * port range in seconds and every connect() then scans it (measured: 5000/s falling to 300/s). */
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  as_fast_connect(g, p, dst, dlen);
}

void as_fast_ready(struct as_gen *g, struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  int err = 0;
  socklen_t l = sizeof(err);
  if (getsockopt(c->conn, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
  /* An offered placeholder may be accepted, and reset by the server's generator (it closes it without TIME_WAIT),
   * before we look: a reset means it was established, which is all it was for. */
  if (err == ECONNRESET && c->spec_sent) err = 0;
  if (err) fast_failed(g, p, err);
  else fast_done(g, p);
}
