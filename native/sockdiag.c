/* One exact socket lookup (TCP by 4-tuple, UDP by local endpoint) over NETLINK_SOCK_DIAG (see sockdiag.h). sock_diag(7), netlink(7), rtnetlink(7). */
#define _GNU_SOURCE
#include "sockdiag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int as_sockdiag_open(void) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  return fd < 0 ? -errno : fd;
}

/* One request for protocol `proto`; `exact`: a reply whose remote end is not dst:dport does not count (TCP's lookup
 * falls back to a listener). */
static int lookup(int nl, int proto, int exact, int family, const uint8_t *src, uint16_t sport, const uint8_t *dst,
                  uint16_t dport, struct as_sockdiag_result *out) {
  if (family != AF_INET && family != AF_INET6) return -EAFNOSUPPORT;
  size_t alen = family == AF_INET ? 4 : 16;
  static uint32_t seq;
  struct {
    struct nlmsghdr nh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof(req));
  req.nh.nlmsg_len = sizeof(req);
  req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nh.nlmsg_flags = NLM_F_REQUEST; /* no NLM_F_DUMP: inet_diag_find_one_icsk, a hash lookup */
  req.nh.nlmsg_seq = ++seq;
  req.r.sdiag_family = (uint8_t)family;
  req.r.sdiag_protocol = (uint8_t)proto;
  req.r.idiag_states = ~0u;
  req.r.id.idiag_sport = htons(sport);
  req.r.id.idiag_dport = htons(dport);
  memcpy(req.r.id.idiag_src, src, alen);
  memcpy(req.r.id.idiag_dst, dst, alen);
  req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;
  do n = sendto(nl, &req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel));
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
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
