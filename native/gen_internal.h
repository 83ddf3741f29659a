/* What the trap generator's files (native/gen_*.c) share: the pending table's entries, the offers pushed by the
 * daemon, and the functions one concern offers the others. Not for use outside the generator (generator.h is).
 *
 * File descriptor ownership, the one rule:
 *   - a pending entry owns every fd stored in it (sock; u.connect.conn, spec_fd, spec_srv; u.accept.conn) and the
 *     datagram buffer u.send.udp; as_pend_done closes and frees them all;
 *   - code that moves an fd out of an entry (or out of an offer) sets the field to -1 in the same breath:
 *     `int fd = p->u.accept.conn; p->u.accept.conn = -1;  ownership moves`;
 *   - a function that takes an fd argument says whether it takes it; as_pend_open takes s (and closes it when no
 *     entry is free), as do the handlers that file it in an entry.
 * Descriptors sent to the daemon (as_daemon_send) stay ours: SCM_RIGHTS gives the daemon its own copies. */
#ifndef APPSWITCH_GEN_INTERNAL_H
#define APPSWITCH_GEN_INTERNAL_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "generator.h"
#include "proto.h"

/* epoll tags of the generator's own descriptors (udp_recv.h has its own range, above these) */
enum { AS_TAG_NOTIF = 1, AS_TAG_DAEMON = 2, AS_TAG_SIGNAL = 3, AS_TAG_TIMER = 4, AS_TAG_OCHAN = 5, AS_TAG_FLUSH = 6, AS_TAG_PENDING = 16 };

/* What a pending entry waits for; it says which member of as_pending.u is live. */
enum as_op {
  OP_BIND = 1,    /* u.bind: bind(), the daemon plans the real address */
  OP_LISTEN_BIND, /* u.bind: listen() on an unbound socket, bound the virtual way first */
  OP_LISTEN,      /* u.bind: listen(), the daemon registers the service */
  OP_CONNECT,     /* u.connect */
  OP_SEND,        /* u.send: a datagram whose destination the daemon resolves */
  OP_ACCEPT_WAIT, /* u.accept: a blocking accept waiting for a connection */
  OP_ACCEPT_ASK,  /* u.accept: a connection waiting for the daemon's word on its peer */
  OP_ACCEPT_PREAMBLE, /* u.accept: a relayed connection (the daemon said so) waiting for its preamble (gen_preamble.c) */
  AS_OP_COUNT
};

#define CONNECT_TRIES 8 /* instances asked for before a refusal reaches the program (AS_F_ALTERNATIVES) */
#define AS_TRIED_MAX CONNECT_TRIES

struct as_udp; /* a datagram read from the program (gen_udp_send.c) */

struct as_p_bind { /* OP_BIND, OP_LISTEN_BIND, OP_LISTEN */
  int tries;          /* real addresses found in use so far (AS_F_RETRY) */
  int v6only;         /* an AF_INET6 socket with IPV6_V6ONLY (sockopt_emul.h) */
  int backlog;        /* listen()'s backlog */
  uint8_t real[AS_ADDR_MAX]; /* the real address the daemon planned (bind), the real local address (listen) */
  uint32_t real_len;
};

struct as_p_connect { /* OP_CONNECT */
  uint8_t dst[AS_ADDR_MAX]; /* the destination the program asked for */
  uint32_t dst_len;
  uint8_t real[AS_ADDR_MAX]; /* the real destination the daemon answered */
  uint32_t real_len;
  int tries;        /* instances asked for so far */
  int alt;          /* other instances exist (AS_F_ALTERNATIVES): wait for the outcome, skip a refusing one */
  int virtual_dest; /* the destination is a virtual endpoint (report the connection) */
  int fast;         /* a fast-path placeholder connection is under way in conn */
  int conn;         /* the fast path's placeholder TCP socket, or -1 */
  /* a speculative fast-path offer (fastpath.h, gen_offer.c): our end of the Unix socket pair (-1: none), the
   * server's end until it went to the daemon with the request (-1 then), whether it went, and whether the sentinel
   * byte is in the pair */
  int spec_fd, spec_srv, spec_sent, spec_sentinel;
  /* decided here from the decision table (gen_decide.c): the real endpoints that refused it so far */
  int local;
  int ntried;
  struct as_ep tried[AS_TRIED_MAX];
};

struct as_p_accept { /* OP_ACCEPT_WAIT, OP_ACCEPT_ASK */
  int conn;         /* the connection waiting for the daemon's word on its peer, or -1 */
  int aflags;       /* accept4 flags */
  int flags_set;    /* conn already has the file status flags the program asked for (accept4 made it so) */
  uint64_t uaddr, ulenp; /* where the program wants the peer's address */
  uint8_t peer[AS_ADDR_MAX]; /* the connection's real peer */
  uint32_t peer_len;
  uint8_t local[AS_ADDR_MAX]; /* the connection's real local address */
  uint32_t local_len;
  uint64_t preamble_deadline_ms; /* OP_ACCEPT_PREAMBLE: dropped if its preamble is not here by then */
};

struct as_p_send { /* OP_SEND */
  struct as_udp *udp; /* the datagram, owned */
  uint8_t dst[AS_ADDR_MAX]; /* the real destination (len 0: none, the socket's own peer) */
  uint32_t dst_len;
  int mmsg;              /* sendmmsg: the answer is 1 and the count goes to msg_len_addr */
  uint64_t msg_len_addr; /* sendmmsg: the program's address of the first message's msg_len */
};

struct as_pending {
  int used;
  uint32_t seq;
  uint64_t id; /* notification id */
  pid_t pid;
  enum as_op op;
  int sock;     /* our duplicate of the program's socket, or -1 */
  int pfd;      /* the program's fd number */
  int family, type;
  uint64_t ino; /* the socket's inode (0: not looked up) */
  int watch_fd; /* which of our fds is in the epoll set for this entry, or -1 */
  /* the daemon's side: what was sent (to send it again to a restarted daemon), whether its answer is awaited, and
   * since when it waits for a daemon to send it to */
  struct as_msg msg;
  int awaiting, unsent;
  uint64_t queued_ms;
  struct as_tmark mark; /* trap statistics of the notification this entry answers */
  union {
    struct as_p_bind bind;
    struct as_p_connect connect;
    struct as_p_accept accept;
    struct as_p_send send;
  } u;
};

/* A fast-path connection the daemon announced (AS_OFFER) before its placeholder reaches this program's listener. */
struct as_offer {
  int fd;            /* the server's end of the Unix socket pair; -1: free */
  struct as_ep peer; /* the placeholder's endpoint, as accept() sees it */
  struct as_ep virt; /* the client's virtual identity */
  uint64_t at_ms;
};

struct seccomp_notif;
struct sockaddr_storage;
struct as_fsock;

static inline int as_is_inet(int family) { return family == AF_INET || family == AF_INET6; }

/* ---- gen_pending.c: the pending table, answers to notifications ---------------------------------------------- */
void as_dbg(struct as_gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t as_now_ms(void);
void as_reply(struct as_gen *g, uint64_t id, int64_t val);
void as_reply_continue(struct as_gen *g, uint64_t id);
/* A new entry for notification req about socket s (taken): on failure (too many requests in flight) answers EAGAIN,
 * closes s and returns NULL. */
struct as_pending *as_pend_open(struct as_gen *g, struct seccomp_notif *req, enum as_op op, int s);
/* Frees the entry and everything it owns (no answer: the caller gave it, or the task is gone). */
void as_pend_done(struct as_gen *g, struct as_pending *p);
/* Answers the notification with val, then as_pend_done. */
void as_pend_finish(struct as_gen *g, struct as_pending *p, int64_t val);
/* Waits for fd to become ready (events) on behalf of p. Returns 0 or -errno. */
int as_pend_watch(struct as_gen *g, struct as_pending *p, int fd, uint32_t events);
void as_pend_unwatch(struct as_gen *g, struct as_pending *p);

/* ---- gen_daemon.c: the daemon channel ------------------------------------------------------------------------ */
/* Sends one message: m (its version is set here), payload_len bytes of payload (m->payload_len; NULL: none) and
 * nfds descriptors (they stay ours). Returns 0, or -ENETDOWN: the daemon is away, or went away now. */
int as_daemon_send(struct as_gen *g, struct as_msg *m, const void *payload, const int *fds, int nfds);
/* The same for a batch (AS_DECIDED, AS_CLAIMED) that must never block the generator: a full socket (a stopped daemon)
 * is -EAGAIN and the session stays. */
int as_daemon_send_nowait(struct as_gen *g, struct as_msg *m, const void *payload);
/* A one-way message about socket ino (AS_BOUND, AS_UNBOUND). */
void as_daemon_notify(struct as_gen *g, uint16_t type, uint64_t ino, const void *addr, uint32_t len);
/* Starts p's request in p->msg: type, flags, seq, pid, arg = the socket type, cookie = its inode; the caller adds
 * the addresses, then calls as_pend_send. */
struct as_msg *as_pend_msg(struct as_pending *p, uint16_t type, uint32_t flags);
/* Sends p->msg; while the daemon is away the entry waits (queued) for a new session. */
void as_pend_send(struct as_gen *g, struct as_pending *p);
/* The daemon's answer to an operation: fast_fd is the descriptor it carried (-1: none), taken (set to -1) when used. */
typedef void (*as_reply_fn)(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fast_fd);
void as_daemon_on_reply(enum as_op op, as_reply_fn fn);
/* Batches (AS_DECIDED, AS_CLAIMED) go AS_FLUSH_MS after their first record: arms the one-shot timer. */
void as_arm_flush(struct as_gen *g);
/* Reads and handles what the daemon sent (non-blocking). */
void as_on_daemon(struct as_gen *g);
/* The hot wait (gen_hot.c). */
int as_hot_init(struct as_gen *g);
void as_hot_free(struct as_gen *g);
int as_hot_ok(struct as_gen *g);
int as_hot_recv(struct as_gen *g);
/* The timer: reconnects while the daemon is away, expires requests that waited too long. */
void as_daemon_tick(struct as_gen *g);

/* ---- gen_sock.c: the program's socket and address arguments ------------------------------------------------- */
int as_get_socket(struct as_gen *g, pid_t pid, int fd, int *family, int *type, uint64_t *ino);
int as_take_inet_socket(struct as_gen *g, struct seccomp_notif *req, int *family, int *type, uint64_t *ino);
int as_read_inet_addr(pid_t pid, uint64_t uaddr, int64_t ulen, int family, int allow_unspec,
                      struct sockaddr_storage *out, uint32_t *out_len);
int as_take_addr(struct as_gen *g, struct seccomp_notif *req, int s, int family, int allow_unspec,
                 struct sockaddr_storage *a, uint32_t *alen);

/* ---- gen_names.c: socket(), names, options ------------------------------------------------------------------- */
void as_h_socket(struct as_gen *g, struct seccomp_notif *req);
void as_h_getname(struct as_gen *g, struct seccomp_notif *req, int peer);
void as_h_sockopt(struct as_gen *g, struct seccomp_notif *req, int set);
int as_virtual_name(struct as_gen *g, int sock, int peer, struct sockaddr_storage *out);
int as_wildcard_to_identity(const struct as_gen *g, struct as_ep *local);

/* ---- gen_bind.c ---------------------------------------------------------------------------------------------- */
void as_h_bind(struct as_gen *g, struct seccomp_notif *req);
void as_h_listen(struct as_gen *g, struct seccomp_notif *req);
void as_on_bind_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m);
void as_on_listen_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m);

/* ---- gen_connect.c ------------------------------------------------------------------------------------------- */
void as_h_connect(struct as_gen *g, struct seccomp_notif *req);
void as_on_connect_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m);
/* The socket (or the fast path's placeholder) became writable. */
void as_on_connect_ready(struct as_gen *g, struct as_pending *p);
/* The instance refused: asks the daemon for another (AS_F_RETRY). */
void as_connect_retry(struct as_gen *g, struct as_pending *p);

/* ---- gen_accept.c -------------------------------------------------------------------------------------------- */
void as_h_accept(struct as_gen *g, struct seccomp_notif *req);
void as_accept_next(struct as_gen *g, struct as_pending *p);
/* fast_fd: the descriptor the reply carried (-1: none); taken (set to -1) when used. */
void as_on_accept_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fast_fd);

/* ---- gen_udp_send.c ------------------------------------------------------------------------------------------ */
void as_h_send(struct as_gen *g, struct seccomp_notif *req);
void as_on_send_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m);
void as_udp_free(struct as_udp *u);

/* ---- gen_fast.c: the same-host fast path (design: fastpath.h) ------------------------------------------------- */
int as_may_swap(struct as_gen *g, struct as_pending *p);
void as_inherit_options(int from, int to, struct as_fsock *e);
int as_fast_register(struct as_gen *g, int s, struct as_fsock *e);
/* Connects a new placeholder to dst and swaps the program's socket for a Unix socket once it is connected. */
void as_start_fast(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *dst, int dlen);
/* Connects the placeholder already in u.connect.conn (the offer's) to dst, then the same. */
void as_fast_connect(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *dst, int dlen);
/* The placeholder became writable. */
void as_fast_ready(struct as_gen *g, struct as_pending *p);

/* ---- gen_offer.c: speculative offers, pushed offers, claims -------------------------------------------------- */
void as_spec_prepare(struct as_gen *g, struct as_pending *p);
void as_spec_drop(struct as_pending *p);
/* Adds p's speculative offer to its AS_CONNECT m (flags, addr2) and fills fds; returns how many (0: none). */
int as_spec_attach(struct as_pending *p, struct as_msg *m, int fds[2]);
/* The offer went with the request: the daemon has the server's end. */
void as_spec_sent(struct as_pending *p);
void as_hint_set(struct as_gen *g, const struct as_pending *p, int remote);
/* An AS_OFFER: keeps *fast_fd (taken, set to -1). */
void as_offer_store(struct as_gen *g, const struct as_msg *m, int *fast_fd);
struct as_offer *as_offer_find(struct as_gen *g, const void *sa, uint32_t len);
/* Frees the offer; returns its fd (the caller owns it now). */
int as_offer_take(struct as_gen *g, struct as_offer *o);
void as_offer_expire(struct as_gen *g);
void as_claim_note(struct as_gen *g, const struct as_ep *peer);
/* An outside client's connection answered here (how: AS_CLAIM_STEERED or AS_CLAIM_RELAYED): the daemon tracks it. */
void as_claim_outside(struct as_gen *g, const struct as_ep *peer, unsigned how, const struct as_ep *client, uint16_t local_port);
void as_claims_flush(struct as_gen *g);
/* Keeps an offer (takes fd): from the daemon (AS_OFFER) or from a client's generator (offer_chan.h). */
void as_offer_put(struct as_gen *g, const struct as_ep *peer, const struct as_ep *virt, int fd);

/* ---- gen_decide.c: connects decided from the decision table (dtab.h) ---------------------------------------------- */
enum { AS_LOCAL_ASK = 0, AS_LOCAL_ANSWER, AS_LOCAL_REFUSED };
/* Decides stream connect p from the table: AS_LOCAL_ASK (ask the daemon), AS_LOCAL_REFUSED (answer ECONNREFUSED) or
 * AS_LOCAL_ANSWER (carry on from *out, as from the daemon's answer: as_on_connect_reply). */
int as_connect_local(struct as_gen *g, struct as_pending *p, struct as_msg *out);
/* The instance in u.connect.real refused a connect decided here: another one, answered as as_connect_local does
 * (AS_LOCAL_ASK: p->msg is ready for the daemon). */
int as_connect_local_retry(struct as_gen *g, struct as_pending *p, struct as_msg *out);
/* After the connect() of a locally decided same-host TCP connect: who we are goes into the host's identity table and
 * the daemon gets an AS_DECIDED record. 0: not done (report to the daemon as before). */
int as_report_same_host(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *loc, socklen_t l);
/* An accepted connection from a same-host client whose generator wrote who it is: 1 and *out, the answer the daemon
 * would have given (as_on_accept_reply), else 0. */
int as_accept_known(struct as_gen *g, const struct as_ep *peer, const struct as_ep *local, struct as_msg *out);
/* The answer to an accept whose peer the program sees as `who` (as the daemon's reply would carry it): 0, or -EINVAL. */
int as_accept_answer(struct as_msg *out, const struct as_ep *who);
/* ---- gen_preamble.c: outside clients relayed by a gateway (preamble.h) ------------------------------------------- */
/* At accept, before asking the daemon: a connection whose peer is a live gateway and that starts with a valid
 * preamble. 1: answered (*out as as_on_accept_reply takes it; the preamble is out of the stream); 0: not one (ask the
 * daemon: an app's connection from a gateway's host, or the preamble is not here yet); -EPERM: a preamble that does
 * not check (drop the connection). */
int as_accept_preamble(struct as_gen *g, struct as_pending *p, const struct as_ep *peer, const struct as_ep *local, struct as_msg *out);
/* The daemon answered that p's connection may be a gateway's relayed one (AS_F_RELAYED: its socket on the gateway's
 * host was made by no generator): its preamble must check as at as_accept_preamble, names the outside client
 * (*client) and is taken out of the stream before the program gets the connection. 1: done; 0: not here yet (p waits
 * for it, OP_ACCEPT_PREAMBLE, and is answered later); <0: the connection is dropped by the caller. */
int as_preamble_take(struct as_gen *g, struct as_pending *p, const struct as_msg *reply, struct as_ep *client);
/* OP_ACCEPT_PREAMBLE (gen_accept.c): its connection became readable, or (expired) its time ran out. */
void as_preamble_ready(struct as_gen *g, struct as_pending *p, int expired);
/* Drops the connection of accept p (nobody vouches for it): a non-blocking accept answers EAGAIN, a blocking one
 * waits for the next connection (gen_accept.c). */
void as_accept_drop(struct as_gen *g, struct as_pending *p);

/* Takes the offers waiting on our offer socket. */
void as_ochan_drain(struct as_gen *g);
void as_batches_flush(struct as_gen *g);

/* ---- gen_ingress.c: outside clients' accepts decided from the decision table (dtab.h, ingress) -------------------- */
/* An accepted connection at local end `local` from `peer`: when local->port is a host port steered to this app
 * (sk_lookup) and peer is not of this host, 1 and *out, the answer the daemon would have given (as_on_accept_reply:
 * the program's peer is the outside client itself); the daemon hears of it in the AS_CLAIMED batch. Else 0: ask the
 * daemon. */
int as_accept_steered(struct as_gen *g, const struct as_ep *peer, const struct as_ep *local, struct as_msg *out);

#endif
