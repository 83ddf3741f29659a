/* The trap generator: serves one program's seccomp notifications, answers what needs no service-table decision
 * itself, and forwards the rest to the daemon over the trap socket. seccomp_unotify(2), epoll(7).
 *
 * Rules this file keeps (seccomp_unotify(2), "Design goals; use of SECCOMP_USER_NOTIF_FLAG_CONTINUE"):
 *   - memory of the program is read once, into our own buffers; NOTIF_ID_VALID is checked after reading and
 *     before acting; the action then uses only our copy. CONTINUE is used only where the decision read no memory
 *     (the fd's socket family), never after judging an address.
 *   - the program's socket is acted on through a pidfd_getfd(2) duplicate; the program's fd number never changes.
 *   - errors are the kernel's errno for the same bad input; a notification whose task died (ENOENT) is dropped.
 */
#define _GNU_SOURCE
#include "generator.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "offer_chan.h"
#include "proto.h"
#include "scm_rights.h"
#include "sockopt_emul.h"

enum { TAG_NOTIF = 1, TAG_DAEMON = 2, TAG_SIGNAL = 3, TAG_TIMER = 4, TAG_OCHAN = 5, TAG_FLUSH = 6, TAG_PENDING = 16 };
enum { OP_BIND = 1, OP_LISTEN_BIND, OP_LISTEN, OP_CONNECT, OP_SEND, OP_ACCEPT_WAIT, OP_ACCEPT_ASK };
#define BIND_TRIES 8
#define CONNECT_TRIES 8
#define UDP_MAX 65535
#define CTL_MAX 65536

struct as_udp {
  uint8_t *data;
  size_t len;
  uint8_t *ctl;
  size_t ctl_len;
  int flags;
};

static void udp_free(struct as_udp *u) {
  if (!u) return;
  free(u->data);
  free(u->ctl);
  free(u);
}

static void dbg(struct as_gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dbg(struct as_gen *g, const char *fmt, ...) {
  if (!g->verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "appswitch-generator: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- replies ---------------------------------------------------------------------------------------------- */

static void reply(struct as_gen *g, uint64_t id, int64_t val) {
  if (g->cur.live && g->cur.id == id) as_tstats_end(&g->tstats, &g->cur, val);
  int r = val < 0 ? as_notif_reply(&g->nc, id, 0, (int)val) : as_notif_reply(&g->nc, id, val, 0);
  if (r < 0 && r != -ENOENT) dbg(g, "reply failed: %s", strerror(-r));
}

static void reply_continue(struct as_gen *g, uint64_t id) {
  if (g->cur.live && g->cur.id == id) as_tstats_end(&g->tstats, &g->cur, 0);
  int r = as_notif_continue(&g->nc, id);
  if (r < 0 && r != -ENOENT) dbg(g, "continue failed: %s", strerror(-r));
}

/* ---- pending requests to the daemon ----------------------------------------------------------------------- */

static struct as_pending *pend_new(struct as_gen *g, uint64_t id, pid_t pid, int op, int sock) {
  for (int tries = 0; tries < AS_PENDING_MAX; tries++) {
    uint32_t seq = ++g->next_seq;
    if (seq == 0 || (seq & AS_SEQ_UDP)) { /* AS_SEQ_UDP numbers belong to udp_recv.c */
      g->next_seq = 0;
      seq = ++g->next_seq;
    }
    struct as_pending *p = &g->pend[seq % AS_PENDING_MAX];
    if (p->used) continue;
    memset(p, 0, sizeof(*p));
    p->conn = -1;
    p->epoll_fd = -1;
    p->pfd = -1;
    p->spec_fd = -1;
    p->spec_srv = -1;
    p->used = 1;
    p->seq = seq;
    p->id = id;
    p->pid = pid;
    p->op = op;
    p->sock = sock;
    if (g->cur.live && g->cur.id == id) { /* the answer now comes from this entry */
      p->mark = g->cur;
      g->cur.live = 0;
    }
    return p;
  }
  return NULL;
}

/* pend_new for a notification: on failure (too many requests in flight) answers EAGAIN and closes s. */
static struct as_pending *pend_open(struct as_gen *g, struct seccomp_notif *req, int op, int s) {
  struct as_pending *p = pend_new(g, req->id, (pid_t)req->pid, op, s);
  if (!p) {
    close(s);
    reply(g, req->id, -EAGAIN);
  }
  return p;
}

static void pend_done(struct as_gen *g, struct as_pending *p) {
  if (p->unsent && g->unsent) g->unsent--;
  if (p->in_epoll) epoll_ctl(g->epfd, EPOLL_CTL_DEL, p->epoll_fd, NULL);
  if (p->sock >= 0) close(p->sock);
  if (p->conn >= 0) close(p->conn);
  if (p->spec_fd >= 0) close(p->spec_fd);
  if (p->spec_srv >= 0) close(p->spec_srv);
  udp_free(p->udp);
  memset(p, 0, sizeof(*p));
  p->sock = -1;
  p->conn = -1;
  p->epoll_fd = -1;
  p->spec_fd = -1;
  p->spec_srv = -1;
}

/* Waits for fd to become ready (events) on behalf of pending request p. Returns 0 or -errno. */
static int pend_watch(struct as_gen *g, struct as_pending *p, int fd, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.u64 = TAG_PENDING + (uint64_t)(p - g->pend)};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  p->in_epoll = 1;
  p->epoll_fd = fd;
  return 0;
}

static void pend_unwatch(struct as_gen *g, struct as_pending *p) {
  if (!p->in_epoll) return;
  epoll_ctl(g->epfd, EPOLL_CTL_DEL, p->epoll_fd, NULL);
  p->in_epoll = 0;
  p->epoll_fd = -1;
}

static void pend_finish(struct as_gen *g, struct as_pending *p, int64_t val) {
  as_tstats_end(&g->tstats, &p->mark, val);
  reply(g, p->id, val);
  pend_done(g, p);
}

/* ---- the daemon going away and coming back ------------------------------------------------------------------
 * The daemon may restart (a crash, an upgrade) under running programs. Their established connections never went
 * through it and flow on. A request that needs the daemon while it is away is kept (unsent) and sent to the new
 * daemon as soon as a new session is up; requests whose answer was lost with the old daemon are sent again. The
 * timer tries to reconnect every 100 ms; a request that waited longer than wait_ms gets ENETDOWN. */

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void set_fast_timer(struct as_gen *g, int fast) {
  if (g->fast_timer == fast) return;
  g->fast_timer = fast;
  struct itimerspec its = {.it_interval = {.tv_sec = 1}, .it_value = {.tv_sec = 1}};
  if (fast) its = (struct itimerspec){.it_interval = {.tv_nsec = 100000000}, .it_value = {.tv_nsec = 100000000}};
  timerfd_settime(g->timer_fd, 0, &its, NULL);
}

static void pend_queue(struct as_gen *g, struct as_pending *p) {
  p->awaiting = 0;
  if (p->unsent) return;
  p->unsent = 1;
  p->queued_ms = now_ms();
  g->unsent++;
  set_fast_timer(g, 1);
}

static void pend_finish(struct as_gen *g, struct as_pending *p, int64_t val);

/* Answers ENETDOWN to queued requests that waited too long (all of them with force, or when no new session can be
 * made). */
static void expire_unsent(struct as_gen *g, int force) {
  uint64_t now = now_ms();
  for (int i = 0; i < AS_PENDING_MAX && g->unsent; i++) {
    struct as_pending *p = &g->pend[i];
    if (p->used && p->unsent && (force || !g->daemon_path || now - p->queued_ms >= (uint64_t)g->wait_ms))
      pend_finish(g, p, -ENETDOWN);
  }
}

/* The session broke: requests whose answer will never come are queued to be sent again. */
static void daemon_lost(struct as_gen *g) {
  if (g->daemon_fd < 0) return;
  dbg(g, "daemon connection lost");
  epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->daemon_fd, NULL);
  close(g->daemon_fd);
  g->daemon_fd = -1;
  for (int i = 0; i < AS_PENDING_MAX; i++)
    if (g->pend[i].used && g->pend[i].awaiting) pend_queue(g, &g->pend[i]);
  set_fast_timer(g, 1);
}

static int send_daemon(struct as_gen *g, struct as_msg *m) {
  if (g->daemon_fd < 0) return -ENETDOWN;
  m->version = AS_PROTO_VERSION;
  ssize_t r = as_send_fds(g->daemon_fd, m, sizeof(*m) + m->payload_len, NULL, 0, MSG_NOSIGNAL);
  if (r < 0) {
    dbg(g, "daemon send failed: %s", strerror((int)-r));
    daemon_lost(g);
    return -ENETDOWN;
  }
  return 0;
}

int as_gen_send_daemon(struct as_gen *g, struct as_msg *m) { return send_daemon(g, m); }

static void pend_send(struct as_gen *g, struct as_pending *p, uint16_t type, uint32_t flags);

/* A new session with a daemon that came back: the same app (by its ticket), then every queued request. */
static void try_reconnect(struct as_gen *g) {
  int s = as_session_connect(g->daemon_path);
  if (s < 0) return; /* not listening yet */
  struct as_msg hr;
  char ticket[AS_TICKET_MAX], why[256] = "";
  int hfds[AS_SESSION_FDS], nh = 0;
  int r = as_session_hello_fds(s, g->meta, g->ticket, g->has_identity ? &g->identity : NULL, 2000, &hr, ticket,
                               sizeof(ticket), why, sizeof(why), hfds, &nh);
  if (r == 0 && hr.result >= 0) { /* the new daemon's table (the old one stays mapped until here: decisions went on) */
    char id[AS_DTAB_ID_MAX];
    snprintf(id, sizeof(id), "%.*s", (int)strcspn(ticket, "."), ticket);
    as_dtab_attach(&g->dtab, nh > 0 ? hfds[0] : -1, nh > 1 ? hfds[1] : -1, id);
  }
  for (int i = 0; i < nh; i++) close(hfds[i]);
  if (r < 0 || hr.result < 0) {
    dbg(g, "new session refused: %s", r < 0 ? strerror(-r) : why);
    close(s);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_DAEMON};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, s, &ev) < 0) {
    close(s);
    return;
  }
  g->daemon_fd = s;
  g->stats_reconnects++;
  snprintf(g->ticket, sizeof(g->ticket), "%s", ticket);
  struct as_ep id;
  if (hr.addr_len && as_ep_from_sockaddr(hr.addr, hr.addr_len, &id) == 0) {
    g->identity = id; /* the same, unless the daemon lost its state (--clean) and gave another */
    g->has_identity = 1;
  }
  dbg(g, "new session with the daemon (%u requests queued)", g->unsent);
  if (!g->child_done) {
    struct as_msg m;
    memset(&m, 0, sizeof(m));
    m.type = AS_STARTED;
    m.pid = (uint32_t)g->child;
    send_daemon(g, &m);
  }
  as_urecv_resend_reports(g); /* who sends datagrams from where: the new daemon has no record of it */
  for (int i = 0; i < AS_PENDING_MAX && g->unsent && g->daemon_fd >= 0; i++) {
    struct as_pending *p = &g->pend[i];
    if (!p->used || !p->unsent) continue;
    p->unsent = 0;
    g->unsent--;
    pend_send(g, p, p->msgtype, p->msgflags);
  }
  if (g->daemon_fd >= 0 && !g->unsent) set_fast_timer(g, 0);
}

static void offer_expire(struct as_gen *g);
static void claims_flush(struct as_gen *g);

static void on_timer_tick(struct as_gen *g) {
  if (g->daemon_fd < 0 && g->daemon_path) try_reconnect(g);
  if (g->unsent) expire_unsent(g, 0);
  if (g->daemon_fd >= 0 && !g->unsent) set_fast_timer(g, 0);
}

/* Sends the pending request; while the daemon is away it waits (queued) for a new session. */
static void pend_send(struct as_gen *g, struct as_pending *p, uint16_t type, uint32_t flags) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = type;
  m.seq = p->seq;
  m.flags = flags;
  m.pid = (uint32_t)p->pid;
  m.arg = type == AS_LISTEN ? p->backlog : p->type;
  m.cookie = p->ino;
  m.addr_len = type == AS_LISTEN ? p->real_len : p->req_len;
  memcpy(m.addr, type == AS_LISTEN ? p->real : p->req, m.addr_len);
  if (type == AS_BIND && p->v6only) m.flags |= AS_F_V6ONLY;
  if ((flags & AS_F_RETRY) || type == AS_ACCEPT) {
    m.addr2_len = p->real_len;
    memcpy(m.addr2, p->real, p->real_len);
  }
  g->stats_forwarded++;
  p->msgtype = type;
  p->msgflags = flags;
  if (type == AS_CONNECT && !(flags & AS_F_RETRY) && p->spec_srv >= 0 && g->daemon_fd >= 0) {
    /* the speculative fast-path offer travels with the request: the server's end, then the placeholder */
    struct sockaddr_storage loc;
    socklen_t ll = sizeof(loc);
    if (getsockname(p->conn, (struct sockaddr *)&loc, &ll) == 0 && ll <= AS_ADDR_MAX) {
      m.flags |= AS_F_OFFER | (p->spec_sentinel ? AS_F_SENTINEL : 0);
      m.version = AS_PROTO_VERSION;
      m.addr2_len = ll;
      memcpy(m.addr2, &loc, ll);
      int give[2] = {p->spec_srv, p->conn};
      if (as_send_fds(g->daemon_fd, &m, sizeof(m), give, 2, MSG_NOSIGNAL) >= 0) {
        close(p->spec_srv);
        p->spec_srv = -1;
        p->spec_sent = 1;
        p->awaiting = 1;
        return;
      }
      daemon_lost(g);
      pend_queue(g, p);
      return;
    }
  }
  if (send_daemon(g, &m) == 0) {
    p->awaiting = 1;
    return;
  }
  pend_queue(g, p);
  if (!g->daemon_path) expire_unsent(g, 1); /* nobody to wait for */
}

static void notify_daemon(struct as_gen *g, uint16_t type, uint64_t ino, const void *addr, uint32_t len) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = type;
  m.cookie = ino;
  m.addr_len = len;
  if (len) memcpy(m.addr, addr, len);
  send_daemon(g, &m);
}

/* Tells the daemon which real endpoint a connection to a virtual endpoint leaves from, so the server's daemon can
 * learn the client's identity before the server's accept() returns. */
static void decided_note(struct as_gen *g, struct as_pending *p, int kind, const struct as_ep *local, const struct as_ep *real,
                         uint64_t inode, const char *server_app);

/* A connect decided here to an instance on this host: who we are goes into the host's identity table (dtab.h
 * as_ident) for the server's generator, and the daemon gets an AS_DECIDED record instead of AS_CONNECTED. Returns 0
 * when that could not be done (the caller reports to the daemon as before). */
static int report_same_host(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *loc, socklen_t l) {
  struct as_ep real, lep;
  if (!g->dtab.shm || !g->has_identity || as_ep_from_sockaddr(p->real, p->real_len, &real) < 0 ||
      as_ep_from_sockaddr(loc, l, &lep) < 0 || !as_dtab_is_node(&g->dtab, real.ip))
    return 0;
  if (as_ident_put(g->dtab.shm, lep.port, &real, g->identity.ip, g->dtab.app_id) < 0) return 0;
  decided_note(g, p, AS_DK_TCP, &lep, &real, 0, NULL);
  return 1;
}

static void report_connected(struct as_gen *g, struct as_pending *p) {
  if (!p->virtual_dest || p->type != SOCK_STREAM) return;
  struct sockaddr_storage loc;
  socklen_t l = sizeof(loc);
  if (getsockname(p->sock, (struct sockaddr *)&loc, &l) < 0 || l > AS_ADDR_MAX) return;
  if (p->local && report_same_host(g, p, &loc, l)) return; /* the server's generator reads who it is itself */
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_CONNECTED;
  m.pid = (uint32_t)p->pid;
  if (p->local) { /* decided here: the daemon counts the connect too */
    m.flags |= AS_F_DECIDED;
    m.arg = p->ntried;
  }
  m.addr_len = l;
  memcpy(m.addr, &loc, l);
  m.addr2_len = p->real_len;
  memcpy(m.addr2, p->real, p->real_len);
  send_daemon(g, &m);
}

/* ---- helpers on the program's socket ---------------------------------------------------------------------- */

/* Duplicates the program's fd and checks it is a socket: SO_DOMAIN fails with ENOTSOCK on anything else, which
 * spares an fstat on the hot path. type and ino are looked up only when asked for.
 * Returns our fd or -errno (EBADF, ENOTSOCK, ESRCH). */
static int get_socket(struct as_gen *g, pid_t pid, int fd, int *family, int *type, uint64_t *ino) {
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

static int is_inet(int family) { return family == AF_INET || family == AF_INET6; }

/* The common start of every socket handler: our duplicate of the program's inet socket, or -1 when the
 * notification is already answered (an errno, or CONTINUE for non-inet sockets: that decision looked only at the
 * socket's family, never at program memory). */
static int take_inet_socket(struct as_gen *g, struct seccomp_notif *req, int *family, int *type, uint64_t *ino) {
  int s = get_socket(g, (pid_t)req->pid, (int)req->data.args[0], family, type, ino);
  if (s < 0) {
    if (s != -ESRCH) reply(g, req->id, s);
    return -1;
  }
  if (!is_inet(*family)) {
    close(s);
    reply_continue(g, req->id);
    return -1;
  }
  return s;
}

/* Reads a sockaddr argument the way move_addr_to_kernel() does: len outside [0, sizeof(sockaddr_storage)]
 * is EINVAL, an unreadable range EFAULT. Then applies the family's own checks (inet_bind/tcp_v4_connect,
 * inet6_bind/tcp_v6_connect): too short is EINVAL, another family EAFNOSUPPORT. */
static int read_inet_addr(struct as_gen *g, pid_t pid, uint64_t uaddr, int64_t ulen, int family, int allow_unspec,
                          struct sockaddr_storage *out, uint32_t *out_len) {
  if (ulen < 0 || ulen > (int64_t)sizeof(struct sockaddr_storage)) return -EINVAL;
  memset(out, 0, sizeof(*out));
  int r = as_mem_read(pid, uaddr, out, (size_t)ulen);
  if (r < 0) return r;
  (void)g;
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

/* The name the program must see for its socket: the virtual endpoint when we know one, else the real one. */
/* The local address of a connection accepted on a wildcard listener (:: or 0.0.0.0) is the app's identity: changes
 * *local when it is a wildcard and the app has an identity. Returns whether it did. */
static int wildcard_to_identity(const struct as_gen *g, struct as_ep *local) {
  static const uint8_t zero[16], v4any[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
  if (!g->has_identity || (memcmp(local->ip, zero, 16) && memcmp(local->ip, v4any, 16))) return 0;
  memcpy(local->ip, g->identity.ip, 16);
  return 1;
}

static int virtual_name(struct as_gen *g, int sock, int peer, struct sockaddr_storage *out) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  if ((peer ? getpeername(sock, (struct sockaddr *)&ss, &l) : getsockname(sock, (struct sockaddr *)&ss, &l)) < 0)
    return -errno; /* ENOTSOCK for a non-socket: no separate check needed on this hot path */
  int family = ss.ss_family;
  if (family == AF_UNIX && g->ftab.count) { /* a fast-path connection shows the TCP endpoints it stands for */
    struct as_fsock *e = as_ftab_get(&g->ftab, as_sock_cookie(sock));
    if (e) return as_ep_to_sockaddr(peer ? &e->peer : &e->local, e->family, out);
  }
  if (!is_inet(family)) return -EAFNOSUPPORT; /* not ours: the caller lets the kernel answer */
  struct as_ep real, virt;
  if (as_ep_from_sockaddr(&ss, l, &real) == 0) {
    if (as_vmap_get(g->vmap, &real, &virt)) {
      /* A connection accepted on a wildcard listener has a concrete local address; the listener itself (no peer)
       * keeps its wildcard. */
      struct as_ep named = virt;
      struct sockaddr_storage ps;
      socklen_t pl = sizeof(ps);
      if (!peer && wildcard_to_identity(g, &named) && getpeername(sock, (struct sockaddr *)&ps, &pl) == 0) virt = named;
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

static void h_socket(struct as_gen *g, struct seccomp_notif *req) {
  int domain = (int)req->data.args[0];
  int type = (int)req->data.args[1];
  int proto = (int)req->data.args[2];
  /* Only TCP and UDP: for them the kernel runs the socket guard's hooks (sockguard.h) on every path that picks an
   * address (connect, TCP fast open, UDP sendmsg with a destination, bind). ICMP echo sockets, SCTP and MPTCP have
   * sends or connects those hooks do not see, so a program could race a CONTINUEd call onto one of them. */
  int kind = type & 0xf;
  if (!(proto == 0 || (kind == SOCK_STREAM && proto == IPPROTO_TCP) || (kind == SOCK_DGRAM && proto == IPPROTO_UDP))) {
    reply(g, req->id, -EPROTONOSUPPORT);
    return;
  }
  int s = socket(domain, type | SOCK_CLOEXEC, proto); /* in our (the host's) network namespace */
  if (s < 0) {
    reply(g, req->id, -errno);
    return;
  }
  int r = as_notif_addfd_send(g->notif_fd, req->id, s, (type & SOCK_CLOEXEC) != 0);
  if (r >= 0) as_tstats_end(&g->tstats, &g->cur, 0);
  if (r < 0 && r != -ENOENT) reply(g, req->id, r); /* e.g. EMFILE: the program's fd limit */
  close(s);
  g->stats_local++;
}

/* ---- getsockname() / getpeername() ------------------------------------------------------------------------ */

static void h_getname(struct as_gen *g, struct seccomp_notif *req, int peer) {
  int s = as_task_getfd(&g->pidfds, (pid_t)req->pid, (int)req->data.args[0]);
  if (s < 0) {
    if (s != -ESRCH) reply(g, req->id, s);
    return;
  }
  struct sockaddr_storage out;
  int n = virtual_name(g, s, peer, &out);
  if (n == -EAFNOSUPPORT) { /* AF_UNIX and friends: the kernel's own answer, asked on our duplicate. Never CONTINUE:
                             * the fd could be an inet socket by then, and the program would see its real name. */
    socklen_t l = sizeof(out);
    n = (peer ? getpeername(s, (struct sockaddr *)&out, &l) : getsockname(s, (struct sockaddr *)&out, &l)) < 0 ? -errno : (int)l;
  }
  close(s);
  if (n < 0) {
    reply(g, req->id, n);
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
  reply(g, req->id, r < 0 ? (r == -ESRCH ? -EFAULT : r) : 0);
}

/* ---- setsockopt() / getsockopt() at TCP/IP level, SO_DOMAIN, SO_PROTOCOL ---------------------------------- */

/* The fast path's Unix sockets need our answer, and so do the few options we keep for real inet sockets
 * (sockopt_emul.h: TCP_DEFER_ACCEPT, IPV6_V6ONLY after a bind); every other call gets the kernel's (CONTINUE: the
 * decision looked at the option's name and which socket the fd is, never at program memory). */
static void h_sockopt(struct as_gen *g, struct seccomp_notif *req, int set) {
  int level = (int)req->data.args[1], name = (int)req->data.args[2];
  int emulated = as_oemu_wants(&g->oemu, level, name, set); /* kept by us on real inet sockets too */
  if (!g->ftab.count && !emulated) {
    reply_continue(g, req->id);
    return;
  }
  pid_t pid = (pid_t)req->pid;
  int s = as_task_getfd(&g->pidfds, pid, (int)req->data.args[0]);
  if (s < 0) {
    if (s != -ESRCH) reply_continue(g, req->id); /* EBADF and the like: the kernel says it */
    return;
  }
  uint64_t cookie = as_sock_cookie(s);
  struct as_fsock *e = g->ftab.count ? as_ftab_get(&g->ftab, cookie) : NULL;
  if (!e && emulated) {
    int result;
    int r = as_oemu_serve(&g->oemu, s, cookie, pid, req->data.args, set, g->notif_fd, req->id, &result);
    close(s);
    if (r < 0) return; /* the notification is gone */
    if (r == 0) reply_continue(g, req->id);
    else {
      g->stats_local++;
      reply(g, req->id, result == -ESRCH ? -EFAULT : result);
    }
    return;
  }
  close(s);
  if (!e) {
    reply_continue(g, req->id);
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
    reply(g, req->id, r);
    return;
  }
  uint64_t ulenp = req->data.args[4];
  int32_t len;
  uint8_t out[512]; /* every answer is clamped to its type: int, tcp_info, a congestion-control name */
  r = as_mem_read(pid, ulenp, &len, sizeof(len));
  if (!r) r = as_fsock_getopt(e, level, name, out, &len);
  if (!r) r = as_mem_write2(pid, uval, out, (size_t)len, ulenp, &len, sizeof(len));
  reply(g, req->id, r == -ESRCH ? -EFAULT : r);
}

/* Reads the address argument (args[1], args[2]) of bind/connect, then checks that the notification is still
 * valid before anything acts on what was read. Returns 0, or -1 when the notification is answered (an errno) or
 * gone; s is closed then. */
static int take_addr(struct as_gen *g, struct seccomp_notif *req, int s, int family, int allow_unspec,
                     struct sockaddr_storage *a, uint32_t *alen) {
  int r = read_inet_addr(g, (pid_t)req->pid, req->data.args[1], (int64_t)(int32_t)req->data.args[2], family,
                         allow_unspec, a, alen);
  if (as_notif_id_valid(g->notif_fd, req->id) < 0) { /* the memory we read may not be the task's any more */
    close(s);
    return -1;
  }
  if (r < 0) {
    close(s);
    reply(g, req->id, r);
    return -1;
  }
  return 0;
}

static void spec_prepare(struct as_gen *g, struct as_pending *p);
static int connect_local(struct as_gen *g, struct as_pending *p);
static void connect_retry(struct as_gen *g, struct as_pending *p);

/* Files a request about socket s (ownership moves to the pending entry) and sends it to the daemon. */
static void forward(struct as_gen *g, struct seccomp_notif *req, int op, int s, int family, int type, uint64_t ino,
                    const void *addr, uint32_t alen, uint16_t msgtype) {
  struct as_pending *p = pend_open(g, req, op, s);
  if (!p) return;
  p->family = family;
  p->type = type;
  p->ino = ino;
  p->pfd = (int)req->data.args[0];
  memcpy(p->req, addr, alen);
  p->req_len = alen;
  if (op == OP_CONNECT && type == SOCK_STREAM) {
    if (connect_local(g, p)) return; /* decided from the decision table: the daemon is not asked */
    spec_prepare(g, p);
  }
  pend_send(g, p, msgtype, 0);
}

/* ---- bind() and listen() ---------------------------------------------------------------------------------- */

static void h_bind(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  uint64_t ino;
  int s = take_inet_socket(g, req, &family, &type, &ino);
  if (s < 0) return;
  struct sockaddr_storage a;
  uint32_t alen;
  if (take_addr(g, req, s, family, family == AF_INET, &a, &alen) < 0) return;
  if (a.ss_family == AF_UNSPEC) { /* inet_bind accepts AF_UNSPEC only with INADDR_ANY */
    struct sockaddr_in *sin = (struct sockaddr_in *)&a;
    if (alen < sizeof(*sin) || sin->sin_addr.s_addr != htonl(INADDR_ANY)) {
      close(s);
      reply(g, req->id, -EAFNOSUPPORT);
      return;
    }
    sin->sin_family = AF_INET;
    alen = sizeof(*sin);
  }
  struct sockaddr_storage cur;
  socklen_t cl = sizeof(cur);
  struct as_ep ep;
  if (getsockname(s, (struct sockaddr *)&cur, &cl) == 0 && as_ep_from_sockaddr(&cur, cl, &ep) == 0 && ep.port != 0) {
    close(s);
    reply(g, req->id, -EINVAL); /* already bound */
    return;
  }
  int v6only = as_v6only(s, family);
  if (v6only && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&a)->sin6_addr)) {
    close(s);
    reply(g, req->id, -EINVAL); /* inet6_bind: a v4-mapped address on a V6ONLY socket */
    return;
  }
  struct as_pending *p = pend_open(g, req, OP_BIND, s);
  if (!p) return;
  p->family = family;
  p->type = type;
  p->ino = ino;
  p->pfd = (int)req->data.args[0];
  p->v6only = v6only;
  memcpy(p->req, &a, alen);
  p->req_len = alen;
  pend_send(g, p, AS_BIND, 0);
}

static void start_listen(struct as_gen *g, struct as_pending *p) {
  if (listen(p->sock, p->backlog) < 0) {
    pend_finish(g, p, -errno);
    return;
  }
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  getsockname(p->sock, (struct sockaddr *)&ss, &l);
  memcpy(p->real, &ss, l < sizeof(p->real) ? l : sizeof(p->real));
  p->real_len = l < sizeof(p->real) ? l : sizeof(p->real);
  p->op = OP_LISTEN;
  pend_send(g, p, AS_LISTEN, 0);
}

static void h_listen(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  uint64_t ino;
  int s = take_inet_socket(g, req, &family, &type, &ino);
  if (s < 0) return;
  if (type != SOCK_STREAM) {
    close(s);
    reply(g, req->id, -EOPNOTSUPP);
    return;
  }
  struct as_pending *p = pend_open(g, req, OP_LISTEN, s);
  if (!p) return;
  p->family = family;
  p->type = type;
  p->ino = ino;
  p->backlog = (int)req->data.args[1];
  struct sockaddr_storage cur;
  socklen_t cl = sizeof(cur);
  struct as_ep ep;
  if (getsockname(s, (struct sockaddr *)&cur, &cl) == 0 && as_ep_from_sockaddr(&cur, cl, &ep) == 0 && ep.port == 0) {
    /* listen() on an unbound socket binds it to an ephemeral port: do that the virtual way first */
    struct sockaddr_storage any;
    memset(&any, 0, sizeof(any));
    any.ss_family = (sa_family_t)family;
    p->req_len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    memcpy(p->req, &any, p->req_len);
    p->op = OP_LISTEN_BIND;
    p->v6only = as_v6only(s, family);
    pend_send(g, p, AS_BIND, 0);
    return;
  }
  start_listen(g, p);
}

static void on_bind_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  if (m->result < 0) {
    pend_finish(g, p, m->result);
    return;
  }
  if (m->addr_len > sizeof(p->real) || m->addr2_len > AS_ADDR_MAX) {
    pend_finish(g, p, -EINVAL);
    return;
  }
  memcpy(p->real, m->addr, m->addr_len);
  p->real_len = m->addr_len;
  /* the real address is the node's IPv4 address, v4-mapped: a V6ONLY socket would refuse it (sockopt_emul.h) */
  int cleared = p->v6only && as_v6only_clear(p->sock, p->real, p->real_len);
  if (bind(p->sock, (const struct sockaddr *)p->real, p->real_len) < 0) {
    int e = errno;
    if (cleared) as_v6only_restore(p->sock);
    if (e == EADDRINUSE && ++p->tries < BIND_TRIES) {
      pend_send(g, p, AS_BIND, AS_F_RETRY); /* someone outside appswitch holds that port: ask for another */
      return;
    }
    notify_daemon(g, AS_UNBOUND, p->ino, p->real, p->real_len);
    pend_finish(g, p, -e);
    return;
  }
  struct as_ep real, virt;
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  if (getsockname(p->sock, (struct sockaddr *)&ss, &l) == 0 && as_ep_from_sockaddr(&ss, l, &real) == 0 &&
      as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) == 0)
    as_vmap_put(g->vmap, &real, &virt);
  if (cleared) as_oemu_note_v6only(&g->oemu, p->sock, p->ino);
  notify_daemon(g, AS_BOUND, p->ino, &ss, l);
  if (p->op == OP_LISTEN_BIND) {
    start_listen(g, p);
    return;
  }
  pend_finish(g, p, 0);
}

static void on_listen_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  if (m->result < 0) { /* the daemon refused the service: stop listening again (tcp_disconnect) */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(p->sock, &unspec, sizeof(unspec));
  }
  pend_finish(g, p, m->result < 0 ? m->result : 0);
}

/* ---- connect() -------------------------------------------------------------------------------------------- */

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
  reply(g, req->id, r);
  return 1;
}

static void h_connect(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  uint64_t ino = 0;
  int s = get_socket(g, (pid_t)req->pid, (int)req->data.args[0], &family, &type, &ino);
  if (s == -ESRCH) return;
  if (s == -ENOTSOCK) { /* the address is copied in before the kernel looks at what the file is */
    int fam;
    int r = move_addr((pid_t)req->pid, req->data.args[1], (int64_t)(int32_t)req->data.args[2], &fam);
    reply(g, req->id, r < 0 ? r : -ENOTSOCK);
    return;
  }
  if (s < 0) {
    reply(g, req->id, s);
    return;
  }
  if (!is_inet(family)) {
    int fast = g->ftab.count && as_ftab_get(&g->ftab, as_sock_cookie(s)) != NULL;
    if (!fast || !connect_busy(g, req, s, 1)) reply_continue(g, req->id); /* decided on the family alone */
    close(s);
    return;
  }
  if (type == SOCK_STREAM && connect_busy(g, req, s, 0)) {
    close(s);
    return;
  }
  struct sockaddr_storage a;
  uint32_t alen;
  if (take_addr(g, req, s, family, 1, &a, &alen) < 0) return;
  if (a.ss_family == AF_UNSPEC) { /* dissolve the association: done here on our copy, never CONTINUEd */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    int r = connect(s, &unspec, sizeof(unspec)) < 0 ? -errno : 0;
    close(s);
    reply(g, req->id, r);
    return;
  }
  forward(g, req, OP_CONNECT, s, family, type, ino, &a, alen, AS_CONNECT);
}

static void send_udp(struct as_gen *g, struct as_pending *p);

/* ---- the same-host fast path (design: fastpath.h) ----------------------------------------------------------- */

/* Whether the program's socket may be replaced by a Unix socket: not bound (its local address is part of what the
 * program set up), and not registered in an epoll instance (the swap would silently drop the registration). */
static int may_swap(struct as_gen *g, struct as_pending *p) {
  struct sockaddr_storage cur;
  socklen_t cl = sizeof(cur);
  struct as_ep ep;
  if (getsockname(p->sock, (struct sockaddr *)&cur, &cl) < 0 || as_ep_from_sockaddr(&cur, cl, &ep) < 0 || ep.port)
    return 0;
  int r = as_fd_in_epoll(p->pid, p->pfd, p->ino);
  if (r != 0) {
    g->stats_fast_declined++;
    dbg(g, "fd %d of %d is in an epoll set (or unknown: %d): TCP instead of the fast path", p->pfd, p->pid, r);
    return 0;
  }
  return 1;
}

/* ---- speculative offers (AS_F_OFFER) -------------------------------------------------------------------------
 * A connect to a same-host service costs the program one daemon round trip instead of two: the request already carries
 * the fast-path pair's server end and a bound, unconnected placeholder; the daemon pushes the server end to the
 * server's generator (AS_OFFER) before it answers, so the server's accept() finds it without asking. The cost when the
 * destination turns out to be elsewhere (a socketpair and a bound socket, closed again) is avoided next time by a
 * small hint table of destinations the daemon said are not on this host. */

static unsigned hint_slot(const struct as_ep *e) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < 16; i++) h = (h ^ e->ip[i]) * 16777619u;
  h = (h ^ e->port) * 16777619u;
  return h % AS_HINTS;
}

static void hint_set(struct as_gen *g, const struct as_pending *p, int remote) {
  struct as_ep d;
  if (as_ep_from_sockaddr(p->req, p->req_len, &d) < 0) return;
  unsigned k = hint_slot(&d);
  g->hints[k].dst = d;
  g->hints[k].remote = remote;
}

static void spec_drop(struct as_pending *p) {
  if (p->spec_fd < 0 && p->spec_srv < 0) return;
  if (p->spec_fd >= 0) close(p->spec_fd);
  if (p->spec_srv >= 0) close(p->spec_srv);
  p->spec_fd = p->spec_srv = -1;
  p->spec_sent = 0;
  if (p->conn >= 0 && !p->in_epoll) {
    close(p->conn);
    p->conn = -1;
  }
}

static void spec_prepare(struct as_gen *g, struct as_pending *p) {
  struct as_ep d;
  if (as_ep_from_sockaddr(p->req, p->req_len, &d) < 0) return;
  unsigned k = hint_slot(&d);
  if (g->hints[k].remote && as_ep_equal(&g->hints[k].dst, &d)) return;
  if (!may_swap(g, p)) return;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return;
  int c = socket(p->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_storage any;
  memset(&any, 0, sizeof(any));
  any.ss_family = (sa_family_t)p->family;
  socklen_t al = p->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0}; /* see start_fast */
  if (c < 0 || setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) < 0 || bind(c, (struct sockaddr *)&any, al) < 0) {
    if (c >= 0) close(c);
    close(sv[0]);
    close(sv[1]);
    return;
  }
  static const char sentinel = 0; /* as in fast_done (proto.h AS_F_SENTINEL): a lost server end resets the client */
  p->spec_sentinel = send(sv[0], &sentinel, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
  p->conn = c;
  p->spec_fd = sv[0];
  p->spec_srv = sv[1];
  g->stats_offers_asked++;
}

/* Options the program set on the socket being replaced: SOL_SOCKET ones move to the Unix socket, TCP/IP ones are
 * remembered for the emulation. */
static void inherit_options(int from, int to, struct as_fsock *e) {
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

static int fast_register(struct as_gen *g, int s, struct as_fsock *e) {
  struct stat st;
  e->cookie = as_sock_cookie(s);
  e->ino = fstat(s, &st) == 0 ? (uint64_t)st.st_ino : 0;
  return e->cookie ? as_ftab_put(&g->ftab, e) : -EINVAL;
}

static void fast_failed(struct as_gen *g, struct as_pending *p, int err) {
  pend_unwatch(g, p);
  close(p->conn);
  p->conn = -1;
  p->fast = 0;
  spec_drop(p);
  if (err == ECONNREFUSED && p->alt && ++p->tries < CONNECT_TRIES) {
    connect_retry(g, p); /* that instance is gone: ask for another */
    return;
  }
  pend_finish(g, p, -err);
}

/* The placeholder is connected (it sits in the server's accept queue): make the socket pair, hand the server's end
 * and the placeholder to the daemon, install the client's end at the program's fd number. */
static void fast_done(struct as_gen *g, struct as_pending *p) {
  pend_unwatch(g, p);
  struct sockaddr_storage loc;
  socklen_t ll = sizeof(loc);
  struct as_ep lep;
  if (getsockname(p->conn, (struct sockaddr *)&loc, &ll) < 0 || ll > AS_ADDR_MAX || as_ep_from_sockaddr(&loc, ll, &lep) < 0) {
    pend_finish(g, p, -ECONNABORTED);
    return;
  }
  int pflags;
  uint64_t pino;
  if (as_fd_info(p->pid, p->pfd, &pflags, &pino) < 0 || pino != p->ino) { /* the fd was closed or reused meanwhile */
    pend_finish(g, p, -EBADF);
    return;
  }
  int offered = p->spec_sent && p->spec_fd >= 0; /* the daemon has the server's end already (AS_F_OFFER) */
  int sv[2] = {-1, -1};
  if (offered) {
    sv[0] = p->spec_fd;
    p->spec_fd = -1;
  } else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    pend_finish(g, p, -errno);
    return;
  }
  struct as_fsock e;
  memset(&e, 0, sizeof(e));
  e.family = p->family;
  e.local = g->identity;
  e.local.port = lep.port;
  as_ep_from_sockaddr(p->req, p->req_len, &e.peer);
  inherit_options(p->sock, sv[0], &e);
  int fl = fcntl(p->sock, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);

  /* The sentinel (proto.h AS_F_SENTINEL): should the server's end be closed before anyone took it (the daemon had no
   * room for it, or nobody accepted), the program's next read or write fails with ECONNRESET, not a clean EOF. The
   * pair is new and empty, so the byte always fits. */
  static const char sentinel = 0;
  int sent_byte = !offered && send(sv[0], &sentinel, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1; /* offered: spec_prepare did */
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_CONNECTED;
  m.version = AS_PROTO_VERSION;
  m.flags = AS_F_FASTPATH | (sent_byte ? AS_F_SENTINEL : 0);
  m.pid = (uint32_t)p->pid;
  m.addr_len = ll;
  memcpy(m.addr, &loc, ll);
  m.addr2_len = p->real_len;
  memcpy(m.addr2, p->real, p->real_len);
  int give[2] = {sv[1], p->conn};
  ssize_t sent = 0;
  if (!offered) {
    sent = g->daemon_fd >= 0 ? as_send_fds(g->daemon_fd, &m, sizeof(m), give, 2, 0) : -ENETDOWN;
    if (sent < 0) daemon_lost(g); /* nobody could vouch for this connection at the server's accept: it fails */
    close(sv[1]);
  } else {
    g->stats_offers_taken++;
  }
  close(p->conn);
  p->conn = -1;
  int r = sent < 0 ? -ENETDOWN : fast_register(g, sv[0], &e);
  if (r == 0) {
    r = as_notif_addfd_at(g->notif_fd, p->id, sv[0], p->pfd, (pflags & O_CLOEXEC) != 0);
    if (r < 0) as_ftab_del(&g->ftab, e.cookie);
  }
  close(sv[0]);
  if (r < 0) {
    pend_finish(g, p, r == -ENOENT ? -ECONNABORTED : r);
    return;
  }
  g->stats_fast++;
  /* loopback TCP never completes a non-blocking connect at once: answer as it would (the socket is writable and
   * SO_ERROR is 0, so the program's completion check succeeds on its first poll) */
  pend_finish(g, p, fl >= 0 && (fl & O_NONBLOCK) ? -EINPROGRESS : 0);
}

static void start_fast(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *dst, int dlen) {
  int c = socket(p->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c < 0) {
    pend_finish(g, p, -errno);
    return;
  }
  p->conn = c;
  p->fast = 1;
  /* The placeholder only wakes the server: when its last holder closes it, a reset instead of a FIN, so that no
   * TIME_WAIT keeps its ephemeral port. At thousands of connections a second, TIME_WAIT placeholders exhaust the
   * port range in seconds and every connect() then scans it (measured: 5000/s falling to 300/s). */
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  if (connect(c, (const struct sockaddr *)dst, (socklen_t)dlen) == 0) {
    fast_done(g, p);
    return;
  }
  if (errno != EINPROGRESS) {
    fast_failed(g, p, errno);
    return;
  }
  int r = pend_watch(g, p, c, EPOLLOUT);
  if (r < 0) pend_finish(g, p, r);
}

static void on_connect_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  if (p->spec_sent && !(m->flags & AS_F_OFFER)) spec_drop(p); /* not taken: the daemon closed its copies */
  if (m->result < 0) {
    pend_finish(g, p, m->result);
    return;
  }
  if ((m->flags & AS_F_NOWHERE) && p->type == SOCK_DGRAM) {
    /* the local host, nothing there: a datagram connect succeeds and leaves the socket unconnected (the kernel's UDP
     * connect sends nothing); a send is refused as before (it is never sent) */
    if (p->op == OP_SEND) {
      pend_finish(g, p, -ECONNREFUSED);
      return;
    }
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(p->sock, &unspec, sizeof(unspec));
    pend_finish(g, p, 0);
    return;
  }
  /* remember destinations that are elsewhere (other hosts, and egress: no virtual peer) so that their next connects
   * carry no speculative offer */
  if (p->op == OP_CONNECT && p->type == SOCK_STREAM) hint_set(g, p, !(m->flags & AS_F_FASTPATH));
  struct as_ep real, virt;
  if (m->addr_len > sizeof(p->real) || as_ep_from_sockaddr(m->addr, m->addr_len, &real) < 0) {
    pend_finish(g, p, -EINVAL);
    return;
  }
  struct sockaddr_storage dst;
  int dlen = as_ep_to_sockaddr(&real, p->family, &dst);
  if (dlen < 0) {
    pend_finish(g, p, -ENETUNREACH);
    return;
  }
  if (m->addr2_len && as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) == 0) {
    if (!(p->op == OP_SEND && (m->flags & AS_F_UDP_PEER))) as_vmap_put(g->vmap, &real, &virt);
  } else if (p->type == SOCK_DGRAM) {
    as_urecv_sent_direct(g, &real); /* replies from there show that address */
  }
  memcpy(p->real, &dst, (size_t)dlen);
  p->real_len = (uint32_t)dlen;
  if (p->type == SOCK_DGRAM) as_urecv_before_send(g, p->sock, p->family); /* who sends from here, before it does */
  if (p->op == OP_SEND) {
    send_udp(g, p);
    return;
  }
  /* With other instances to fall back on, wait for the outcome even on a non-blocking socket, so that a refusing
   * instance can be skipped before the program sees anything (it then sees an immediate success). */
  p->alt = (m->flags & AS_F_ALTERNATIVES) != 0;
  p->virtual_dest = m->addr2_len > 0;
  if ((m->flags & AS_F_OFFER) && p->spec_sent && p->spec_fd >= 0 && p->conn >= 0) { /* connect the placeholder */
    p->fast = 1;
    if (connect(p->conn, (const struct sockaddr *)&dst, (socklen_t)dlen) == 0) {
      fast_done(g, p);
      return;
    }
    if (errno != EINPROGRESS) {
      fast_failed(g, p, errno);
      return;
    }
    int r = pend_watch(g, p, p->conn, EPOLLOUT);
    if (r < 0) pend_finish(g, p, r);
    return;
  }
  if ((m->flags & AS_F_FASTPATH) && p->type == SOCK_STREAM && p->virtual_dest && may_swap(g, p)) {
    start_fast(g, p, &dst, dlen);
    return;
  }
  int fl = fcntl(p->sock, F_GETFL);
  if (p->type != SOCK_STREAM || (!p->alt && fl >= 0 && (fl & O_NONBLOCK))) {
    /* datagram sockets never block; a non-blocking stream gets EINPROGRESS and later SO_ERROR, as usual */
    int rc = connect(p->sock, (struct sockaddr *)&dst, (socklen_t)dlen) < 0 ? -errno : 0;
    if (rc == 0 || rc == -EINPROGRESS) report_connected(g, p);
    pend_finish(g, p, rc);
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
    pend_finish(g, p, 0);
    return;
  }
  if (e != EINPROGRESS && e != EALREADY) {
    pend_finish(g, p, -e);
    return;
  }
  int r = pend_watch(g, p, p->sock, EPOLLOUT);
  if (r < 0) pend_finish(g, p, r);
}

static void on_connect_ready(struct as_gen *g, struct as_pending *p) {
  int err = 0;
  socklen_t l = sizeof(err);
  if (p->fast) {
    if (getsockopt(p->conn, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
    /* An offered placeholder may be accepted, and reset by the server's generator (it closes it without TIME_WAIT),
     * before we look: a reset means it was established, which is all it was for. */
    if (err == ECONNRESET && p->spec_sent) err = 0;
    if (err) fast_failed(g, p, err);
    else fast_done(g, p);
    return;
  }
  if (getsockopt(p->sock, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
  if (err == ECONNREFUSED && p->alt && ++p->tries < CONNECT_TRIES) {
    /* that instance refused: reset the socket (tcp_disconnect) and ask the daemon for another */
    pend_unwatch(g, p);
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(p->sock, &unspec, sizeof(unspec));
    connect_retry(g, p);
    return;
  }
  pend_finish(g, p, err ? -err : 0);
}

/* ---- connects decided here, from the decision table (dtab.h) ------------------------------------------------------
 * A TCP connect to a vip (or to loopback: the app's own vip) is decided from the table the daemon published: the
 * service, its policy, an instance by the service's strategy. A same-host instance gets the fast path with the pair's
 * server end sent straight to the server's generator (offer_chan.h) before the placeholder connects; anything else is
 * a TCP connect as if the daemon had answered. The daemon hears of it afterwards: AS_CONNECTED for TCP (the server's
 * side needs it to identify the client), an AS_DECIDED record for the fast path and for refusals. Whatever the table
 * cannot decide (not a vip, no table, an app it does not list yet) goes to the daemon as before. */

static void arm_flush(struct as_gen *g) {
  if (g->flush_armed || g->flush_fd < 0) return;
  struct itimerspec its = {.it_value = {.tv_nsec = AS_FLUSH_MS * 1000000L}};
  if (timerfd_settime(g->flush_fd, 0, &its, NULL) == 0) g->flush_armed = 1;
}

static void decided_flush(struct as_gen *g) {
  if (!g->ndecided) return;
  if (g->daemon_fd < 0) { /* the daemon is away: what it would have counted is lost with it, the connections are not */
    g->ndecided = 0;
    return;
  }
  static uint8_t buf[sizeof(struct as_msg) + sizeof(g->decided)];
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_DECIDED;
  m.version = AS_PROTO_VERSION;
  m.payload_len = g->ndecided * (uint32_t)sizeof(struct as_decided);
  memcpy(buf, &m, sizeof(m));
  memcpy(buf + sizeof(m), g->decided, m.payload_len);
  if (as_send_fds(g->daemon_fd, buf, sizeof(m) + m.payload_len, NULL, 0, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) g->ndecided = 0;
}

static void batches_flush(struct as_gen *g) {
  decided_flush(g);
  claims_flush(g);
}

static void decided_note(struct as_gen *g, struct as_pending *p, int kind, const struct as_ep *local, const struct as_ep *real,
                         uint64_t inode, const char *server_app) {
  if (g->ndecided == AS_DECIDED_MAX) decided_flush(g);
  if (g->ndecided == AS_DECIDED_MAX) return; /* the daemon's socket is full: a record less, not a connection less */
  struct as_decided d;
  memset(&d, 0, sizeof(d));
  d.kind = (uint8_t)kind;
  d.retried = (uint8_t)p->ntried;
  d.pid = (uint32_t)p->pid;
  d.inode = inode;
  struct as_ep virt;
  if (as_ep_from_sockaddr(p->req, p->req_len, &virt) == 0) {
    memcpy(d.vip, virt.ip, 16);
    d.vport = virt.port;
  }
  if (local) {
    memcpy(d.lip, local->ip, 16);
    d.lport = local->port;
  }
  if (real) {
    memcpy(d.rip, real->ip, 16);
    d.rport = real->port;
  }
  if (server_app) snprintf(d.server_app, sizeof(d.server_app), "%s", server_app);
  memcpy(g->decided + g->ndecided++ * sizeof(d), &d, sizeof(d));
  arm_flush(g);
}

/* The fast path, with the server's generator told directly: the pair, a placeholder bound (so its endpoint is known),
 * the offer sent, then the placeholder connects (on_connect_reply, as for an offer the daemon took). Returns 0, or
 * -errno with nothing left behind (the caller connects over TCP instead). */
static int fast_direct(struct as_gen *g, struct as_pending *p, const struct as_dt_pick *pick) {
  if (g->ochan < 0) return -ENOTCONN;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  int c = socket(p->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_storage any;
  memset(&any, 0, sizeof(any));
  any.ss_family = (sa_family_t)p->family;
  socklen_t al = p->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0}; /* see start_fast */
  struct sockaddr_storage loc;
  socklen_t ll = sizeof(loc);
  struct as_ep lep;
  int r = 0;
  if (c < 0 || setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) < 0 || bind(c, (struct sockaddr *)&any, al) < 0 ||
      getsockname(c, (struct sockaddr *)&loc, &ll) < 0)
    r = -errno;
  if (!r) r = as_ep_from_sockaddr(&loc, ll, &lep);
  static const char sentinel = 0; /* proto.h AS_F_SENTINEL: a lost server end resets the client */
  int sent_byte = !r && send(sv[0], &sentinel, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
  struct as_ochan_msg om;
  memset(&om, 0, sizeof(om));
  om.magic = AS_OCHAN_MAGIC;
  om.flags = sent_byte ? AS_OCHAN_SENTINEL : 0;
  om.peer = pick->real;
  om.peer.port = lep.port;
  om.virt = g->identity;
  om.virt.port = lep.port;
  snprintf(om.client_app, sizeof(om.client_app), "%s", g->dtab.app_id);
  struct stat st;
  uint64_t inode = fstat(sv[1], &st) == 0 ? (uint64_t)st.st_ino : 0;
  if (!r) r = as_ochan_send(g->ochan, pick->server_sock, &om, sv[1]);
  close(sv[1]);
  if (r < 0) {
    if (c >= 0) close(c);
    close(sv[0]);
    return r;
  }
  p->conn = c;
  p->spec_fd = sv[0];
  p->spec_sent = 1;
  struct as_ep placeholder = om.peer;
  decided_note(g, p, AS_DK_FAST, &placeholder, &pick->real, inode, pick->server_app);
  return 0;
}

/* Answers the pending connect from the table's pick, as on_connect_reply answers the daemon's. */
static void connect_picked(struct as_gen *g, struct as_pending *p, const struct as_dt_pick *pick) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&pick->real, AF_INET6, &ss);
  if (n > 0) {
    m.addr_len = (uint32_t)n;
    memcpy(m.addr, &ss, (size_t)n);
  }
  n = as_ep_to_sockaddr(&pick->virt, AF_INET6, &ss);
  if (n > 0) {
    m.addr2_len = (uint32_t)n;
    memcpy(m.addr2, &ss, (size_t)n);
  }
  if (pick->alternatives) m.flags |= AS_F_ALTERNATIVES;
  if (pick->fast && p->ntried == 0 && may_swap(g, p) && fast_direct(g, p, pick) == 0) m.flags |= AS_F_FASTPATH | AS_F_OFFER;
  on_connect_reply(g, p, &m);
}

/* Decides a stream connect from the table. Returns 1 when decided (the pending entry is answered or under way), 0
 * when the daemon must be asked. */
static int connect_local(struct as_gen *g, struct as_pending *p) {
  struct as_ep dst;
  if (!g->dtab.map || p->type != SOCK_STREAM || as_ep_from_sockaddr(p->req, p->req_len, &dst) < 0) return 0;
  struct as_dt_pick pick;
  int v = as_dtab_decide(&g->dtab, &dst, p->family, p->tried, p->ntried, &pick);
  if (v == AS_DT_ASK) return 0;
  p->local = 1;
  g->stats_local_decided++;
  if (v != AS_DT_PICKED) {
    decided_note(g, p, v == AS_DT_NO_SERVICE ? AS_DK_NO_SERVICE : v == AS_DT_DENIED ? AS_DK_DENIED : AS_DK_ALL_TRIED, NULL, NULL, 0, NULL);
    pend_finish(g, p, -ECONNREFUSED);
    return 1;
  }
  connect_picked(g, p, &pick);
  return 1;
}

/* The instance in p->real refused: another one, decided where the first was. */
static void connect_retry(struct as_gen *g, struct as_pending *p) {
  if (!p->local) {
    pend_send(g, p, AS_CONNECT, AS_F_RETRY);
    return;
  }
  struct as_ep refused;
  if (as_ep_from_sockaddr(p->real, p->real_len, &refused) == 0 && p->ntried < (int)(sizeof(p->tried) / sizeof(p->tried[0])))
    p->tried[p->ntried++] = refused;
  struct as_ep dst;
  struct as_dt_pick pick;
  int v = as_ep_from_sockaddr(p->req, p->req_len, &dst) < 0 ? AS_DT_ASK : as_dtab_decide(&g->dtab, &dst, p->family, p->tried, p->ntried, &pick);
  if (v == AS_DT_PICKED) {
    connect_picked(g, p, &pick);
    return;
  }
  if (v == AS_DT_ASK) { /* the table went away meanwhile: the daemon decides the rest */
    p->local = 0;
    pend_send(g, p, AS_CONNECT, AS_F_RETRY);
    return;
  }
  decided_note(g, p, AS_DK_ALL_TRIED, NULL, NULL, 0, NULL);
  pend_finish(g, p, -ECONNREFUSED);
}

/* ---- accept() / accept4() ---------------------------------------------------------------------------------- */

/* Offers the daemon pushed (AS_OFFER): a small table, searched only while it holds something. */
static void on_daemon(struct as_gen *g);

/* Keeps an offer (takes fd): from the daemon (AS_OFFER) or straight from a client's generator (offer_chan.h). */
static void offer_put(struct as_gen *g, const struct as_ep *peer, const struct as_ep *virt, int fd) {
  struct as_offer *slot = NULL, *oldest = NULL;
  for (int i = 0; i < AS_OFFERS_MAX && !slot; i++) {
    struct as_offer *o = &g->offers[i];
    if (o->fd < 0) slot = o;
    else if (!oldest || o->at_ms < oldest->at_ms) oldest = o;
  }
  if (!slot) { /* full: the oldest is given up (its client sees the connection closed) */
    close(oldest->fd);
    oldest->fd = -1;
    g->noffers--;
    slot = oldest;
  }
  slot->fd = fd;
  slot->peer = *peer;
  slot->virt = *virt;
  slot->at_ms = now_ms();
  g->noffers++;
}

static void offer_store(struct as_gen *g, const struct as_msg *m, int *fast_fd) {
  struct as_ep peer, virt;
  if (*fast_fd < 0 || as_ep_from_sockaddr(m->addr, m->addr_len, &peer) < 0 || as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) < 0)
    return;
  offer_put(g, &peer, &virt, *fast_fd);
  *fast_fd = -1;
}

/* Takes every offer waiting on our offer socket. The sentinel byte (proto.h AS_F_SENTINEL) in front of each stream is
 * read here, before the program can see it; an end without it (the client's generator died half-way) is dropped. */
static void ochan_drain(struct as_gen *g) {
  struct as_ochan_msg om;
  int fd;
  while (g->ochan >= 0 && as_ochan_recv(g->ochan, &om, &fd) == 1) {
    char b;
    if ((om.flags & AS_OCHAN_SENTINEL) && recv(fd, &b, 1, MSG_DONTWAIT) != 1) {
      close(fd);
      continue;
    }
    offer_put(g, &om.peer, &om.virt, fd);
  }
}

/* Sends the batch of taken offers (AS_CLAIMED payload: 16-byte address (IPv4 mapped) + 2-byte port, network order,
 * per offer). */
static void claims_flush(struct as_gen *g) {
  if (!g->nclaims || g->daemon_fd < 0) return;
  static uint8_t buf[sizeof(struct as_msg) + sizeof(g->claims)];
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_CLAIMED;
  m.version = AS_PROTO_VERSION;
  m.payload_len = g->nclaims * 18;
  memcpy(buf, &m, sizeof(m));
  memcpy(buf + sizeof(m), g->claims, m.payload_len);
  if (as_send_fds(g->daemon_fd, buf, sizeof(m) + m.payload_len, NULL, 0, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) g->nclaims = 0;
}

static void claim_note(struct as_gen *g, const struct as_ep *peer) {
  if (g->nclaims == AS_CLAIMS_MAX) claims_flush(g);
  if (g->nclaims == AS_CLAIMS_MAX) return; /* the daemon is away: its copies went with it */
  arm_flush(g);
  uint8_t *e = g->claims + g->nclaims++ * 18;
  memcpy(e, peer->ip, 16);
  e[16] = (uint8_t)(peer->port >> 8);
  e[17] = (uint8_t)peer->port;
}

static struct as_offer *offer_find(struct as_gen *g, const void *sa, uint32_t len) {
  struct as_ep e;
  if (!g->noffers || as_ep_from_sockaddr(sa, len, &e) < 0) return NULL;
  for (int i = 0; i < AS_OFFERS_MAX; i++)
    if (g->offers[i].fd >= 0 && as_ep_equal(&g->offers[i].peer, &e)) return &g->offers[i];
  return NULL;
}

static int offer_take(struct as_gen *g, struct as_offer *o) {
  int fd = o->fd;
  o->fd = -1;
  g->noffers--;
  return fd;
}

/* Offers nobody accepted within a minute (the server never called accept, or the client gave up) are closed. */
static void offer_expire(struct as_gen *g) {
  uint64_t now = now_ms();
  for (int i = 0; i < AS_OFFERS_MAX && g->noffers; i++)
    if (g->offers[i].fd >= 0 && now - g->offers[i].at_ms > 60000) close(offer_take(g, &g->offers[i]));
}

static void on_accept_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fast_fd);
static void accept_deliver(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *out, int n);

/* The accepted connection is a placeholder whose offer is here: answer at once, and tell the daemon (one way) that it
 * may let go of its copy of the placeholder. */
static void accept_offered(struct as_gen *g, struct as_pending *p, struct as_offer *o) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&o->virt, AF_INET6, &ss);
  m.flags = AS_F_FASTPATH;
  m.addr_len = n > 0 ? (uint32_t)n : 0;
  if (n > 0) memcpy(m.addr, &ss, (size_t)n);
  int fd = offer_take(g, o);
  claim_note(g, &o->peer);
  on_accept_reply(g, p, &m, &fd);
  if (fd >= 0) close(fd);
}

/* A same-host client whose generator decided its connect wrote who it is into the host's identity table (dtab.h
 * as_ident) right after its connect() returned; that can be a few microseconds after our accept4() took the
 * connection, so a miss is looked at again for up to IDENT_WAIT_US before the daemon is asked. Returns 1 when the
 * connection was delivered (or dropped with its caller). */
#define IDENT_WAIT_US 200
static int accept_known(struct as_gen *g, struct as_pending *p) {
  struct as_ep peer, local;
  if (!g->dtab.shm || as_ep_from_sockaddr(p->req, p->req_len, &peer) < 0 || as_ep_from_sockaddr(p->real, p->real_len, &local) < 0 ||
      !as_dtab_is_node(&g->dtab, peer.ip))
    return 0;
  uint8_t id[16];
  uint64_t start = 0;
  for (;;) {
    if (as_ident_get(g->dtab.shm, peer.port, &local, id, NULL, 1)) break;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t us = (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
    if (!start) start = us;
    else if (us - start > IDENT_WAIT_US) return 0;
    sched_yield();
  }
  struct as_ep virt;
  memcpy(virt.ip, id, 16);
  virt.port = peer.port;
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&virt, AF_INET6, &ss);
  if (n <= 0) return 0;
  m.addr_len = (uint32_t)n;
  memcpy(m.addr, &ss, (size_t)n);
  claim_note(g, &peer); /* the daemon marks the connection accepted */
  int none = -1;
  on_accept_reply(g, p, &m, &none);
  return 1;
}

/* The generator accepts on its duplicate of the listener (always non-blocking, so it never stalls), asks the daemon
 * who the peer is, drops connections nobody vouches for (they never reach the program), and installs the rest. */
static void accept_next(struct as_gen *g, struct as_pending *p) {
  for (;;) {
    struct sockaddr_storage peer;
    socklen_t pl = sizeof(peer);
    /* Our duplicate shares the program's file status flags: on a blocking listener accept4() would block the whole
     * generator. Make this one call non-blocking (the program's threads on this socket are all parked in the trap). */
    int fl = fcntl(p->sock, F_GETFL);
    int blocking = fl >= 0 && !(fl & O_NONBLOCK);
    if (blocking) fcntl(p->sock, F_SETFL, fl | O_NONBLOCK);
    int c = accept4(p->sock, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int e = errno;
    if (blocking) fcntl(p->sock, F_SETFL, fl);
    if (c >= 0 && !is_inet(p->family)) { /* a Unix socket: nobody to ask, nothing to translate */
      pend_unwatch(g, p);
      p->conn = c;
      accept_deliver(g, p, &peer, (int)pl);
      return;
    }
    if (c >= 0) {
      pend_unwatch(g, p);
      struct sockaddr_storage loc;
      socklen_t ll = sizeof(loc);
      if (pl > AS_ADDR_MAX || getsockname(c, (struct sockaddr *)&loc, &ll) < 0 || ll > AS_ADDR_MAX) {
        close(c);
        continue;
      }
      p->conn = c;
      memcpy(p->req, &peer, pl);
      p->req_len = pl;
      memcpy(p->real, &loc, ll);
      p->real_len = ll;
      p->op = OP_ACCEPT_ASK;
      {
        struct as_offer *o = offer_find(g, &peer, pl);
        if (!o && g->ochan >= 0) { /* its offer may be waiting unread on our offer socket */
          ochan_drain(g);
          o = offer_find(g, &peer, pl);
        }
        if (!o && g->daemon_fd >= 0) { /* its AS_OFFER may be waiting unread on the daemon socket */
          on_daemon(g);
          o = offer_find(g, &peer, pl);
        }
        if (o) {
          accept_offered(g, p, o);
          return;
        }
      }
      if (accept_known(g, p)) return;
      pend_send(g, p, AS_ACCEPT, 0);
      return;
    }
    if (e == EINTR || e == ECONNABORTED) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if (!blocking) {
        pend_finish(g, p, -EAGAIN);
        return;
      }
      p->op = OP_ACCEPT_WAIT; /* a blocking accept: wait for the next connection without blocking anyone else */
      if (!p->in_epoll) {
        int r = pend_watch(g, p, p->sock, EPOLLIN);
        if (r < 0) pend_finish(g, p, r);
      }
      return;
    }
    pend_finish(g, p, -e);
    return;
  }
}

static void h_accept(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  int aflags = req->data.nr == __NR_accept4 ? (int)req->data.args[3] : 0;
  int badflags = (aflags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != 0;
  if (badflags) { /* __sys_accept4: EBADF, then the flags (EINVAL), then ENOTSOCK and the socket's own checks */
    int bad = as_task_getfd(&g->pidfds, (pid_t)req->pid, (int)req->data.args[0]);
    if (bad >= 0) close(bad);
    if (bad != -ESRCH) reply(g, req->id, bad == -EBADF ? -EBADF : -EINVAL);
    return;
  }
  /* Every accept is made here on our duplicate, a Unix socket's too: answered with CONTINUE, the kernel would re-run
   * it on whatever the fd number is by then, e.g. an inet listener dup2()ed there, handing the program a connection
   * nobody vouched for (no cgroup hook covers accept). */
  int s = get_socket(g, (pid_t)req->pid, (int)req->data.args[0], &family, &type, NULL);
  if (s < 0) {
    if (s != -ESRCH) reply(g, req->id, s);
    return;
  }
  int listening = 0;
  socklen_t l = sizeof(listening);
  if (is_inet(family) && (getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0 || !listening)) {
    close(s);
    reply(g, req->id, type == SOCK_STREAM ? -EINVAL : -EOPNOTSUPP);
    return;
  }
  struct as_pending *p = pend_open(g, req, OP_ACCEPT_WAIT, s);
  if (!p) return;
  p->family = family;
  p->type = type;
  p->aflags = aflags;
  p->uaddr = req->data.args[1];
  p->ulenp = req->data.args[2];
  accept_next(g, p);
}

/* The daemon says the accepted placeholder stands for a fast-path connection: the program gets the Unix socket
 * (fast_fd, taken over) instead, showing the endpoints the TCP connection would have. */
static int accept_fast(struct as_gen *g, struct as_pending *p, const struct as_ep *peer_virt, int *fast_fd) {
  struct as_fsock e;
  memset(&e, 0, sizeof(e));
  e.family = p->family;
  e.peer = *peer_virt;
  struct sockaddr_storage ss;
  int n = virtual_name(g, p->conn, 0, &ss);
  if (n < 0 || as_ep_from_sockaddr(&ss, (uint32_t)n, &e.local) < 0) return -EINVAL;
  /* a connection (virtual_name cannot tell by getpeername here: the client's placeholder may already be reset) */
  wildcard_to_identity(g, &e.local);
  inherit_options(p->conn, *fast_fd, &e);
  int r = fast_register(g, *fast_fd, &e);
  if (r < 0) return r;
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0}; /* the accepted placeholder: no TIME_WAIT either */
  setsockopt(p->conn, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  close(p->conn);
  p->conn = *fast_fd;
  *fast_fd = -1;
  g->stats_fast++;
  return 0;
}

static void on_accept_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fast_fd) {
  if (as_notif_id_valid(g->notif_fd, p->id) < 0) { /* the caller is gone: the connection goes with it */
    pend_done(g, p);
    return;
  }
  if (m->result < 0) { /* nobody vouches for this peer: drop it and wait for the next connection */
    close(p->conn);
    p->conn = -1;
    accept_next(g, p);
    return;
  }
  if (m->flags & AS_F_OFFERED) { /* its socket came in an AS_OFFER (already read: it preceded this reply) */
    struct as_offer *o = offer_find(g, p->req, p->req_len);
    if (!o) {
      close(p->conn);
      p->conn = -1;
      accept_next(g, p);
      return;
    }
    struct as_msg mm = *m;
    mm.flags = (mm.flags & ~AS_F_OFFERED) | AS_F_FASTPATH;
    int fd = offer_take(g, o);
    on_accept_reply(g, p, &mm, &fd);
    if (fd >= 0) close(fd);
    return;
  }
  struct as_ep real, virt;
  struct sockaddr_storage out;
  int n = -EINVAL;
  if (as_ep_from_sockaddr(p->req, p->req_len, &real) == 0 && as_ep_from_sockaddr(m->addr, m->addr_len, &virt) == 0) {
    if (m->flags & AS_F_FASTPATH) {
      /* no fd (it did not fit: our descriptor limit), or cannot keep up the appearance: drop it, wait for the next */
      if (*fast_fd < 0 || accept_fast(g, p, &virt, fast_fd) < 0) {
        close(p->conn);
        p->conn = -1;
        accept_next(g, p);
        return;
      }
    } else {
      as_vmap_put(g->vmap, &real, &virt);
    }
    n = as_ep_to_sockaddr(&virt, p->family, &out);
  }
  if (n < 0) {
    memcpy(&out, p->req, p->req_len);
    n = (int)p->req_len;
  }
  accept_deliver(g, p, &out, n);
}

/* Hands the accepted connection p->conn to the program: its peer address `out` (n bytes) where it asked for one,
 * the flags it asked for, and the fd itself (ADDFD_FLAG_SEND answers the accept). */
static void accept_deliver(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *out, int n) {
  if (p->uaddr) { /* as move_addr_to_user(): EFAULT/EINVAL lose the connection */
    int32_t ulen;
    int r = as_mem_read(p->pid, p->ulenp, &ulen, sizeof(ulen));
    if (r == 0 && ulen < 0) r = -EINVAL;
    int32_t full = n;
    if (r == 0) r = as_mem_write2(p->pid, p->uaddr, out, (size_t)(n < ulen ? n : ulen), p->ulenp, &full, sizeof(full));
    if (r < 0) {
      pend_finish(g, p, r == -ESRCH ? -EFAULT : r);
      return;
    }
  }
  int fl = fcntl(p->conn, F_GETFL);
  if (fl >= 0) fcntl(p->conn, F_SETFL, (p->aflags & SOCK_NONBLOCK) ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
  int r = as_notif_addfd_send(g->notif_fd, p->id, p->conn, (p->aflags & SOCK_CLOEXEC) != 0);
  if (r != -ENOENT) as_tstats_end(&g->tstats, &p->mark, r);
  if (r < 0 && r != -ENOENT) reply(g, p->id, r);
  pend_done(g, p);
}

/* ---- datagram sends with a destination: sendto(), sendmsg(), sendmmsg() ------------------------------------ */

/* A datagram socket in the host namespace must never send where the program names: we send it ourselves,
 * to the destination the daemon resolved. Stream sockets ignore the destination (MSG_FASTOPEN is refused by the
 * filter), so their sends run untouched. */
static void send_udp(struct as_gen *g, struct as_pending *p) {
  struct as_udp *u = p->udp;
  struct iovec iov = {.iov_base = u->data, .iov_len = u->len};
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (p->real_len) {
    mh.msg_name = p->real;
    mh.msg_namelen = p->real_len;
  }
  mh.msg_control = u->ctl_len ? u->ctl : NULL;
  mh.msg_controllen = u->ctl_len;
  ssize_t n = sendmsg(p->sock, &mh, u->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
  pend_finish(g, p, n < 0 ? -errno : n);
}

/* Reads one msghdr's payload into a new as_udp. Returns 0 or -errno, as sendmsg would. */
static int read_msg(pid_t pid, const struct msghdr *mh, int flags, struct as_udp **out) {
  if (mh->msg_iovlen > IOV_MAX) return -EMSGSIZE;
  if (mh->msg_controllen > CTL_MAX) return -ENOBUFS;
  struct as_udp *u = calloc(1, sizeof(*u));
  if (!u) return -ENOMEM;
  u->flags = flags & ~MSG_NOSIGNAL;
  struct iovec *iov = NULL;
  int r = 0;
  if (mh->msg_iovlen) {
    iov = calloc(mh->msg_iovlen, sizeof(*iov));
    if (!iov) r = -ENOMEM;
    if (!r) r = as_mem_read(pid, (uint64_t)(uintptr_t)mh->msg_iov, iov, mh->msg_iovlen * sizeof(*iov));
  }
  size_t total = 0;
  for (size_t i = 0; !r && i < mh->msg_iovlen; i++) {
    if (iov[i].iov_len > UDP_MAX || total + iov[i].iov_len > UDP_MAX) r = -EMSGSIZE;
    else total += iov[i].iov_len;
  }
  if (!r) u->data = malloc(total ? total : 1);
  if (!r && !u->data) r = -ENOMEM;
  for (size_t i = 0; !r && i < mh->msg_iovlen; i++) {
    r = as_mem_read(pid, (uint64_t)(uintptr_t)iov[i].iov_base, u->data + u->len, iov[i].iov_len);
    u->len += iov[i].iov_len;
  }
  if (!r && mh->msg_controllen) {
    u->ctl = malloc(mh->msg_controllen);
    if (!u->ctl) r = -ENOMEM;
    if (!r) r = as_mem_read(pid, (uint64_t)(uintptr_t)mh->msg_control, u->ctl, mh->msg_controllen);
    u->ctl_len = mh->msg_controllen;
  }
  free(iov);
  if (r < 0) {
    udp_free(u);
    return r;
  }
  *out = u;
  return 0;
}

/* Starts one datagram send: with a destination, the daemon resolves it first; without, it goes out at once.
 * Takes ownership of s and u. */
static void start_udp(struct as_gen *g, struct seccomp_notif *req, int s, int family, struct as_udp *u,
                      const struct sockaddr_storage *dst, uint32_t dlen) {
  struct as_pending *p = pend_open(g, req, OP_SEND, s);
  if (!p) {
    udp_free(u);
    return;
  }
  p->family = family;
  p->type = SOCK_DGRAM;
  p->udp = u;
  if (!dlen) {
    send_udp(g, p);
    return;
  }
  memcpy(p->req, dst, dlen);
  p->req_len = dlen;
  struct as_ep v, r;
  struct sockaddr_storage rs;
  int rl;
  if (as_ep_from_sockaddr(dst, dlen, &v) == 0 && as_urecv_reply_path(g, &v, &r) && (rl = as_ep_to_sockaddr(&r, family, &rs)) > 0) {
    /* a reply to a sender the daemon just named (udp_recv.c): its real endpoint is known, no round trip */
    memcpy(p->real, &rs, (size_t)rl);
    p->real_len = (uint32_t)rl;
    as_urecv_before_send(g, s, family);
    send_udp(g, p);
    return;
  }
  pend_send(g, p, AS_CONNECT, 0);
}

static int udp_dest(struct as_gen *g, pid_t pid, uint64_t name, uint32_t namelen, int family,
                    struct sockaddr_storage *dst, uint32_t *dlen) {
  *dlen = 0;
  if (!name) return 0;
  return read_inet_addr(g, pid, name, (int64_t)(int32_t)namelen, family, 0, dst, dlen);
}

static void h_send(struct as_gen *g, struct seccomp_notif *req) {
  pid_t pid = (pid_t)req->pid;
  int nr = req->data.nr;
  if (nr == __NR_sendto) { /* __sys_sendto: import_ubuf()'s access_ok comes before the fd is looked at */
    uint64_t buf = req->data.args[1], len = req->data.args[2];
    const uint64_t max_rw = INT_MAX & ~(uint64_t)4095, task_size = 0x00007ffffffff000ULL;
    if (len > max_rw) len = max_rw;
    if (len > task_size || buf > task_size - len) {
      reply(g, req->id, -EFAULT);
      return;
    }
  }
  int uflags = (int)req->data.args[nr == __NR_sendmsg ? 2 : 3];
  if (nr != __NR_sendto && (uflags & (int)0x80000000u /* MSG_CMSG_COMPAT */)) { /* __sys_sendmsg/__sys_sendmmsg refuse it first */
    reply(g, req->id, -EINVAL);
    return;
  }
  int family, type;
  int s = take_inet_socket(g, req, &family, &type, NULL);
  if (s < 0) return;
  if (type == SOCK_STREAM) { /* a stream socket ignores the destination: nothing to judge */
    close(s);
    reply_continue(g, req->id);
    return;
  }
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  int flags;
  uint64_t vec = 0;
  unsigned vlen = 1;
  int r = 0;
  if (nr == __NR_sendto) { /* sendto(fd, buf, len, flags, dest, addrlen) */
    flags = (int)req->data.args[3];
    struct iovec one = {.iov_base = (void *)(uintptr_t)req->data.args[1], .iov_len = (size_t)req->data.args[2]};
    struct as_udp *u = calloc(1, sizeof(*u));
    if (!u) r = -ENOMEM;
    if (!r && one.iov_len > UDP_MAX) r = -EMSGSIZE;
    if (!r) {
      u->data = malloc(one.iov_len ? one.iov_len : 1);
      u->len = one.iov_len;
      u->flags = flags;
      r = u->data ? as_mem_read(pid, (uint64_t)(uintptr_t)one.iov_base, u->data, one.iov_len) : -ENOMEM;
    }
    struct sockaddr_storage dst;
    uint32_t dlen = 0;
    if (!r) r = udp_dest(g, pid, req->data.args[4], (uint32_t)req->data.args[5], family, &dst, &dlen);
    if (as_notif_id_valid(g->notif_fd, req->id) < 0) r = -ESRCH;
    if (r < 0) {
      udp_free(u);
      close(s);
      if (r != -ESRCH) reply(g, req->id, r);
      return;
    }
    start_udp(g, req, s, family, u, &dst, dlen);
    return;
  }
  if (nr == __NR_sendmsg) {
    flags = (int)req->data.args[2];
    r = as_mem_read(pid, req->data.args[1], &mh, sizeof(mh));
  } else { /* sendmmsg(fd, vec, vlen, flags): one message per trap; the caller retries the rest, as the API allows */
    vec = req->data.args[1];
    vlen = (unsigned)req->data.args[2];
    flags = (int)req->data.args[3];
    if (vlen == 0) {
      close(s);
      reply(g, req->id, 0);
      return;
    }
    r = as_mem_read(pid, vec, &mh, sizeof(mh));
  }
  struct as_udp *u = NULL;
  struct sockaddr_storage dst;
  uint32_t dlen = 0;
  if (mh.msg_namelen > sizeof(struct sockaddr_storage)) /* copy_msghdr_from_user() clamps it, sendto(2) refuses it */
    mh.msg_namelen = sizeof(struct sockaddr_storage);
  if (!r) r = udp_dest(g, pid, (uint64_t)(uintptr_t)mh.msg_name, mh.msg_namelen, family, &dst, &dlen);
  if (!r) r = read_msg(pid, &mh, flags, &u);
  if (as_notif_id_valid(g->notif_fd, req->id) < 0) r = -ESRCH;
  if (r < 0) {
    udp_free(u);
    close(s);
    if (r != -ESRCH) reply(g, req->id, r);
    return;
  }
  if (nr == __NR_sendmmsg) {
    /* send it now and report one message sent, writing msg_len as the kernel would */
    struct as_pending *p = pend_open(g, req, OP_SEND, s);
    if (!p) {
      udp_free(u);
      return;
    }
    p->family = family;
    p->type = SOCK_DGRAM; /* the daemon judges the destination as a datagram's (as for sendto/sendmsg) */
    p->udp = u;
    if (dlen) { /* resolution needed: handled like sendmsg, the count is written after the send */
      memcpy(p->req, &dst, dlen);
      p->req_len = dlen;
      p->ino = vec; /* remember where msg_len lives */
      p->backlog = 1;
      pend_send(g, p, AS_CONNECT, 0);
      return;
    }
    struct iovec iov = {.iov_base = u->data, .iov_len = u->len};
    struct msghdr out;
    memset(&out, 0, sizeof(out));
    out.msg_iov = &iov;
    out.msg_iovlen = 1;
    out.msg_control = u->ctl_len ? u->ctl : NULL;
    out.msg_controllen = u->ctl_len;
    ssize_t n = sendmsg(s, &out, (flags & ~MSG_NOSIGNAL) | MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      uint32_t ml = (uint32_t)n;
      as_mem_write(pid, vec + offsetof(struct mmsghdr, msg_len), &ml, sizeof(ml));
    }
    pend_finish(g, p, n < 0 ? -errno : 1);
    return;
  }
  start_udp(g, req, s, family, u, &dst, dlen);
}

/* ---- the daemon's replies --------------------------------------------------------------------------------- */

static void on_daemon_msg(struct as_gen *g, const uint8_t *buf, ssize_t n, int *fast_fd);

static void on_daemon(struct as_gen *g) {
  uint8_t buf[AS_MSG_MAX];
  int fds[AS_MAX_FDS], nfds = 0;
  for (;;) {
    /* At our own descriptor limit, an ACCEPT reply's fd is dropped by the kernel (MSG_CTRUNC): the reply still
     * counts (without it the accept would wait for ever); on_accept_reply drops that connection */
    int lost = 0;
    ssize_t n = as_recv_fds_ex(g->daemon_fd, buf, sizeof(buf), fds, &nfds, MSG_DONTWAIT, &lost);
    /* only an ACCEPT reply with AS_F_FASTPATH carries a descriptor (one); anything else is closed */
    int fast_fd = nfds > 0 ? fds[0] : -1;
    for (int i = 1; i < nfds; i++) close(fds[i]);
    nfds = 0;
    if (n > 0) on_daemon_msg(g, buf, n, &fast_fd);
    if (fast_fd >= 0) close(fast_fd);
    if (n > 0 || n == -EMSGSIZE) continue;
    if (n == -EAGAIN) return;
    /* The daemon went away: what waited on it is sent again to the next one (or fails after wait_ms). */
    daemon_lost(g);
    if (!g->daemon_path) expire_unsent(g, 1);
    return;
  }
}

/* sendmmsg: the destination is resolved; send the message and write msg_len as the kernel would. */
static void on_sendmmsg_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  if (m->result < 0) {
    pend_finish(g, p, m->result);
    return;
  }
  if (m->flags & AS_F_NOWHERE) { /* the local host, nothing there: refused (see on_connect_reply) */
    pend_finish(g, p, -ECONNREFUSED);
    return;
  }
  struct as_ep real, virt;
  struct sockaddr_storage dst;
  int dl;
  if (as_ep_from_sockaddr(m->addr, m->addr_len, &real) < 0 || (dl = as_ep_to_sockaddr(&real, p->family, &dst)) < 0) {
    pend_finish(g, p, -ENETUNREACH);
    return;
  }
  if (m->addr2_len && as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) == 0) {
    if (!(m->flags & AS_F_UDP_PEER)) as_vmap_put(g->vmap, &real, &virt);
  } else {
    as_urecv_sent_direct(g, &real);
  }
  as_urecv_before_send(g, p->sock, p->family);
  struct iovec iov = {.iov_base = p->udp->data, .iov_len = p->udp->len};
  struct msghdr out;
  memset(&out, 0, sizeof(out));
  out.msg_name = &dst;
  out.msg_namelen = (socklen_t)dl;
  out.msg_iov = &iov;
  out.msg_iovlen = 1;
  out.msg_control = p->udp->ctl_len ? p->udp->ctl : NULL;
  out.msg_controllen = p->udp->ctl_len;
  ssize_t sn = sendmsg(p->sock, &out, p->udp->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sn >= 0) {
    uint32_t ml = (uint32_t)sn;
    as_mem_write(p->pid, p->ino + offsetof(struct mmsghdr, msg_len), &ml, sizeof(ml));
  }
  pend_finish(g, p, sn < 0 ? -errno : 1);
}

static void on_daemon_msg(struct as_gen *g, const uint8_t *buf, ssize_t n, int *fast_fd) {
  if (n < (ssize_t)sizeof(struct as_msg)) return;
  struct as_msg m;
  memcpy(&m, buf, sizeof(m));
  if (m.type == AS_OFFER) {
    offer_store(g, &m, fast_fd);
    return;
  }
  if (m.seq & AS_SEQ_UDP) {
    as_urecv_on_reply(g, &m);
    return;
  }
  struct as_pending *p = &g->pend[m.seq % AS_PENDING_MAX];
  if (!p->used || p->seq != m.seq || !p->awaiting) return; /* a late answer to something already finished */
  p->awaiting = 0;
  switch (p->op) {
  case OP_BIND:
  case OP_LISTEN_BIND: on_bind_reply(g, p, &m); break;
  case OP_LISTEN: on_listen_reply(g, p, &m); break;
  case OP_CONNECT: on_connect_reply(g, p, &m); break;
  case OP_ACCEPT_ASK: on_accept_reply(g, p, &m, fast_fd); break;
  case OP_SEND:
    if (p->backlog == 1) on_sendmmsg_reply(g, p, &m);
    else on_connect_reply(g, p, &m);
    break;
  default: pend_finish(g, p, -EINVAL);
  }
}

/* ---- the loop ------------------------------------------------------------------------------------------------ */

static void on_notif(struct as_gen *g) {
  int r = as_notif_recv(&g->nc);
  if (r < 0) {
    if (r != -ENOENT) dbg(g, "NOTIF_RECV: %s", strerror(-r));
    return;
  }
  struct seccomp_notif *req = g->nc.req;
  g->stats_notifs++;
  as_tstats_begin(&g->cur, req->id, req->data.nr);
  switch (req->data.nr) {
  case __NR_socket: h_socket(g, req); break;
  case __NR_getsockname: h_getname(g, req, 0); break;
  case __NR_getpeername: h_getname(g, req, 1); break;
  case __NR_bind: h_bind(g, req); break;
  case __NR_listen: h_listen(g, req); break;
  case __NR_connect: h_connect(g, req); break;
  case __NR_accept:
  case __NR_accept4: h_accept(g, req); break;
  case __NR_sendto:
  case __NR_sendmsg:
  case __NR_sendmmsg: h_send(g, req); break;
  case __NR_setsockopt: h_sockopt(g, req, 1); break;
  case __NR_getsockopt: h_sockopt(g, req, 0); break;
  case __NR_recvfrom:
  case __NR_recvmsg:
  case __NR_recvmmsg: as_urecv_trap(g, req); break;
  default: reply(g, req->id, -ENOSYS);
  }
  g->cur.live = 0; /* answered (and counted), waiting in a pending entry, or its task is gone (not counted) */
}

/* Waits whose caller died (a blocked accept in a killed thread) would otherwise hold a duplicate of the listener
 * open forever; checked once a second and whenever a child exits. */
static void reap_waits(struct as_gen *g) {
  for (int i = 0; i < AS_PENDING_MAX; i++) {
    struct as_pending *p = &g->pend[i];
    if (p->used && p->in_epoll && as_notif_id_valid(g->notif_fd, p->id) < 0) pend_done(g, p);
  }
  as_urecv_reap(g);
}

static void on_signal(struct as_gen *g) {
  struct signalfd_siginfo si;
  while (read(g->sigfd, &si, sizeof(si)) == sizeof(si)) {
    if (si.ssi_signo == SIGCHLD) {
      int st;
      pid_t w;
      while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
        if (w == g->child) {
          g->child_status = st;
          g->child_done = 1;
          struct as_msg m;
          memset(&m, 0, sizeof(m));
          batches_flush(g);
          m.type = AS_EXIT;
          m.arg = st;
          m.pid = (uint32_t)w;
          send_daemon(g, &m);
        }
      }
      reap_waits(g);
      continue;
    }
    /* Signals from the terminal (SI_KERNEL) reached the program directly, as it shares our process group;
     * signals sent to us with kill(2) are passed on. */
    if ((si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE) && !g->child_done) kill(g->child, (int)si.ssi_signo);
  }
}

int as_gen_init(struct as_gen *g, int notif_fd, int daemon_fd, int sigfd, pid_t child) {
  memset(g, 0, sizeof(*g));
  g->notif_fd = notif_fd;
  g->daemon_fd = daemon_fd;
  g->sigfd = sigfd;
  g->child = child;
  g->verbose = getenv("APPSWITCH_GENERATOR_DEBUG") != NULL;
  for (int i = 0; i < AS_PENDING_MAX; i++) g->pend[i].sock = g->pend[i].conn = g->pend[i].spec_fd = g->pend[i].spec_srv = -1;
  for (int i = 0; i < AS_OFFERS_MAX; i++) g->offers[i].fd = -1;
  g->ochan = -1;
  g->dtab.app_index = -1;
  as_pidfds_init(&g->pidfds);
  g->vmap = calloc(1, sizeof(*g->vmap));
  if (!g->vmap) return -ENOMEM;
  int r = as_notif_init(&g->nc, notif_fd);
  if (r < 0) return r;
  g->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (g->epfd < 0) return -errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_NOTIF};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, notif_fd, &ev) < 0) return -errno;
  ev.data.u64 = TAG_SIGNAL;
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0) return -errno;
  g->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (g->timer_fd < 0) return -errno;
  struct itimerspec its = {.it_interval = {.tv_sec = 1}, .it_value = {.tv_sec = 1}};
  timerfd_settime(g->timer_fd, 0, &its, NULL);
  ev.data.u64 = TAG_TIMER;
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->timer_fd, &ev) < 0) return -errno;
  g->flush_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (g->flush_fd < 0) return -errno;
  ev.data.u64 = TAG_FLUSH;
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->flush_fd, &ev) < 0) return -errno;
  if (daemon_fd >= 0) {
    ev.data.u64 = TAG_DAEMON;
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, daemon_fd, &ev) < 0) return -errno;
  }
  return as_urecv_init(g);
}

int as_gen_run(struct as_gen *g, int until_child_exits) {
  struct epoll_event evs[32];
  for (;;) {
    if (g->child_done && (until_child_exits || g->notif_hup)) {
      as_tstats_flush(&g->tstats, g->daemon_fd); /* the last counts */
      return g->child_status;
    }
    int n = epoll_wait(g->epfd, evs, 32, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      as_tstats_flush(&g->tstats, g->daemon_fd);
      return g->child_status;
    }
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if (tag == TAG_NOTIF) {
        if (evs[i].events & EPOLLIN) on_notif(g);
        else if (evs[i].events & (EPOLLHUP | EPOLLERR)) { /* every task under the filter is gone */
          g->notif_hup = 1;
          epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->notif_fd, NULL);
        }
      } else if (tag == TAG_DAEMON) {
        on_daemon(g);
      } else if (tag == TAG_OCHAN) {
        ochan_drain(g);
      } else if (tag == TAG_FLUSH) {
        uint64_t ticks;
        if (read(g->flush_fd, &ticks, sizeof(ticks)) == sizeof(ticks)) g->flush_armed = 0;
        batches_flush(g);
      } else if (tag == TAG_SIGNAL) {
        on_signal(g);
      } else if (tag == TAG_TIMER) {
        uint64_t ticks;
        if (read(g->timer_fd, &ticks, sizeof(ticks)) == sizeof(ticks)) reap_waits(g);
        if (g->fast_timer || g->daemon_fd < 0) on_timer_tick(g);
        as_tstats_flush(&g->tstats, g->daemon_fd); /* at most once a second, only when traps happened */
        if (++g->ticks % 5 == 0 && g->ftab.count) as_ftab_gc(&g->ftab); /* forget closed fast-path sockets */
        if (g->noffers) offer_expire(g);
        claims_flush(g);
      } else if (tag >= AS_TAG_URECV_TIMER) {
        as_urecv_event(g, tag);
      } else if (tag >= TAG_PENDING && tag < TAG_PENDING + AS_PENDING_MAX) {
        struct as_pending *p = &g->pend[tag - TAG_PENDING];
        if (!p->used || !p->in_epoll) continue;
        if (p->op == OP_ACCEPT_WAIT) {
          if (as_notif_id_valid(g->notif_fd, p->id) < 0) pend_done(g, p); /* the waiting thread is gone */
          else accept_next(g, p);
        } else {
          on_connect_ready(g, p);
        }
      }
    }
  }
}

/* Starts taking fast-path offers from other generators on socket s (offer_chan.h; ours from here on). */
int as_gen_offers(struct as_gen *g, int s) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_OCHAN};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, s, &ev) < 0) {
    int e = errno;
    close(s);
    return -e;
  }
  g->ochan = s;
  return 0;
}

void as_gen_free(struct as_gen *g) {
  batches_flush(g);
  for (int i = 0; i < AS_OFFERS_MAX; i++)
    if (g->offers[i].fd >= 0) close(offer_take(g, &g->offers[i]));
  for (int i = 0; i < AS_PENDING_MAX; i++)
    if (g->pend[i].used) pend_done(g, &g->pend[i]);
  as_urecv_free(g);
  as_pidfds_close(&g->pidfds);
  as_notif_free(&g->nc);
  free(g->vmap);
  as_ftab_free(&g->ftab);
  if (g->timer_fd >= 0) close(g->timer_fd);
  if (g->flush_fd >= 0) close(g->flush_fd);
  if (g->ochan >= 0) close(g->ochan);
  as_dtab_detach(&g->dtab);
  if (g->epfd >= 0) close(g->epfd);
}
