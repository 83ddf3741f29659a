/* The trap generator's loop: serves one program's seccomp notifications, answers what needs no service-table decision
 * itself, and forwards the rest to the daemon over the trap socket. seccomp_unotify(2), epoll(7), signalfd(2).
 *
 * Rules the generator keeps (seccomp_unotify(2), "Design goals; use of SECCOMP_USER_NOTIF_FLAG_CONTINUE"):
 *   - memory of the program is read once, into our own buffers; NOTIF_ID_VALID is checked after reading and
 *     before acting; the action then uses only our copy. CONTINUE is used only where the decision read no memory
 *     (the fd's socket family), never after judging an address.
 *   - the program's socket is acted on through a pidfd_getfd(2) duplicate; the program's fd number never changes.
 *   - errors are the kernel's errno for the same bad input; a notification whose task died (ENOENT) is dropped.
 *
 * Where each call is served: gen_names.c (socket, getsockname, getpeername, setsockopt, getsockopt), gen_bind.c,
 * gen_connect.c (with gen_fast.c and gen_offer.c), gen_accept.c, gen_udp_send.c, udp_recv.c (receives); the pending
 * table is gen_pending.c, the daemon channel gen_daemon.c. Shared declarations and the fd ownership rule:
 * gen_internal.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gen_internal.h"

static void handle_notif(struct as_gen *g);

static void on_notif(struct as_gen *g) {
  int r = as_notif_recv(&g->nc);
  if (r < 0) {
    if (r != -ENOENT) as_dbg(g, "NOTIF_RECV: %s", strerror(-r));
    return;
  }
  g->hot_idle = 0; /* calls are coming: the next wait may be the hot one (gen_hot.c) */
  handle_notif(g);
}

/* The notification in g->nc.req, just received. */
static void handle_notif(struct as_gen *g) {
  struct seccomp_notif *req = g->nc.req;
  g->stats_notifs++;
  as_tstats_begin(&g->cur, req->id, req->data.nr);
  switch (req->data.nr) {
  case __NR_socket: as_h_socket(g, req); break;
  case __NR_getsockname: as_h_getname(g, req, 0); break;
  case __NR_getpeername: as_h_getname(g, req, 1); break;
  case __NR_bind: as_h_bind(g, req); break;
  case __NR_listen: as_h_listen(g, req); break;
  case __NR_connect: as_h_connect(g, req); break;
  case __NR_accept:
  case __NR_accept4: as_h_accept(g, req); break;
  case __NR_sendto:
  case __NR_sendmsg:
  case __NR_sendmmsg: as_h_send(g, req); break;
  case __NR_setsockopt: as_h_sockopt(g, req, 1); break;
  case __NR_getsockopt: as_h_sockopt(g, req, 0); break;
  case __NR_recvfrom:
  case __NR_recvmsg:
  case __NR_recvmmsg: as_urecv_trap(g, req); break;
  default: as_reply(g, req->id, -ENOSYS);
  }
  g->cur.live = 0; /* answered (and counted), waiting in a pending entry, or its task is gone (not counted) */
}

/* Waits whose caller died (a blocked accept in a killed thread) would otherwise hold a duplicate of the listener
 * open forever; checked once a second and whenever a child exits. */
static void reap_waits(struct as_gen *g) {
  uint64_t now = as_now_ms();
  for (int i = 0; i < AS_PENDING_MAX; i++) {
    struct as_pending *p = &g->pend[i];
    if (p->used && p->watch_fd >= 0 && as_notif_id_valid(g->notif_fd, p->id) < 0) as_pend_done(g, p);
    else if (p->used && p->op == OP_ACCEPT_PREAMBLE && now >= p->u.accept.preamble_deadline_ms) as_preamble_ready(g, p, 1);
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
          as_batches_flush(g);
          m.type = AS_EXIT;
          m.arg = st;
          m.pid = (uint32_t)w;
          as_daemon_send(g, &m, NULL, NULL, 0);
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

/* The daemon's answers, by operation (gen_daemon.c knows none of them: as_daemon_on_reply). */
static void bind_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fd) {
  (void)fd;
  as_on_bind_reply(g, p, m);
}
static void listen_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fd) {
  (void)fd;
  as_on_listen_reply(g, p, m);
}
static void connect_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fd) {
  (void)fd;
  as_on_connect_reply(g, p, m);
}
static void send_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fd) {
  (void)fd;
  as_on_send_reply(g, p, m);
}

int as_gen_init(struct as_gen *g, int notif_fd, int daemon_fd, int sigfd, pid_t child) {
  as_daemon_on_reply(OP_BIND, bind_reply);
  as_daemon_on_reply(OP_LISTEN_BIND, bind_reply);
  as_daemon_on_reply(OP_LISTEN, listen_reply);
  as_daemon_on_reply(OP_CONNECT, connect_reply);
  as_daemon_on_reply(OP_ACCEPT_ASK, as_on_accept_reply);
  as_daemon_on_reply(OP_SEND, send_reply);
  memset(g, 0, sizeof(*g));
  g->notif_fd = notif_fd;
  g->daemon_fd = daemon_fd;
  g->sigfd = sigfd;
  g->child = child;
  g->verbose = secure_getenv("APPSWITCH_GENERATOR_DEBUG") != NULL; /* never for a setuid launcher (caller.h) */
  g->epfd = g->timer_fd = g->flush_fd = g->ochan = -1;
  g->dtab.app_index = -1;
  as_pidfds_init(&g->pidfds);
  g->vmap = calloc(1, sizeof(*g->vmap));
  g->pend = calloc(AS_PENDING_MAX, sizeof(*g->pend));
  g->offers = calloc(AS_OFFERS_MAX, sizeof(*g->offers));
  if (!g->vmap || !g->pend || !g->offers) return -ENOMEM;
  for (int i = 0; i < AS_OFFERS_MAX; i++) g->offers[i].fd = -1;
  int r = as_notif_init(&g->nc, notif_fd);
  if (r < 0) return r;
  g->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (g->epfd < 0) return -errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = AS_TAG_NOTIF};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, notif_fd, &ev) < 0) return -errno;
  ev.data.u64 = AS_TAG_SIGNAL;
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0) return -errno;
  g->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (g->timer_fd < 0) return -errno;
  struct itimerspec its = {.it_interval = {.tv_sec = 1}, .it_value = {.tv_sec = 1}};
  timerfd_settime(g->timer_fd, 0, &its, NULL);
  ev.data.u64 = AS_TAG_TIMER;
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->timer_fd, &ev) < 0) return -errno;
  g->flush_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK); /* batches to the daemon (gen_decide.c) */
  if (g->flush_fd < 0) return -errno;
  ev.data.u64 = AS_TAG_FLUSH;
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->flush_fd, &ev) < 0) return -errno;
  if (daemon_fd >= 0) {
    ev.data.u64 = AS_TAG_DAEMON;
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, daemon_fd, &ev) < 0) return -errno;
  }
  r = as_urecv_init(g);
  if (r < 0) return r;
  if (as_hot_init(g) < 0) as_dbg(g, "no hot wait: %s", strerror(errno)); /* epoll_wait alone still serves */
  return 0;
}

int as_gen_run(struct as_gen *g, int until_child_exits) {
  struct epoll_event evs[32];
  for (;;) {
    if (g->child_done && (until_child_exits || g->notif_hup)) {
      as_tstats_flush(&g->tstats, g->daemon_fd); /* the last counts */
      return g->child_status;
    }
    int wait_ms = -1;
    if (as_hot_ok(g)) {
      int h = as_hot_recv(g);
      if (h > 0) {
        handle_notif(g);
        continue;
      }
      wait_ms = 0; /* a tick (or a failed RECV): look at the other descriptors, without waiting */
    }
    int n = epoll_wait(g->epfd, evs, 32, wait_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      as_tstats_flush(&g->tstats, g->daemon_fd);
      return g->child_status;
    }
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if (tag == AS_TAG_NOTIF) {
        if (evs[i].events & EPOLLIN) on_notif(g);
        else if (evs[i].events & (EPOLLHUP | EPOLLERR)) { /* every task under the filter is gone */
          g->notif_hup = 1;
          epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->notif_fd, NULL);
        }
      } else if (tag == AS_TAG_DAEMON) {
        as_on_daemon(g);
      } else if (tag == AS_TAG_OCHAN) {
        as_ochan_drain(g);
      } else if (tag == AS_TAG_FLUSH) {
        uint64_t ticks;
        if (read(g->flush_fd, &ticks, sizeof(ticks)) == sizeof(ticks)) g->flush_armed = 0;
        as_batches_flush(g);
      } else if (tag == AS_TAG_SIGNAL) {
        on_signal(g);
      } else if (tag == AS_TAG_TIMER) {
        uint64_t ticks;
        if (read(g->timer_fd, &ticks, sizeof(ticks)) == sizeof(ticks)) reap_waits(g);
        if (g->fast_timer || g->daemon_fd < 0) as_daemon_tick(g);
        as_tstats_flush(&g->tstats, g->daemon_fd); /* at most once a second, only when traps happened */
        if (++g->ticks % 5 == 0 && g->ftab.count) as_ftab_gc(&g->ftab); /* forget closed fast-path sockets */
        if (g->noffers) as_offer_expire(g);
        as_batches_flush(g);
      } else if (tag >= AS_TAG_URECV_TIMER) {
        as_urecv_event(g, tag);
      } else if (tag >= AS_TAG_PENDING && tag < AS_TAG_PENDING + AS_PENDING_MAX) {
        struct as_pending *p = &g->pend[tag - AS_TAG_PENDING];
        if (!p->used || p->watch_fd < 0) continue;
        if (p->op == OP_ACCEPT_WAIT) {
          if (as_notif_id_valid(g->notif_fd, p->id) < 0) as_pend_done(g, p); /* the waiting thread is gone */
          else as_accept_next(g, p);
        } else if (p->op == OP_ACCEPT_PREAMBLE) {
          as_preamble_ready(g, p, 0);
        } else {
          as_on_connect_ready(g, p);
        }
      }
    }
  }
}

/* Starts taking fast-path offers from other generators on socket s (offer_chan.h; ours from here on). */
int as_gen_offers(struct as_gen *g, int s) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = AS_TAG_OCHAN};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, s, &ev) < 0) {
    int e = errno;
    close(s);
    return -e;
  }
  g->ochan = s;
  return 0;
}

void as_gen_free(struct as_gen *g) {
  as_batches_flush(g);
  for (int i = 0; g->offers && i < AS_OFFERS_MAX; i++)
    if (g->offers[i].fd >= 0) close(as_offer_take(g, &g->offers[i]));
  for (int i = 0; g->pend && i < AS_PENDING_MAX; i++)
    if (g->pend[i].used) as_pend_done(g, &g->pend[i]);
  free(g->offers);
  free(g->pend);
  as_urecv_free(g);
  as_pidfds_close(&g->pidfds);
  as_hot_free(g);
  as_notif_free(&g->nc);
  free(g->vmap);
  as_ftab_free(&g->ftab);
  as_pmap_free(&g->pmap);
  if (g->timer_fd >= 0) close(g->timer_fd);
  if (g->flush_fd >= 0) close(g->flush_fd);
  if (g->ochan >= 0) close(g->ochan);
  as_dtab_detach(&g->dtab);
  if (g->epfd >= 0) close(g->epfd);
}
