/* appswitch-relay: start-up, the worker threads' loops (epoll(7), eventfd(2)), the timer (timerfd_create(2)) and
 * lifecycle. Started by the daemon (src/gateway/relay-process.ts) with its control socket on fd 3 and the decision
 * table's memfds on fds 4 and 5 (it picks instances from the table itself); it exits when fd 3 hangs up (the daemon
 * is gone), so it never outlives the daemon that owns it.
 *   appswitch-relay [--workers N]   N worker threads (default: one per two CPUs, at least 1, at most RELAY_WORKERS_MAX) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

static struct relay_shared S;

/* Raises the fd limit to its hard maximum and sizes the connection cap (all workers together) from it. */
static int conn_cap(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  long nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 1024;
  long cap = (nofile - 64 - RELAY_LISTENERS) / RELAY_FDS_PER_CONN;
  if (cap > RELAY_CONNS_MAX) cap = RELAY_CONNS_MAX;
  if (cap < 16) cap = 16;
  return (int)cap;
}

/* Reads and acts on the daemon's requests (worker 0); 1: the daemon hung up (exit). Each record is decoded once. */
static int ctl_read(struct relay *r) {
  static uint8_t buf[AS_RELAY_REC * 64];
  for (;;) {
    ssize_t n = recv(RELAY_CTL_FD, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return 1;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : 1;
    }
    for (size_t off = 0; off + AS_RELAY_REC <= (size_t)n; off += AS_RELAY_REC) {
      uint32_t type;
      memcpy(&type, buf + off, 4);
      if (type == AS_RELAY_LISTEN) {
        struct as_relay_listen m;
        memcpy(&m, buf + off, sizeof(m));
        if (r->index != 0) continue; /* only worker 0 reads the control socket */
        int e = relay_listen(r, &m);
        relay_send_listen_result(r, m.id, -e);
      } else if (type == AS_RELAY_KEY) {
        struct as_relay_key m;
        memcpy(&m, buf + off, sizeof(m));
        uint64_t k[2];
        memcpy(k, m.key, sizeof(k));
        __atomic_store_n(&r->sh->key[0], k[0], __ATOMIC_RELAXED);
        __atomic_store_n(&r->sh->key[1], k[1], __ATOMIC_RELAXED);
        __atomic_store_n(&r->sh->have_key, 1, __ATOMIC_RELEASE);
      } else if (type == AS_RELAY_UNLISTEN) {
        struct as_relay_unlisten m;
        memcpy(&m, buf + off, sizeof(m));
        relay_unlisten(r, m.id);
      }
      /* anything else is not ours to act on: ignored (the daemon's encoder is the only writer) */
    }
  }
}

static void on_tick(struct relay *r, int timer) {
  uint64_t n;
  if (read(timer, &n, sizeof(n)) != sizeof(n)) return;
  static unsigned ticks;
  ticks += (unsigned)n;
  relay_reap_listeners(r);
  if (ticks >= 10) {
    ticks = 0;
    relay_send_stats(r);
  }
}

static void dispatch(struct relay *r, const struct epoll_event *e, int timer) {
  uint64_t d = e->data.u64;
  unsigned kind = (unsigned)(d >> 60);
  uint32_t gen = (uint32_t)(d >> 32) & 0x0fffffffu;
  uint32_t idx = (uint32_t)d;
  switch (kind) {
  case K_CTL:
    if ((e->events & EPOLLOUT) && relay_flush(r)) relay_sync(r);
    if (r->index == 0 && (e->events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && ctl_read(r)) _exit(0); /* the daemon is gone */
    break;
  case K_TIMER: on_tick(r, timer); break;
  case K_WAKE: {
    uint64_t v;
    if (read(r->wake, &v, sizeof(v)) < 0) { /* nothing: the sync below happens anyway */
    }
    break;
  }
  case K_LISTEN:
    if (idx < RELAY_LISTENERS) relay_accept(r, (int)idx);
    break;
  case K_CLIENT:
  case K_UP: {
    if (idx >= (uint32_t)r->max_conns) break;
    struct relay_conn *c = &r->conns[idx];
    if (c->state == C_FREE || (c->gen & 0x0fffffffu) != gen) break; /* an event for a connection already gone */
    if (e->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) (kind == K_CLIENT ? &c->cu : &c->uc)->ready = 1;
    if (c->state == C_CONNECTING) {
      if (kind == K_UP) relay_connected(r, c, e->events);
      /* the client's bytes wait in its socket until the upstream is there */
    } else {
      relay_pump(r, c);
    }
    break;
  }
  default: break;
  }
}

static void *worker_loop(void *arg) {
  struct relay *r = arg;
  struct epoll_event evs[256];
  int timer = -1;
  if (r->index == 0) {
    timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, 100 * 1000 * 1000}, .it_value = {0, 100 * 1000 * 1000}};
    timerfd_settime(timer, 0, &its, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RELAY_EV(K_TIMER, 0, 0)};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, timer, &ev);
  }
  for (;;) {
    if (__atomic_load_n(&r->sh->listen_gen, __ATOMIC_ACQUIRE) != r->seen_gen || (r->pause_until_ms && relay_now_ms() >= r->pause_until_ms))
      relay_sync(r);
    int n = epoll_wait(r->ep, evs, 256, r->pause_until_ms ? RELAY_PAUSE_MS : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "appswitch-relay: epoll_wait: %s\n", strerror(errno));
      _exit(1);
    }
    for (int i = 0; i < n; i++) dispatch(r, &evs[i], timer);
    if (relay_flush(r)) relay_sync(r);
  }
  return NULL;
}

/* The default leaves half the CPUs to the kernel's network work and the host's programs: a gateway's connections
 * cost as much in softirq and in the programs at both ends as in the relay's threads, and a worker per CPU mostly
 * added wake-ups across CPUs. Measured on 2 CPUs (bench:ingress, new connections/s through the relay): one worker
 * 0.92-0.94x haproxy, two workers 0.84-0.91x (haproxy: a thread per CPU). */
static int workers_arg(int argc, char **argv) {
  long n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--workers")) n = strtol(argv[i + 1], NULL, 10);
  if (n < 1) n = 1;
  if (n > RELAY_WORKERS_MAX) n = RELAY_WORKERS_MAX;
  return (int)n;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(RELAY_CTL_FD, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
    fprintf(stderr, "appswitch-relay: fd 3 must be the daemon's SOCK_SEQPACKET control socket (started by the daemon only)\n");
    return 2;
  }
  fcntl(RELAY_CTL_FD, F_SETFL, fcntl(RELAY_CTL_FD, F_GETFL) | O_NONBLOCK);
  fcntl(RELAY_CTL_FD, F_SETFD, FD_CLOEXEC);
  int big = 4 << 20;
  setsockopt(RELAY_CTL_FD, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));

  struct relay_shared *sh = &S;
  sh->table.app_index = -1;
  int e = as_dtab_attach(&sh->table, RELAY_TABLE_FD, RELAY_SHM_FD, NULL);
  if (e < 0) {
    fprintf(stderr, "appswitch-relay: cannot map the decision table (fd 4): %s\n", strerror(-e));
    return 2;
  }
  close(RELAY_TABLE_FD); /* the mappings stay */
  close(RELAY_SHM_FD);
  for (int i = 0; i < RELAY_LISTENERS; i++) sh->listeners[i].fd = -1;
  sh->nworkers = workers_arg(argc, argv);
  int per = conn_cap() / sh->nworkers;
  for (int w = 0; w < sh->nworkers; w++) {
    struct relay *r = &sh->workers[w];
    r->sh = sh;
    r->index = w;
    for (int i = 0; i < RELAY_LISTENERS; i++) r->watching[i] = -1;
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    r->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->ep < 0 || r->wake < 0 || relay_conns_init(r, per) < 0) {
      fprintf(stderr, "appswitch-relay: worker %d: %s\n", w, strerror(errno));
      return 2;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RELAY_EV(K_WAKE, 0, 0)};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, r->wake, &ev);
  }
  struct relay *main_worker = &sh->workers[0];
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RELAY_EV(K_CTL, 0, 0)};
  epoll_ctl(main_worker->ep, EPOLL_CTL_ADD, RELAY_CTL_FD, &ev);
  main_worker->ctl_watched = 1;
  /* the other workers take no signals: SIGTERM and the like end the process through the main thread */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int w = 1; w < sh->nworkers; w++) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker_loop, &sh->workers[w]) != 0) {
      fprintf(stderr, "appswitch-relay: cannot start worker %d\n", w);
      return 2;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  worker_loop(main_worker);
  return 0;
}
