/* The ingress preamble: how a gateway's relay (native/relay_connect.c) tells the instance's generator who the outside
 * client of a relayed connection is, in the connection itself, with no question to any daemon (docs/relay.md).
 *
 * The relay writes AS_PREAMBLE_LEN bytes first on each connection it opens to an instance (not to a virtual service's
 * backend: that is no appswitch program). It sets TCP_DEFER_ACCEPT on its socket before connect(), so the kernel sends
 * the handshake's last ACK with these bytes: the connection reaches the instance's accept queue with the preamble
 * already in its receive queue. The instance's generator, at accept, reads them from connections whose peer is a live
 * gateway's address (the decision table lists them), checks the MAC, takes them out of the stream, and answers the
 * program's accept with the outside client's address; the program never sees them.
 *
 * The MAC (mac.h, SipHash-2-4) covers the preamble's first 40 bytes and the connection's own endpoints as each side
 * sees them (the relay's socket, the instance's real endpoint), with a key derived from the cluster key by every
 * daemon: a preamble cannot be made without the cluster key, nor moved to another connection, nor kept for later
 * (its time must be within AS_PREAMBLE_SKEW_MS of the reader's clock).
 *
 * Layout, 48 bytes: magic "ASP1" | version 1 | 3 zero bytes | client address (16, IPv4 as ::ffff:a.b.c.d) | client
 * port (2, network order) | 6 zero bytes | time (8, ms since the epoch, little-endian) | MAC (8, little-endian). */
#ifndef APPSWITCH_PREAMBLE_H
#define APPSWITCH_PREAMBLE_H

#include <stdint.h>
#include <time.h>

#include "mac.h"
#include "vmap.h"

#define AS_PREAMBLE_LEN 48
#define AS_PREAMBLE_SKEW_MS 60000u

/* The time a preamble carries and is checked against: CLOCK_REALTIME in ms (the relay's and the generator's hosts
 * share it, within AS_PREAMBLE_SKEW_MS). */
static inline uint64_t as_preamble_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Writes the preamble for a connection from `from` (the relay's socket) to `to` (the instance) on behalf of `client`. */
void as_preamble_make(uint8_t out[AS_PREAMBLE_LEN], const uint8_t key[AS_MAC_KEY], const struct as_ep *client,
                      const struct as_ep *from, const struct as_ep *to, uint64_t now_ms);

/* Checks a preamble read from the connection from -> to against each of nkeys keys. 0 and *client; -EBADMSG: not a
 * preamble (magic or version); -EPERM: no key makes its MAC, or its time is too far from now_ms. */
int as_preamble_check(const uint8_t in[AS_PREAMBLE_LEN], const uint8_t (*keys)[AS_MAC_KEY], int nkeys,
                      const struct as_ep *from, const struct as_ep *to, uint64_t now_ms, struct as_ep *client);

#endif
