/* SipHash-2-4 (see mac.h): 2 compression rounds per 8-byte word, 4 finalization rounds, little-endian words. */
#include "mac.h"

#include <string.h>

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static inline uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

#define SIPROUND(v0, v1, v2, v3)                                                                                        \
  do {                                                                                                                 \
    v0 += v1;                                                                                                          \
    v1 = rotl(v1, 13);                                                                                                 \
    v1 ^= v0;                                                                                                          \
    v0 = rotl(v0, 32);                                                                                                 \
    v2 += v3;                                                                                                          \
    v3 = rotl(v3, 16);                                                                                                 \
    v3 ^= v2;                                                                                                          \
    v0 += v3;                                                                                                          \
    v3 = rotl(v3, 21);                                                                                                 \
    v3 ^= v0;                                                                                                          \
    v2 += v1;                                                                                                          \
    v1 = rotl(v1, 17);                                                                                                 \
    v1 ^= v2;                                                                                                          \
    v2 = rotl(v2, 32);                                                                                                 \
  } while (0)

uint64_t as_mac(const uint8_t key[AS_MAC_KEY], const void *msg, size_t len) {
  const uint8_t *in = msg;
  uint64_t k0 = le64(key), k1 = le64(key + 8);
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
  size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = le64(in + i);
    v3 ^= m;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint8_t last[8] = {0};
  memcpy(last, in + whole, len % 8);
  uint64_t b = ((uint64_t)len << 56) | le64(last);
  v3 ^= b;
  SIPROUND(v0, v1, v2, v3);
  SIPROUND(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int i = 0; i < 4; i++) SIPROUND(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

int as_mac_equal(uint64_t a, uint64_t b) {
  volatile uint64_t d = a ^ b;
  return d == 0;
}
