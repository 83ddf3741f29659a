/* accept() and accept4() for the program: the generator accepts on its duplicate of the listener, asks the daemon who
 * each peer is (AS_ACCEPT), drops connections nobody vouches for, and hands the rest to the program with their
 * virtual peer; fast-path connections (AS_OFFER, AS_F_FASTPATH) arrive as Unix sockets. accept(2),
 * seccomp_unotify(2) (SECCOMP_ADDFD_FLAG_SEND). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gen_internal.h"

/* Hands the accepted connection a->conn to the program: its peer address `out` (n bytes) where it asked for one,
 * the flags it asked for, and the fd itself (ADDFD_FLAG_SEND answers the accept). */
static void accept_deliver(struct as_gen *g, struct as_pending *p, const struct sockaddr_storage *out, int n) {
  struct as_p_accept *a = &p->u.accept;
  if (a->uaddr) { /* as move_addr_to_user(): EFAULT/EINVAL lose the connection */
    if (as_notif_id_valid(g->notif_fd, p->id) < 0) { /* the caller is gone (its pid may be another's now) */
      as_pend_done(g, p);
      return;
    }
    int32_t ulen;
    int r = as_mem_read(p->pid, a->ulenp, &ulen, sizeof(ulen));
    if (r == 0 && ulen < 0) r = -EINVAL;
    int32_t full = n;
    if (r == 0) r = as_mem_write2(p->pid, a->uaddr, out, (size_t)(n < ulen ? n : ulen), a->ulenp, &full, sizeof(full));
    if (r < 0) {
      as_pend_finish(g, p, r == -ESRCH ? -EFAULT : r);
      return;
    }
  }
  if (!a->flags_set) {
    int fl = fcntl(a->conn, F_GETFL);
    if (fl >= 0) fcntl(a->conn, F_SETFL, (a->aflags & SOCK_NONBLOCK) ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
  }
  int r = as_notif_addfd_send(g->notif_fd, p->id, a->conn, (a->aflags & SOCK_CLOEXEC) != 0);
  if (r != -ENOENT) as_tstats_end(&g->tstats, &p->mark, r);
  if (r < 0 && r != -ENOENT) as_reply(g, p->id, r);
  as_pend_done(g, p);
}

/* The daemon says the accepted placeholder stands for a fast-path connection: the program gets the Unix socket
 * (fast_fd, taken over) instead, showing the endpoints the TCP connection would have. */
static int accept_fast(struct as_gen *g, struct as_pending *p, const struct as_ep *peer_virt, int *fast_fd) {
  struct as_p_accept *a = &p->u.accept;
  struct as_fsock e;
  memset(&e, 0, sizeof(e));
  e.family = p->family;
  e.peer = *peer_virt;
  struct sockaddr_storage ss;
  int n = as_virtual_name(g, a->conn, 0, &ss);
  if (n < 0 || as_ep_from_sockaddr(&ss, (uint32_t)n, &e.local) < 0) return -EINVAL;
  /* a connection (virtual_name cannot tell by getpeername here: the client's placeholder may already be reset) */
  as_wildcard_to_identity(g, &e.local);
  as_inherit_options(a->conn, *fast_fd, &e);
  int r = as_fast_register(g, *fast_fd, &e);
  if (r < 0) return r;
  static const struct linger reset = {.l_onoff = 1, .l_linger = 0}; /* the accepted placeholder: no TIME_WAIT either */
  setsockopt(a->conn, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  close(a->conn);
  a->conn = *fast_fd;
  a->flags_set = 0;
  *fast_fd = -1;
  g->stats_fast++;
  return 0;
}

int as_accept_answer(struct as_msg *out, const struct as_ep *who) {
  memset(out, 0, sizeof(*out));
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(who, AF_INET6, &ss);
  if (n <= 0) return -EINVAL;
  out->addr_len = (uint32_t)n;
  memcpy(out->addr, &ss, (size_t)n);
  return 0;
}

void as_accept_drop(struct as_gen *g, struct as_pending *p) {
  struct as_p_accept *a = &p->u.accept;
  as_pend_unwatch(g, p); /* a connection waited on for its preamble: the wait for the next one watches the listener */
  if (a->conn >= 0) close(a->conn);
  a->conn = -1;
  p->op = OP_ACCEPT_ASK;
  /* A non-blocking accept answers EAGAIN now, as if the connection had never come: the program asks again when the
   * listener is readable. Taking the next connection instead would keep this accept (and the thread in it) as long
   * as unvetted connections keep arriving faster than the daemon refuses them: a flood would starve the program. A
   * blocking accept waits for the next connection, as the kernel's does. */
  int fl = fcntl(p->sock, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) {
    as_pend_finish(g, p, -EAGAIN);
    return;
  }
  as_accept_next(g, p);
}

/* The answer for an accept: m from the daemon, or found here. Called at once on the notification just received (the
 * caller's liveness is checked where it matters: before its memory is written, and by ADDFD itself). */
static void accept_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fast_fd) {
  struct as_p_accept *a = &p->u.accept;
  if (m->result < 0) { /* nobody vouches for this peer: drop it */
    as_accept_drop(g, p);
    return;
  }
  struct as_msg named;
  if ((m->flags & AS_F_RELAYED) && !(m->flags & (AS_F_OFFERED | AS_F_FASTPATH))) {
    struct as_ep client;
    int r = as_preamble_take(g, p, m, &client); /* the relay's preamble comes out of the stream first */
    if (r == 0) return;                         /* not here yet: answered when it is */
    if (r < 0 || as_accept_answer(&named, &client) < 0) {
      as_accept_drop(g, p);
      return;
    }
    m = &named; /* the program sees the client the preamble names */
  }
  if (m->flags & AS_F_OFFERED) { /* its socket came in an AS_OFFER (already read: it preceded this reply) */
    struct as_offer *o = as_offer_find(g, a->peer, a->peer_len);
    if (!o && g->ochan >= 0) { /* from another generator: it may still be unread on our offer socket */
      as_ochan_drain(g);
      o = as_offer_find(g, a->peer, a->peer_len);
    }
    if (!o) {
      close(a->conn);
      a->conn = -1;
      as_accept_next(g, p);
      return;
    }
    struct as_msg mm = *m;
    mm.flags = (mm.flags & ~AS_F_OFFERED) | AS_F_FASTPATH;
    int fd = as_offer_take(g, o);
    accept_reply(g, p, &mm, &fd);
    if (fd >= 0) close(fd);
    return;
  }
  struct as_ep real, virt;
  struct sockaddr_storage out;
  int n = -EINVAL;
  if (as_ep_from_sockaddr(a->peer, a->peer_len, &real) == 0 && as_ep_from_sockaddr(m->addr, m->addr_len, &virt) == 0) {
    if (m->flags & AS_F_FASTPATH) {
      /* no fd (it did not fit: our descriptor limit), or cannot keep up the appearance: drop it, wait for the next */
      if (*fast_fd < 0 || accept_fast(g, p, &virt, fast_fd) < 0) {
        close(a->conn);
        a->conn = -1;
        as_accept_next(g, p);
        return;
      }
    } else {
      as_vmap_put(g->vmap, &real, &virt);
    }
    n = as_ep_to_sockaddr(&virt, p->family, &out);
  }
  if (n < 0) {
    memcpy(&out, a->peer, a->peer_len);
    n = (int)a->peer_len;
  }
  accept_deliver(g, p, &out, n);
}

void as_on_accept_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m, int *fast_fd) {
  if (as_notif_id_valid(g->notif_fd, p->id) < 0) { /* the caller is gone: the connection goes with it */
    as_pend_done(g, p);
    return;
  }
  accept_reply(g, p, m, fast_fd);
}

/* The accepted connection is a placeholder whose offer is here: answer at once, and tell the daemon (one way) that it
 * may let go of its copy of the placeholder. */
static void accept_offered(struct as_gen *g, struct as_pending *p, struct as_offer *o) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&o->virt, AF_INET6, &ss);
  m.flags = AS_F_FASTPATH;
  m.addr_len = n > 0 ? (uint32_t)n : 0;
  if (n > 0) memcpy(m.addr, &ss, (size_t)n);
  int fd = as_offer_take(g, o);
  as_claim_note(g, &o->peer);
  as_on_accept_reply(g, p, &m, &fd); /* checked: a fast-path socket is registered before it is handed over */
  if (fd >= 0) close(fd);
}

/* The generator accepts on its duplicate of the listener (always non-blocking, so it never stalls), asks the daemon
 * who the peer is, drops connections nobody vouches for (they never reach the program), and installs the rest. */
void as_accept_next(struct as_gen *g, struct as_pending *p) {
  struct as_p_accept *a = &p->u.accept;
  for (;;) {
    struct sockaddr_storage peer;
    socklen_t pl = sizeof(peer);
    /* Our duplicate shares the program's file status flags: on a blocking listener accept4() would block the whole
     * generator. Make this one call non-blocking (the program's threads on this socket are all parked in the trap). */
    int fl = fcntl(p->sock, F_GETFL);
    int blocking = fl >= 0 && !(fl & O_NONBLOCK);
    if (blocking) fcntl(p->sock, F_SETFL, fl | O_NONBLOCK);
    /* the connection gets the file status flags the program asked for now (the generator's own reads of it, the
     * preamble's, never block: MSG_DONTWAIT) */
    int c = accept4(p->sock, (struct sockaddr *)&peer, &pl, (a->aflags & SOCK_NONBLOCK) | SOCK_CLOEXEC);
    int e = errno;
    if (blocking) fcntl(p->sock, F_SETFL, fl);
    if (c >= 0) {
      a->flags_set = 1;
      p->family = pl >= sizeof(sa_family_t) ? peer.ss_family : AF_UNSPEC;
    }
    if (c >= 0 && !as_is_inet(p->family)) { /* a Unix socket: nobody to ask, nothing to translate */
      as_pend_unwatch(g, p);
      a->conn = c;
      accept_deliver(g, p, &peer, (int)pl);
      return;
    }
    if (c >= 0) {
      as_pend_unwatch(g, p);
      struct sockaddr_storage loc;
      socklen_t ll = sizeof(loc);
      if (pl > AS_ADDR_MAX || getsockname(c, (struct sockaddr *)&loc, &ll) < 0 || ll > AS_ADDR_MAX) {
        close(c);
        continue;
      }
      a->conn = c;
      memcpy(a->peer, &peer, pl);
      a->peer_len = pl;
      memcpy(a->local, &loc, ll);
      a->local_len = ll;
      p->op = OP_ACCEPT_ASK;
      struct as_ep rpeer, rlocal; /* the connection's real endpoints, for the answers found here */
      int eps = as_ep_from_sockaddr(a->peer, a->peer_len, &rpeer) == 0 && as_ep_from_sockaddr(a->local, a->local_len, &rlocal) == 0;
      /* Fast-path placeholders come from this host's addresses: a peer the published table does not list as one
       * (an outside client, another host's app) has no offer to wait for, and the two drains below would only fail.
       * One from an address added since the table was published still gets its offer: the daemon's answer says
       * OFFERED and accept_reply looks again. */
      if (!eps || !g->dtab.map || as_dtab_is_local(&g->dtab, rpeer.ip)) {
        struct as_offer *o = as_offer_find(g, &peer, pl);
        if (!o && g->ochan >= 0) { /* its offer may be waiting unread on our offer socket (gen_decide.c) */
          as_ochan_drain(g);
          o = as_offer_find(g, &peer, pl);
        }
        if (!o && g->daemon_fd >= 0) { /* its AS_OFFER may be waiting unread on the daemon socket */
          as_on_daemon(g);
          o = as_offer_find(g, &peer, pl);
        }
        if (o) {
          accept_offered(g, p, o);
          return;
        }
      }
      struct as_msg known;
      /* an outside client steered here by sk_lookup (gen_ingress.c), or relayed by a gateway (gen_preamble.c) */
      int pre = 0;
      if (eps) pre = as_accept_steered(g, &rpeer, &rlocal, &known) ? 1 : as_accept_preamble(g, p, &rpeer, &rlocal, &known);
      if (pre < 0) {
        close(c);
        a->conn = -1;
        continue;
      }
      /* or in the host's identity table: a same-host client (gen_decide.c) */
      if (pre > 0 || (eps && as_accept_known(g, &rpeer, &rlocal, &known))) {
        int none = -1;
        accept_reply(g, p, &known, &none);
        return;
      }
      struct as_msg *m = as_pend_msg(p, AS_ACCEPT, 0);
      memcpy(m->addr, a->peer, a->peer_len);
      m->addr_len = a->peer_len;
      memcpy(m->addr2, a->local, a->local_len);
      m->addr2_len = a->local_len;
      as_pend_send(g, p);
      return;
    }
    if (e == EINTR || e == ECONNABORTED) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if (!blocking) {
        as_pend_finish(g, p, -EAGAIN);
        return;
      }
      p->op = OP_ACCEPT_WAIT; /* a blocking accept: wait for the next connection without blocking anyone else */
      if (p->watch_fd < 0) {
        int r = as_pend_watch(g, p, p->sock, EPOLLIN);
        if (r < 0) as_pend_finish(g, p, r);
      }
      return;
    }
    as_pend_finish(g, p, -e);
    return;
  }
}

void as_h_accept(struct as_gen *g, struct seccomp_notif *req) {
  int aflags = req->data.nr == __NR_accept4 ? (int)req->data.args[3] : 0;
  int badflags = (aflags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != 0;
  if (badflags) { /* __sys_accept4: EBADF, then the flags (EINVAL), then ENOTSOCK and the socket's own checks */
    int bad = as_task_getfd(&g->pidfds, (pid_t)req->pid, (int)req->data.args[0]);
    if (bad >= 0) close(bad);
    if (bad != -ESRCH) as_reply(g, req->id, bad == -EBADF ? -EBADF : -EINVAL);
    return;
  }
  /* Every accept is made here on our duplicate, a Unix socket's too: answered with CONTINUE, the kernel would re-run
   * it on whatever the fd number is by then, e.g. an inet listener dup2()ed there, handing the program a connection
   * nobody vouched for (no cgroup hook covers accept).
   * The socket is not looked at first: accept4() on our duplicate answers what the kernel would for one that is not a
   * socket (ENOTSOCK), not listening (EINVAL) or of a type without accept (EOPNOTSUPP), and the connection's peer
   * address tells its family (as_accept_next). */
  int s = as_task_getfd(&g->pidfds, (pid_t)req->pid, (int)req->data.args[0]);
  if (s < 0) {
    if (s != -ESRCH) as_reply(g, req->id, s);
    return;
  }
  struct as_pending *p = as_pend_open(g, req, OP_ACCEPT_WAIT, s);
  if (!p) return;
  struct as_p_accept *a = &p->u.accept; /* p->family is the accepted peer's (as_accept_next) */
  a->aflags = aflags;
  a->uaddr = req->data.args[1];
  a->ulenp = req->data.args[2];
  as_accept_next(g, p);
}

/* OP_ACCEPT_PREAMBLE (gen_preamble.c): the relayed connection became readable, or (expired) its time ran out. */
void as_preamble_ready(struct as_gen *g, struct as_pending *p, int expired) {
  if (as_notif_id_valid(g->notif_fd, p->id) < 0) { /* the caller is gone: the connection goes with it */
    as_pend_done(g, p);
    return;
  }
  struct as_msg m = p->msg;
  if (expired) {
    as_pend_unwatch(g, p);
    g->stats_preamble_bad++;
    as_accept_drop(g, p);
    return;
  }
  int none = -1;
  as_on_accept_reply(g, p, &m, &none); /* takes the preamble now (or keeps waiting) and answers */
}
