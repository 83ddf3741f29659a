/* Fast-path offers (design: fastpath.h): the client's speculative offer that travels with its AS_CONNECT
 * (AS_F_OFFER), the hints that spare it for destinations elsewhere, the offers the daemon pushes to a server's
 * generator (AS_OFFER) and the batches that tell it which were taken (AS_CLAIMED). unix(7). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "gen_internal.h"
#include "fnv.h"

/* ---- speculative offers (AS_F_OFFER) -------------------------------------------------------------------------
 * A connect to a same-host service costs the program one daemon round trip instead of two: the request already carries
 * the fast-path pair's server end and a bound, unconnected placeholder; the daemon pushes the server end to the
 * server's generator (AS_OFFER) before it answers, so the server's accept() finds it without asking. The cost when the
 * destination turns out to be elsewhere (a socketpair and a bound socket, closed again) is avoided next time by a
 * small hint table of destinations the daemon said are not on this host. */

static unsigned hint_slot(const struct as_ep *e) {
  return as_fnv_ep(e->ip, e->port) % AS_HINTS;
}

void as_hint_set(struct as_gen *g, const struct as_pending *p, int remote) {
  struct as_ep d;
  if (as_ep_from_sockaddr(p->u.connect.dst, p->u.connect.dst_len, &d) < 0) return;
  unsigned k = hint_slot(&d);
  g->hints[k].dst = d;
  g->hints[k].remote = remote;
}

void as_spec_drop(struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  if (c->spec_fd < 0 && c->spec_srv < 0) return;
  if (c->spec_fd >= 0) close(c->spec_fd);
  if (c->spec_srv >= 0) close(c->spec_srv);
  c->spec_fd = c->spec_srv = -1;
  c->spec_sent = 0;
  if (c->conn >= 0 && p->watch_fd < 0) {
    close(c->conn);
    c->conn = -1;
  }
}

void as_spec_prepare(struct as_gen *g, struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  struct as_ep d;
  if (as_ep_from_sockaddr(c->dst, c->dst_len, &d) < 0) return;
  unsigned k = hint_slot(&d);
  if (g->hints[k].remote && as_ep_equal(&g->hints[k].dst, &d)) return;
  if (!as_may_swap(g, p)) return;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return;
  int s = socket(p->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_storage any;
  memset(&any, 0, sizeof(any));
  any.ss_family = (sa_family_t)p->family;
  socklen_t al = p->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0}; /* see as_start_fast */
  if (s < 0 || setsockopt(s, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) < 0 || bind(s, (struct sockaddr *)&any, al) < 0) {
    if (s >= 0) close(s);
    close(sv[0]);
    close(sv[1]);
    return;
  }
  static const char sentinel = 0; /* as in fast_done (proto.h AS_F_SENTINEL): a lost server end resets the client */
  c->spec_sentinel = send(sv[0], &sentinel, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
  c->conn = s; /* the three fds are the entry's now */
  c->spec_fd = sv[0];
  c->spec_srv = sv[1];
  g->stats_offers_asked++;
}

int as_spec_attach(struct as_pending *p, struct as_msg *m, int fds[2]) {
  struct as_p_connect *c = &p->u.connect;
  if ((m->flags & AS_F_RETRY) || c->spec_srv < 0) return 0;
  /* the speculative fast-path offer travels with the request: the server's end, then the placeholder */
  struct sockaddr_storage loc;
  socklen_t ll = sizeof(loc);
  if (getsockname(c->conn, (struct sockaddr *)&loc, &ll) < 0 || ll > AS_ADDR_MAX) return 0;
  m->flags |= AS_F_OFFER | (c->spec_sentinel ? AS_F_SENTINEL : 0);
  m->addr2_len = ll;
  memcpy(m->addr2, &loc, ll);
  fds[0] = c->spec_srv;
  fds[1] = c->conn;
  return 2;
}

void as_spec_sent(struct as_pending *p) {
  struct as_p_connect *c = &p->u.connect;
  close(c->spec_srv); /* the daemon has its own copy */
  c->spec_srv = -1;
  c->spec_sent = 1;
}

/* ---- offers the daemon pushed (AS_OFFER): a small table, searched only while it holds something ---------------- */

void as_offer_store(struct as_gen *g, const struct as_msg *m, int *fast_fd) {
  struct as_ep peer, virt;
  if (*fast_fd < 0 || as_ep_from_sockaddr(m->addr, m->addr_len, &peer) < 0 || as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) < 0)
    return;
  as_offer_put(g, &peer, &virt, *fast_fd);
  *fast_fd = -1; /* ownership moves */
}

void as_offer_put(struct as_gen *g, const struct as_ep *peer, const struct as_ep *virt, int fd) {
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
  slot->at_ms = as_now_ms();
  g->noffers++;
}


/* Sends the batch of taken offers (AS_CLAIMED payload: 16-byte address (IPv4 mapped) + 2-byte port, network order,
 * per offer). */
void as_claims_flush(struct as_gen *g) {
  if (!g->nclaims || g->daemon_fd < 0) return;
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_CLAIMED;
  m.payload_len = g->nclaims * AS_CLAIM_LEN;
  int r = as_daemon_send_nowait(g, &m, g->claims); /* never blocks: a stopped daemon's full socket waits */
  if (r == 0 || r == -ENETDOWN) g->nclaims = 0;
  else as_arm_flush(g);
}

static void claim_add(struct as_gen *g, const struct as_ep *peer, unsigned kind, const struct as_ep *client, uint16_t local_port) {
  if (g->nclaims == AS_CLAIMS_MAX) as_claims_flush(g);
  if (g->nclaims == AS_CLAIMS_MAX) return; /* the daemon is away: its copies went with it */
  as_arm_flush(g); /* the daemon marks them accepted within AS_FLUSH_MS */
  uint8_t *e = g->claims + g->nclaims++ * AS_CLAIM_LEN;
  memset(e, 0, AS_CLAIM_LEN);
  memcpy(e, peer->ip, 16);
  e[16] = (uint8_t)(peer->port >> 8);
  e[17] = (uint8_t)peer->port;
  e[18] = (uint8_t)kind;
  if (client) {
    memcpy(e + 20, client->ip, 16);
    e[36] = (uint8_t)(client->port >> 8);
    e[37] = (uint8_t)client->port;
  }
  e[38] = (uint8_t)(local_port >> 8);
  e[39] = (uint8_t)local_port;
}

void as_claim_note(struct as_gen *g, const struct as_ep *peer) { claim_add(g, peer, AS_CLAIM_APP, NULL, 0); }

void as_claim_outside(struct as_gen *g, const struct as_ep *peer, unsigned how, const struct as_ep *client, uint16_t local_port) {
  claim_add(g, peer, how, client, local_port);
}

struct as_offer *as_offer_find(struct as_gen *g, const void *sa, uint32_t len) {
  struct as_ep e;
  if (!g->noffers || as_ep_from_sockaddr(sa, len, &e) < 0) return NULL;
  for (int i = 0; i < AS_OFFERS_MAX; i++)
    if (g->offers[i].fd >= 0 && as_ep_equal(&g->offers[i].peer, &e)) return &g->offers[i];
  return NULL;
}

int as_offer_take(struct as_gen *g, struct as_offer *o) {
  int fd = o->fd;
  o->fd = -1;
  g->noffers--;
  return fd;
}

/* Offers nobody accepted within a minute (the server never called accept, or the client gave up) are closed. */
void as_offer_expire(struct as_gen *g) {
  uint64_t now = as_now_ms();
  for (int i = 0; i < AS_OFFERS_MAX && g->noffers; i++)
    if (g->offers[i].fd >= 0 && now - g->offers[i].at_ms > 60000) close(as_offer_take(g, &g->offers[i]));
}
