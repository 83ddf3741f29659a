/* The ingress preamble (preamble.h): made by the relay, checked by the instance's generator. */
#include "preamble.h"

#include <errno.h>
#include <string.h>

#define SIGNED 40 /* the bytes before the MAC */

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void put_ep(uint8_t *p, const struct as_ep *e) {
  memcpy(p, e->ip, 16);
  p[16] = (uint8_t)(e->port >> 8);
  p[17] = (uint8_t)e->port;
}

/* The MAC over the signed bytes and the connection's endpoints. */
static uint64_t tag(const uint8_t key[AS_MAC_KEY], const uint8_t *pre, const struct as_ep *from, const struct as_ep *to) {
  uint8_t msg[SIGNED + 36];
  memcpy(msg, pre, SIGNED);
  put_ep(msg + SIGNED, from);
  put_ep(msg + SIGNED + 18, to);
  return as_mac(key, msg, sizeof(msg));
}

void as_preamble_make(uint8_t out[AS_PREAMBLE_LEN], const uint8_t key[AS_MAC_KEY], const struct as_ep *client,
                      const struct as_ep *from, const struct as_ep *to, uint64_t now_ms) {
  memset(out, 0, AS_PREAMBLE_LEN);
  memcpy(out, "ASP1", 4);
  out[4] = 1;
  put_ep(out + 8, client);
  put64(out + 32, now_ms);
  put64(out + SIGNED, tag(key, out, from, to));
}

int as_preamble_check(const uint8_t in[AS_PREAMBLE_LEN], const uint8_t (*keys)[AS_MAC_KEY], int nkeys,
                      const struct as_ep *from, const struct as_ep *to, uint64_t now_ms, struct as_ep *client) {
  if (memcmp(in, "ASP1", 4) || in[4] != 1) return -EBADMSG;
  uint64_t t = get64(in + 32);
  if ((t > now_ms ? t - now_ms : now_ms - t) > AS_PREAMBLE_SKEW_MS) return -EPERM;
  uint64_t mac = get64(in + SIGNED);
  int ok = 0;
  for (int k = 0; k < nkeys; k++) ok |= as_mac_equal(tag(keys[k], in, from, to), mac);
  if (!ok) return -EPERM;
  memcpy(client->ip, in + 8, 16);
  client->port = (uint16_t)(in[24] << 8 | in[25]);
  return 0;
}
