/* The generator's per-socket peer names: for a connection whose real peer is shared by connections to different
 * virtual destinations — an egress gateway's proxy endpoint carries every outside destination of the app — the
 * destination the program asked for, by the socket's cookie (SO_COOKIE: never reused while the system runs), so that
 * getpeername(2) answers each socket with its own. The endpoint map (vmap.h) cannot: it maps one real endpoint to one
 * virtual one. Bounded, allocated on first use (apps that never go through a gateway pay nothing); a 4-way set that
 * is full forgets its oldest entry, whose socket then shows its real peer (the gateway), never another's destination. */
#ifndef APPSWITCH_PEERMAP_H
#define APPSWITCH_PEERMAP_H

#include <stdint.h>

#include "vmap.h"

#define AS_PMAP_SETS 512
#define AS_PMAP_WAYS 4

struct as_pmap_slot {
  uint64_t cookie; /* 0: free */
  uint64_t age;    /* insertion order, for replacing the oldest of a set */
  struct as_ep peer;
};

struct as_pmap {
  struct as_pmap_slot *slots; /* AS_PMAP_SETS * AS_PMAP_WAYS, NULL until the first put */
  uint64_t clock;
};

/* Remembers `peer` for the socket with `cookie` (0 is ignored). Returns 0 or -ENOMEM. */
int as_pmap_put(struct as_pmap *m, uint64_t cookie, const struct as_ep *peer);
/* 1 and *peer when the socket with `cookie` has a name here, else 0. */
int as_pmap_get(const struct as_pmap *m, uint64_t cookie, struct as_ep *peer);
void as_pmap_free(struct as_pmap *m);

#endif
