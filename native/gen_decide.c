/* Connects decided in the generator, from the decision table the daemon publishes (dtab.h), and what goes with them:
 * the same-host fast path handed straight to the server's generator (offer_chan.h), the host's identity table for
 * same-host TCP (dtab.h as_ident), and the reports the daemon gets afterwards, in batches (AS_DECIDED, AS_CLAIMED).
 *
 * A TCP connect to a vip (or to loopback: the app's own vip) is decided from the table: the service, its policy, an
 * instance by the service's strategy. A same-host instance gets the fast path, its pair's server end sent to the
 * server's generator before the placeholder connects; anything else is a TCP connect, carried on exactly as if the
 * daemon had answered (as_on_connect_reply). The daemon hears of it afterwards: an AS_DECIDED record (fast path,
 * same-host TCP, refusals) or AS_CONNECTED (another host's server needs it to identify the client). Whatever the table
 * cannot decide (not a vip, no table, an app it does not list yet) goes to the daemon as before. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gen_internal.h"
#include "offer_chan.h"
#include "scm_rights.h"

/* ---- batches to the daemon --------------------------------------------------------------------------------------- */

static void decided_flush(struct as_gen *g) {
  if (!g->ndecided) return;
  if (g->daemon_fd < 0) { /* the daemon is away: what it would have counted is lost with it, the connections are not */
    g->ndecided = 0;
    return;
  }
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_DECIDED;
  m.payload_len = g->ndecided * (uint32_t)sizeof(struct as_decided);
  int r = as_daemon_send_nowait(g, &m, g->decided);
  if (r == 0 || r == -ENETDOWN) g->ndecided = 0;
  else as_arm_flush(g); /* its socket is full (a stopped daemon): later */
}

void as_batches_flush(struct as_gen *g) {
  decided_flush(g);
  as_claims_flush(g);
}

static void decided_note(struct as_gen *g, struct as_pending *p, int kind, const struct as_ep *local, const struct as_ep *real,
                         uint64_t inode, const char *server_app) {
  if (g->ndecided == AS_DECIDED_MAX) decided_flush(g);
  if (g->ndecided == AS_DECIDED_MAX) return; /* the daemon's socket is full: a record less, not a connection less */
  struct as_decided d;
  memset(&d, 0, sizeof(d));
  d.kind = (uint8_t)kind;
  d.retried = (uint8_t)p->u.connect.ntried;
  d.pid = (uint32_t)p->pid;
  d.inode = inode;
  struct as_ep virt;
  if (as_ep_from_sockaddr(p->u.connect.dst, p->u.connect.dst_len, &virt) == 0) {
    memcpy(d.vip, virt.ip, 16);
    d.vport = virt.port;
  }
  if (local) {
    memcpy(d.lip, local->ip, 16);
    d.lport = local->port;
  }
  if (real) {
    memcpy(d.rip, real->ip, 16);
    d.rport = real->port;
  }
  if (server_app) snprintf(d.server_app, sizeof(d.server_app), "%s", server_app);
  memcpy(g->decided + g->ndecided++ * sizeof(d), &d, sizeof(d));
  as_arm_flush(g);
}

/* ---- the fast path, straight to the server's generator ------------------------------------------------------------- */

/* The pair, a placeholder bound (so its endpoint is known), the offer sent, then (as_on_connect_reply with AS_F_OFFER)
 * the placeholder connects, as for an offer the daemon took. Returns 0, or -errno with nothing left behind (the
 * caller connects over TCP instead). */
static int fast_direct(struct as_gen *g, struct as_pending *p, const struct as_dt_pick *pick) {
  if (g->ochan < 0) return -ENOTCONN;
  struct as_p_connect *c = &p->u.connect;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  int ph = socket(p->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_storage any;
  memset(&any, 0, sizeof(any));
  any.ss_family = (sa_family_t)p->family;
  socklen_t al = p->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0}; /* no TIME_WAIT for placeholders (gen_fast.c) */
  struct sockaddr_storage loc;
  socklen_t ll = sizeof(loc);
  struct as_ep lep;
  int r = 0;
  if (ph < 0 || setsockopt(ph, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) < 0 || bind(ph, (struct sockaddr *)&any, al) < 0 ||
      getsockname(ph, (struct sockaddr *)&loc, &ll) < 0)
    r = -errno;
  if (!r) r = as_ep_from_sockaddr(&loc, ll, &lep);
  static const char sentinel = 0; /* proto.h AS_F_SENTINEL: a lost server end resets the client */
  int sent_byte = !r && send(sv[0], &sentinel, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
  struct as_ochan_msg om;
  memset(&om, 0, sizeof(om));
  om.magic = AS_OCHAN_MAGIC;
  om.flags = sent_byte ? AS_OCHAN_SENTINEL : 0;
  om.peer = pick->real;
  om.peer.port = lep.port;
  om.virt = g->identity;
  om.virt.port = lep.port;
  snprintf(om.client_app, sizeof(om.client_app), "%s", g->dtab.app_id);
  struct stat st;
  uint64_t inode = fstat(sv[1], &st) == 0 ? (uint64_t)st.st_ino : 0;
  if (!r) r = as_ochan_send(g->ochan, pick->server_sock, &om, sv[1]);
  close(sv[1]); /* the server's generator has its own copy now (or nobody has) */
  if (r < 0) {
    if (ph >= 0) close(ph);
    close(sv[0]);
    return r;
  }
  c->conn = ph; /* ownership moves to the entry */
  c->spec_fd = sv[0];
  c->spec_sent = 1;
  decided_note(g, p, AS_DK_FAST, &om.peer, &pick->real, inode, pick->server_app);
  return 0;
}

/* ---- deciding ------------------------------------------------------------------------------------------------------- */

/* The answer the daemon would have given for the table's pick (the caller carries the connect on from it). */
static int connect_picked(struct as_gen *g, struct as_pending *p, const struct as_dt_pick *pick, struct as_msg *out) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&pick->real, AF_INET6, &ss);
  if (n > 0) {
    m.addr_len = (uint32_t)n;
    memcpy(m.addr, &ss, (size_t)n);
  }
  n = as_ep_to_sockaddr(&pick->virt, AF_INET6, &ss);
  if (n > 0) {
    m.addr2_len = (uint32_t)n;
    memcpy(m.addr2, &ss, (size_t)n);
  }
  if (pick->alternatives) m.flags |= AS_F_ALTERNATIVES;
  if (pick->fast && p->u.connect.ntried == 0 && as_may_swap(g, p) && fast_direct(g, p, pick) == 0) m.flags |= AS_F_FASTPATH | AS_F_OFFER;
  *out = m;
  return AS_LOCAL_ANSWER;
}

static int refuse(struct as_gen *g, struct as_pending *p, int verdict) {
  int kind = verdict == AS_DT_NO_SERVICE ? AS_DK_NO_SERVICE : verdict == AS_DT_DENIED ? AS_DK_DENIED : AS_DK_ALL_TRIED;
  decided_note(g, p, kind, NULL, NULL, 0, NULL);
  return AS_LOCAL_REFUSED;
}

int as_connect_local(struct as_gen *g, struct as_pending *p, struct as_msg *out) {
  struct as_p_connect *c = &p->u.connect;
  struct as_ep dst;
  if (!g->dtab.map || p->type != SOCK_STREAM || as_ep_from_sockaddr(c->dst, c->dst_len, &dst) < 0) return 0;
  struct as_dt_pick pick;
  int v = as_dtab_decide(&g->dtab, &dst, p->family, c->tried, c->ntried, &pick);
  if (v == AS_DT_ASK) return AS_LOCAL_ASK;
  c->local = 1;
  g->stats_local_decided++;
  if (v != AS_DT_PICKED) return refuse(g, p, v);
  return connect_picked(g, p, &pick, out);
}

int as_connect_local_retry(struct as_gen *g, struct as_pending *p, struct as_msg *out) {
  struct as_p_connect *c = &p->u.connect;
  if (!c->local) return AS_LOCAL_ASK;
  struct as_ep refused, dst;
  if (as_ep_from_sockaddr(c->real, c->real_len, &refused) == 0 && c->ntried < AS_TRIED_MAX) c->tried[c->ntried++] = refused;
  struct as_dt_pick pick;
  int v = as_ep_from_sockaddr(c->dst, c->dst_len, &dst) < 0 ? AS_DT_ASK : as_dtab_decide(&g->dtab, &dst, p->family, c->tried, c->ntried, &pick);
  if (v == AS_DT_ASK) { /* the table went away meanwhile: the daemon decides the rest */
    c->local = 0;
    struct as_msg *m = as_pend_msg(p, AS_CONNECT, 0);
    memcpy(m->addr, c->dst, c->dst_len);
    m->addr_len = c->dst_len;
    return AS_LOCAL_ASK;
  }
  if (v != AS_DT_PICKED) return refuse(g, p, v);
  return connect_picked(g, p, &pick, out);
}

int as_report_same_host(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *loc, socklen_t l) {
  struct as_ep real, lep;
  if (!p->u.connect.local || !g->dtab.shm || !g->has_identity ||
      as_ep_from_sockaddr(p->u.connect.real, p->u.connect.real_len, &real) < 0 || as_ep_from_sockaddr(loc, l, &lep) < 0 ||
      !as_dtab_is_node(&g->dtab, real.ip))
    return 0;
  if (as_ident_put(g->dtab.shm, &lep, &real, g->identity.ip, g->dtab.app_id) < 0) return 0;
  decided_note(g, p, AS_DK_TCP, &lep, &real, 0, NULL);
  return 1;
}

/* ---- the server's side ----------------------------------------------------------------------------------------------- */

/* Keeps an offer (takes fd): from the daemon (AS_OFFER) or straight from a client's generator. */
void as_ochan_drain(struct as_gen *g) {
  struct as_ochan_msg om;
  int fd;
  while (g->ochan >= 0 && as_ochan_recv(g->ochan, &om, &fd) == 1) {
    char b;
    /* the sentinel byte in front of the stream is read here, before the program can see it; an end without it (the
     * client's generator died half-way) is dropped */
    if ((om.flags & AS_OCHAN_SENTINEL) && recv(fd, &b, 1, MSG_DONTWAIT) != 1) {
      close(fd);
      continue;
    }
    as_offer_put(g, &om.peer, &om.virt, fd);
  }
}

/* The connection's peer is known from the host's identity table: a same-host client (the peer is this node: its entry
 * is written right after its connect, so it is waited for a moment). The answer is what the daemon's would be: the
 * app's vip with the connection's port. The daemon hears of it in the AS_CLAIMED batch. */
#define IDENT_WAIT_US 200
int as_accept_known(struct as_gen *g, const struct as_ep *peer, const struct as_ep *local, struct as_msg *out) {
  /* entries name connections from this node only (a same-host client's generator writes them) */
  if (!g->dtab.shm || !as_dtab_is_node(&g->dtab, peer->ip)) return 0;
  struct as_ident_found id;
  uint64_t start = 0;
  for (;;) {
    if (as_ident_get(g->dtab.shm, peer, local, &id, 1)) break;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t us = (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
    if (!start) start = us;
    else if (us - start > IDENT_WAIT_US) return 0;
    sched_yield();
  }
  struct as_ep virt;
  memcpy(virt.ip, id.identity, 16);
  virt.port = peer->port;
  if (as_accept_answer(out, &virt) < 0) return 0;
  as_claim_note(g, peer); /* the daemon marks the connection accepted */
  return 1;
}
