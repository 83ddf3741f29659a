/* The decision table: what a generator needs to decide a TCP connect to a vip by itself, without asking the daemon.
 *
 * The daemon (src/trap/decision-table.ts) stays the authority: it compiles its service table, its policy and each
 * app's settings into one body of plain records and publishes it into a memfd that every generator of the host maps
 * read-only (the fd travels in the HELLO reply). A generator looks up the service, applies the policy the daemon
 * compiled (a bit per (local app, instance)), prefers its own address family and live nodes, picks an instance with
 * the service's load-balancing strategy on counters shared by all generators of the host (struct as_hostshm), and
 * connects. The daemon learns of the connection afterwards, in a batch (AS_DECIDED).
 *
 * Publication: the memfd holds a header page and two halves. The writer (dtab_write.c, in the daemon) fills the half
 * that is not active under a sequence lock (odd while writing), then makes it the active one. A reader takes the
 * active half's sequence, decides from the half in place (every offset bounds-checked: a torn read may see garbage but
 * never leaves the mapping), copies its result out and checks that the sequence did not move; if it did, it decides
 * again (a writer needs two publications to come back to the same half, so that is rare). A reader never waits for
 * the daemon: a daemon that is stopped or killed leaves the last table in place, and connects keep being decided by
 * it (and keep obeying its policy) until a new daemon publishes a new table.
 *
 * All integers are little-endian (the host's); addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d. */
#ifndef APPSWITCH_DTAB_H
#define APPSWITCH_DTAB_H

#include <stddef.h>
#include <stdint.h>

#include "vmap.h"

#ifdef __cplusplus
#define AS_DTAB_ASSERT static_assert
#else
#define AS_DTAB_ASSERT _Static_assert
#endif

#define AS_DTAB_MAGIC 0x54445341u /* "ASDT" */
#define AS_DTAB_FORMAT 1u
#define AS_DTAB_HEADER 4096u
#define AS_DTAB_HALF (8u << 20) /* bytes per half; a body that does not fit disables local decisions */
#define AS_DTAB_SIZE (AS_DTAB_HEADER + 2 * AS_DTAB_HALF)
#define AS_DTAB_ID_MAX 32   /* app id, NUL-padded */
#define AS_DTAB_SOCK_MAX 48 /* a generator's offer socket: abstract name without the leading NUL, NUL-padded */

struct as_dtab_header {
  uint32_t magic, format;
  uint32_t active;   /* 0 or 1: the half readers use */
  uint32_t disabled; /* 1: decide nothing locally (ask the daemon), e.g. the body did not fit */
  uint64_t generation;
  uint32_t half_size, pad;
};

struct as_dtab_half {
  uint32_t seq; /* odd while the writer fills this half */
  uint32_t len; /* body bytes */
  uint8_t pad[56];
  /* body follows (64-byte aligned) */
};

/* The body: a head, then the arrays it points to (offsets from the body's start). */
#define AS_DT_FASTPATH 1u /* head.flags: the daemon allows the same-host fast path (--no-fastpath clears it) */
struct as_dt_head {
  uint32_t flags;
  uint32_t n_ranges, off_ranges; /* virtual ranges (--vip-cidr and the identity range) */
  uint32_t n_buckets, off_svc;   /* services: an open-addressing hash table, n_buckets a power of two */
  uint32_t n_inst, off_inst;     /* instances, grouped by service */
  uint32_t n_apps, off_apps;     /* the apps of this host (clients and servers that have a generator here) */
  uint32_t bits_words;           /* u64 words per app's policy bitmap (over instance indexes) */
  uint8_t node_ip[16];           /* this node's address: where same-host real endpoints live */
  uint32_t off_ingress;          /* struct as_dt_ingress (0: none: nothing about ingress is decided here) */
  uint32_t pad;
};

struct as_dt_range {
  uint8_t ip[16];
  uint8_t bits; /* prefix length over the 16 bytes (an IPv4 /n is 96 + n) */
  uint8_t pad[3];
};

#define AS_DT_LB_RANDOM 0
#define AS_DT_LB_RR 1
#define AS_DT_LB_LEAST 2
#define AS_DT_LB_P2C 3
struct as_dt_svc {
  uint8_t vip[16];
  uint16_t port;
  uint8_t used; /* 0: an empty bucket (ends a probe) */
  uint8_t lb;
  uint32_t first, count; /* instances [first, first + count) */
  uint32_t rr_slot;      /* its round-robin counter in struct as_hostshm */
};

#define AS_DT_ALIVE 1u /* its node is alive (or is this node) */
#define AS_DT_LOCAL 2u /* on this node */
#define AS_DT_FAST 4u  /* on this node, and its app allows the fast path */
struct as_dt_inst {
  uint8_t ip[16]; /* the real endpoint */
  uint16_t port;
  uint8_t family; /* 4, 6, or 0 (unknown): the program's listening socket's family */
  uint8_t flags;
  int32_t app;      /* index of the server app in the apps array when AS_DT_LOCAL, else -1 */
  uint32_t owner;   /* a hash of (node, app id): instances of one app on one node share it (family preference) */
  uint32_t ctr_slot; /* its in-flight counter in struct as_hostshm */
  uint8_t vip[16];  /* the virtual endpoint the client asked for is the service's; this is the instance's own vip */
};

#define AS_DT_EXTERNAL 8u /* a virtual service's backend, outside appswitch (a relay sends it no preamble) */

/* Ingress (docs/ingress.md): what a server's generator needs to answer the accept of an outside client by itself.
 *  - Relayed: a gateway's relay opens each connection to an instance with a preamble (native/preamble.h) naming the
 *    outside client, MACed with a key derived from the cluster key. The generator reads it from connections whose
 *    peer is a live gateway's address, checks it with `keys`, and takes it out of the stream.
 *  - Steered: sk_lookup hands a connection to an exposure's host port straight to a listening socket of this node's
 *    instance (docs/ingress-local.md); its local end is the host port. Listed here only while this node is a gateway
 *    and the exposure that holds the port is the steered service's. A peer at one of this host's addresses (`local`,
 *    the node address, loopback) is asked of the daemon, which checks the client socket's origin. */
#define AS_DT_INGRESS_KEYS 4
struct as_dt_ingress {
  uint8_t keys[AS_DT_INGRESS_KEYS][16]; /* preamble MAC keys, n_keys of them; relays sign with keys[0] */
  uint32_t n_keys;
  uint32_t n_gateways, off_gateways; /* live gateway nodes' addresses, 16 bytes each (this node's when it is one) */
  uint32_t n_steered, off_steered;   /* struct as_dt_steered */
  uint32_t n_local, off_local;       /* this host's addresses, 16 bytes each */
  uint32_t pad;
};

struct as_dt_steered {
  uint16_t host_port;
  uint16_t pad;
  int32_t app; /* the app (index in the apps array) whose listening sockets the port is steered to */
};

#define AS_DT_APP_FAST 1u /* the app allows the fast path (not started with --no-fastpath) */
struct as_dt_app {
  char id[AS_DTAB_ID_MAX];
  uint8_t identity[16];
  uint32_t flags;
  uint32_t off_bits; /* its policy bitmap: bit i set = it may connect to instance i */
  char sock[AS_DTAB_SOCK_MAX];
};

AS_DTAB_ASSERT(sizeof(struct as_dtab_header) == 32, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dtab_half) == 64, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_head) == 64, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_range) == 20, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_svc) == 32, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_inst) == 48, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_app) == 104, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_ingress) == 96, "decision table layout");
AS_DTAB_ASSERT(sizeof(struct as_dt_steered) == 8, "decision table layout");

/* Counters shared by every generator of the host (a second memfd, mapped read-write): round-robin positions per
 * service and in-flight connections per instance. The daemon refreshes the in-flight counts from its measurement;
 * generators add the connections they hand out in between (as the daemon's own balancer did). Slots are hashed:
 * two services that share a slot share a round-robin position, which only changes which instance comes next. */
#define AS_SHM_MAGIC 0x32485341u /* "ASH2": 128-byte identity entries (a generator of an older build does not map it:
                                     * it works without the shared counters and the identity table) */
#define AS_SHM_SLOTS 4096u

/* Who a TCP connection comes from, read by the server's generator at accept(): the accept needs no question to the
 * daemon. An entry is a same-host client, written by the client's generator right after its connect(): the source
 * is this node, identity the client app's vip. (An outside client relayed by a gateway says who it is in the relay's
 * preamble: gen_preamble.c.)
 * Keyed by (source port, real destination), and the source address is kept and checked at take: among live
 * connections to one destination a (source address, source port) pair is unique, so an entry can only be mistaken
 * for an older connection from the same place to the same place (one that is gone, and whose entry nobody took). A
 * slot is taken by a writer with a compare-and-swap of its sequence (odd while written); readers check the sequence
 * around their copy. An entry is trusted for AS_IDENT_TTL_MS and used up by the accept that reads it. A miss
 * (overwritten, not written yet) falls back to the daemon. */
#define AS_IDENT_SLOTS 16384u
#define AS_IDENT_WAYS 4u
#define AS_IDENT_TTL_MS 10000u
struct as_ident {
  uint32_t seq;
  uint16_t sport, dport;
  uint8_t dip[16];
  uint8_t sip[16];      /* the connection's source address (the accepted socket's peer) */
  uint8_t identity[16]; /* the app's vip */
  uint64_t at_ms;
  char app[16]; /* the client's app id */
  uint8_t pad[48];
};

/* What an accept finds in the identity table. */
struct as_ident_found {
  uint8_t identity[16];
  char app[AS_DTAB_ID_MAX];
};

struct as_hostshm {
  uint32_t magic, pad;
  uint32_t rr[AS_SHM_SLOTS];
  uint32_t inflight[AS_SHM_SLOTS];
  struct as_ident ident[AS_IDENT_SLOTS];
};
#define AS_SHM_SIZE (4u << 20)
AS_DTAB_ASSERT(sizeof(struct as_hostshm) <= AS_SHM_SIZE, "shared counters layout");
AS_DTAB_ASSERT(sizeof(struct as_ident) == 128, "identity table layout");

/* ---- the reader (generators) ----------------------------------------------------------------------------------- */

struct as_dtab {
  const uint8_t *map; /* NULL: no table (every connect asks the daemon) */
  struct as_hostshm *shm;
  uint64_t app_gen; /* the generation app_index was found in */
  int app_index;    /* this generator's app in the apps array (-1: not there) */
  char app_id[AS_DTAB_ID_MAX];
};

/* Maps the table (read-only) and the shared counters (read-write) from the fds of a HELLO reply; either may be -1.
 * Replaces a previous mapping (a new daemon publishes new memfds). Takes neither fd (the caller closes them).
 * Returns 0 or -errno. */
int as_dtab_attach(struct as_dtab *t, int table_fd, int shm_fd, const char *app_id);
void as_dtab_detach(struct as_dtab *t);

enum as_dt_verdict {
  AS_DT_ASK = 0,     /* not decided here: ask the daemon (no table, not a vip, a torn read three times, ...) */
  AS_DT_PICKED,      /* an instance was picked: *out */
  AS_DT_NO_SERVICE,  /* a vip with no such service: not returned (a service newer than the table is the daemon's to
                        know: AS_DT_ASK); kept for the AS_DECIDED record kinds */
  AS_DT_DENIED,      /* the policy forbids every instance: ECONNREFUSED */
  AS_DT_ALL_TRIED,   /* every allowed instance refused already: ECONNREFUSED */
};

struct as_dt_pick {
  struct as_ep real;    /* where to connect */
  struct as_ep virt;    /* the virtual endpoint asked for (a loopback destination is the app's own vip) */
  int alternatives;     /* other allowed instances exist: a refusal may be retried */
  int fast;             /* same host, fast path allowed by the daemon and both apps */
  int external;         /* as_dtab_pick_ingress: a virtual service's backend, outside appswitch (AS_DT_EXTERNAL) */
  char server_sock[AS_DTAB_SOCK_MAX]; /* fast: the server's generator's offer socket */
  char server_app[AS_DTAB_ID_MAX];
};

/* Decides a TCP connect to dst (as the program named it; family = the socket's). tried: real endpoints that refused
 * this connect already. Returns an as_dt_verdict. */
int as_dtab_decide(struct as_dtab *t, const struct as_ep *dst, int family, const struct as_ep *tried, int ntried,
                   struct as_dt_pick *out);

/* Picks an instance of the service vip:port for a client outside the application network (a gateway's relay,
 * native/relay_connect.c): no per-app policy (the exposure is the policy: every instance may be picked), live nodes
 * first, the client's family (4 or 6) preferred, the service's strategy on the shared counters, tried skipped.
 * The core is as_dtab_decide's. Returns AS_DT_PICKED (*out: real, virt = the instance's vip and port, alternatives),
 * AS_DT_NO_SERVICE, AS_DT_ALL_TRIED, or AS_DT_ASK (no table, or it could not be read). */
int as_dtab_pick_ingress(struct as_dtab *t, const uint8_t vip[16], uint16_t port, int client_family, const struct as_ep *tried,
                         int ntried, struct as_dt_pick *out);

/* Tells whether ip is this node's address (as the table says), for accept-side checks. */
int as_dtab_is_node(struct as_dtab *t, const uint8_t ip[16]);

/* Ingress, read from the active half (each call its own sequence-checked read; all answer 0 when the table has no
 * ingress section or cannot be read):
 *  - as_dtab_is_gateway: ip is a live gateway node's address;
 *  - as_dtab_steered_here: host_port is steered to this generator's own app (t->app_index);
 *  - as_dtab_is_local: ip is this host's (the node address, loopback, or a listed local address); loopback and the
 *    node address answer 1 even without an ingress section (an error may only send an accept to the daemon);
 *  - as_dtab_preamble_keys: copies up to max keys into keys, returns how many. */
int as_dtab_is_gateway(struct as_dtab *t, const uint8_t ip[16]);
int as_dtab_steered_here(struct as_dtab *t, uint16_t host_port);
int as_dtab_is_local(struct as_dtab *t, const uint8_t ip[16]);
int as_dtab_preamble_keys(struct as_dtab *t, uint8_t keys[][16], int max);

/* Writes an entry for the connection src -> dst (real endpoints): identity = the client app's vip, app its id (the
 * client's generator). Returns 0 or -EBUSY (the slots were being written by others: the accept will ask the daemon). */
int as_ident_put(struct as_hostshm *shm, const struct as_ep *src, const struct as_ep *dst, const uint8_t identity[16], const char *app);
/* The server side: 1 and *out when an entry for src -> dst is there (its source address must be src's), else 0. With
 * take, the entry is used up (the server's generator takes it at accept). */
int as_ident_get(struct as_hostshm *shm, const struct as_ep *src, const struct as_ep *dst, struct as_ident_found *out, int take);

/* ---- the writer (the daemon's addon) ---------------------------------------------------------------------------- */

/* Creates a memfd of `size` bytes (sealed against shrinking). Returns the fd or -errno. */
int as_dtab_create(const char *name, size_t size);
/* Publishes body (len bytes) into the table mapped at map. Returns the new generation, or -E2BIG (the table is marked
 * disabled: generators ask the daemon) or -EINVAL. */
int64_t as_dtab_publish(uint8_t *map, const uint8_t *body, size_t len);

#endif
