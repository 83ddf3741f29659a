/* Per-socket peer names for connections through an egress gateway. See peermap.h. */
#include "peermap.h"

#include <errno.h>
#include <stdlib.h>

static struct as_pmap_slot *set_of(const struct as_pmap *m, uint64_t cookie) {
  uint64_t h = cookie * 0x9E3779B97F4A7C15ull;
  return &m->slots[((uint32_t)(h >> 32) & (AS_PMAP_SETS - 1)) * AS_PMAP_WAYS];
}

int as_pmap_put(struct as_pmap *m, uint64_t cookie, const struct as_ep *peer) {
  if (!cookie) return 0;
  if (!m->slots) {
    m->slots = calloc((size_t)AS_PMAP_SETS * AS_PMAP_WAYS, sizeof(*m->slots));
    if (!m->slots) return -ENOMEM;
  }
  struct as_pmap_slot *s = set_of(m, cookie), *pick = &s[0];
  for (int i = 0; i < AS_PMAP_WAYS; i++) {
    if (s[i].cookie == cookie || !s[i].cookie) {
      pick = &s[i];
      break;
    }
    if (s[i].age < pick->age) pick = &s[i];
  }
  pick->cookie = cookie;
  pick->age = ++m->clock;
  pick->peer = *peer;
  return 0;
}

int as_pmap_get(const struct as_pmap *m, uint64_t cookie, struct as_ep *peer) {
  if (!m->slots || !cookie) return 0;
  const struct as_pmap_slot *s = set_of(m, cookie);
  for (int i = 0; i < AS_PMAP_WAYS; i++) {
    if (s[i].cookie == cookie) {
      *peer = s[i].peer;
      return 1;
    }
  }
  return 0;
}

void as_pmap_free(struct as_pmap *m) {
  free(m->slots);
  m->slots = NULL;
}
