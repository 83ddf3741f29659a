/* The trap generator: serves one program's seccomp notifications, answers what needs no service-table decision
 * itself, and forwards the rest to the daemon over the trap socket. seccomp_unotify(2), epoll(7). */
#ifndef APPSWITCH_GENERATOR_H
#define APPSWITCH_GENERATOR_H

#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

#include "caller.h"
#include "dtab.h"
#include "fastpath.h"
#include "fd_inspect.h"
#include "notif.h"
#include "procmem.h"
#include "session.h"
#include "sockopt_emul.h"
#include "trapstats.h"
#include "udp_recv.h"
#include "vmap.h"
#include "peermap.h"
#include "proto.h"

#define AS_PENDING_MAX 1024

struct as_pending; /* a notification waiting for the daemon or for a socket (gen_internal.h) */
struct as_offer;   /* a fast-path connection the daemon announced (gen_internal.h) */

#define AS_OFFERS_MAX 128
#define AS_HINTS 64
#define AS_CLAIM_LEN 40 /* AS_CLAIMED payload per entry (see proto.h) */
/* AS_CLAIMED entries per message: nearly as many as fit in one (AS_PAYLOAD_MAX), so that a busy listener's daemon is
 * woken once per 192 accepts (64 before: 280 messages a second at 18,000 accepts) */
#define AS_CLAIMS_MAX 192
_Static_assert(AS_CLAIMS_MAX * AS_CLAIM_LEN <= AS_PAYLOAD_MAX, "an AS_CLAIMED batch fits in one message");

#define AS_NOT_LOCAL_SLOTS 64

struct as_gen {
  int notif_fd, daemon_fd, epfd, sigfd, timer_fd;
  struct as_notif nc;
  struct as_pidfds pidfds;
  struct as_vmap *vmap;
  struct as_ftab ftab; /* fast-path sockets installed in the program */
  struct as_pmap pmap; /* per-socket peer names of connections through an egress gateway (peermap.h) */
  struct as_oemu oemu; /* options kept for the program's real inet sockets (sockopt_emul.h) */
  unsigned ticks;
  struct as_ep identity;
  int has_identity;
  pid_t child;
  int child_status, child_done, notif_hup, verbose;
  uint32_t next_seq;
  struct as_pending *pend; /* AS_PENDING_MAX entries */
  uint64_t stats_notifs, stats_local, stats_forwarded, stats_fast, stats_fast_declined;
  /* a new session after the daemon went away (NULL daemon_path: none; requests then fail at once with ENETDOWN) */
  const char *daemon_path;
  const struct as_caller *caller; /* who started the launcher: a new session is checked as the first (caller.h) */
  const char *meta;
  char ticket[AS_TICKET_MAX];
  int wait_ms;       /* how long a request waits for the daemon to come back */
  int fast_timer;    /* the timer ticks every 100 ms (instead of 1 s) while the daemon is away */
  unsigned unsent;   /* requests waiting for the daemon to come back */
  uint64_t stats_reconnects;
  struct as_offer *offers; /* AS_OFFERS_MAX entries */
  unsigned noffers;
  /* destinations (virtual endpoints) the daemon last said are not on this host: no speculative offer for them */
  struct {
    struct as_ep dst;
    int remote;
  } hints[AS_HINTS];
  uint64_t stats_offers_taken, stats_offers_asked;
  /* taken offers not yet reported (AS_CLAIMED carries them in batches: the daemon's copy of each placeholder only has
   * to go eventually, and one message per connection was a visible part of the daemon's time) */
  uint8_t claims[AS_CLAIMS_MAX * AS_CLAIM_LEN];
  unsigned nclaims;
  struct as_tstats tstats; /* per-syscall counts and latencies, sent to the daemon as AS_STATS */
  struct as_tmark cur;     /* the notification being handled; moves to its pending entry if it waits */
  struct as_urecv *urecv;  /* datagram receives (udp_recv.h) */
  struct as_dtab dtab;     /* the decision table and shared counters the daemon published (dtab.h) */
  int ochan;               /* our offer socket (offer_chan.h), -1: none */
  int flush_fd;            /* one-shot timer: batches to the daemon go AS_FLUSH_MS after their first record */
  int flush_armed;
  uint8_t decided[AS_DECIDED_MAX * sizeof(struct as_decided)]; /* AS_DECIDED records not yet sent */
  unsigned ndecided;
  uint64_t stats_local_decided;
  uint64_t stats_preamble_ok, stats_preamble_bad; /* relayed outside clients answered from their preamble; refused */
  struct as_not_local {
    uint8_t ip[16];
    uint64_t until_ms;
  } not_local[AS_NOT_LOCAL_SLOTS]; /* peers of steered connections found not to be this host's, for a moment (gen_ingress.c) */
  unsigned npend; /* pending entries in use (gen_pending.c) */
  /* the hot wait (gen_hot.c): RECV itself while notifications keep coming and nothing else is awaited */
  int hot, hot_idle, hot_timer_ok;
  timer_t hot_timer;
};

int as_gen_init(struct as_gen *g, int notif_fd, int daemon_fd, int sigfd, pid_t child);
/* Serves notifications. With until_child_exits, returns when the main child exits; otherwise when every task
 * under the filter is gone. Returns the main child's wait status. */
int as_gen_run(struct as_gen *g, int until_child_exits);
void as_gen_free(struct as_gen *g);
/* Starts taking fast-path offers from other generators on s (offer_chan.h); s is the generator's from then on. */
int as_gen_offers(struct as_gen *g, int s);
struct as_msg;
/* Sends a message to the daemon (nothing waits for an answer here; no payload, no fds). Returns 0, or -ENETDOWN
 * while it is away. */
int as_gen_send_daemon(struct as_gen *g, struct as_msg *m);

#endif
