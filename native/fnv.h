/* FNV-1a (32 bits), the hash of the generators' and the relay's small tables, and of the decision table's layout
 * (dtab.c; src/trap/decision-table.ts computes the same for the table it writes). Ports are hashed low byte first. */
#ifndef APPSWITCH_FNV_H
#define APPSWITCH_FNV_H

#include <stddef.h>
#include <stdint.h>

#define AS_FNV_BASIS 2166136261u

static inline uint32_t as_fnv_bytes(uint32_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static inline uint32_t as_fnv_port(uint32_t h, uint16_t port) {
  h = (h ^ (port & 0xffu)) * 16777619u;
  return (h ^ (uint32_t)(port >> 8)) * 16777619u;
}

/* An endpoint: its 16-byte address, then its port. */
static inline uint32_t as_fnv_ep(const uint8_t ip[16], uint16_t port) {
  return as_fnv_port(as_fnv_bytes(AS_FNV_BASIS, ip, 16), port);
}

#endif
