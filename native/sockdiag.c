/* NETLINK_SOCK_DIAG for the daemon (see sockdiag.h): one exact socket lookup (TCP by 4-tuple, UDP by local endpoint),
 * and a dump of the TCP table in chosen states as fixed records. sock_diag(7), netlink(7), rtnetlink(7). */
#define _GNU_SOURCE
#include "sockdiag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int as_sockdiag_open(void) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  return fd < 0 ? -errno : fd;
}

/* Sequence numbers of this process's requests: replies to an earlier request (one that failed half-way) are skipped
 * by it, whichever function sent it. */
static uint32_t next_seq(void) {
  static uint32_t seq;
  return ++seq;
}

/* Sends one request to the kernel; 0 or -errno. */
static int send_request(int nl, const void *req, size_t len) {
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;
  do n = sendto(nl, req, len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

/* An inet_diag request for `family` and `proto` (SOCK_DIAG_BY_FAMILY, a fresh sequence number); the caller sets the
 * rest. */
struct diag_req {
  struct nlmsghdr nh;
  struct inet_diag_req_v2 r;
};
static void diag_req_init(struct diag_req *req, uint16_t flags, int family, int proto) {
  memset(req, 0, sizeof(*req));
  req->nh.nlmsg_len = sizeof(*req);
  req->nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req->nh.nlmsg_flags = flags;
  req->nh.nlmsg_seq = next_seq();
  req->r.sdiag_family = (uint8_t)family;
  req->r.sdiag_protocol = (uint8_t)proto;
}

/* One request for protocol `proto`; `exact`: a reply whose remote end is not dst:dport does not count (TCP's lookup
 * falls back to a listener). */
static int lookup(int nl, int proto, int exact, int family, const uint8_t *src, uint16_t sport, const uint8_t *dst,
                  uint16_t dport, struct as_sockdiag_result *out) {
  if (family != AF_INET && family != AF_INET6) return -EAFNOSUPPORT;
  size_t alen = family == AF_INET ? 4 : 16;
  struct diag_req req;
  diag_req_init(&req, NLM_F_REQUEST, family, proto); /* no NLM_F_DUMP: inet_diag_find_one_icsk, a hash lookup */
  req.r.idiag_states = ~0u;
  req.r.id.idiag_sport = htons(sport);
  req.r.id.idiag_dport = htons(dport);
  memcpy(req.r.id.idiag_src, src, alen);
  memcpy(req.r.id.idiag_dst, dst, alen);
  req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  int err = send_request(nl, &req, sizeof(req));
  if (err) return err;
  ssize_t n;
  union {
    struct nlmsghdr nh;
    uint8_t b[8192];
  } buf;
  for (;;) { /* skip stale replies (a previous call that failed half-way) by sequence number */
    do n = recv(nl, &buf, sizeof(buf), 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct nlmsghdr *h = &buf.nh; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != req.nh.nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(h);
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e))) return -EPROTO;
        return e->error == -ENOENT ? 0 : e->error < 0 ? e->error : -EPROTO;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) return -EPROTO;
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      /* inet_lookup falls back to a listener on the local port: that is not the connection asked for */
      if (exact && (m->id.idiag_dport != htons(dport) || memcmp(m->id.idiag_dst, dst, alen))) return 0;
      memset(out, 0, sizeof(*out));
      out->state = m->idiag_state;
      out->inode = m->idiag_inode;
      int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
      for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == INET_DIAG_CGROUP_ID && RTA_PAYLOAD(a) >= sizeof(uint64_t)) {
          memcpy(&out->cgroup, RTA_DATA(a), sizeof(uint64_t));
          out->has_cgroup = 1;
        }
      }
      return 1;
    }
  }
}

int as_sockdiag_tcp(int nl, int family, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                    struct as_sockdiag_result *out) {
  return lookup(nl, IPPROTO_TCP, 1, family, src, sport, dst, dport, out);
}

int as_sockdiag_udp(int nl, int family, const uint8_t *local, uint16_t lport, struct as_sockdiag_result *out) {
  /* udp_dump_one swaps src and dst "for historical reasons": the lookup is that of a datagram from idiag_src:sport
   * (here the unspecified address, port 0) to idiag_dst:dport, so the local end goes in dst */
  static const uint8_t any[16];
  return lookup(nl, IPPROTO_UDP, 0, family, any, 0, local, lport, out);
}

/* The records gathered so far: grown by doubling, never per socket. */
struct recs {
  uint8_t *p;
  size_t len, cap;
};

static void free_recs(struct recs *r) { free(r->p); }
static void free_bytes(uint8_t **p) { free(*p); }

static void put_le16(uint8_t *d, uint16_t v) {
  d[0] = (uint8_t)v;
  d[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *d, uint32_t v) {
  for (int i = 0; i < 4; i++) d[i] = (uint8_t)(v >> (8 * i));
}

/* idiag_src/idiag_dst as 16 bytes: an AF_INET address (the first 4 bytes, network order) v4-mapped. */
static void put_ip(uint8_t d[16], int family, const __be32 a[4]) {
  if (family == AF_INET6) {
    memcpy(d, a, 16);
    return;
  }
  memset(d, 0, 10);
  d[10] = d[11] = 0xff;
  memcpy(d + 12, a, 4);
}

static int add_rec(struct recs *r, int family, const struct inet_diag_msg *m) {
  if (r->cap - r->len < AS_SOCKDIAG_REC_SIZE) {
    size_t cap = r->cap ? r->cap * 2 : 256 * AS_SOCKDIAG_REC_SIZE;
    uint8_t *p = realloc(r->p, cap);
    if (!p) return -ENOMEM;
    r->p = p;
    r->cap = cap;
  }
  struct as_sockdiag_rec rec;
  memset(&rec, 0, sizeof(rec));
  put_ip(rec.local_ip, family, m->id.idiag_src);
  put_le16(rec.local_port, ntohs(m->id.idiag_sport));
  put_ip(rec.remote_ip, family, m->id.idiag_dst);
  put_le16(rec.remote_port, ntohs(m->id.idiag_dport));
  put_le32(rec.inode, m->idiag_inode);
  rec.state = m->idiag_state;
  memcpy(r->p + r->len, &rec, sizeof(rec));
  r->len += sizeof(rec);
  return 0;
}

/* Receive buffer of a dump: the kernel fills each datagram up to the largest buffer recvmsg was given, capped at
 * 32 KiB (netlink_recvmsg, max_recvmsg_len); twice that leaves room, and MSG_TRUNC is still checked. */
#define DUMP_RX_SIZE (64 * 1024)

int as_sockdiag_dump_tcp(int nl, int family, uint32_t states, uint8_t **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  if (family != AF_INET && family != AF_INET6) return -EAFNOSUPPORT;
  struct diag_req req;
  diag_req_init(&req, NLM_F_REQUEST | NLM_F_DUMP, family, IPPROTO_TCP);
  req.r.idiag_states = states; /* the kernel filters: a TIME_WAIT socket left out is never formatted nor copied */
  req.r.idiag_ext = 0;         /* no extensions: the fixed inet_diag_msg is all the sweep reads */
  __attribute__((cleanup(free_bytes))) uint8_t *rx = malloc(DUMP_RX_SIZE);
  if (!rx) return -ENOMEM;
  __attribute__((cleanup(free_recs))) struct recs out = {0};
  int err = send_request(nl, &req, sizeof(req));
  if (err) return err;
  for (;;) {
    struct sockaddr_nl from;
    struct iovec iov = {.iov_base = rx, .iov_len = DUMP_RX_SIZE};
    struct msghdr mh = {.msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;
    do n = recvmsg(nl, &mh, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno == ENOBUFS ? -EAGAIN : -errno; /* ENOBUFS: messages were dropped, the dump has holes */
    if (mh.msg_flags & MSG_TRUNC) return -EPROTO;
    if (mh.msg_namelen < sizeof(from) || from.nl_pid != 0) continue; /* not from the kernel */
    int left = (int)n;
    struct nlmsghdr *h = (struct nlmsghdr *)rx;
    for (; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != req.nh.nlmsg_seq) continue; /* a reply to an earlier request */
      if (h->nlmsg_type == NLMSG_DONE) {
        int status = 0;
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(status))) memcpy(&status, NLMSG_DATA(h), sizeof(status));
        if (status < 0) return status; /* the dump itself failed */
        *buf = out.p;
        *len = out.len;
        out.p = NULL; /* ownership moves to the caller */
        return 0;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(h);
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e))) return -EPROTO;
        return e->error < 0 ? e->error : -EPROTO; /* no ACK was asked for: a zero here is not a reply we know */
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) return -EPROTO;
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      /* the kernel answers only what was asked: another family or a state outside the mask is a message we misread */
      if (m->idiag_family != family || m->idiag_state >= 32 || !(states & (1u << m->idiag_state))) return -EPROTO;
      err = add_rec(&out, family, m);
      if (err) return err;
    }
    if (left > 0) return -EPROTO; /* a message cut short */
  }
}
