/* The control protocol between the daemon (src/gateway/relay-wire.ts) and appswitch-relay: fixed-size 64-byte
 * little-endian records over a SOCK_SEQPACKET socketpair (the relay's fd 3). One message carries one or more records
 * (the relay batches what one turn of its loop produced, up to AS_RELAY_BATCH records: the daemon's recv buffer is
 * 64 KiB). Addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d; ports in host order. */
#ifndef APPSWITCH_RELAY_PROTO_H
#define APPSWITCH_RELAY_PROTO_H

#include <stdint.h>

#ifdef __cplusplus
#define AS_RELAY_ASSERT static_assert
#else
#define AS_RELAY_ASSERT _Static_assert
#endif

#define AS_RELAY_REC 64u
#define AS_RELAY_BATCH 1000u

/* daemon -> relay */
#define AS_RELAY_LISTEN 1u   /* struct as_relay_listen */
#define AS_RELAY_UNLISTEN 2u /* struct as_relay_unlisten */
#define AS_RELAY_KEY 3u      /* struct as_relay_key: the preamble key (preamble.h); sent before any LISTEN */
/* relay -> daemon */
/* 16 was CONN, a record per connection toward an instance: no longer sent (the preamble names the client) */
#define AS_RELAY_REFUSED 17u    /* struct as_relay_refused */
#define AS_RELAY_LISTEN_ERR 18u /* struct as_relay_listen_err */
#define AS_RELAY_STATS 19u      /* struct as_relay_stats, every second */
#define AS_RELAY_LISTENING 20u  /* struct as_relay_listen_err with err = 0: the route's socket listens */

struct as_relay_listen {
  uint32_t type, id;
  uint8_t address[16]; /* where to listen (:: = every address, both families) */
  uint8_t vip[16];     /* the exposed service */
  uint16_t host_port, port;
  uint8_t pad[20];
};

struct as_relay_unlisten {
  uint32_t type, id;
  uint8_t pad[56];
};

struct as_relay_key {
  uint32_t type, pad0;
  uint8_t key[16]; /* every connection to an instance starts with a preamble MACed with it */
  uint8_t pad[40];
};

#define AS_RELAY_NO_INSTANCE 1u
#define AS_RELAY_ALL_REFUSED 2u
#define AS_RELAY_LIMIT 3u
struct as_relay_refused {
  uint32_t type, route;
  uint8_t client[16];
  uint16_t client_port;
  uint8_t reason; /* AS_RELAY_NO_INSTANCE ... */
  uint8_t pad[37];
};

struct as_relay_listen_err {
  uint32_t type, id;
  int32_t err; /* a positive errno (0 with AS_RELAY_LISTENING) */
  uint8_t pad[52];
};

struct as_relay_stats {
  uint32_t type, pad0;
  uint64_t accepted, forwarded, refused, active, bytes;
  uint32_t max_conns, paused; /* the connection cap; workers not accepting now (EMFILE, control socket full) */
  uint64_t dropped;            /* records that did not fit in a worker's queue (a daemon that stopped reading) */
};

AS_RELAY_ASSERT(sizeof(struct as_relay_listen) == AS_RELAY_REC, "relay record layout");
AS_RELAY_ASSERT(sizeof(struct as_relay_unlisten) == AS_RELAY_REC, "relay record layout");
AS_RELAY_ASSERT(sizeof(struct as_relay_key) == AS_RELAY_REC, "relay record layout");
AS_RELAY_ASSERT(sizeof(struct as_relay_refused) == AS_RELAY_REC, "relay record layout");
AS_RELAY_ASSERT(sizeof(struct as_relay_listen_err) == AS_RELAY_REC, "relay record layout");
AS_RELAY_ASSERT(sizeof(struct as_relay_stats) == AS_RELAY_REC, "relay record layout");

#endif
