/* Outside clients relayed by a gateway: the relay's preamble (preamble.h) read at accept, checked and taken out of the
 * stream before the program gets the connection. recv(2) with MSG_PEEK, epoll(7). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "gen_internal.h"
#include "preamble.h"

/* How long a connection the daemon says was relayed may take to show its preamble (the relay writes it right after
 * connect(); the ACK of the handshake usually carries it). Checked on the generator's 1 s timer. */
#define PREAMBLE_WAIT_MS 2000u

/* The preamble when all of it is in the receive queue: 1 (in buf), 0 (not all here yet), -errno (the connection failed). */
static int peek(int fd, uint8_t buf[AS_PREAMBLE_LEN]) {
  ssize_t n;
  do n = recv(fd, buf, AS_PREAMBLE_LEN, MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n == AS_PREAMBLE_LEN) return 1;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  if (n == 0) return -ECONNRESET; /* closed before it said who it is */
  return 0;
}

/* Takes the peeked preamble out of the stream. */
static int consume(int fd) {
  uint8_t buf[AS_PREAMBLE_LEN];
  ssize_t n;
  do n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  return n == AS_PREAMBLE_LEN ? 0 : -EPROTO;
}

static int check(struct as_gen *g, const uint8_t buf[AS_PREAMBLE_LEN], const struct as_ep *peer, const struct as_ep *local,
                 struct as_ep *client) {
  uint8_t keys[AS_DT_INGRESS_KEYS][AS_MAC_KEY];
  int nk = as_dtab_preamble_keys(&g->dtab, keys, AS_DT_INGRESS_KEYS);
  return as_preamble_check(buf, (const uint8_t(*)[AS_MAC_KEY])keys, nk, peer, local, as_preamble_now_ms(), client);
}

/* The peeked preamble buf of connection fd (peer -> local), on both paths: checked, taken out of the stream, counted,
 * and its outside client (*client) claimed for the daemon (AS_CLAIM_RELAYED). 0; -EBADMSG: no preamble at all (left
 * in the stream, not counted); -EPERM: one that does not check, or could not be taken (counted as bad). */
static int take_checked(struct as_gen *g, int fd, const uint8_t buf[AS_PREAMBLE_LEN], const struct as_ep *peer,
                        const struct as_ep *local, struct as_ep *client) {
  int r = check(g, buf, peer, local, client);
  if (r == -EBADMSG) return r;
  if (r < 0 || consume(fd) < 0) {
    g->stats_preamble_bad++;
    return -EPERM;
  }
  g->stats_preamble_ok++;
  as_claim_outside(g, peer, AS_CLAIM_RELAYED, client, local->port);
  return 0;
}

int as_accept_preamble(struct as_gen *g, struct as_pending *p, const struct as_ep *peer, const struct as_ep *local, struct as_msg *out) {
  struct as_p_accept *a = &p->u.accept;
  struct as_ep client;
  if (!g->dtab.map || !as_dtab_is_gateway(&g->dtab, peer->ip)) return 0;
  uint8_t buf[AS_PREAMBLE_LEN];
  if (peek(a->conn, buf) <= 0) return 0; /* not here yet, or gone: the daemon's path decides */
  int r = take_checked(g, a->conn, buf, peer, local, &client);
  if (r == -EBADMSG) return 0; /* no preamble: an app's connection from the gateway's host */
  if (r < 0) {
    as_dbg(g, "a connection from a gateway with a preamble that does not check: dropped");
    return -EPERM;
  }
  return as_accept_answer(out, &client) < 0 ? -EPERM : 1;
}

int as_preamble_take(struct as_gen *g, struct as_pending *p, const struct as_msg *reply, struct as_ep *client) {
  struct as_p_accept *a = &p->u.accept;
  uint8_t buf[AS_PREAMBLE_LEN];
  int r = peek(a->conn, buf);
  if (r < 0) return r;
  if (r == 0) { /* wait for it, without holding anyone else */
    if (p->op != OP_ACCEPT_PREAMBLE) {
      p->msg = *reply;
      p->awaiting = 0;
      p->op = OP_ACCEPT_PREAMBLE;
      a->preamble_deadline_ms = as_now_ms() + PREAMBLE_WAIT_MS;
      int w = as_pend_watch(g, p, a->conn, EPOLLIN | EPOLLRDHUP | EPOLLET); /* edge: a peer that sends a few bytes cannot make us spin */
      if (w < 0) return w;
    }
    return 0;
  }
  /* the gateway's daemon said only that a process other than a generator made the socket (its relay, or anything
   * else on that host): the preamble alone says who the client is, and only with a MAC of the cluster's key */
  struct as_ep peer, local;
  int bad = as_ep_from_sockaddr(a->peer, a->peer_len, &peer) < 0 || as_ep_from_sockaddr(a->local, a->local_len, &local) < 0;
  int t = bad ? -EINVAL : take_checked(g, a->conn, buf, &peer, &local, client);
  if (t < 0) {
    if (t != -EPERM) g->stats_preamble_bad++; /* here no preamble at all is a bad one too */
    as_dbg(g, "a connection the daemon took for a relayed one without a preamble that checks: dropped");
    return -EPROTO;
  }
  as_pend_unwatch(g, p);
  p->op = OP_ACCEPT_ASK;
  return 1;
}
