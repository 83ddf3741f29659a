/* The offer channel: how a client's generator hands a same-host fast-path connection straight to the server's
 * generator, with no daemon on the way (design: fastpath.h).
 *
 * Each generator owns one abstract Unix datagram socket, "appswitch-gen-" and 32 random hex digits, announced in its
 * HELLO and published in the decision table (dtab.h) for the other generators of the host. An offer is one datagram:
 * the connection's placeholder endpoint (as the server's accept() will see it) and the client's identity, with the
 * server's end of the Unix socket pair as SCM_RIGHTS. It is sent before the placeholder connects, so it is queued at
 * the server's generator before the placeholder can reach the listener's accept queue.
 *
 * Who may send: the socket lives in the host's network namespace, which programs under appswitch cannot reach (their
 * abstract Unix names are their own namespace's). The name is unguessable and published only to generators; and the
 * receiver takes an offer only from a sender with its own effective uid (SCM_CREDENTIALS, checked by the kernel), so a
 * local user who learns the name cannot hand a server a connection under a forged identity. */
#ifndef APPSWITCH_OFFER_CHAN_H
#define APPSWITCH_OFFER_CHAN_H

#include <stdint.h>

#include "dtab.h"
#include "vmap.h"

#define AS_OCHAN_MAGIC 0x4f464652u /* "OFFR" */

struct as_ochan_msg {
  uint32_t magic;
  uint32_t flags;          /* AS_OCHAN_SENTINEL */
  struct as_ep peer;       /* the placeholder's endpoint, as accept() sees it */
  struct as_ep virt;       /* the client's virtual identity (its vip or link-local address, and the port) */
  char client_app[AS_DTAB_ID_MAX];
};
#define AS_OCHAN_SENTINEL 1u /* one byte waits in front of the stream (proto.h AS_F_SENTINEL): drain it first */

/* Creates the socket bound to a fresh random name; the name (without its leading NUL) goes to name_out (cap >= 48).
 * Returns the fd (non-blocking, close-on-exec) or -errno. */
int as_ochan_open(char *name_out, size_t cap);
/* Sends one offer with fd to the generator named `to`. Returns 0 or -errno (EAGAIN: its queue is full; ECONNREFUSED:
 * nobody has that name any more). The fd stays the caller's. */
int as_ochan_send(int s, const char *to, const struct as_ochan_msg *m, int fd);
/* Receives one offer: 1 with *m and *fd (ours), 0 when none is waiting, -errno otherwise. Datagrams that are not
 * offers, carry no fd, or come from another user are dropped (and skipped). */
int as_ochan_recv(int s, struct as_ochan_msg *m, int *fd);

#endif
