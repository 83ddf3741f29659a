/* The trap generator: serves one program's seccomp notifications, answers what needs no service-table decision
 * itself, and forwards the rest to the daemon over the trap socket. seccomp_unotify(2), epoll(7). */
#ifndef APPSWITCH_GENERATOR_H
#define APPSWITCH_GENERATOR_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "dtab.h"
#include "fastpath.h"
#include "notif.h"
#include "procmem.h"
#include "session.h"
#include "sockopt_emul.h"
#include "trapstats.h"
#include "udp_recv.h"
#include "vmap.h"
#include "proto.h"

#define AS_PENDING_MAX 1024

struct as_udp;

struct as_pending {
  int used;
  uint32_t seq;
  uint64_t id;   /* notification id */
  pid_t pid;
  int op;
  int sock;      /* our duplicate of the program's socket, or -1 */
  int family, type, backlog, tries, in_epoll, alt;
  int epoll_fd;  /* which of our fds is in the epoll set while in_epoll */
  int pfd;       /* the program's fd number */
  int fast;      /* connect: a fast-path placeholder connection is under way in conn */
  int v6only;    /* bind: an AF_INET6 socket with IPV6_V6ONLY (sockopt_emul.h) */
  uint64_t ino;
  uint8_t req[32];
  uint32_t req_len;
  uint8_t real[32];
  uint32_t real_len;
  struct as_udp *udp; /* a datagram waiting for its destination to be resolved */
  int conn;            /* accept: the connection waiting for the daemon's word on its peer */
  int aflags;          /* accept4 flags */
  int virtual_dest;    /* connect: the destination is a virtual endpoint (report the connection) */
  uint64_t uaddr, ulenp;
  /* the daemon's side: what was sent (to send it again to a restarted daemon), whether its answer is awaited, and
   * since when it waits for a daemon to send it to */
  uint16_t msgtype;
  uint32_t msgflags;
  int awaiting, unsent;
  uint64_t queued_ms;
  /* connect: a speculative fast-path offer (fastpath.h): our end of the Unix socket pair (-1: none), whether the
   * server's end and the placeholder (conn) went to the daemon with the request */
  int spec_fd, spec_srv, spec_sent, spec_sentinel;
  struct as_tmark mark; /* trap statistics of the notification this entry answers */
  /* connect decided here from the decision table (dtab.h): the real endpoints that refused it so far */
  int local;
  int ntried;
  struct as_ep tried[8];
};

/* A fast-path connection the daemon announced (AS_OFFER) before its placeholder reaches this program's listener. */
struct as_offer {
  int fd;              /* the server's end of the Unix socket pair; -1: free */
  struct as_ep peer;   /* the placeholder's endpoint, as accept() sees it */
  struct as_ep virt;   /* the client's virtual identity */
  uint64_t at_ms;
};

#define AS_OFFERS_MAX 128
#define AS_HINTS 64
#define AS_CLAIMS_MAX 64

struct as_gen {
  int notif_fd, daemon_fd, epfd, sigfd, timer_fd;
  struct as_notif nc;
  struct as_pidfds pidfds;
  struct as_vmap *vmap;
  struct as_ftab ftab; /* fast-path sockets installed in the program */
  struct as_oemu oemu; /* options kept for the program's real inet sockets (sockopt_emul.h) */
  unsigned ticks;
  struct as_ep identity;
  int has_identity;
  pid_t child;
  int child_status, child_done, notif_hup, verbose;
  uint32_t next_seq;
  struct as_pending pend[AS_PENDING_MAX];
  uint64_t stats_notifs, stats_local, stats_forwarded, stats_fast, stats_fast_declined;
  /* a new session after the daemon went away (NULL daemon_path: none; requests then fail at once with ENETDOWN) */
  const char *daemon_path;
  const char *meta;
  char ticket[AS_TICKET_MAX];
  int wait_ms;       /* how long a request waits for the daemon to come back */
  int fast_timer;    /* the timer ticks every 100 ms (instead of 1 s) while the daemon is away */
  unsigned unsent;   /* requests waiting for the daemon to come back */
  uint64_t stats_reconnects;
  struct as_offer offers[AS_OFFERS_MAX];
  unsigned noffers;
  /* destinations (virtual endpoints) the daemon last said are not on this host: no speculative offer for them */
  struct {
    struct as_ep dst;
    int remote;
  } hints[AS_HINTS];
  uint64_t stats_offers_taken, stats_offers_asked;
  /* taken offers not yet reported (AS_CLAIMED carries them in batches: the daemon's copy of each placeholder only has
   * to go eventually, and one message per connection was a visible part of the daemon's time) */
  uint8_t claims[AS_CLAIMS_MAX * 18];
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
};

int as_gen_init(struct as_gen *g, int notif_fd, int daemon_fd, int sigfd, pid_t child);
/* Serves notifications. With until_child_exits, returns when the main child exits; otherwise when every task
 * under the filter is gone. Returns the main child's wait status. */
int as_gen_run(struct as_gen *g, int until_child_exits);
void as_gen_free(struct as_gen *g);
/* Starts taking fast-path offers from other generators on s (offer_chan.h); s is the generator's from then on. */
int as_gen_offers(struct as_gen *g, int s);
struct as_msg;
/* Sends a message to the daemon (nothing waits for an answer here). Returns 0, or -ENETDOWN while it is away. */
int as_gen_send_daemon(struct as_gen *g, struct as_msg *m);

#endif
