/* The generator's map from real socket endpoints to the virtual endpoints the program must see. */
#define _GNU_SOURCE
#include "vmap.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "fnv.h"

static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int as_ep_from_sockaddr(const void *sa, uint32_t len, struct as_ep *ep) {
  sa_family_t fam;
  if (len < sizeof(fam)) return -EINVAL;
  memcpy(&fam, sa, sizeof(fam));
  memset(ep, 0, sizeof(*ep));
  if (fam == AF_INET) {
    struct sockaddr_in sin;
    if (len < sizeof(sin)) return -EINVAL;
    memcpy(&sin, sa, sizeof(sin));
    memcpy(ep->ip, v4prefix, 12);
    memcpy(ep->ip + 12, &sin.sin_addr, 4);
    ep->port = ntohs(sin.sin_port);
    return 0;
  }
  if (fam == AF_INET6) {
    struct sockaddr_in6 sin6;
    if (len < 24) return -EINVAL; /* SIN6_LEN_RFC2133: scope id optional */
    memset(&sin6, 0, sizeof(sin6));
    memcpy(&sin6, sa, len < sizeof(sin6) ? len : sizeof(sin6));
    memcpy(ep->ip, &sin6.sin6_addr, 16);
    ep->port = ntohs(sin6.sin6_port);
    return 0;
  }
  return -EAFNOSUPPORT;
}

int as_ep_to_sockaddr(const struct as_ep *ep, int family, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET) {
    if (memcmp(ep->ip, v4prefix, 12) != 0) return -EAFNOSUPPORT;
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(ep->port);
    memcpy(&sin->sin_addr, ep->ip + 12, 4);
    return (int)sizeof(*sin);
  }
  if (family == AF_INET6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(ep->port);
    memcpy(&sin6->sin6_addr, ep->ip, 16);
    return (int)sizeof(*sin6);
  }
  return -EAFNOSUPPORT;
}

int as_ep_equal(const struct as_ep *a, const struct as_ep *b) {
  return a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

static unsigned hash_ep(const struct as_ep *ep) {
  return as_fnv_ep(ep->ip, ep->port) % AS_VMAP_SLOTS;
}

void as_vmap_put(struct as_vmap *m, const struct as_ep *real, const struct as_ep *virt) {
  if (m->count >= AS_VMAP_SLOTS * 3 / 4) { /* full: start over; lookups then fall back to real names */
    memset(m->used, 0, sizeof(m->used));
    m->count = 0;
  }
  unsigned i = hash_ep(real);
  while (m->used[i] && !as_ep_equal(&m->real[i], real)) i = (i + 1) % AS_VMAP_SLOTS;
  if (!m->used[i]) m->count++;
  m->used[i] = 1;
  m->real[i] = *real;
  m->virt[i] = *virt;
}

int as_vmap_get(const struct as_vmap *m, const struct as_ep *real, struct as_ep *virt) {
  unsigned i = hash_ep(real);
  while (m->used[i]) {
    if (as_ep_equal(&m->real[i], real)) {
      *virt = m->virt[i];
      return 1;
    }
    i = (i + 1) % AS_VMAP_SLOTS;
  }
  return 0;
}
