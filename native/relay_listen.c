/* appswitch-relay: the routes' listening sockets and accepting (socket(7), accept4(2)). A listener is level-triggered
 * in the epoll set while accepting is on; it is taken out while accepting is paused: for 100-200 ms after EMFILE/ENFILE
 * (never spin on a full fd table) and while the control socket is full. At the connection cap a connection is
 * accepted and closed at once, reported as REFUSED 'limit'. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define ACCEPT_BURST 128

static int want_accepting(const struct relay *r) { return r->pause_ticks <= 0 && !r->ctl_blocked; }

static void watch(struct relay *r, int i, int on) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RELAY_EV(K_LISTEN, 0, i)};
  epoll_ctl(r->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, r->listeners[i].fd, &ev);
}

void relay_set_accepting(struct relay *r) {
  int on = want_accepting(r);
  if (on == !r->paused) return;
  r->paused = !on;
  for (int i = 0; i < RELAY_LISTENERS; i++)
    if (r->listeners[i].fd >= 0) watch(r, i, on);
}

int relay_listen(struct relay *r, const struct as_relay_listen *m) {
  int slot = -1;
  for (int i = 0; i < RELAY_LISTENERS; i++) {
    if (r->listeners[i].fd >= 0 && r->listeners[i].id == m->id) return -EEXIST;
    if (slot < 0 && r->listeners[i].fd < 0) slot = i;
  }
  if (slot < 0) return -ENOSPC;
  struct as_ep ep;
  memcpy(ep.ip, m->address, 16);
  ep.port = m->host_port;
  static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  int family = memcmp(ep.ip, v4prefix, 12) ? AF_INET6 : AF_INET;
  struct sockaddr_storage ss;
  int sl = as_ep_to_sockaddr(&ep, family, &ss);
  if (sl < 0) return sl;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sl) < 0 || listen(fd, 4096) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  struct relay_listener *l = &r->listeners[slot];
  l->fd = fd;
  l->id = m->id;
  memcpy(l->vip, m->vip, 16);
  l->port = m->port;
  if (!r->paused) watch(r, slot, 1);
  return 0;
}

void relay_unlisten(struct relay *r, uint32_t id) {
  for (int i = 0; i < RELAY_LISTENERS; i++) {
    struct relay_listener *l = &r->listeners[i];
    if (l->fd < 0 || l->id != id) continue;
    close(l->fd); /* leaves the epoll set; its connections keep going */
    l->fd = -1;
  }
}

void relay_accept(struct relay *r, int idx) {
  struct relay_listener *l = &r->listeners[idx];
  for (int k = 0; k < ACCEPT_BURST && l->fd >= 0 && !r->paused; k++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        r->pause_ticks = 2; /* 100-200 ms */
        relay_set_accepting(r);
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
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->cfd = fd;
    c->route = l->id;
    memcpy(c->vip, l->vip, 16);
    c->port = l->port;
    c->client = client;
    relay_start(r, c);
  }
}
