/* The generator's map from real socket endpoints to the virtual endpoints the program must see.
 * Filled from the daemon's answers to bind and connect; read by getsockname/getpeername, which are answered
 * in the generator without a round trip to the daemon. Bounded: it holds endpoints (services, bound sockets),
 * not connections. */
#ifndef APPSWITCH_VMAP_H
#define APPSWITCH_VMAP_H

#include <stdint.h>
#include <sys/socket.h>

struct as_ep {
  uint8_t ip[16]; /* IPv4 as ::ffff:a.b.c.d */
  uint16_t port;  /* host order */
};

#define AS_VMAP_SLOTS 8192

struct as_vmap {
  struct as_ep real[AS_VMAP_SLOTS];
  struct as_ep virt[AS_VMAP_SLOTS];
  uint8_t used[AS_VMAP_SLOTS];
  int count;
};

/* sockaddr_in / sockaddr_in6 <-> endpoint. Returns 0 or -EAFNOSUPPORT / -EINVAL. */
int as_ep_from_sockaddr(const void *sa, uint32_t len, struct as_ep *ep);
/* Encodes ep for a socket of `family`; an IPv6-only address cannot go into AF_INET (-EAFNOSUPPORT).
 * Returns the sockaddr length. */
int as_ep_to_sockaddr(const struct as_ep *ep, int family, struct sockaddr_storage *ss);
int as_ep_equal(const struct as_ep *a, const struct as_ep *b);

void as_vmap_put(struct as_vmap *m, const struct as_ep *real, const struct as_ep *virt);
/* Returns 1 and fills *virt when real is mapped. */
int as_vmap_get(const struct as_vmap *m, const struct as_ep *real, struct as_ep *virt);

#endif
