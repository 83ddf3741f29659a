/* Looks up one TCP socket by its exact 4-tuple with NETLINK_SOCK_DIAG and reports the cgroup it was created in, so the
 * daemon can tell a trap generator's socket (sockguard.h) from any other at accept time. sock_diag(7). */
#ifndef APPSWITCH_SOCKDIAG_H
#define APPSWITCH_SOCKDIAG_H

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

#endif
