/* NETLINK_SOCK_DIAG for the daemon: looks up one TCP socket by its exact 4-tuple and reports the cgroup it was created
 * in, so the daemon can tell a trap generator's socket (sockguard.h) from any other at accept time; and dumps the TCP
 * table in chosen states as fixed records (the sweep's view of the namespace, without TIME_WAIT). sock_diag(7). */
#ifndef APPSWITCH_SOCKDIAG_H
#define APPSWITCH_SOCKDIAG_H

#include <assert.h> /* static_assert, in C11 and C++ */
#include <stddef.h>
#include <stdint.h>

/* A NETLINK_SOCK_DIAG socket (O_CLOEXEC). Returns the fd or -errno. */
int as_sockdiag_open(void);

struct as_sockdiag_result {
  uint8_t state;   /* TCP state (TCP_ESTABLISHED = 1, ... TCP_TIME_WAIT = 6) */
  int has_cgroup;  /* 1 for a full socket (INET_DIAG_CGROUP_ID present); 0 for a time-wait or request mini-socket */
  uint64_t cgroup; /* the cgroup v2 id of the task that created the socket */
  uint32_t inode;  /* the socket's inode (0 for a mini-socket) */
};

/* The TCP socket whose local end is src:sport and remote end dst:dport (ports in host order; addresses 4 bytes for
 * AF_INET, 16 for AF_INET6, network order). One request and one reply on nl. Returns 1 found (*out filled), 0 no
 * such socket, or -errno. A listener the kernel's lookup falls back to does not count as found. */
int as_sockdiag_tcp(int nl, int family, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                    struct as_sockdiag_result *out);

/* The UDP socket that a datagram to local:lport would reach (the kernel's receive lookup: a socket bound there, or a
 * wildcard one on that port; address 4 bytes for AF_INET, 16 for AF_INET6, network order). Returns 1 found (*out
 * filled: compare out->inode to know it is the socket meant), 0 none, or -errno. */
int as_sockdiag_udp(int nl, int family, const uint8_t *local, uint16_t lport, struct as_sockdiag_result *out);

/* One socket of a table dump, 44 bytes, every integer little-endian, byte arrays so that the layout is the same on
 * every ABI (no padding, no alignment). src/daemon/tcp-diag.ts decodes it (DIAG_RECORD_SIZE, pinned by a test). The
 * brief asked for 40 bytes: 16 + 2 + 16 + 2 + 1 leaves no room for the 4-byte inode, so the record grows to the next
 * multiple of 4. */
#define AS_SOCKDIAG_REC_SIZE 44
struct as_sockdiag_rec {
  uint8_t local_ip[16];  /* network order; IPv4 as ::ffff:a.b.c.d */
  uint8_t local_port[2]; /* little-endian */
  uint8_t remote_ip[16]; /* as local_ip */
  uint8_t remote_port[2];
  uint8_t inode[4];      /* little-endian; 0 for a request or orphaned socket (no file) */
  uint8_t state;         /* TCP_ESTABLISHED = 1 ... TCP_CLOSING = 11 (include/net/tcp_states.h) */
  uint8_t pad[3];        /* zero */
};
static_assert(sizeof(struct as_sockdiag_rec) == AS_SOCKDIAG_REC_SIZE, "as_sockdiag_rec is 44 bytes");
static_assert(offsetof(struct as_sockdiag_rec, remote_ip) == 18, "as_sockdiag_rec: remote_ip at 18");
static_assert(offsetof(struct as_sockdiag_rec, inode) == 36, "as_sockdiag_rec: inode at 36");
static_assert(offsetof(struct as_sockdiag_rec, state) == 40, "as_sockdiag_rec: state at 40");

/* Every TCP socket of `family` (AF_INET or AF_INET6: the same split as /proc/net/tcp and tcp6, a v4-mapped socket is
 * AF_INET6) whose state is in `states` (a mask of 1 << TCP_xxx), dumped with NLM_F_DUMP on nl: the kernel filters by
 * state, so sockets outside the mask are neither formatted nor copied. On success *buf is a malloc'd array of *len
 * bytes (a multiple of AS_SOCKDIAG_REC_SIZE; NULL when empty) that the caller frees, and 0 is returned. Otherwise
 * -errno and *buf NULL: the kernel's own error for the request (ENOENT: no inet_diag for this family), -EAGAIN for a
 * dump that overran the socket's receive buffer (ENOBUFS: some sockets were lost, judge nothing), -EPROTO for a short
 * or malformed message, -ENOMEM, or a send/recv error. After an error other than the kernel's, the dump may still be
 * running on nl: close it. */
int as_sockdiag_dump_tcp(int nl, int family, uint32_t states, uint8_t **buf, size_t *len);

#endif
