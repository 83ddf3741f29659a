/* Accepts of outside clients the generator answers by itself from the decision table's ingress section (dtab.h):
 * connections the kernel steered (BPF sk_lookup, docs/ingress-local.md) to this app's listener at an exposure's host
 * port. accept(2), bind(2) (EADDRNOTAVAIL: the peer is not an address of this host). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gen_internal.h"
#include "fnv.h"

static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Whether the kernel takes ip for an address of this host: a socket bound to it fails with EADDRNOTAVAIL when it is
 * not one. The table's list of local addresses is as old as its publication (an address added since is not in it,
 * and a trapped program connecting from there must not pass for an outside client): this asks the kernel now. Any
 * other answer (an error, a host that binds to any address: net.ipv4.ip_nonlocal_bind) counts as local: the daemon
 * then decides, as it did before. */
static int host_address(const uint8_t ip[16]) {
  struct as_ep e;
  memcpy(e.ip, ip, 16);
  e.port = 0;
  int family = memcmp(ip, v4prefix, 12) ? AF_INET6 : AF_INET;
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&e, family, &ss);
  if (n <= 0) return 1;
  int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 1;
  int r = bind(s, (const struct sockaddr *)&ss, (socklen_t)n);
  int err = errno;
  close(s);
  return r == 0 || err != EADDRNOTAVAIL;
}

/* Addresses host_address() found not to be this host's, believed for NOT_LOCAL_MS: a steered connection's check
 * costs three system calls, and one outside client makes many connections. An address added to this host within
 * that time passes for an outside client at an exposed port, which any outside client may reach anyway. */
#define NOT_LOCAL_MS 1000u

static int outside_address(struct as_gen *g, const uint8_t ip[16]) {
  uint64_t now = as_now_ms();
  uint32_t h = as_fnv_bytes(AS_FNV_BASIS, ip, 16);
  struct as_not_local *e = &g->not_local[h % AS_NOT_LOCAL_SLOTS];
  if (e->until_ms > now && !memcmp(e->ip, ip, 16)) return 1;
  if (host_address(ip)) return 0;
  memcpy(e->ip, ip, 16);
  e->until_ms = now + NOT_LOCAL_MS;
  return 1;
}

/* A steered connection's local end is the exposure's host port (not the listener's own port) and its peer the outside
 * client. The daemon's conditions (gateway/steering.ts steeredClient) are in the table: the port is listed only while
 * this node is a gateway, the exposure holding the port is the steered service's, and for the apps steered there.
 * A peer of this host (a trapped program among them) is the daemon's to judge: it reads the client socket's origin. */
int as_accept_steered(struct as_gen *g, const struct as_ep *peer, const struct as_ep *local, struct as_msg *out) {
  if (!g->dtab.map || !g->dtab.shm) return 0;
  if (!as_dtab_steered_here(&g->dtab, local->port)) return 0;
  if (as_dtab_is_local(&g->dtab, peer->ip) || !outside_address(g, peer->ip)) return 0;
  if (as_accept_answer(out, peer) < 0) return 0; /* the program sees the outside client itself */
  as_claim_outside(g, peer, AS_CLAIM_STEERED, peer, local->port); /* the daemon counts and tracks it */
  return 1;
}
