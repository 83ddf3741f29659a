/* appswitch-relay: the loop (epoll(7), timerfd_create(2)), start-up and lifecycle. Started by the daemon
 * (src/gateway/relay-process.ts) with its control socket on fd 3 and the decision table's memfds on fds 4 and 5; it
 * exits when fd 3 hangs up (the daemon is gone), so it never outlives the daemon that owns it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "relay.h"

static struct relay R;

/* Raises the fd limit to its hard maximum and sizes the connection cap from it. */
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

static void on_tick(struct relay *r) {
  uint64_t n;
  if (read(r->timer, &n, sizeof(n)) != sizeof(n)) return;
  static unsigned ticks;
  ticks += (unsigned)n;
  if (r->pause_ticks > 0) {
    r->pause_ticks -= (int)n;
    if (r->pause_ticks <= 0) {
      r->pause_ticks = 0;
      relay_set_accepting(r);
    }
  }
  if (ticks >= 10) {
    ticks = 0;
    relay_send_stats(r);
  }
}

static void dispatch(struct relay *r, const struct epoll_event *e) {
  uint64_t d = e->data.u64;
  unsigned kind = (unsigned)(d >> 60);
  uint32_t gen = (uint32_t)(d >> 32) & 0x0fffffffu;
  uint32_t idx = (uint32_t)d;
  switch (kind) {
  case K_CTL:
    if (e->events & EPOLLOUT) relay_flush(r);
    if (e->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
      if (relay_ctl_read(r)) r->quit = 1;
    break;
  case K_TIMER: on_tick(r); break;
  case K_LISTEN:
    if (idx < RELAY_LISTENERS && r->listeners[idx].fd >= 0) relay_accept(r, (int)idx);
    break;
  case K_CLIENT:
  case K_UP: {
    if (idx >= (uint32_t)r->max_conns) break;
    struct relay_conn *c = &r->conns[idx];
    if (c->state == C_FREE || (c->gen & 0x0fffffffu) != gen) break; /* an event for a connection already gone */
    if (c->state == C_CONNECTING) {
      if (kind == K_UP) relay_connected(r, c);
      /* the client's bytes wait in its socket until the upstream is there */
    } else {
      relay_pump(r, c);
    }
    break;
  }
  default: break;
  }
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
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

  struct relay *r = &R;
  memset(r, 0, sizeof(*r));
  r->table.app_index = -1;
  int e = as_dtab_attach(&r->table, RELAY_TABLE_FD, RELAY_SHM_FD, NULL);
  if (e < 0) {
    fprintf(stderr, "appswitch-relay: cannot map the decision table (fd 4): %s\n", strerror(-e));
    return 2;
  }
  close(RELAY_TABLE_FD); /* the mappings stay */
  close(RELAY_SHM_FD);
  for (int i = 0; i < RELAY_LISTENERS; i++) r->listeners[i].fd = -1;
  if (relay_conns_init(r, conn_cap()) < 0) {
    fprintf(stderr, "appswitch-relay: out of memory\n");
    return 2;
  }
  r->ep = epoll_create1(EPOLL_CLOEXEC);
  r->timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (r->ep < 0 || r->timer < 0) {
    fprintf(stderr, "appswitch-relay: epoll/timerfd: %s\n", strerror(errno));
    return 2;
  }
  struct itimerspec its = {.it_interval = {0, 100 * 1000 * 1000}, .it_value = {0, 100 * 1000 * 1000}};
  timerfd_settime(r->timer, 0, &its, NULL);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RELAY_EV(K_CTL, 0, 0)};
  epoll_ctl(r->ep, EPOLL_CTL_ADD, RELAY_CTL_FD, &ev);
  ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = RELAY_EV(K_TIMER, 0, 0)};
  epoll_ctl(r->ep, EPOLL_CTL_ADD, r->timer, &ev);

  struct epoll_event evs[256];
  while (!r->quit) {
    int n = epoll_wait(r->ep, evs, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "appswitch-relay: epoll_wait: %s\n", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n && !r->quit; i++) dispatch(r, &evs[i]);
    relay_flush(r);
  }
  return 0;
}
