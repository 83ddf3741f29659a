/* appswitch-relay's shared state (one process, one thread, one epoll loop): the gateway's forwarder of external TCP
 * connections to instances of exposed services. Design, bounds and lifecycle: docs/relay.md. One file per concern:
 * relay_main.c (loop, timers, lifecycle, the daemon's requests), relay_wire.c (records to the daemon), relay_listen.c (listeners, accept),
 * relay_connect.c (pick and connect), relay_splice.c (connection slots and splice pumping). One worker thread per CPU
 * (up to RELAY_WORKERS_MAX), each with its own epoll set and connections; they share the listening sockets
 * (EPOLLEXCLUSIVE: one worker is woken per connection) and the decision table. */
#ifndef APPSWITCH_RELAY_H
#define APPSWITCH_RELAY_H

#include <stdint.h>
#include <time.h>

#include "dtab.h"
#include "relay_proto.h"
#include "vmap.h"

#define RELAY_CTL_FD 3
#define RELAY_TABLE_FD 4
#define RELAY_SHM_FD 5

#define RELAY_LISTENERS 1024
#define RELAY_CONNS_MAX 65536
#define RELAY_TRIES 8
#define RELAY_FDS_PER_CONN 6 /* two sockets, two pipes */
#define RELAY_PAUSE_MS 100   /* accepting pauses this long after EMFILE/ENFILE */
#define RELAY_PIPE_BYTES (256u << 10)

/* epoll data: kind (4 bits) | generation (28 bits) | index (32 bits) */
enum relay_kind { K_CTL = 1, K_TIMER, K_LISTEN, K_CLIENT, K_UP, K_WAKE };
#define RELAY_EV(kind, gen, idx) (((uint64_t)(kind) << 60) | ((uint64_t)((gen) & 0x0fffffffu) << 32) | (uint32_t)(idx))

/* A route's listening socket, shared by the workers (each watches it with EPOLLEXCLUSIVE in its own epoll set).
 * Only worker 0 (the control thread) changes a slot; the others follow relay_shared.listen_gen (relay_sync). */
enum listener_state { L_FREE = 0, L_LIVE, L_CLOSING };
struct relay_listener {
  int fd;
  uint8_t state;
  uint32_t id;
  uint8_t vip[16];
  uint16_t port;
  uint32_t closed_gen; /* L_CLOSING: closed for good once every worker has seen this generation */
};

enum conn_state { C_FREE = 0, C_CONNECTING, C_OPEN };

/* One direction of a connection: bytes from src go through the pipe to dst. */
struct relay_dir {
  uint32_t inpipe; /* bytes in the pipe */
  uint8_t eof;     /* src said EOF */
  uint8_t shut;    /* dst was shut down for writing */
  uint8_t bulk;    /* a read filled the small buffer: splice from now on */
  uint8_t ready;   /* src may have bytes or EOF: an event said so and no read has since found it empty (edge-triggered) */
};

struct relay_conn {
  uint8_t state;
  uint8_t ntried;
  uint32_t gen;
  int cfd, ufd;
  int p_cu[2], p_uc[2]; /* pipes, kept with the slot while it is free (-1: not made yet) */
  struct relay_dir cu, uc;
  uint32_t route;
  uint8_t vip[16];
  uint16_t port;
  struct as_ep client, to;
  struct as_ep from; /* our socket toward the instance (the preamble names it) */
  uint8_t plain;     /* the instance is a virtual service's backend, no appswitch program: no preamble */
  struct as_ep tried[RELAY_TRIES];
  int next_free;
};

struct relay_stats {
  uint64_t accepted, forwarded, refused, active, bytes;
};

struct relay_shared;

/* One worker: a thread with its own epoll set, connection slots and records queue. Worker 0 is the main thread: it
 * also serves the control socket and the timer. */
struct relay {
  struct relay_shared *sh;
  int index;
  int ep;     /* epoll */
  int wake;   /* eventfd: the listeners changed */
  struct relay_conn *conns;
  int max_conns, free_head;
  struct relay_stats st;
  uint64_t pause_until_ms; /* accepting paused until then (EMFILE) */
  int paused;              /* this worker's listeners are out of its epoll set */
  int ctl_blocked;         /* the control socket is full: records wait, accepting paused */
  int ctl_watched;         /* the control socket is in this worker's epoll set */
  uint32_t seen_gen;       /* the listeners generation this worker's epoll set matches */
  int watching[RELAY_LISTENERS]; /* the listener fd watched per slot, -1: none */
  uint8_t *out; /* records waiting to be sent */
  uint32_t out_n, out_cap;
  uint64_t out_dropped;
};

#define RELAY_WORKERS_MAX 8
struct relay_shared {
  struct as_dtab table; /* read-only mapping; readers need no lock (dtab.h) */
  struct relay_listener listeners[RELAY_LISTENERS];
  uint32_t listen_gen; /* bumped (atomically) by worker 0 on every listener change */
  uint64_t key[2];     /* the preamble key (AS_RELAY_KEY), written by worker 0, read atomically word by word */
  uint32_t have_key;
  int nworkers;
  struct relay workers[RELAY_WORKERS_MAX];
};

/* CLOCK_MONOTONIC in ms. */
static inline uint64_t relay_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* relay_wire.c */
void relay_queue(struct relay *r, const void *rec);
int relay_flush(struct relay *r); /* 1: accepting must pause or resume (relay_sync): the socket filled or drained */
void relay_send_refused(struct relay *r, uint32_t route, const struct as_ep *client, int reason);
void relay_send_listen_result(struct relay *r, uint32_t id, int err);
void relay_send_stats(struct relay *r);

/* relay_listen.c */
int relay_listen(struct relay *r, const struct as_relay_listen *m); /* worker 0: 0 or -errno */
void relay_unlisten(struct relay *r, uint32_t id);                  /* worker 0 */
void relay_reap_listeners(struct relay *r);                         /* worker 0: closes what every worker left */
void relay_sync(struct relay *r); /* this worker's epoll set follows the listeners and its pause state */
void relay_accept(struct relay *r, int idx);

/* relay_connect.c */
void relay_start(struct relay *r, struct relay_conn *c); /* picks, connects (or refuses and frees c) */
void relay_connected(struct relay *r, struct relay_conn *c, uint32_t events); /* epoll events of the upstream */

/* relay_splice.c */
int relay_conns_init(struct relay *r, int max);
struct relay_conn *relay_conn_alloc(struct relay *r);
void relay_conn_free(struct relay *r, struct relay_conn *c);
void relay_pump(struct relay *r, struct relay_conn *c);
int relay_conn_index(const struct relay *r, const struct relay_conn *c);

#endif
