/* Datagram sends with a destination: sendto(), sendmsg(), sendmmsg() on the program's UDP sockets. A datagram
 * socket in the host namespace must never send where the program names: the generator reads the datagram from the
 * program, asks the daemon where the destination really is (AS_CONNECT) and sends it itself. Stream sockets ignore
 * the destination (MSG_FASTOPEN is refused by the filter), so their sends run untouched (CONTINUE).
 * sendmsg(2), sendmmsg(2), udp(7), process_vm_readv(2). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "gen_internal.h"

#define UDP_MAX 65535
#define CTL_MAX 65536

struct as_udp {
  uint8_t *data;
  size_t len;
  uint8_t *ctl;
  size_t ctl_len;
  int flags;
};

void as_udp_free(struct as_udp *u) {
  if (!u) return;
  free(u->data);
  free(u->ctl);
  free(u);
}

/* Sends p's datagram ourselves, to u.send.dst (none: the socket's own peer), and answers: the byte count, or 1 for
 * sendmmsg with the count written to the program's msg_len. */
static void send_udp(struct as_gen *g, struct as_pending *p) {
  struct as_p_send *ps = &p->u.send;
  struct as_udp *u = ps->udp;
  struct iovec iov = {.iov_base = u->data, .iov_len = u->len};
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (ps->dst_len) {
    mh.msg_name = ps->dst;
    mh.msg_namelen = ps->dst_len;
  }
  mh.msg_control = u->ctl_len ? u->ctl : NULL;
  mh.msg_controllen = u->ctl_len;
  ssize_t n = sendmsg(p->sock, &mh, u->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
  int e = errno;
  if (ps->mmsg && n >= 0) {
    uint32_t ml = (uint32_t)n;
    as_mem_write(p->pid, ps->msg_len_addr, &ml, sizeof(ml));
  }
  as_pend_finish(g, p, n < 0 ? -e : ps->mmsg ? 1 : n);
}


/* Reads one msghdr's payload into a new as_udp. Returns 0 or -errno, as sendmsg would. */
static int read_msg(pid_t pid, const struct msghdr *mh, int flags, struct as_udp **out) {
  if (mh->msg_iovlen > IOV_MAX) return -EMSGSIZE;
  if (mh->msg_controllen > CTL_MAX) return -ENOBUFS;
  struct as_udp *u = calloc(1, sizeof(*u));
  if (!u) return -ENOMEM;
  u->flags = flags & ~MSG_NOSIGNAL;
  struct iovec *iov = NULL;
  int r = 0;
  if (mh->msg_iovlen) {
    iov = calloc(mh->msg_iovlen, sizeof(*iov));
    if (!iov) r = -ENOMEM;
    if (!r) r = as_mem_read(pid, (uint64_t)(uintptr_t)mh->msg_iov, iov, mh->msg_iovlen * sizeof(*iov));
  }
  size_t total = 0;
  for (size_t i = 0; !r && i < mh->msg_iovlen; i++) {
    if (iov[i].iov_len > UDP_MAX || total + iov[i].iov_len > UDP_MAX) r = -EMSGSIZE;
    else total += iov[i].iov_len;
  }
  if (!r) u->data = malloc(total ? total : 1);
  if (!r && !u->data) r = -ENOMEM;
  for (size_t i = 0; !r && i < mh->msg_iovlen; i++) {
    r = as_mem_read(pid, (uint64_t)(uintptr_t)iov[i].iov_base, u->data + u->len, iov[i].iov_len);
    u->len += iov[i].iov_len;
  }
  if (!r && mh->msg_controllen) {
    u->ctl = malloc(mh->msg_controllen);
    if (!u->ctl) r = -ENOMEM;
    if (!r) r = as_mem_read(pid, (uint64_t)(uintptr_t)mh->msg_control, u->ctl, mh->msg_controllen);
    u->ctl_len = mh->msg_controllen;
  }
  free(iov);
  if (r < 0) {
    as_udp_free(u);
    return r;
  }
  *out = u;
  return 0;
}



/* Starts one datagram send: with a destination, the daemon resolves it first; without, it goes out at once.
 * Takes ownership of s and u. msg_len_addr: sendmmsg's msg_len in the program (0: sendto or sendmsg). */
static void start_udp(struct as_gen *g, struct seccomp_notif *req, int s, int family, struct as_udp *u,
                      const struct sockaddr_storage *dst, uint32_t dlen, uint64_t msg_len_addr) {
  struct as_pending *p = as_pend_open(g, req, OP_SEND, s);
  if (!p) {
    as_udp_free(u);
    return;
  }
  p->family = family;
  p->type = SOCK_DGRAM; /* the daemon judges the destination as a datagram's */
  struct as_p_send *ps = &p->u.send;
  ps->udp = u; /* the entry's now */
  ps->mmsg = msg_len_addr != 0;
  ps->msg_len_addr = msg_len_addr;
  if (!dlen) {
    send_udp(g, p);
    return;
  }
  struct as_ep v, r;
  struct sockaddr_storage rs;
  int rl;
  /* (sendmmsg has always asked the daemon: the shortcut is sendto's and sendmsg's) */
  if (!ps->mmsg && as_ep_from_sockaddr(dst, dlen, &v) == 0 && as_urecv_reply_path(g, &v, &r) &&
      (rl = as_ep_to_sockaddr(&r, family, &rs)) > 0) {
    /* a reply to a sender the daemon just named (udp_recv.c): its real endpoint is known, no round trip */
    memcpy(ps->dst, &rs, (size_t)rl);
    ps->dst_len = (uint32_t)rl;
    as_urecv_before_send(g, s, family);
    send_udp(g, p);
    return;
  }
  struct as_msg *m = as_pend_msg(p, AS_CONNECT, 0);
  memcpy(m->addr, dst, dlen);
  m->addr_len = dlen;
  as_pend_send(g, p);
}

static int udp_dest(pid_t pid, uint64_t name, uint32_t namelen, int family,
                    struct sockaddr_storage *dst, uint32_t *dlen) {
  *dlen = 0;
  if (!name) return 0;
  return as_read_inet_addr(pid, name, (int64_t)(int32_t)namelen, family, 0, dst, dlen);
}

void as_h_send(struct as_gen *g, struct seccomp_notif *req) {
  pid_t pid = (pid_t)req->pid;
  int nr = req->data.nr;
  if (nr == __NR_sendto) { /* __sys_sendto: import_ubuf()'s access_ok comes before the fd is looked at */
    uint64_t buf = req->data.args[1], len = req->data.args[2];
    const uint64_t max_rw = INT_MAX & ~(uint64_t)4095, task_size = 0x00007ffffffff000ULL;
    if (len > max_rw) len = max_rw;
    if (len > task_size || buf > task_size - len) {
      as_reply(g, req->id, -EFAULT);
      return;
    }
  }
  int uflags = (int)req->data.args[nr == __NR_sendmsg ? 2 : 3];
  if (nr != __NR_sendto && (uflags & (int)0x80000000u /* MSG_CMSG_COMPAT */)) { /* __sys_sendmsg/__sys_sendmmsg refuse it first */
    as_reply(g, req->id, -EINVAL);
    return;
  }
  int family, type;
  int s = as_take_inet_socket(g, req, &family, &type, NULL);
  if (s < 0) return;
  if (type == SOCK_STREAM) { /* a stream socket ignores the destination: nothing to judge */
    close(s);
    as_reply_continue(g, req->id);
    return;
  }
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  int flags;
  uint64_t vec = 0;
  unsigned vlen = 1;
  int r = 0;
  if (nr == __NR_sendto) { /* sendto(fd, buf, len, flags, dest, addrlen) */
    flags = (int)req->data.args[3];
    struct iovec one = {.iov_base = (void *)(uintptr_t)req->data.args[1], .iov_len = (size_t)req->data.args[2]};
    struct as_udp *u = calloc(1, sizeof(*u));
    if (!u) r = -ENOMEM;
    if (!r && one.iov_len > UDP_MAX) r = -EMSGSIZE;
    if (!r) {
      u->data = malloc(one.iov_len ? one.iov_len : 1);
      u->len = one.iov_len;
      u->flags = flags;
      r = u->data ? as_mem_read(pid, (uint64_t)(uintptr_t)one.iov_base, u->data, one.iov_len) : -ENOMEM;
    }
    struct sockaddr_storage dst;
    uint32_t dlen = 0;
    if (!r) r = udp_dest(pid, req->data.args[4], (uint32_t)req->data.args[5], family, &dst, &dlen);
    if (as_notif_id_valid(g->notif_fd, req->id) < 0) r = -ESRCH;
    if (r < 0) {
      as_udp_free(u);
      close(s);
      if (r != -ESRCH) as_reply(g, req->id, r);
      return;
    }
    start_udp(g, req, s, family, u, &dst, dlen, 0);
    return;
  }
  if (nr == __NR_sendmsg) {
    flags = (int)req->data.args[2];
    r = as_mem_read(pid, req->data.args[1], &mh, sizeof(mh));
  } else { /* sendmmsg(fd, vec, vlen, flags): one message per trap; the caller retries the rest, as the API allows */
    vec = req->data.args[1];
    vlen = (unsigned)req->data.args[2];
    flags = (int)req->data.args[3];
    if (vlen == 0) {
      close(s);
      as_reply(g, req->id, 0);
      return;
    }
    r = as_mem_read(pid, vec, &mh, sizeof(mh));
  }
  struct as_udp *u = NULL;
  struct sockaddr_storage dst;
  uint32_t dlen = 0;
  if (mh.msg_namelen > sizeof(struct sockaddr_storage)) /* copy_msghdr_from_user() clamps it, sendto(2) refuses it */
    mh.msg_namelen = sizeof(struct sockaddr_storage);
  if (!r) r = udp_dest(pid, (uint64_t)(uintptr_t)mh.msg_name, mh.msg_namelen, family, &dst, &dlen);
  if (!r) r = read_msg(pid, &mh, flags, &u);
  if (as_notif_id_valid(g->notif_fd, req->id) < 0) r = -ESRCH;
  if (r < 0) {
    as_udp_free(u);
    close(s);
    if (r != -ESRCH) as_reply(g, req->id, r);
    return;
  }
  /* sendmmsg: the one message is sent as sendmsg's is, and the count (1) written to its msg_len as the kernel would */
  start_udp(g, req, s, family, u, &dst, dlen, nr == __NR_sendmmsg ? vec + offsetof(struct mmsghdr, msg_len) : 0);
}

/* The daemon resolved the destination: send the datagram there. */
void as_on_send_reply(struct as_gen *g, struct as_pending *p, const struct as_msg *m) {
  struct as_p_send *ps = &p->u.send;
  if (m->result < 0) {
    as_pend_finish(g, p, m->result);
    return;
  }
  if (m->flags & AS_F_NOWHERE) { /* the local host, nothing there: refused, never sent (see as_on_connect_reply) */
    as_pend_finish(g, p, -ECONNREFUSED);
    return;
  }
  struct as_ep real, virt;
  if (m->addr_len > sizeof(ps->dst) || as_ep_from_sockaddr(m->addr, m->addr_len, &real) < 0) {
    as_pend_finish(g, p, ps->mmsg ? -ENETUNREACH : -EINVAL);
    return;
  }
  struct sockaddr_storage dst;
  int dlen = as_ep_to_sockaddr(&real, p->family, &dst);
  if (dlen < 0) {
    as_pend_finish(g, p, -ENETUNREACH);
    return;
  }
  if (m->addr2_len && as_ep_from_sockaddr(m->addr2, m->addr2_len, &virt) == 0) {
    if (!(m->flags & AS_F_UDP_PEER)) as_vmap_put(g->vmap, &real, &virt);
  } else {
    as_urecv_sent_direct(g, &real); /* replies from there show that address */
  }
  memcpy(ps->dst, &dst, (size_t)dlen);
  ps->dst_len = (uint32_t)dlen;
  as_urecv_before_send(g, p->sock, p->family); /* who sends from here, before it does */
  send_udp(g, p);
}
