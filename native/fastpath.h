/* The same-host fast path: a connection between two programs on one host is a Unix stream socket pair, while both
 * programs keep seeing TCP. This module holds what the generator needs to keep up that appearance (the inspection of
 * the program's descriptors that decides whether its socket may be swapped at all is fd_inspect.h):
 *
 *   - a table of the fast-path sockets it installed, keyed by SO_COOKIE (unique for the boot, never reused, so a
 *     stale entry can never be mistaken for a new socket), with the virtual TCP endpoints getsockname/getpeername
 *     must answer and the TCP/IP-level options the program set (a Unix socket refuses them);
 *   - the emulation of setsockopt/getsockopt at IPPROTO_TCP / SOL_IP / SOL_IPV6 level, and of SO_DOMAIN /
 *     SO_PROTOCOL, for those sockets;
 *
 * Design of a fast-path connection (client C and server S on one host; generators gC and gS; daemon D):
 *   1. C's connect() to a vip is trapped; gC decides it from the decision table D published (dtab.h): the instance
 *      picked is on this host and both apps allow the fast path.
 *   2. gC checks that the socket may be replaced: not bound, and not registered in any epoll instance of C
 *      (replacing the fd number would silently drop that registration; nginx registers upstream sockets before
 *      connect). If it may not, the connection is plain TCP.
 *   3. gC creates socketpair(AF_UNIX, SOCK_STREAM) {a, b} and a placeholder TCP socket, bound (so its endpoint is
 *      known) but not connected; sends gS, over gS's offer socket (offer_chan.h, named in the table), one datagram:
 *      the placeholder's endpoint as accept() will see it, C's identity, and fd b. No daemon on the way.
 *   4. gC connects the placeholder to S's real listening endpoint. It lands in the listener's accept queue, so S
 *      wakes up exactly as for TCP (epoll, poll, select, blocking accept); the offer is queued at gS before that.
 *      gC installs a at C's fd number (ADDFD SETFD).
 *   5. S's accept() is trapped; gS accepts the placeholder, finds the offer by the placeholder's endpoint (reading
 *      its offer socket if the offer is still there), installs b instead of the placeholder, which is closed with a
 *      reset (no TIME_WAIT). gS tells D in a batch (AS_CLAIMED), gC too (AS_DECIDED): D tracks, never waits.
 *   The data then flows over the Unix socket pair, through no process of ours.
 * When D decides the connect instead (the table could not: see dtab.h), the same happens through D: gC's AS_CONNECT
 * carries b and the placeholder (AS_F_OFFER), D pushes b to gS (AS_OFFER) before it answers; or, without an offer,
 * gC connects first and hands b and the placeholder to D (AS_CONNECTED + AS_F_FASTPATH), and gS's AS_ACCEPT gets b.
 * In 3, gC first writes one sentinel byte into a (it waits in b's queue; gS, or D, reads it when b arrives,
 * AS_F_SENTINEL). If b is closed before that (gS or D out of descriptors, MSG_CTRUNC; or either ended), C's next read
 * or write fails with ECONNRESET, as for a TCP connection the server side reset, not with an EOF that reads as a
 * clean close. D then refuses S's accept of the (reset) placeholder at once.
 * C's connect() itself has already succeeded by then: making it wait for D's word on every fast-path connection
 * would add a round trip through the daemon to each; instead D offers no fast path while it is out of descriptors
 * (TCP needs none of D's), so only the connection that finds out pays. */
#ifndef APPSWITCH_FASTPATH_H
#define APPSWITCH_FASTPATH_H

#include <stdint.h>
#include <sys/types.h>

#include "vmap.h"

#define AS_FSOCK_OPTS 12

struct as_fopt {
  int32_t level, name, val;
};

struct as_fsock {
  uint64_t cookie; /* 0: free slot */
  uint64_t ino;
  int family;      /* what the program asked for: AF_INET or AF_INET6 */
  struct as_ep local, peer;
  int nopt;
  struct as_fopt opt[AS_FSOCK_OPTS];
  char cc[16];     /* TCP_CONGESTION */
};

struct as_ftab {
  struct as_fsock *slots;
  uint32_t cap, count, used; /* used = live + tombstones */
};

/* 0, or -ENOMEM. The table grows as needed. */
int as_ftab_put(struct as_ftab *t, const struct as_fsock *e);
struct as_fsock *as_ftab_get(struct as_ftab *t, uint64_t cookie);
void as_ftab_del(struct as_ftab *t, uint64_t cookie);
/* Drops entries whose socket is gone (by inode, from /proc/net/unix of our namespace). Returns how many. */
int as_ftab_gc(struct as_ftab *t);
void as_ftab_free(struct as_ftab *t);

/* SO_COOKIE of a socket, or 0. */
uint64_t as_sock_cookie(int s);

/* Emulated setsockopt/getsockopt on a fast-path socket. val/len are our copies of the program's arguments.
 * set: returns 0 or -errno. get: fills out (up to *len bytes, *len updated as the kernel would), returns 0 or -errno.
 * Handles levels SOL_SOCKET (SO_DOMAIN, SO_PROTOCOL only), IPPROTO_TCP, SOL_IP, SOL_IPV6. */
int as_fsock_setopt(struct as_fsock *e, int level, int name, const void *val, int len);
int as_fsock_getopt(struct as_fsock *e, int level, int name, void *out, int *len);
/* Records an option value without validation (copied from the socket being replaced). */
void as_fsock_store(struct as_fsock *e, int level, int name, int val);

#endif
