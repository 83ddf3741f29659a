/* Virtual identities for datagrams: the generator's side of recvfrom/recvmsg/recvmmsg on UDP sockets, and what its
 * datagram sends tell the daemon. seccomp_unotify(2), recvmsg(2), recvmmsg(2), udp(7).
 *
 * A datagram that reaches a program's unconnected UDP socket carries its sender's real source (a node address and a
 * pool or ephemeral port); the program must see the sender's virtual identity instead, as a TCP server does at
 * accept(). The kernel cannot rewrite the source of a CONTINUEd receive, so the generator receives for the program
 * (on its pidfd_getfd duplicate) and writes the data and the rewritten source into the program's memory. */
#ifndef APPSWITCH_UDP_RECV_H
#define APPSWITCH_UDP_RECV_H

#include <stdint.h>
#include <sys/types.h>

#include "vmap.h"

struct as_gen;
struct as_msg;
struct seccomp_notif;
struct as_urecv;

/* epoll tags of this module's descriptors (the generator hands such events to as_urecv_event) */
#define AS_TAG_URECV_TIMER 0x0f0000u
#define AS_TAG_URECV 0x100000u /* + wait index */
#define AS_URECV_WAITS 256

/* Allocates the module's state in g->urecv and its timer (in g->epfd). Returns 0 or -errno. */
int as_urecv_init(struct as_gen *g);
void as_urecv_free(struct as_gen *g);
/* A trapped recvfrom (with a source buffer), recvmsg or recvmmsg: answered now, or kept until a datagram, the
 * daemon's answer about its sender, a signal or SO_RCVTIMEO. */
void as_urecv_trap(struct as_gen *g, struct seccomp_notif *req);
/* An epoll event with a tag in this module's range. */
void as_urecv_event(struct as_gen *g, uint64_t tag);
/* The daemon's answer to AS_UDP_WHO (m->seq has AS_SEQ_UDP). */
void as_urecv_on_reply(struct as_gen *g, const struct as_msg *m);
/* Before a datagram socket's first datagram or connect (the generator sends or connects it): binds an unbound socket
 * to the wildcard address and port 0 (what the kernel's autobind does) and reports its real endpoint (AS_UDP_FROM),
 * so that the receiver's daemon knows who sends from there before the first datagram arrives. */
void as_urecv_before_send(struct as_gen *g, int sock, int family);
/* A new session with a daemon that restarted: the last reports (AS_UDP_FROM) go again, as it kept none. */
void as_urecv_resend_reports(struct as_gen *g);
/* A datagram went to `dst` directly (egress: no virtual name): replies from there show that real address. */
void as_urecv_sent_direct(struct as_gen *g, const struct as_ep *dst);
/* Where a datagram to `virt` goes when virt is a sender this program heard from within the last seconds (the daemon
 * said who it is): a reply then leaves without a daemon round trip. Returns 1 and fills *real, else 0. */
int as_urecv_reply_path(struct as_gen *g, const struct as_ep *virt, struct as_ep *real);
/* Waits whose task died are dropped (also checked by the module's own timer). */
void as_urecv_reap(struct as_gen *g);
/* Whether a receive waits (a datagram, a daemon answer, its timer): the generator must watch its descriptors. */
int as_urecv_waiting(struct as_gen *g);

#endif
