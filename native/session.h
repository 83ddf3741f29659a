/* The generator's session with the daemon: connecting to the trap socket and the HELLO exchange, used at start
 * (launcher.c) and again after the daemon restarted (gen_daemon.c). unix(7), SOCK_SEQPACKET. */
#ifndef APPSWITCH_SESSION_H
#define APPSWITCH_SESSION_H

#include <stddef.h>

#include "proto.h"
#include "vmap.h"

/* The app's ticket for a resumed session: "<app id>.<secret>", as the daemon issued it in its HELLO reply. */
#define AS_TICKET_MAX 96

/* Connects a SOCK_SEQPACKET socket (O_CLOEXEC) to the daemon's trap socket. Returns the fd or -errno. */
int as_session_connect(const char *path);
/* A SOCK_SEQPACKET socket (O_CLOEXEC) and the address of path, not yet connected. Returns the fd or -errno. */
struct sockaddr_un;
int as_session_socket(const char *path, struct sockaddr_un *sun);

/* Registers the app: sends HELLO with `meta` (a JSON object). With `ticket` (resume), the JSON also carries the
 * ticket and, when `identity` is set, the identity the program has been using, so a daemon that restarted hands the
 * same app back. Waits up to timeout_ms for the reply, which is copied to *reply; the ticket it carries goes to
 * ticket_out (cap bytes, NUL-terminated). A refusal (reply->result < 0) leaves the daemon's reason in err.
 * Returns 0 (also for a refusal: check reply->result) or -errno (send/receive failed, timeout = -EAGAIN,
 * malformed reply = -EPROTO). */
int as_session_hello(int s, const char *meta, const char *ticket, const struct as_ep *identity, int timeout_ms,
                     struct as_msg *reply, char *ticket_out, size_t cap, char *err, size_t errcap);

/* As as_session_hello, and keeps the descriptors a successful reply carries (the decision table, then the shared
 * counters: dtab.h) in fds_out, their count in *nfds_out (at most AS_SESSION_FDS); they are the caller's. */
#define AS_SESSION_FDS 2
int as_session_hello_fds(int s, const char *meta, const char *ticket, const struct as_ep *identity, int timeout_ms,
                         struct as_msg *reply, char *ticket_out, size_t cap, char *err, size_t errcap, int *fds_out,
                         int *nfds_out);

/* Writes meta (a JSON object) with "key":"value" put in front of its members into out. value needs no escaping
 * (the caller's own text). Returns 0 or -E2BIG / -EINVAL. */
int as_meta_add(char *out, size_t cap, const char *meta, const char *key, const char *value);

#endif
