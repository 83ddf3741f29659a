/* A keyed MAC for short messages: SipHash-2-4 (Aumasson and Bernstein, 2012) with a 128-bit key and a 64-bit tag. Used
 * where a C process must check that a record comes from a holder of a cluster secret (native/preamble.h) without a
 * crypto library. */
#ifndef APPSWITCH_MAC_H
#define APPSWITCH_MAC_H

#include <stddef.h>
#include <stdint.h>

#define AS_MAC_KEY 16

uint64_t as_mac(const uint8_t key[AS_MAC_KEY], const void *msg, size_t len);

/* Compares two tags in time that does not depend on where they differ. 1: equal. */
int as_mac_equal(uint64_t a, uint64_t b);

#endif
