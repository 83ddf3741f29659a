/* Wire format between the trap generator (native/launcher) and the trap handler (src/trap/protocol.ts).
 * One message per SOCK_SEQPACKET datagram: a fixed 112-byte header, then `payload_len` bytes.
 * File descriptors, when a message carries any, travel as SCM_RIGHTS ancillary data.
 * Keep in sync with src/trap/protocol.ts (a unit test checks the offsets). */
#ifndef APPSWITCH_PROTO_H
#define APPSWITCH_PROTO_H

#include <stdint.h>

#define AS_PROTO_VERSION 1
#define AS_ADDR_MAX 32          /* sockaddr_in6 is 28 bytes; only AF_INET/AF_INET6 addresses travel */
#define AS_PAYLOAD_MAX 8192
#define AS_MSG_MAX (sizeof(struct as_msg) + AS_PAYLOAD_MAX)

enum as_msg_type {
  AS_HELLO = 1,   /* gen -> daemon: payload = JSON app metadata; reply: arg = app id, addr = identity address */
  AS_BIND = 2,    /* gen -> daemon: addr = requested (validated) sockaddr, arg = socket type,
                     addr2 = real address that failed with EADDRINUSE on a retry (flags AS_F_RETRY);
                     reply: addr = real address to bind, addr2 = virtual local address */
  AS_BOUND = 3,   /* gen -> daemon: the bind in the reply to AS_BIND succeeded (addr = real), cookie = inode;
                     no reply */
  AS_LISTEN = 4,  /* gen -> daemon: cookie = socket inode, arg = backlog, addr = real local address;
                     reply: result */
  AS_CONNECT = 5, /* gen -> daemon: addr = destination asked for, arg = socket type;
                     reply: result < 0 refuses; else addr = real destination, addr2 = virtual peer (len 0: none) */
  AS_EXIT = 6,    /* gen -> daemon: the program exited, arg = wait status; no reply */
  AS_UNBOUND = 7, /* gen -> daemon: a bind the daemon planned failed for good (cookie, addr = real); no reply */
  AS_STARTED = 8, /* gen -> daemon: the program runs, pid = its pid; no reply */
  AS_CONNECTED = 9, /* gen -> daemon: a connect to a virtual endpoint left from addr (real local) to addr2 (real
                       remote); the server's daemon will ask who that is; no reply. With AS_F_FASTPATH, addr is the
                       placeholder connection's local end and two fds travel: the server's end of the Unix socket
                       pair, then the placeholder (the daemon holds both until the server's ACCEPT claims them) */
  AS_ACCEPT = 10, /* gen -> daemon: a connection from addr (real peer) arrived at addr2 (real local), cookie = the
                     listener's inode; reply: addr = the peer's virtual identity, or result < 0: unidentified, drop it.
                     A reply with AS_F_FASTPATH carries one fd: the program gets it instead of the placeholder */
  AS_STATS = 11,  /* gen -> daemon: trap counters since the previous AS_STATS (deltas), payload below; no reply.
                     Sent at most once a second while traps happen, and when the generator ends */
  AS_OFFER = 12,  /* daemon -> gen, unsolicited (seq 0): a fast-path connection is coming to this program's listener
                     from the placeholder endpoint addr (as accept() will see it); addr2 = the client's virtual
                     identity; one fd: the server's end of the Unix socket pair. Sent before the daemon answers the
                     client's AS_CONNECT, so it is here before the placeholder can reach the accept queue */
  AS_CLAIMED = 13, /* gen -> daemon: connections an accept answered without asking the daemon, in a batch (sent when
                      AS_CLAIMS_MAX (generator.h) are due or within AS_FLUSH_MS; no reply). Per entry 40 bytes: the
                      peer's address (16, IPv4 as ::ffff:a.b.c.d) and port (2, network order); the kind (1:
                      AS_CLAIM_*); a pad byte; for an outside client its address (16) and port (2, network order); the
                      accepted socket's local port (2, network order). An offer taken (AS_CLAIM_APP) lets the daemon
                      let go of its placeholder. */
  AS_UDP_FROM = 14, /* gen -> daemon: a UDP socket of this program sends from real endpoint addr (cookie = its inode):
                       sent once per socket, before its first datagram or connect, so that a receiver's daemon can say
                       who the datagrams come from; no reply */
  AS_UDP_WHO = 15,  /* gen -> daemon: who sent a datagram from real endpoint addr to this program's addr2 (real local)?
                       reply: result 0 and addr = the sender's virtual identity (vip or link-local, and its virtual
                       port), or result < 0: unidentified (the generator drops such datagrams). seq has AS_SEQ_UDP */
  AS_DECIDED = 16,  /* gen -> daemon: connects the generator decided itself from the decision table (dtab.h), in a
                       batch: payload = struct as_decided records; sent when AS_DECIDED_MAX are due or AS_FLUSH_MS after
                       the first; no reply. The daemon counts, logs and tracks them as if it had decided them */
};

/* AS_CLAIMED entry kinds */
#define AS_CLAIM_APP 0u     /* a same-host app's connection (identity table or fast-path offer) */
#define AS_CLAIM_STEERED 1u /* an outside client steered to this node's instance (dtab.h, ingress) */
#define AS_CLAIM_RELAYED 2u /* an outside client relayed by a gateway, named by its preamble (preamble.h) */

/* AS_DECIDED payload record, little-endian. */
enum as_decided_kind {
  AS_DK_TCP = 1,        /* connected over TCP: local = the socket's real local endpoint */
  AS_DK_FAST = 2,       /* a same-host fast-path connection: local = the placeholder's endpoint */
  AS_DK_NO_SERVICE = 3, /* refused: no such service (ECONNREFUSED) */
  AS_DK_DENIED = 4,     /* refused by the policy (ECONNREFUSED) */
  AS_DK_ALL_TRIED = 5,  /* refused: every instance refused (ECONNREFUSED) */
};
struct as_decided {
  uint8_t kind;
  uint8_t retried; /* how many instances refused before this one */
  uint16_t lport, rport, vport;
  uint8_t lip[16], rip[16], vip[16]; /* local, real destination, virtual destination (as asked) */
  uint32_t pid;
  uint32_t pad;
  uint64_t inode; /* AS_DK_FAST: the inode of the server's end of the socket pair */
  char server_app[32];
};
_Static_assert(sizeof(struct as_decided) == 104, "AS_DECIDED layout is part of the wire format");
#define AS_DECIDED_MAX 64
#define AS_FLUSH_MS 20

#define AS_SEQ_UDP 0x80000000u /* AS_UDP_WHO sequence numbers (udp_recv.c); other requests never set this bit */

#define AS_F_RETRY 1u       /* AS_BIND: the previous real address was in use, pick another */
#define AS_F_NONBLOCK 2u    /* AS_CONNECT: informational, the socket is non-blocking */
#define AS_F_ALTERNATIVES 4u /* AS_CONNECT reply: other instances exist; on ECONNREFUSED ask again with AS_F_RETRY,
                                addr2 = the real destination that refused */
#define AS_F_FASTPATH 8u    /* AS_CONNECT reply: the destination is on this host, use a Unix socket pair if the socket
                               can be swapped; AS_CONNECTED / AS_ACCEPT reply: carries the fast-path fds */
#define AS_F_OFFER 16u      /* AS_CONNECT: a speculative fast-path offer comes with the request: fds = server's end of
                               a Unix socket pair, then a placeholder TCP socket bound to port addr2.port (not yet
                               connected). Reply: the daemon took the offer (the server's generator has been told):
                               connect the placeholder and install the client's end, no AS_CONNECTED */
#define AS_F_OFFERED 32u    /* AS_ACCEPT reply: this connection's fd came in an AS_OFFER before this reply */
#define AS_F_SENTINEL 64u   /* AS_CONNECTED with AS_F_FASTPATH, or AS_CONNECT with AS_F_OFFER: one byte was written into the pair before the server's
                               end left; the daemon reads it before anyone else gets that end. Should the end be closed
                               with the byte unread (the daemon had no room for the fds, MSG_CTRUNC; or nobody ever
                               accepted), the client's next read or write fails with ECONNRESET instead of an EOF that
                               would look like a clean close (unix(7): a close with unread data resets the peer) */
#define AS_F_UDP_PEER 128u  /* AS_CONNECT reply to a datagram send: addr2 is a datagram sender's identity this app was told
                               about (a reply path), not a service: kept out of the generator's endpoint map */
#define AS_F_NOWHERE 256u   /* AS_CONNECT reply for a datagram socket: the local host (loopback or the unspecified address,
                               as the kernel reads it) with no such UDP service: a connect succeeds and leaves the socket
                               unconnected (the kernel's UDP connect sends nothing either); a send gets ECONNREFUSED and
                               nothing leaves. Neither is logged or counted as a refusal by the daemon */

#define AS_F_DECIDED 1024u  /* AS_CONNECTED: the generator decided this connect itself from the decision table (dtab.h);
                               arg = how many instances refused it first. The daemon counts it as a connect */
#define AS_F_EGRESS 2048u  /* AS_CONNECT reply: addr is an egress gateway's proxy endpoint, shared by connections to other
                               destinations: addr2 (what the program asked for) names this socket's peer alone (peermap.h),
                               not the endpoint (vmap.h) */
#define AS_F_RELAYED 4096u /* AS_ACCEPT reply: an outside client relayed by a gateway: the connection starts with the relay's
                             preamble (preamble.h), which the generator takes out before the program reads */
#define AS_F_V6ONLY 512u    /* AS_BIND: the socket is AF_INET6 with IPV6_V6ONLY (it takes no IPv4 clients where the
                               app serves the port on an AF_INET socket too; native/sockopt_emul.h) */

struct as_msg {
  uint16_t type;
  uint16_t version;
  uint32_t seq;         /* request id chosen by the generator, echoed in the reply */
  int32_t result;       /* replies: >= 0 success, < 0 -errno */
  uint32_t flags;
  uint32_t pid;         /* pid (tid) of the trapped task, as the generator sees it */
  int32_t arg;
  uint64_t cookie;      /* socket inode */
  uint32_t addr_len;
  uint32_t addr2_len;
  uint8_t addr[AS_ADDR_MAX];
  uint8_t addr2[AS_ADDR_MAX];
  uint32_t payload_len;
  uint32_t reserved;
  /* payload follows */
};

_Static_assert(sizeof(struct as_msg) == 112, "as_msg layout is part of the wire format");

/* AS_STATS payload, little-endian as everything here:
 *   struct as_stats_head                    counts of what follows
 *   struct as_stats_count [n_counts]        answered traps per (syscall, result)
 *   struct as_stats_hist  [n_hists]         latency per syscall
 * syscall is the x86_64 __NR_* number (AS_STATS_OTHER: any other call the filter sent); err is 0 for success (or
 * CONTINUE: handed back to the kernel), else the errno the program got (AS_STATS_OTHER: errno >= AS_STATS_ERRNO_MAX).
 * A trap's latency runs from NOTIF_RECV to the answer (NOTIF_SEND or ADDFD with SEND), CLOCK_MONOTONIC; a blocking
 * accept/connect includes its wait. buckets[i] counts latencies <= AS_STATS_BOUNDS_NS[i] and > the bound before it
 * (not cumulative); buckets[AS_STATS_BUCKETS - 1] counts those above the last bound. A notification whose task died
 * before it was answered is not counted. One message holds at most AS_PAYLOAD_MAX bytes; more entries go in more
 * messages. */
#define AS_STATS_OTHER 0xffffu
#define AS_STATS_ERRNO_MAX 134
#define AS_STATS_BUCKETS 13
#define AS_STATS_BOUNDS_NS                                                                                            \
  { 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000, 100000000, 1000000000 }

struct as_stats_head {
  uint16_t n_counts;
  uint16_t n_hists;
  uint32_t reserved;
};

struct as_stats_count {
  uint16_t syscall;
  uint16_t err;
  uint32_t count;
};

struct as_stats_hist {
  uint16_t syscall;
  uint16_t reserved;
  uint32_t reserved2;
  uint64_t sum_ns;
  uint32_t buckets[AS_STATS_BUCKETS];
  uint32_t pad;
};

_Static_assert(sizeof(struct as_stats_head) == 8, "AS_STATS layout is part of the wire format");
_Static_assert(sizeof(struct as_stats_count) == 8, "AS_STATS layout is part of the wire format");
_Static_assert(sizeof(struct as_stats_hist) == 72, "AS_STATS layout is part of the wire format");

#endif
