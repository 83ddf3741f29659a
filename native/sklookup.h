/* sk_lookup steering: a BPF_PROG_TYPE_SK_LOOKUP program, attached to the current network namespace by a BPF link,
 * that hands new TCP connections for a steered local port (any local address) straight to a chosen listening socket
 * — the kernel's own listener lookup, so no proxy and no copy. bpf(2), BPF_PROG_TYPE_SK_LOOKUP (kernel >= 5.9),
 * BPF_MAP_TYPE_SOCKHASH holding listening sockets, bpf_sk_assign(), BPF_LINK_CREATE with BPF_SK_LOOKUP.
 *
 * Maps: `counts` (HASH, u32 port -> u32 n, 1..AS_SKL_SLOTS) and `socks` (SOCKHASH, u32 port*AS_SKL_SLOTS+slot ->
 * listening socket). Per connection the program picks slot prandom % n; slots 0..n-1 are kept dense by
 * as_skl_set (grow: sockets first, then the count; shrink: the count first, then the sockets), so a concurrent
 * lookup sees either the old or the new set. Not found, an empty slot, or a failed assign -> SK_PASS without an
 * assignment: the normal lookup (whatever listens on the port, else RST). */
#ifndef APPSWITCH_SKLOOKUP_H
#define APPSWITCH_SKLOOKUP_H

#include <stddef.h>
#include <stdint.h>

#define AS_SKL_SLOTS 8     /* listening sockets per port */
#define AS_SKL_PORTS 1024  /* steered ports per handle */

struct as_skl {
  int counts; /* map fds, O_CLOEXEC (bpf(2) fds are) */
  int socks;
  int prog;
  int link; /* closing it detaches the program */
};

/* Creates the maps, loads the program and links it to the calling thread's network namespace. Returns 0 or -errno:
 * -EOPNOTSUPP when the kernel has no sk_lookup (older than 5.9, or BPF off), -EPERM when the caller lacks
 * CAP_BPF + CAP_NET_ADMIN (or CAP_SYS_ADMIN); any other -errno as bpf(2) gave it. On failure nothing is left open.
 * log (may be NULL) receives the verifier's log when the load fails. */
int as_skl_open(struct as_skl *s, char *log, size_t logn);

/* The same, linked to the network namespace netns (an fd of /proc/PID/ns/net or /run/netns/NAME; -1: the calling
 * thread's). The caller keeps netns. */
int as_skl_open_in(struct as_skl *s, int netns, char *log, size_t logn);

/* Steers port (1..65535) to the n (1..AS_SKL_SLOTS) TCP listening sockets fds (IPv4, or IPv6 without V6ONLY for
 * IPv4 clients), replacing any previous set. The maps hold their own references: the caller may close fds after.
 * Returns 0 or -errno (-EINVAL for a bad port or n; -EOPNOTSUPP when a socket is not a TCP listener). */
int as_skl_set(struct as_skl *s, unsigned port, const int *fds, unsigned n);

/* Stops steering port; -ENOENT when it was not steered. */
int as_skl_del(struct as_skl *s, unsigned port);

/* Detaches the program and closes everything (idempotent). */
void as_skl_close(struct as_skl *s);

#endif
