/* Socket options the generator keeps for the program instead of the kernel, on the program's real inet sockets (the
 * fast path's Unix sockets have their own emulation, fastpath.h). tcp(7), ipv6(7).
 *
 *   - IPV6_V6ONLY on an AF_INET6 socket bound through appswitch: its real socket is bound to the node's IPv4 address
 *     as ::ffff:a.b.c.d, which the kernel refuses on a V6ONLY socket (EINVAL). The generator turns V6ONLY off on the
 *     real socket for that bind; the program keeps seeing the value it set (getsockopt answers 1). Which clients
 *     reach the socket is the daemon's decision (a V4-only socket of the same app takes the IPv4 clients).
 *   - TCP_DEFER_ACCEPT: on a listener the kernel holds a connection back until its first data arrives. A same-host
 *     fast-path connection's placeholder never sends any (the data goes over the Unix socket pair), so the server
 *     would wake up only when the defer timeout ran out — apache sets 30 s (`AcceptFilter http data`, the Linux
 *     default) and curl waited in vain (issue 11). The option never reaches the kernel; getsockopt answers what the
 *     kernel would (the seconds rounded up to whole SYN-ACK retransmissions).
 *
 * Table keyed by SO_COOKIE (unique for the boot, never reused: a stale entry can never be taken for a new socket).
 * Bounded: when full, entries whose socket is gone (by inode, /proc/net/tcp and tcp6) are dropped; if none is, the
 * caller falls back to the kernel's behaviour. */
#ifndef APPSWITCH_SOCKOPT_EMUL_H
#define APPSWITCH_SOCKOPT_EMUL_H

#include <linux/types.h>
#include <stdint.h>

#define AS_OEMU_SLOTS 512

struct as_oemu_ent {
  uint64_t cookie; /* 0: free */
  uint64_t ino;
  uint8_t v6only;     /* the program set IPV6_V6ONLY; the real socket has it off */
  uint8_t has_defer;  /* TCP_DEFER_ACCEPT was set */
  uint8_t defer;      /* in retransmissions, as the kernel keeps it */
};

struct as_oemu {
  struct as_oemu_ent ent[AS_OEMU_SLOTS];
  unsigned count;
};

/* The entry of a socket, or NULL. */
struct as_oemu_ent *as_oemu_get(struct as_oemu *t, uint64_t cookie);
/* The entry of a socket, made when missing. NULL when the table is full of live sockets. */
struct as_oemu_ent *as_oemu_take(struct as_oemu *t, uint64_t cookie, uint64_t ino);

/* Whether the generator keeps this option (level, name) itself for a socket not on the fast path: TCP_DEFER_ACCEPT
 * always, IPV6_V6ONLY reads while some socket has it kept. Cheap: decides whether the socket is looked at at all. */
int as_oemu_wants(const struct as_oemu *t, int level, int name, int set);
/* Serves setsockopt (set) or getsockopt of such an option on socket s (our duplicate, cookie its SO_COOKIE) of task
 * pid; args are the call's arguments. Reads and writes the task's memory as the kernel would, checking notification
 * `id` on notif_fd after reading. Returns 1 with *result (0 or -errno) to answer, 0 when the kernel should answer
 * (CONTINUE: a decision that looked only at the socket, never at what was read), -1 when the notification is gone. */
int as_oemu_serve(struct as_oemu *t, int s, uint64_t cookie, int pid, const __u64 args[6], int set, int notif_fd,
                  uint64_t id, int *result);

/* 1 when s is an AF_INET6 socket with IPV6_V6ONLY set, else 0. */
int as_v6only(int s, int family);
/* Before binding s (V6ONLY) to the real address addr: turns V6ONLY off when addr is v4-mapped. Returns 1 when it did. */
int as_v6only_clear(int s, const void *addr, uint32_t len);
/* The bind failed: the program's socket gets its V6ONLY back. */
void as_v6only_restore(int s);
/* The bind succeeded with V6ONLY off: getsockopt(IPV6_V6ONLY) answers 1 for this socket from now on. */
void as_oemu_note_v6only(struct as_oemu *t, int s, uint64_t ino);

/* The kernel's conversions for TCP_DEFER_ACCEPT (net/ipv4/tcp.c: secs_to_retrans, retrans_to_secs with
 * TCP_TIMEOUT_INIT 1 s and TCP_RTO_MAX 120 s). */
uint8_t as_defer_secs_to_retrans(int seconds);
int as_defer_retrans_to_secs(uint8_t retrans);

#endif
