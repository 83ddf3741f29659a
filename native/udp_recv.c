/* Virtual identities for datagrams: recvfrom/recvmsg/recvmmsg on a program's UDP sockets, answered by the generator
 * with the sender's virtual identity as the source; and the reports a datagram socket makes before it first sends.
 * seccomp_unotify(2), recvmsg(2), recvmmsg(2), udp(7), proc(5) (/proc/PID/status), signal(7) ("Interruption of system
 * calls and library functions by signal handlers").
 *
 * Which calls are emulated: the filter traps recvfrom only with a source buffer, and every recvmsg/recvmmsg. Here,
 * anything that is not an inet datagram socket, or that does not ask for the source (recvmsg with msg_name NULL), or
 * MSG_ERRQUEUE/MSG_OOB, is answered CONTINUE: the kernel's answer differs from ours only in showing a real address,
 * which is no secret in the threat model (docs/security.md) — no judgement of reach rests on it. A connected socket
 * whose peer is a real (egress) endpoint: CONTINUE too. The rest is received here:
 *
 *   1. peek (MSG_PEEK | MSG_DONTWAIT) the next datagram on our duplicate, with its source and control messages;
 *   2. name the source: a virtual endpoint the program sent to (vmap), a real endpoint it sent to directly (shown as
 *      is), else the daemon is asked once per source (AS_UDP_WHO) and the answer cached for POS_TTL_MS / NEG_TTL_MS;
 *      a source nobody vouches for is dropped, as an unidentified connection is at accept();
 *   3. check NOTIF_ID_VALID, write data, source, lengths, flags and control messages into the program's memory;
 *   4. only then consume the datagram, so that a program killed in between loses nothing (the datagram stays for
 *      the socket's other readers). A program that mixes these calls with untrapped recv()/read() on the same socket
 *      in other threads can see a datagram taken between 1 and 4 (then it got data another reader also got).
 *
 * A blocking receive with nothing to read waits in the generator's epoll, never blocking it. The program's thread
 * then waits killably only (WAIT_KILLABLE_RECV), so signals are watched here: every TICK_MS the thread's pending
 * signals are read from /proc; one it does not block is answered as the kernel would — ERESTARTSYS (the kernel runs
 * the handler, then restarts the call under SA_RESTART, else the call fails with EINTR), or EINTR when the socket has
 * SO_RCVTIMEO (sock_intr_errno). SO_RCVTIMEO expiry answers EAGAIN.
 *
 * recvmmsg: the first datagram follows the socket's blocking mode; after it, only datagrams already queued are taken
 * (as with MSG_WAITFORONE; the timeout argument is not used — the kernel itself checks it only between datagrams). */
#define _GNU_SOURCE
#include "udp_recv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "generator.h"
#include "proto.h"
#include "fnv.h"

#define ERESTARTSYS_ 512 /* include/linux/errno.h: only ever seen by the kernel's signal code, which turns it into a
                            restart or EINTR; answered only while a signal is pending for the thread */
#define DGRAM_MAX 65536
#define CTL_BUF 4096
#define IDENT_SLOTS 1024
#define SENT_SLOTS 512
#define POS_TTL_MS 2000u /* a sender's identity is trusted this long (an ephemeral port may be reused by another app) */
#define NEG_TTL_MS 1000u
#define TICK_MS 20
#define REPORTED_MAX 256 /* reports sent again to a daemon that restarted (it keeps no state of them) */

enum { ID_FREE = 0, ID_KNOWN, ID_UNKNOWN, ID_ASKING };
enum { R_ASK = -100000, R_DROPPED, R_GONE };

struct ident {
  struct as_ep real, virt;
  uint8_t state;
  uint32_t seq;
  uint64_t until_ms;
};

struct ur_wait {
  int used;
  uint64_t id;
  pid_t pid;
  int nr;
  int sock, family;
  int flags;     /* the call's flags */
  int nonblock;  /* O_NONBLOCK, MSG_DONTWAIT, or a recvmmsg past its first datagram */
  int connected; /* a connected socket whose peer is virtual: the source is always peer_virt */
  struct as_ep peer_virt;
  uint64_t a[6];
  struct msghdr mh;  /* recvmsg: the program's msghdr (its pointers point into the program) */
  struct iovec *iov; /* recvmsg: its iovec array, read once as the kernel does at entry */
  unsigned done;     /* recvmmsg: datagrams delivered so far */
  unsigned vlen;
  uint64_t deadline_ms; /* SO_RCVTIMEO, 0: none */
  int timeo;
  int in_epoll;
  uint32_t asking; /* the AS_UDP_WHO this wait waits for (0: none) */
  int ask_sent;
  struct as_ep ask_real;
  uint64_t ask_deadline;
  struct as_tmark mark;
};

/* The way back to a sender this program heard from: its identity -> its real endpoint, while the identity is trusted. */
struct back {
  struct as_ep virt, real;
  uint64_t until_ms;
};

struct as_urecv {
  struct ur_wait w[AS_URECV_WAITS];
  unsigned nwaits; /* of w[] in use: as_urecv_waiting is asked at every turn of the generator's loop */
  struct back back[IDENT_SLOTS];
  int timer_fd, timer_on;
  struct ident ident[IDENT_SLOTS];
  struct as_ep sent[SENT_SLOTS];
  uint8_t sent_used[SENT_SLOTS];
  uint32_t next_seq;
  struct as_msg *reported; /* the last REPORTED_MAX AS_UDP_FROM messages, a ring */
  unsigned nreported;
  uint8_t buf[DGRAM_MAX];
  uint8_t ctl[CTL_BUF];
};

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static unsigned ep_hash(const struct as_ep *e) {
  return as_fnv_ep(e->ip, e->port);
}

/* ---- the timer: signals, SO_RCVTIMEO, questions the daemon has not answered --------------------------------- */

static void timer_set(struct as_urecv *u, int on) {
  if (u->timer_on == on) return;
  u->timer_on = on;
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  if (on) its.it_interval.tv_nsec = its.it_value.tv_nsec = TICK_MS * 1000000L;
  timerfd_settime(u->timer_fd, 0, &its, NULL);
}

/* ---- answering ------------------------------------------------------------------------------------------------- */

static void wait_free(struct as_gen *g, struct ur_wait *w) {
  if (w->used && g->urecv && g->urecv->nwaits) g->urecv->nwaits--;
  if (w->in_epoll) epoll_ctl(g->epfd, EPOLL_CTL_DEL, w->sock, NULL);
  if (w->sock >= 0) close(w->sock);
  free(w->iov);
  memset(w, 0, sizeof(*w));
  w->sock = -1;
}

static void finish(struct as_gen *g, struct ur_wait *w, long val) {
  as_tstats_end(&g->tstats, &w->mark, val);
  int r = val < 0 ? as_notif_reply(&g->nc, w->id, 0, (int)val) : as_notif_reply(&g->nc, w->id, val, 0);
  (void)r; /* ENOENT: the task is gone, nothing to answer */
  wait_free(g, w);
}

/* ---- the daemon: who sent from there? ------------------------------------------------------------------------- */

static int ask_send(struct as_gen *g, struct ur_wait *w) {
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_UDP_WHO;
  m.seq = w->asking;
  m.pid = (uint32_t)w->pid;
  struct sockaddr_storage ss;
  int n = as_ep_to_sockaddr(&w->ask_real, AF_INET6, &ss);
  if (n < 0) return n;
  m.addr_len = (uint32_t)n;
  memcpy(m.addr, &ss, (size_t)n);
  socklen_t l = sizeof(ss);
  if (getsockname(w->sock, (struct sockaddr *)&ss, &l) == 0 && l <= AS_ADDR_MAX) {
    m.addr2_len = l;
    memcpy(m.addr2, &ss, l);
  }
  return as_gen_send_daemon(g, &m);
}

/* Sends (or joins) the question about `real`; the wait leaves the epoll set until the answer. */
static void ask(struct as_gen *g, struct ur_wait *w, const struct as_ep *real, struct ident *e) {
  struct as_urecv *u = g->urecv;
  if (w->in_epoll) {
    epoll_ctl(g->epfd, EPOLL_CTL_DEL, w->sock, NULL);
    w->in_epoll = 0;
  }
  w->ask_real = *real;
  if (e->state == ID_ASKING && as_ep_equal(&e->real, real)) { /* somebody asks already */
    w->asking = e->seq;
    w->ask_sent = 1;
    w->ask_deadline = e->until_ms;
    return;
  }
  uint32_t seq = ++u->next_seq | AS_SEQ_UDP;
  memset(e, 0, sizeof(*e));
  e->real = *real;
  e->state = ID_ASKING;
  e->seq = seq;
  e->until_ms = now_ms() + (uint64_t)(g->wait_ms > 0 ? g->wait_ms : 10000);
  w->asking = seq;
  w->ask_deadline = e->until_ms;
  w->ask_sent = ask_send(g, w) == 0;
  timer_set(u, 1);
}

static void attempt(struct as_gen *g, struct ur_wait *w);

static void settle(struct as_gen *g, uint32_t seq, const struct as_ep *real, int known, const struct as_ep *virt) {
  struct as_urecv *u = g->urecv;
  struct ident *e = &u->ident[ep_hash(real) % IDENT_SLOTS];
  memset(e, 0, sizeof(*e));
  e->real = *real;
  e->state = known ? ID_KNOWN : ID_UNKNOWN;
  if (known) e->virt = *virt;
  e->until_ms = now_ms() + (known ? POS_TTL_MS : NEG_TTL_MS);
  if (known) {
    struct back *b = &u->back[ep_hash(virt) % IDENT_SLOTS];
    b->virt = *virt;
    b->real = *real;
    b->until_ms = e->until_ms;
  }
  for (int i = 0; i < AS_URECV_WAITS; i++) {
    struct ur_wait *w = &u->w[i];
    if (!w->used || w->asking != seq) continue;
    w->asking = 0;
    attempt(g, w);
  }
}

void as_urecv_on_reply(struct as_gen *g, const struct as_msg *m) {
  struct as_urecv *u = g->urecv;
  if (!u) return;
  struct ur_wait *asker = NULL;
  for (int i = 0; i < AS_URECV_WAITS && !asker; i++)
    if (u->w[i].used && u->w[i].asking == m->seq) asker = &u->w[i];
  if (!asker) return; /* every asker is gone */
  struct as_ep real = asker->ask_real, virt;
  int known = m->result >= 0 && as_ep_from_sockaddr(m->addr, m->addr_len, &virt) == 0;
  settle(g, m->seq, &real, known, &virt);
}

/* ---- naming a datagram's source ------------------------------------------------------------------------------- */

int as_urecv_reply_path(struct as_gen *g, const struct as_ep *virt, struct as_ep *real) {
  struct as_urecv *u = g->urecv;
  if (!u) return 0;
  const struct back *b = &u->back[ep_hash(virt) % IDENT_SLOTS];
  if (!b->until_ms || !as_ep_equal(&b->virt, virt) || now_ms() >= b->until_ms) return 0;
  *real = b->real;
  return 1;
}

enum { SRC_VIRT = 1, SRC_REAL, SRC_DROP, SRC_ASK };

static int sent_has(const struct as_urecv *u, const struct as_ep *e) {
  unsigned k = ep_hash(e) % SENT_SLOTS;
  return u->sent_used[k] && as_ep_equal(&u->sent[k], e);
}

void as_urecv_sent_direct(struct as_gen *g, const struct as_ep *dst) {
  struct as_urecv *u = g->urecv;
  if (!u) return;
  unsigned k = ep_hash(dst) % SENT_SLOTS;
  u->sent[k] = *dst;
  u->sent_used[k] = 1;
}

static int classify(struct as_gen *g, struct ur_wait *w, const struct as_ep *real, struct as_ep *virt) {
  struct as_urecv *u = g->urecv;
  if (as_vmap_get(g->vmap, real, virt)) return SRC_VIRT; /* a service the program sent to by its virtual name */
  if (sent_has(u, real)) return SRC_REAL;                  /* an address it sent to directly */
  struct ident *e = &u->ident[ep_hash(real) % IDENT_SLOTS];
  if (e->state != ID_FREE && as_ep_equal(&e->real, real) && (e->state == ID_ASKING || now_ms() < e->until_ms)) {
    if (e->state == ID_KNOWN) {
      *virt = e->virt;
      return SRC_VIRT;
    }
    if (e->state == ID_UNKNOWN) return SRC_DROP;
  }
  ask(g, w, real, e);
  return SRC_ASK;
}

/* ---- one datagram ------------------------------------------------------------------------------------------------ */

/* The message a wait fills now: for recvmmsg the next entry of the vector, read as the kernel reads it (per entry). */
struct target {
  struct iovec *iov;
  size_t iovlen, total;
  uint64_t name, namelenp, ctl, ctllenp, flagsp, mlenp;
  size_t ctllen;
  struct iovec one;
  struct iovec *owned;
};

static int read_iov(pid_t pid, const struct msghdr *mh, struct iovec **out, size_t *total) {
  *out = NULL;
  *total = 0;
  if (mh->msg_iovlen > IOV_MAX) return -EMSGSIZE;
  if (!mh->msg_iovlen) return 0;
  struct iovec *iov = calloc(mh->msg_iovlen, sizeof(*iov));
  if (!iov) return -ENOMEM;
  int r = as_mem_read(pid, (uint64_t)(uintptr_t)mh->msg_iov, iov, mh->msg_iovlen * sizeof(*iov));
  if (r < 0) {
    free(iov);
    return r == -ESRCH ? -ESRCH : -EFAULT;
  }
  for (size_t i = 0; i < mh->msg_iovlen; i++) {
    if ((ssize_t)iov[i].iov_len < 0) {
      free(iov);
      return -EINVAL;
    }
    *total += iov[i].iov_len;
  }
  *out = iov;
  return 0;
}

static int target_of(struct ur_wait *w, struct target *t) {
  memset(t, 0, sizeof(*t));
  if (w->nr == __NR_recvfrom) {
    t->one.iov_base = (void *)(uintptr_t)w->a[1];
    t->one.iov_len = (size_t)w->a[2];
    t->iov = &t->one;
    t->iovlen = 1;
    t->total = t->one.iov_len;
    t->name = w->a[4];
    t->namelenp = w->a[5];
    return 0;
  }
  const struct msghdr *mh = &w->mh;
  uint64_t base = w->a[1];
  struct msghdr one;
  if (w->nr == __NR_recvmmsg) {
    base = w->a[1] + (uint64_t)w->done * sizeof(struct mmsghdr);
    int r = as_mem_read(w->pid, base, &one, sizeof(one));
    if (r < 0) return r == -ESRCH ? -ESRCH : -EFAULT;
    if ((int)one.msg_namelen < 0) return -EINVAL;
    mh = &one;
    r = read_iov(w->pid, mh, &t->owned, &t->total);
    if (r < 0) return r;
    t->iov = t->owned;
    t->mlenp = base + offsetof(struct mmsghdr, msg_len);
  } else {
    t->iov = w->iov;
    for (size_t i = 0; i < mh->msg_iovlen; i++) t->total += w->iov[i].iov_len;
  }
  t->iovlen = mh->msg_iovlen;
  t->name = (uint64_t)(uintptr_t)mh->msg_name;
  t->namelenp = t->name ? base + offsetof(struct msghdr, msg_namelen) : 0;
  t->ctl = (uint64_t)(uintptr_t)mh->msg_control;
  t->ctllen = mh->msg_controllen;
  t->ctllenp = base + offsetof(struct msghdr, msg_controllen);
  t->flagsp = base + offsetof(struct msghdr, msg_flags);
  return 0;
}

/* Writes pairs (local, remote) with as few process_vm_writev calls as IOV_MAX allows. Returns 0, -EFAULT or -ESRCH. */
static int write_all(pid_t pid, struct iovec *loc, struct iovec *rem, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t k = n - i < IOV_MAX ? n - i : IOV_MAX;
    size_t want = 0;
    for (size_t j = 0; j < k; j++) want += loc[i + j].iov_len;
    ssize_t r = want ? process_vm_writev(pid, loc + i, k, rem + i, k, 0) : 0;
    if (r < 0 && errno == ESRCH) return -ESRCH;
    if (r != (ssize_t)want) return -EFAULT;
    i += k;
  }
  return 0;
}

static void consume(int sock) {
  struct sockaddr_storage ss;
  struct iovec none = {.iov_base = NULL, .iov_len = 0};
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  mh.msg_name = &ss;
  mh.msg_namelen = sizeof(ss);
  mh.msg_iov = &none;
  mh.msg_iovlen = 1;
  /* a pending socket error (an ICMP error on a connected socket) is reported instead of the datagram once: try again,
   * or the datagram would be delivered a second time */
  for (int tries = 0; tries < 3; tries++)
    if (recvmsg(sock, &mh, MSG_DONTWAIT | MSG_TRUNC) >= 0 || (errno != EINTR && errno != ECONNREFUSED && errno != EHOSTUNREACH &&
                                                               errno != ENETUNREACH && errno != EPROTO)) break;
}

/* Delivers the next datagram to w's current message. Returns the call's value for it, -errno, or R_ASK (waiting for
 * the daemon), R_DROPPED (an unidentified datagram was dropped: try the next), R_GONE (the task is gone). */
static long deliver_one(struct as_gen *g, struct ur_wait *w) {
  struct as_urecv *u = g->urecv;
  struct target t;
  int r = target_of(w, &t);
  if (r == -ESRCH) return R_GONE;
  if (r < 0) return r;
  long ret;
  struct sockaddr_storage src;
  struct iovec our = {.iov_base = u->buf, .iov_len = sizeof(u->buf)};
  struct msghdr pk;
  memset(&pk, 0, sizeof(pk));
  pk.msg_name = &src;
  pk.msg_namelen = sizeof(src);
  pk.msg_iov = &our;
  pk.msg_iovlen = 1;
  if (t.ctl && t.ctllen) {
    pk.msg_control = u->ctl;
    pk.msg_controllen = t.ctllen < sizeof(u->ctl) ? t.ctllen : sizeof(u->ctl);
  }
  ssize_t n;
  do n = recvmsg(w->sock, &pk, MSG_PEEK | MSG_DONTWAIT | (w->flags & MSG_CMSG_CLOEXEC));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    ret = -errno;
    goto out;
  }
  struct as_ep real, virt;
  struct sockaddr_storage out;
  int outlen = -1;
  if (w->connected) {
    virt = w->peer_virt;
  } else if (as_ep_from_sockaddr(&src, pk.msg_namelen, &real) == 0) {
    int k = classify(g, w, &real, &virt);
    if (k == SRC_ASK) {
      ret = R_ASK;
      goto out;
    }
    if (k == SRC_DROP) {
      consume(w->sock);
      ret = R_DROPPED;
      goto out;
    }
    if (k == SRC_REAL) {
      memcpy(&out, &src, pk.msg_namelen);
      outlen = (int)pk.msg_namelen;
    }
  } else { /* no inet source (cannot happen on UDP): shown as the kernel gives it */
    memcpy(&out, &src, pk.msg_namelen);
    outlen = (int)pk.msg_namelen;
  }
  if (outlen < 0) outlen = as_ep_to_sockaddr(&virt, w->family, &out);
  if (outlen < 0) { /* a v6 identity for a v4 socket: not expected; the real source */
    memcpy(&out, &src, pk.msg_namelen);
    outlen = (int)pk.msg_namelen;
  }
  /* what the kernel writes back: data, the source (cut to the caller's length), its full length; for msghdrs the
   * control messages, their length and the flags; for recvmmsg the datagram's length */
  int32_t ulen = 0;
  if (t.name) {
    r = as_mem_read(w->pid, t.namelenp, &ulen, sizeof(ulen));
    if (r == -ESRCH) {
      ret = R_GONE;
      goto out;
    }
    if (r == 0 && ulen < 0) r = -EINVAL;
    if (r < 0) {
      if (!(w->flags & MSG_PEEK)) consume(w->sock); /* the kernel has taken the datagram when it finds out */
      ret = r;
      goto out;
    }
  }
  if (as_notif_id_valid(g->notif_fd, w->id) < 0) {
    ret = R_GONE;
    goto out;
  }
  size_t copy = (size_t)n < t.total ? (size_t)n : t.total;
  size_t cap = t.iovlen + 6;
  struct iovec *loc = calloc(cap, sizeof(*loc)), *rem = calloc(cap, sizeof(*rem));
  if (!loc || !rem) {
    free(loc);
    free(rem);
    ret = -ENOMEM;
    goto out;
  }
  size_t k = 0, left = copy, off = 0;
  for (size_t i = 0; i < t.iovlen && left; i++) {
    size_t l = t.iov[i].iov_len < left ? t.iov[i].iov_len : left;
    if (!l) continue;
    loc[k] = (struct iovec){.iov_base = u->buf + off, .iov_len = l};
    rem[k++] = (struct iovec){.iov_base = t.iov[i].iov_base, .iov_len = l};
    off += l;
    left -= l;
  }
  int32_t full = outlen;
  uint32_t full_msg = (uint32_t)outlen;
  if (t.name) {
    size_t nl = (size_t)(ulen < outlen ? ulen : outlen);
    if (nl) {
      loc[k] = (struct iovec){.iov_base = &out, .iov_len = nl};
      rem[k++] = (struct iovec){.iov_base = (void *)(uintptr_t)t.name, .iov_len = nl};
    }
    if (w->nr == __NR_recvfrom) loc[k] = (struct iovec){.iov_base = &full, .iov_len = sizeof(full)};
    else loc[k] = (struct iovec){.iov_base = &full_msg, .iov_len = sizeof(full_msg)};
    rem[k++] = (struct iovec){.iov_base = (void *)(uintptr_t)t.namelenp, .iov_len = 4};
  }
  size_t ctl_out = 0;
  int mflags = (int)(pk.msg_flags & ~MSG_PEEK);
  if ((size_t)n > t.total) mflags |= MSG_TRUNC;
  else mflags &= ~MSG_TRUNC;
  if (w->nr != __NR_recvfrom) {
    ctl_out = pk.msg_control ? pk.msg_controllen : 0;
    if (ctl_out) {
      loc[k] = (struct iovec){.iov_base = u->ctl, .iov_len = ctl_out};
      rem[k++] = (struct iovec){.iov_base = (void *)(uintptr_t)t.ctl, .iov_len = ctl_out};
    }
    loc[k] = (struct iovec){.iov_base = &ctl_out, .iov_len = sizeof(size_t)};
    rem[k++] = (struct iovec){.iov_base = (void *)(uintptr_t)t.ctllenp, .iov_len = sizeof(size_t)};
    loc[k] = (struct iovec){.iov_base = &mflags, .iov_len = sizeof(int)};
    rem[k++] = (struct iovec){.iov_base = (void *)(uintptr_t)t.flagsp, .iov_len = sizeof(int)};
  }
  ret = (w->flags & MSG_TRUNC) ? n : (long)copy;
  uint32_t mlen = (uint32_t)ret;
  if (t.mlenp) {
    loc[k] = (struct iovec){.iov_base = &mlen, .iov_len = sizeof(mlen)};
    rem[k++] = (struct iovec){.iov_base = (void *)(uintptr_t)t.mlenp, .iov_len = sizeof(mlen)};
  }
  r = write_all(w->pid, loc, rem, k);
  free(loc);
  free(rem);
  if (r == -ESRCH) {
    ret = R_GONE;
    goto out;
  }
  if (!(w->flags & MSG_PEEK)) consume(w->sock);
  if (r < 0) ret = r;
out:
  free(t.owned);
  return ret;
}

static void wait_readable(struct as_gen *g, struct ur_wait *w) {
  if (!w->in_epoll) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = AS_TAG_URECV + (uint64_t)(w - g->urecv->w)};
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, w->sock, &ev) < 0) {
      finish(g, w, -errno);
      return;
    }
    w->in_epoll = 1;
  }
  timer_set(g->urecv, 1);
}

/* Delivers what can be delivered now; answers, or leaves w waiting (readable, or the daemon's answer). */
static void attempt(struct as_gen *g, struct ur_wait *w) {
  for (;;) {
    long r = deliver_one(g, w);
    if (r == R_ASK) return;
    if (r == R_DROPPED) continue;
    if (r == R_GONE) {
      wait_free(g, w);
      return;
    }
    if (w->nr == __NR_recvmmsg) {
      if (r >= 0) {
        w->done++;
        w->nonblock = 1;
        if (w->done < w->vlen) continue;
      }
      if (w->done) {
        finish(g, w, w->done);
        return;
      }
    }
    if (r == -EAGAIN && !w->nonblock) {
      wait_readable(g, w);
      return;
    }
    finish(g, w, r);
    return;
  }
}

/* ---- signals -------------------------------------------------------------------------------------------------- */

/* Whether thread tid has a signal pending that it does not block and that the kernel would deliver to it (a
 * thread-directed one, or a process-wide one when it is the main thread or the only one: the kernel hands those to
 * the main thread first). */
static int signal_pending(pid_t tid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  unsigned long long pnd = 0, shd = 0, blk = 0;
  long tgid = -1, threads = 0;
  while (fgets(line, sizeof(line), f)) {
    if (!strncmp(line, "SigPnd:", 7)) pnd = strtoull(line + 7, NULL, 16);
    else if (!strncmp(line, "ShdPnd:", 7)) shd = strtoull(line + 7, NULL, 16);
    else if (!strncmp(line, "SigBlk:", 7)) blk = strtoull(line + 7, NULL, 16);
    else if (!strncmp(line, "Tgid:", 5)) tgid = strtol(line + 5, NULL, 10);
    else if (!strncmp(line, "Threads:", 8)) threads = strtol(line + 8, NULL, 10);
  }
  fclose(f);
  if (pnd & ~blk) return 1;
  return (shd & ~blk) && (tgid == tid || threads == 1);
}

static void tick(struct as_gen *g) {
  struct as_urecv *u = g->urecv;
  uint64_t now = now_ms();
  int busy = 0;
  for (int i = 0; i < AS_URECV_WAITS; i++) {
    struct ur_wait *w = &u->w[i];
    if (!w->used) continue;
    if (as_notif_id_valid(g->notif_fd, w->id) < 0) {
      wait_free(g, w);
      continue;
    }
    if (w->asking) {
      if (!w->ask_sent && g->daemon_fd >= 0) w->ask_sent = ask_send(g, w) == 0; /* the daemon came back */
      if (now >= w->ask_deadline) { /* nobody answered in time: unidentified */
        settle(g, w->asking, &w->ask_real, 0, NULL);
        continue;
      }
      busy = 1;
      continue;
    }
    if (!w->in_epoll) continue;
    if (w->deadline_ms && now >= w->deadline_ms) {
      finish(g, w, -EAGAIN);
      continue;
    }
    if (signal_pending(w->pid)) {
      finish(g, w, w->timeo ? -EINTR : -ERESTARTSYS_);
      continue;
    }
    busy = 1;
  }
  if (!busy) timer_set(u, 0);
}

int as_urecv_waiting(struct as_gen *g) {
  struct as_urecv *u = g->urecv;
  if (!u) return 0;
  return u->timer_on || u->nwaits > 0;
}

void as_urecv_reap(struct as_gen *g) {
  struct as_urecv *u = g->urecv;
  if (!u) return;
  for (int i = 0; i < AS_URECV_WAITS; i++)
    if (u->w[i].used && as_notif_id_valid(g->notif_fd, u->w[i].id) < 0) wait_free(g, &u->w[i]);
}

void as_urecv_event(struct as_gen *g, uint64_t tag) {
  struct as_urecv *u = g->urecv;
  if (!u) return;
  if (tag == AS_TAG_URECV_TIMER) {
    uint64_t ticks;
    if (read(u->timer_fd, &ticks, sizeof(ticks)) != sizeof(ticks)) return;
    tick(g);
    return;
  }
  uint64_t i = tag - AS_TAG_URECV;
  if (i >= AS_URECV_WAITS) return;
  struct ur_wait *w = &u->w[i];
  if (w->used && w->in_epoll && !w->asking) attempt(g, w);
}

/* ---- the trap ---------------------------------------------------------------------------------------------------- */

void as_urecv_trap(struct as_gen *g, struct seccomp_notif *req) {
  struct as_urecv *u = g->urecv;
  int nr = req->data.nr;
  pid_t pid = (pid_t)req->pid;
  int flags = (int)req->data.args[nr == __NR_recvmsg ? 2 : 3];
  int s = as_task_getfd(&g->pidfds, pid, (int)req->data.args[0]);
  if (s == -ESRCH) return;
  int family = 0, type = 0;
  socklen_t l = sizeof(int);
  if (s < 0 || getsockopt(s, SOL_SOCKET, SO_DOMAIN, &family, &l) < 0 || (family != AF_INET && family != AF_INET6) ||
      (l = sizeof(int), getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &l) < 0) || type != SOCK_DGRAM ||
      (flags & (MSG_ERRQUEUE | MSG_OOB))) {
    /* not an inet datagram socket (the kernel's errno for a bad fd, ENOTSOCK; TCP, Unix, the fast path), or its
     * error queue: the kernel's own answer */
    if (s >= 0) close(s);
    as_tstats_end(&g->tstats, &g->cur, 0);
    as_notif_continue(&g->nc, req->id);
    return;
  }
  struct ur_wait *w = NULL;
  for (int i = 0; i < AS_URECV_WAITS && !w; i++)
    if (!u->w[i].used) w = &u->w[i];
  if (!w) { /* as many receives waiting as we keep: the kernel's answer for this one */
    close(s);
    as_tstats_end(&g->tstats, &g->cur, 0);
    as_notif_continue(&g->nc, req->id);
    return;
  }
  memset(w, 0, sizeof(*w));
  w->used = 1;
  u->nwaits++;
  w->mark = g->cur; /* the answer now comes from this wait */
  g->cur.live = 0;
  w->id = req->id;
  w->pid = pid;
  w->nr = nr;
  w->sock = s;
  w->family = family;
  w->flags = flags;
  for (int i = 0; i < 6; i++) w->a[i] = req->data.args[i];
  int r = 0;
  int want_source = 1;
  if (nr == __NR_recvmsg || nr == __NR_recvmmsg) {
    uint64_t at = req->data.args[1];
    if (nr == __NR_recvmmsg) {
      w->vlen = (unsigned)req->data.args[2];
      if (w->vlen > IOV_MAX) w->vlen = IOV_MAX; /* UIO_MAXIOV, as do_recvmmsg */
      if (w->vlen == 0) {
        finish(g, w, 0);
        return;
      }
    }
    r = as_mem_read(pid, at, &w->mh, sizeof(w->mh));
    if (r == 0 && (int)w->mh.msg_namelen < 0) r = -EINVAL;
    if (r == 0) want_source = w->mh.msg_name != NULL;
    if (r == 0 && want_source && nr == __NR_recvmsg) {
      size_t total;
      r = read_iov(pid, &w->mh, &w->iov, &total);
    }
    if (r < 0 && r != -ESRCH) r = r == -EFAULT || r == -EINVAL || r == -EMSGSIZE || r == -ENOMEM ? r : -EFAULT;
  }
  if (r == -ESRCH || as_notif_id_valid(g->notif_fd, req->id) < 0) {
    wait_free(g, w);
    return;
  }
  if (r < 0) {
    finish(g, w, r);
    return;
  }
  struct sockaddr_storage ps;
  socklen_t pl = sizeof(ps);
  struct as_ep peer;
  if (want_source && getpeername(s, (struct sockaddr *)&ps, &pl) == 0 && as_ep_from_sockaddr(&ps, pl, &peer) == 0) {
    if (as_vmap_get(g->vmap, &peer, &w->peer_virt)) w->connected = 1; /* its peer has a virtual name */
    else want_source = 0;                                              /* an egress peer: the kernel's answer */
  }
  if (!want_source) { /* no source asked for (or a real one): the kernel answers */
    struct as_tmark m = w->mark;
    wait_free(g, w);
    as_tstats_end(&g->tstats, &m, 0);
    as_notif_continue(&g->nc, req->id);
    return;
  }
  int fl = fcntl(s, F_GETFL);
  w->nonblock = (fl >= 0 && (fl & O_NONBLOCK)) || (flags & MSG_DONTWAIT);
  if (!w->nonblock) {
    struct timeval tv;
    socklen_t tl = sizeof(tv);
    if (getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 && (tv.tv_sec || tv.tv_usec)) {
      w->timeo = 1;
      w->deadline_ms = now_ms() + (uint64_t)tv.tv_sec * 1000u + (uint64_t)(tv.tv_usec + 999) / 1000u;
    }
  }
  attempt(g, w);
}

/* ---- what sends tell the daemon ----------------------------------------------------------------------------- */

void as_urecv_before_send(struct as_gen *g, int sock, int family) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  struct as_ep e;
  if (getsockname(sock, (struct sockaddr *)&ss, &l) < 0 || as_ep_from_sockaddr(&ss, l, &e) < 0 || e.port != 0) return;
  struct sockaddr_storage any;
  memset(&any, 0, sizeof(any));
  any.ss_family = (sa_family_t)family;
  socklen_t al = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(sock, (struct sockaddr *)&any, al) < 0) return; /* the kernel's autobind will do, unreported */
  l = sizeof(ss);
  if (getsockname(sock, (struct sockaddr *)&ss, &l) < 0 || l > AS_ADDR_MAX) return;
  struct stat st;
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_UDP_FROM;
  m.cookie = fstat(sock, &st) == 0 ? (uint64_t)st.st_ino : 0;
  m.addr_len = l;
  memcpy(m.addr, &ss, l);
  as_gen_send_daemon(g, &m);
  struct as_urecv *u = g->urecv;
  if (u && u->reported) u->reported[u->nreported++ % REPORTED_MAX] = m;
}

void as_urecv_resend_reports(struct as_gen *g) {
  struct as_urecv *u = g->urecv;
  if (!u || !u->reported) return;
  unsigned n = u->nreported < REPORTED_MAX ? u->nreported : REPORTED_MAX;
  for (unsigned i = 0; i < n; i++) { /* sockets closed since: the daemon's sweep forgets them by inode */
    struct as_msg m = u->reported[i];
    if (as_gen_send_daemon(g, &m) < 0) return;
  }
}

/* ---- set-up ------------------------------------------------------------------------------------------------------ */

int as_urecv_init(struct as_gen *g) {
  struct as_urecv *u = calloc(1, sizeof(*u));
  if (!u) return -ENOMEM;
  for (int i = 0; i < AS_URECV_WAITS; i++) u->w[i].sock = -1;
  u->reported = calloc(REPORTED_MAX, sizeof(*u->reported));
  u->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (u->timer_fd < 0) {
    int e = errno;
    free(u);
    return -e;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = AS_TAG_URECV_TIMER};
  if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, u->timer_fd, &ev) < 0) {
    int e = errno;
    close(u->timer_fd);
    free(u);
    return -e;
  }
  g->urecv = u;
  return 0;
}

void as_urecv_free(struct as_gen *g) {
  struct as_urecv *u = g->urecv;
  if (!u) return;
  for (int i = 0; i < AS_URECV_WAITS; i++)
    if (u->w[i].used) wait_free(g, &u->w[i]);
  close(u->timer_fd);
  free(u->reported);
  free(u);
  g->urecv = NULL;
}
