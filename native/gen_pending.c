/* The generator's pending table: notifications that wait (for the daemon's answer or for a socket to become ready),
 * and the answers to notifications. seccomp_unotify(2), epoll(7). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "gen_internal.h"

void as_dbg(struct as_gen *g, const char *fmt, ...) {
  if (!g->verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "appswitch-generator: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

uint64_t as_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* ---- replies ---------------------------------------------------------------------------------------------- */

void as_reply(struct as_gen *g, uint64_t id, int64_t val) {
  if (g->cur.live && g->cur.id == id) as_tstats_end(&g->tstats, &g->cur, val);
  int r = val < 0 ? as_notif_reply(&g->nc, id, 0, (int)val) : as_notif_reply(&g->nc, id, val, 0);
  if (r < 0 && r != -ENOENT) as_dbg(g, "reply failed: %s", strerror(-r));
}

void as_reply_continue(struct as_gen *g, uint64_t id) {
  if (g->cur.live && g->cur.id == id) as_tstats_end(&g->tstats, &g->cur, 0);
  int r = as_notif_continue(&g->nc, id);
  if (r < 0 && r != -ENOENT) as_dbg(g, "continue failed: %s", strerror(-r));
}

/* ---- the table ---------------------------------------------------------------------------------------------- */

static struct as_pending *pend_new(struct as_gen *g, uint64_t id, pid_t pid, enum as_op op, int sock) {
  for (int tries = 0; tries < AS_PENDING_MAX; tries++) {
    uint32_t seq = ++g->next_seq;
    if (seq == 0 || (seq & AS_SEQ_UDP)) { /* AS_SEQ_UDP numbers belong to udp_recv.c */
      g->next_seq = 0;
      seq = ++g->next_seq;
    }
    struct as_pending *p = &g->pend[seq % AS_PENDING_MAX];
    if (p->used) continue;
    memset(p, 0, sizeof(*p));
    p->used = 1;
    g->npend++;
    p->seq = seq;
    p->id = id;
    p->pid = pid;
    p->op = op;
    p->sock = sock;
    p->pfd = -1;
    p->watch_fd = -1;
    if (op == OP_CONNECT) p->u.connect.conn = p->u.connect.spec_fd = p->u.connect.spec_srv = -1;
    if (op == OP_ACCEPT_WAIT || op == OP_ACCEPT_ASK) p->u.accept.conn = -1;
    if (g->cur.live && g->cur.id == id) { /* the answer now comes from this entry */
      p->mark = g->cur;
      g->cur.live = 0;
    }
    return p;
  }
  return NULL;
}

struct as_pending *as_pend_open(struct as_gen *g, struct seccomp_notif *req, enum as_op op, int s) {
  struct as_pending *p = pend_new(g, req->id, (pid_t)req->pid, op, s);
  if (!p) {
    close(s);
    as_reply(g, req->id, -EAGAIN);
  }
  return p;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

void as_pend_done(struct as_gen *g, struct as_pending *p) {
  if (p->used && g->npend) g->npend--;
  if (p->unsent && g->unsent) g->unsent--;
  as_pend_unwatch(g, p);
  close_fd(&p->sock);
  switch (p->op) {
  case OP_CONNECT:
    close_fd(&p->u.connect.conn);
    close_fd(&p->u.connect.spec_fd);
    close_fd(&p->u.connect.spec_srv);
    break;
  case OP_ACCEPT_WAIT:
  case OP_ACCEPT_ASK:
  case OP_ACCEPT_PREAMBLE: close_fd(&p->u.accept.conn); break;
  case OP_SEND: as_udp_free(p->u.send.udp); break;
  case OP_BIND:
  case OP_LISTEN_BIND:
  case OP_LISTEN:
  case AS_OP_COUNT: break;
  }
  memset(p, 0, sizeof(*p));
  p->sock = -1;
  p->watch_fd = -1;
}

int as_pend_watch(struct as_gen *g, struct as_pending *p, int fd, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.u64 = AS_TAG_PENDING + (uint64_t)(p - g->pend)};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  p->watch_fd = fd;
  return 0;
}

void as_pend_unwatch(struct as_gen *g, struct as_pending *p) {
  if (p->watch_fd < 0) return;
  epoll_ctl(g->epfd, EPOLL_CTL_DEL, p->watch_fd, NULL);
  p->watch_fd = -1;
}

void as_pend_finish(struct as_gen *g, struct as_pending *p, int64_t val) {
  as_tstats_end(&g->tstats, &p->mark, val);
  as_reply(g, p->id, val);
  as_pend_done(g, p);
}
