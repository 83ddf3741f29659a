/* appswitch-relay: the routes' listening sockets and accepting (socket(7), accept4(2), epoll_ctl(2) EPOLLEXCLUSIVE).
 * Worker 0 (the control thread) opens and closes listeners and bumps the listeners generation; every worker then
 * brings its own epoll set in line (relay_sync) and watches each live listener with EPOLLEXCLUSIVE, so one worker is
 * woken per new connection. A removed listener stops listening at once (shutdown) but its descriptor is closed only
 * once every worker has taken it out of its set (no worker can accept on a reused descriptor number). A worker stops
 * watching for RELAY_PAUSE_MS after EMFILE/ENFILE (never spin on a full fd table) and while the control socket is full.
 * At the connection cap a connection is accepted and closed at once, reported as REFUSED 'limit'. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define ACCEPT_BURST 64

static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Worker 0: the listeners changed; every worker syncs its epoll set. Returns the new generation. */
static uint32_t bump(struct relay *r) {
  struct relay_shared *sh = r->sh;
  uint32_t g = __atomic_add_fetch(&sh->listen_gen, 1, __ATOMIC_RELEASE);
  uint64_t one = 1;
  for (int w = 0; w < sh->nworkers; w++)
    if (w != r->index && write(sh->workers[w].wake, &one, sizeof(one)) < 0) { /* already signalled */
    }
  return g;
}

void relay_sync(struct relay *r) {
  struct relay_shared *sh = r->sh;
  uint32_t g = __atomic_load_n(&sh->listen_gen, __ATOMIC_ACQUIRE);
  if (r->pause_until_ms && relay_now_ms() >= r->pause_until_ms) r->pause_until_ms = 0;
  int accepting = !r->pause_until_ms && !r->ctl_blocked;
  r->paused = !accepting;
  for (int i = 0; i < RELAY_LISTENERS; i++) {
    const struct relay_listener *l = &sh->listeners[i];
    int fd = accepting && l->state == L_LIVE ? l->fd : -1;
    if (r->watching[i] == fd) continue;
    if (r->watching[i] >= 0) epoll_ctl(r->ep, EPOLL_CTL_DEL, r->watching[i], NULL);
    r->watching[i] = -1;
    if (fd >= 0) {
      struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = RELAY_EV(K_LISTEN, 0, i)};
      if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) == 0) r->watching[i] = fd;
    }
  }
  r->seen_gen = g;
}

int relay_listen(struct relay *r, const struct as_relay_listen *m) {
  struct relay_shared *sh = r->sh;
  int slot = -1;
  for (int i = 0; i < RELAY_LISTENERS; i++) {
    if (sh->listeners[i].state == L_LIVE && sh->listeners[i].id == m->id) return -EEXIST;
    if (slot < 0 && sh->listeners[i].state == L_FREE) slot = i;
  }
  if (slot < 0) return -ENOSPC;
  struct as_ep ep;
  memcpy(ep.ip, m->address, 16);
  ep.port = m->host_port;
  int family = memcmp(ep.ip, v4prefix, 12) ? AF_INET6 : AF_INET;
  struct sockaddr_storage ss;
  int sl = as_ep_to_sockaddr(&ep, family, &ss);
  if (sl < 0) return sl;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* accepted sockets inherit it: no call per client */
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sl) < 0 || listen(fd, 4096) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  struct relay_listener *l = &sh->listeners[slot];
  l->fd = fd;
  l->id = m->id;
  memcpy(l->vip, m->vip, 16);
  l->port = m->port;
  l->state = L_LIVE;
  bump(r);
  return 0;
}

void relay_unlisten(struct relay *r, uint32_t id) {
  struct relay_shared *sh = r->sh;
  for (int i = 0; i < RELAY_LISTENERS; i++) {
    struct relay_listener *l = &sh->listeners[i];
    if (l->state != L_LIVE || l->id != id) continue;
    shutdown(l->fd, SHUT_RDWR); /* stops listening now (the port is free); its connections keep going */
    l->state = L_CLOSING;
    l->closed_gen = bump(r);
  }
}

void relay_reap_listeners(struct relay *r) {
  struct relay_shared *sh = r->sh;
  for (int i = 0; i < RELAY_LISTENERS; i++) {
    struct relay_listener *l = &sh->listeners[i];
    if (l->state != L_CLOSING) continue;
    int all = 1;
    for (int w = 0; w < sh->nworkers && all; w++)
      all = (int32_t)(__atomic_load_n(&sh->workers[w].seen_gen, __ATOMIC_ACQUIRE) - l->closed_gen) >= 0;
    if (!all) continue;
    close(l->fd);
    l->fd = -1;
    l->state = L_FREE;
  }
}

void relay_accept(struct relay *r, int idx) {
  const struct relay_listener *l = &r->sh->listeners[idx];
  int lfd = r->watching[idx];
  if (lfd < 0 || l->state != L_LIVE) return;
  for (int k = 0; k < ACCEPT_BURST && !r->paused; k++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        r->pause_until_ms = relay_now_ms() + RELAY_PAUSE_MS;
        relay_sync(r);
      }
      return;
    }
    r->st.accepted++;
    struct as_ep client;
    if (as_ep_from_sockaddr(&ss, sl, &client) < 0) memset(&client, 0, sizeof(client));
    struct relay_conn *c = relay_conn_alloc(r);
    if (!c) {
      relay_send_refused(r, l->id, &client, AS_RELAY_LIMIT);
      close(fd);
      continue;
    }
    c->cfd = fd;
    c->route = l->id;
    memcpy(c->vip, l->vip, 16);
    c->port = l->port;
    c->client = client;
    relay_start(r, c);
  }
}
