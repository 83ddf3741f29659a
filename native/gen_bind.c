/* bind() and listen() for the program: the daemon plans the real address of a virtual one (AS_BIND) and registers
 * the service (AS_LISTEN); the generator binds and listens on our duplicate of the program's socket.
 * bind(2), listen(2), ipv6(7) (IPV6_V6ONLY). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "gen_internal.h"

#define BIND_TRIES 8

/* Asks the daemon for the real address of a bind to addr (AS_BIND). */
static void send_bind(struct as_gen *g, struct as_pending *p, const void *addr, uint32_t alen) {
  struct as_msg *m = as_pend_msg(p, AS_BIND, p->u.bind.v6only ? AS_F_V6ONLY : 0);
  memcpy(m->addr, addr, alen);
  m->addr_len = alen;
  as_pend_send(g, p);
}

void as_h_bind(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  uint64_t ino;
  int s = as_take_inet_socket(g, req, &family, &type, &ino);
  if (s < 0) return;
  struct sockaddr_storage a;
  uint32_t alen;
  if (as_take_addr(g, req, s, family, family == AF_INET, &a, &alen) < 0) return;
  if (a.ss_family == AF_UNSPEC) { /* inet_bind accepts AF_UNSPEC only with INADDR_ANY */
    struct sockaddr_in *sin = (struct sockaddr_in *)&a;
    if (alen < sizeof(*sin) || sin->sin_addr.s_addr != htonl(INADDR_ANY)) {
      close(s);
      as_reply(g, req->id, -EAFNOSUPPORT);
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
    as_reply(g, req->id, -EINVAL); /* already bound */
    return;
  }
  int v6only = as_v6only(s, family);
  if (v6only && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&a)->sin6_addr)) {
    close(s);
    as_reply(g, req->id, -EINVAL); /* inet6_bind: a v4-mapped address on a V6ONLY socket */
    return;
  }
  struct as_pending *p = as_pend_open(g, req, OP_BIND, s);
  if (!p) return;
  p->family = family;
  p->type = type;
  p->ino = ino;
  p->pfd = (int)req->data.args[0];
  p->u.bind.v6only = v6only;
  send_bind(g, p, &a, alen);
}

static void start_listen(struct as_gen *g, struct as_pending *p) {
  if (listen(p->sock, p->u.bind.backlog) < 0) {
    as_pend_finish(g, p, -errno);
    return;
  }
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  getsockname(p->sock, (struct sockaddr *)&ss, &l);
  struct as_p_bind *b = &p->u.bind;
  b->real_len = l < sizeof(b->real) ? l : sizeof(b->real);
  memcpy(b->real, &ss, b->real_len);
  p->op = OP_LISTEN;
  struct as_msg *m = as_pend_msg(p, AS_LISTEN, 0);
  m->arg = b->backlog;
  memcpy(m->addr, b->real, b->real_len);
  m->addr_len = b->real_len;
  as_pend_send(g, p);
}

void as_h_listen(struct as_gen *g, struct seccomp_notif *req) {
  int family, type;
  uint64_t ino;
  int s = as_take_inet_socket(g, req, &family, &type, &ino);
  if (s < 0) return;
  if (type != SOCK_STREAM) {
    close(s);
    as_reply(g, req->id, -EOPNOTSUPP);
    return;
  }
  struct as_pending *p = as_pend_open(g, req, OP_LISTEN, s);
  if (!p) return;
  p->family = family;
  p->type = type;
  p->ino = ino;
  p->u.bind.backlog = (int)req->data.args[1];
  struct sockaddr_storage cur;
  socklen_t cl = sizeof(cur);
  struct as_ep ep;
  if (getsockname(s, (struct sockaddr *)&cur, &cl) == 0 && as_ep_from_sockaddr(&cur, cl, &ep) == 0 && ep.port == 0) {
    /* listen() on an unbound socket binds it to an ephemeral port: do that the virtual way first */
    struct sockaddr_storage any;
    memset(&any, 0, sizeof(any));
    any.ss_family = (sa_family_t)family;
    p->op = OP_LISTEN_BIND;
    p->u.bind.v6only = as_v6only(s, family);
    send_bind(g, p, &any, family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    return;
  }
  start_listen(g, p);
}

void as_on_bind_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  struct as_p_bind *b = &p->u.bind;
  if (m->result < 0) {
    as_pend_finish(g, p, m->result);
    return;
  }
  if (m->addr_len > sizeof(b->real) || m->addr2_len > AS_ADDR_MAX) {
    as_pend_finish(g, p, -EINVAL);
    return;
  }
  memcpy(b->real, m->addr, m->addr_len);
  b->real_len = m->addr_len;
  /* the real address is the node's IPv4 address, v4-mapped: a V6ONLY socket would refuse it (sockopt_emul.h) */
  int cleared = b->v6only && as_v6only_clear(p->sock, b->real, b->real_len);
  if (bind(p->sock, (const struct sockaddr *)b->real, b->real_len) < 0) {
    int e = errno;
    if (cleared) as_v6only_restore(p->sock);
    if (e == EADDRINUSE && ++b->tries < BIND_TRIES) {
      /* someone outside appswitch holds that port: ask for another (the same request, with the address in use) */
      p->msg.flags |= AS_F_RETRY;
      memcpy(p->msg.addr2, b->real, b->real_len);
      p->msg.addr2_len = b->real_len;
      as_pend_send(g, p);
      return;
    }
    as_daemon_notify(g, AS_UNBOUND, p->ino, b->real, b->real_len);
    as_pend_finish(g, p, -e);
    return;
  }
  struct as_ep real, virt;
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  if (getsockname(p->sock, (struct sockaddr *)&ss, &l) == 0 && as_ep_from_sockaddr(&ss, l, &real) == 0 &&
      as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) == 0)
    as_vmap_put(g->vmap, &real, &virt);
  if (cleared) as_oemu_note_v6only(&g->oemu, p->sock, p->ino);
  as_daemon_notify(g, AS_BOUND, p->ino, &ss, l);
  if (p->op == OP_LISTEN_BIND) {
    start_listen(g, p);
    return;
  }
  as_pend_finish(g, p, 0);
}

void as_on_listen_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  if (m->result < 0) { /* the daemon refused the service: stop listening again (tcp_disconnect) */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(p->sock, &unspec, sizeof(unspec));
  }
  as_pend_finish(g, p, m->result < 0 ? m->result : 0);
}
