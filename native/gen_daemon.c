/* The generator's channel to the daemon: the one function that sends (a message, its payload, its descriptors),
 * requests kept while the daemon is away and sent again to a new session, and the daemon's messages read and handed
 * to their operation. Wire format: proto.h. unix(7) (SOCK_SEQPACKET, SCM_RIGHTS), timerfd_create(2). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "gen_internal.h"
#include "scm_rights.h"

/* ---- the daemon going away and coming back ------------------------------------------------------------------
 * The daemon may restart (a crash, an upgrade) under running programs. Their established connections never went
 * through it and flow on. A request that needs the daemon while it is away is kept (unsent) and sent to the new
 * daemon as soon as a new session is up; requests whose answer was lost with the old daemon are sent again. The
 * timer tries to reconnect every 100 ms; a request that waited longer than wait_ms gets ENETDOWN. */

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
  p->queued_ms = as_now_ms();
  g->unsent++;
  set_fast_timer(g, 1);
}

/* Answers ENETDOWN to queued requests that waited too long (all of them with force, or when no new session can be
 * made). */
static void expire_unsent(struct as_gen *g, int force) {
  uint64_t now = as_now_ms();
  for (int i = 0; i < AS_PENDING_MAX && g->unsent; i++) {
    struct as_pending *p = &g->pend[i];
    if (p->used && p->unsent && (force || !g->daemon_path || now - p->queued_ms >= (uint64_t)g->wait_ms))
      as_pend_finish(g, p, -ENETDOWN);
  }
}

/* The session broke: requests whose answer will never come are queued to be sent again. */
static void daemon_lost(struct as_gen *g) {
  if (g->daemon_fd < 0) return;
  as_dbg(g, "daemon connection lost");
  epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->daemon_fd, NULL);
  close(g->daemon_fd);
  g->daemon_fd = -1;
  for (int i = 0; i < AS_PENDING_MAX; i++)
    if (g->pend[i].used && g->pend[i].awaiting) pend_queue(g, &g->pend[i]);
  set_fast_timer(g, 1);
}

/* ---- sending --------------------------------------------------------------------------------------------------- */

int as_daemon_send(struct as_gen *g, struct as_msg *m, const void *payload, const int *fds, int nfds) {
  if (g->daemon_fd < 0) return -ENETDOWN;
  m->version = AS_PROTO_VERSION;
  const void *buf = m;
  size_t len = sizeof(*m);
  if (payload && m->payload_len) { /* one datagram: header and payload together */
    static uint8_t out[AS_MSG_MAX]; /* the generator is single-threaded */
    if (m->payload_len > AS_PAYLOAD_MAX) return -EMSGSIZE;
    memcpy(out, m, sizeof(*m));
    memcpy(out + sizeof(*m), payload, m->payload_len);
    buf = out;
    len += m->payload_len;
  }
  ssize_t r = as_send_fds(g->daemon_fd, buf, len, fds, nfds, MSG_NOSIGNAL);
  if (r < 0) {
    as_dbg(g, "daemon send failed: %s", strerror((int)-r));
    daemon_lost(g);
    return -ENETDOWN;
  }
  return 0;
}

int as_daemon_send_nowait(struct as_gen *g, struct as_msg *m, const void *payload) {
  if (g->daemon_fd < 0) return -ENETDOWN;
  static uint8_t out[AS_MSG_MAX];
  if (m->payload_len > AS_PAYLOAD_MAX) return -EMSGSIZE;
  m->version = AS_PROTO_VERSION;
  memcpy(out, m, sizeof(*m));
  if (m->payload_len) memcpy(out + sizeof(*m), payload, m->payload_len);
  ssize_t r = as_send_fds(g->daemon_fd, out, sizeof(*m) + m->payload_len, NULL, 0, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (r >= 0) return 0;
  if (r == -EAGAIN) return -EAGAIN;
  as_dbg(g, "daemon send failed: %s", strerror((int)-r));
  daemon_lost(g);
  return -ENETDOWN;
}

void as_arm_flush(struct as_gen *g) {
  if (g->flush_armed || g->flush_fd < 0) return;
  struct itimerspec its = {.it_value = {.tv_nsec = AS_FLUSH_MS * 1000000L}};
  if (timerfd_settime(g->flush_fd, 0, &its, NULL) == 0) g->flush_armed = 1;
}

int as_gen_send_daemon(struct as_gen *g, struct as_msg *m) { return as_daemon_send(g, m, NULL, NULL, 0); }

void as_daemon_notify(struct as_gen *g, uint16_t type, uint64_t ino, const void *addr, uint32_t len) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = type;
  m.cookie = ino;
  m.addr_len = len;
  if (len) memcpy(m.addr, addr, len);
  as_daemon_send(g, &m, NULL, NULL, 0);
}

struct as_msg *as_pend_msg(struct as_pending *p, uint16_t type, uint32_t flags) {
  struct as_msg *m = &p->msg;
  memset(m, 0, sizeof(*m));
  m->type = type;
  m->seq = p->seq;
  m->flags = flags;
  m->pid = (uint32_t)p->pid;
  m->arg = p->type;
  m->cookie = p->ino;
  return m;
}

void as_pend_send(struct as_gen *g, struct as_pending *p) {
  g->stats_forwarded++;
  struct as_msg m = p->msg; /* what goes again to a new daemon is the request without this send's offer */
  int fds[2] = {-1, -1}, nfds = p->op == OP_CONNECT ? as_spec_attach(p, &m, fds) : 0;
  if (as_daemon_send(g, &m, NULL, fds, nfds) == 0) {
    if (nfds) as_spec_sent(p);
    p->awaiting = 1;
    return;
  }
  pend_queue(g, p);
  if (!g->daemon_path) expire_unsent(g, 1); /* nobody to wait for */
}

/* A new session with a daemon that came back: the same app (by its ticket), then every queued request. */
static void try_reconnect(struct as_gen *g) {
  int s = as_caller_connect(g->caller, g->daemon_path, NULL, 0); /* for a setuid caller: a root daemon only */
  if (s < 0) return; /* not listening yet, or not a root daemon */
  struct as_msg hr;
  char ticket[AS_TICKET_MAX], why[256] = "";
  int hfds[AS_SESSION_FDS], nh = 0;
  int r = as_session_hello_fds(s, g->meta, g->ticket, g->has_identity ? &g->identity : NULL, 2000, &hr, ticket,
                               sizeof(ticket), why, sizeof(why), hfds, &nh);
  if (r == 0 && hr.result >= 0) { /* the new daemon's table (the old one stayed mapped until now: decisions went on) */
    char id[AS_DTAB_ID_MAX];
    snprintf(id, sizeof(id), "%.*s", (int)strcspn(ticket, "."), ticket);
    as_dtab_attach(&g->dtab, nh > 0 ? hfds[0] : -1, nh > 1 ? hfds[1] : -1, id);
  }
  for (int i = 0; i < nh; i++) close(hfds[i]);
  if (r < 0 || hr.result < 0) {
    as_dbg(g, "new session refused: %s", r < 0 ? strerror(-r) : why);
    close(s);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = AS_TAG_DAEMON};
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
  as_dbg(g, "new session with the daemon (%u requests queued)", g->unsent);
  if (!g->child_done) {
    struct as_msg m;
    memset(&m, 0, sizeof(m));
    m.type = AS_STARTED;
    m.pid = (uint32_t)g->child;
    as_daemon_send(g, &m, NULL, NULL, 0);
  }
  as_urecv_resend_reports(g); /* who sends datagrams from where: the new daemon has no record of it */
  for (int i = 0; i < AS_PENDING_MAX && g->unsent && g->daemon_fd >= 0; i++) {
    struct as_pending *p = &g->pend[i];
    if (!p->used || !p->unsent) continue;
    p->unsent = 0;
    g->unsent--;
    as_pend_send(g, p);
  }
  if (g->daemon_fd >= 0 && !g->unsent) set_fast_timer(g, 0);
}

void as_daemon_tick(struct as_gen *g) {
  if (g->daemon_fd < 0 && g->daemon_path) try_reconnect(g);
  if (g->unsent) expire_unsent(g, 0);
  if (g->daemon_fd >= 0 && !g->unsent) set_fast_timer(g, 0);
}

/* ---- the daemon's messages --------------------------------------------------------------------------------- */

/* Who handles the daemon's answer to each operation (as_daemon_on_reply, set by gen_loop.c): the channel itself
 * knows no operation. */
static as_reply_fn replies[AS_OP_COUNT];

void as_daemon_on_reply(enum as_op op, as_reply_fn fn) {
  if ((unsigned)op < AS_OP_COUNT) replies[op] = fn;
}

static void on_daemon_msg(struct as_gen *g, const uint8_t *buf, ssize_t n, int *fast_fd) {
  if (n < (ssize_t)sizeof(struct as_msg)) return;
  struct as_msg m;
  memcpy(&m, buf, sizeof(m));
  if (m.type == AS_OFFER) {
    as_offer_store(g, &m, fast_fd);
    return;
  }
  if (m.seq & AS_SEQ_UDP) {
    as_urecv_on_reply(g, &m);
    return;
  }
  struct as_pending *p = &g->pend[m.seq % AS_PENDING_MAX];
  if (!p->used || p->seq != m.seq || !p->awaiting) return; /* a late answer to something already finished */
  p->awaiting = 0;
  as_reply_fn fn = (unsigned)p->op < AS_OP_COUNT ? replies[p->op] : NULL;
  if (fn) fn(g, p, &m, fast_fd);
  else as_pend_finish(g, p, -EINVAL);
}

void as_on_daemon(struct as_gen *g) {
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
