/* Builds and installs the classic-BPF seccomp filter that traps the network control plane. seccomp(2), seccomp_unotify(2).
 *
 * Policy, in order:
 *   - any architecture other than x86_64 (i386 int 0x80, hence socketcall) and any x32 syscall number: EPERM;
 *   - socket(): AF_UNIX and AF_NETLINK run untouched; AF_INET/AF_INET6 stream and datagram sockets are trapped
 *     (the handler creates them in the host namespace); other inet types (SOCK_RAW...) and AF_PACKET: EPERM;
 *     every other family: EAFNOSUPPORT;
 *   - bind, listen, connect, accept, accept4, getsockname, getpeername, sendmsg, sendmmsg, and sendto with a
 *     destination: trapped; setsockopt/getsockopt only at IPPROTO_TCP, SOL_IP, SOL_IPV6 level and for SO_DOMAIN /
 *     SO_PROTOCOL (the fast path answers them for its Unix sockets);
 *     MSG_FASTOPEN (an implicit connect) is refused with EOPNOTSUPP;
 *   - recvfrom with a source-address buffer (args[4] != NULL), recvmsg and recvmmsg: trapped, so that a datagram's
 *     source shows as its sender's virtual identity (udp_recv.c); recv()/read() and recvfrom(..., NULL, NULL) — the
 *     data path of TCP and connected UDP — never trap;
 *   - escapes: setns, io_uring_*, unshare/clone with CLONE_NEWNET, CLONE_NEWUSER or CLONE_NEWCGROUP: EPERM (a new
 *     user namespace would give the program every capability inside it, as container runtimes know); clone3 (flags
 *     live in memory the filter cannot read): ENOSYS, so libc falls back to clone, which the filter can judge.
 */
#define _GNU_SOURCE
#include "seccomp_filter.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

/* A tiny assembler: instructions may jump to labels; labels are resolved into forward offsets at the end. */
enum label {
  L_NONE = 0, L_ALLOW, L_NOTIF, L_EPERM, L_ENOSYS, L_EAFNOSUPPORT, L_EOPNOTSUPP,
  L_SOCKET, L_SOCKET_INET, L_SOCKOPT, L_SOCKOPT_SOL, L_SENDTO, L_SENDMSG, L_SENDMMSG, L_RECVFROM, L_UNSHARE, L_CLONE, L_COUNT
};

#define MAX_INS 128

/* Namespaces a program may not create (see the header comment). */
#define REFUSED_NS_FLAGS (CLONE_NEWNET | CLONE_NEWUSER | CLONE_NEWCGROUP)

struct asm_ins {
  struct sock_filter f;
  enum label jt, jf; /* L_NONE: fall through (offset 0) */
};

struct assembler {
  struct asm_ins ins[MAX_INS];
  int n;
  int label_at[L_COUNT];
  int overflow;
};

static void emit(struct assembler *a, uint16_t code, uint32_t k, enum label jt, enum label jf) {
  if (a->n >= MAX_INS) {
    a->overflow = 1;
    return;
  }
  a->ins[a->n].f = (struct sock_filter){code, 0, 0, k};
  a->ins[a->n].jt = jt;
  a->ins[a->n].jf = jf;
  a->n++;
}

static void mark(struct assembler *a, enum label l) { a->label_at[l] = a->n; }

static void load_nr(struct assembler *a) { emit(a, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0); }
static void load_arg_lo(struct assembler *a, int i) {
  emit(a, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args) + 8 * i, 0, 0);
}
static void load_arg_hi(struct assembler *a, int i) {
  emit(a, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args) + 8 * i + 4, 0, 0);
}
/* if A == k goto l */
static void jeq(struct assembler *a, uint32_t k, enum label l) { emit(a, BPF_JMP | BPF_JEQ | BPF_K, k, l, L_NONE); }
/* if A & k goto l */
static void jset(struct assembler *a, uint32_t k, enum label l) { emit(a, BPF_JMP | BPF_JSET | BPF_K, k, l, L_NONE); }
static void ret(struct assembler *a, uint32_t k) { emit(a, BPF_RET | BPF_K, k, 0, 0); }
static void jmp(struct assembler *a, enum label l) { emit(a, BPF_JMP | BPF_JA, 0, l, L_NONE); }

static int resolve(struct assembler *a) {
  if (a->overflow) return -E2BIG;
  for (int i = 0; i < a->n; i++) {
    struct asm_ins *x = &a->ins[i];
    if (BPF_CLASS(x->f.code) != BPF_JMP) continue;
    if (BPF_OP(x->f.code) == BPF_JA) {
      int off = a->label_at[x->jt] - (i + 1);
      if (off < 0) return -EINVAL;
      x->f.k = (uint32_t)off;
      continue;
    }
    int t = x->jt == L_NONE ? 0 : a->label_at[x->jt] - (i + 1);
    int f = x->jf == L_NONE ? 0 : a->label_at[x->jf] - (i + 1);
    if (t < 0 || f < 0 || t > 255 || f > 255) return -EINVAL;
    x->f.jt = (uint8_t)t;
    x->f.jf = (uint8_t)f;
  }
  return 0;
}

static void build(struct assembler *a) {
  memset(a, 0, sizeof(*a));
  emit(a, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
  emit(a, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, L_NONE, L_EPERM);
  load_nr(a);
  emit(a, BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, L_EPERM, L_NONE);

  jeq(a, __NR_socket, L_SOCKET);
  jeq(a, __NR_bind, L_NOTIF);
  jeq(a, __NR_listen, L_NOTIF);
  jeq(a, __NR_connect, L_NOTIF);
  jeq(a, __NR_getsockname, L_NOTIF);
  jeq(a, __NR_getpeername, L_NOTIF);
  jeq(a, __NR_accept, L_NOTIF);
  jeq(a, __NR_accept4, L_NOTIF);
  jeq(a, __NR_sendto, L_SENDTO);
  jeq(a, __NR_sendmsg, L_SENDMSG);
  jeq(a, __NR_sendmmsg, L_SENDMMSG);
  jeq(a, __NR_recvfrom, L_RECVFROM);
  jeq(a, __NR_recvmsg, L_NOTIF);
  jeq(a, __NR_recvmmsg, L_NOTIF);
  jeq(a, __NR_setsockopt, L_SOCKOPT);
  jeq(a, __NR_getsockopt, L_SOCKOPT);
  jeq(a, __NR_setns, L_EPERM);
  jeq(a, __NR_io_uring_setup, L_EPERM);
  jeq(a, __NR_io_uring_enter, L_EPERM);
  jeq(a, __NR_io_uring_register, L_EPERM);
  jeq(a, __NR_unshare, L_UNSHARE);
  jeq(a, __NR_clone, L_CLONE);
  jeq(a, __NR_clone3, L_ENOSYS);
  jmp(a, L_ALLOW);

  mark(a, L_SOCKET);
  load_arg_lo(a, 0);
  jeq(a, AF_UNIX, L_ALLOW);
  jeq(a, AF_NETLINK, L_ALLOW);
  jeq(a, AF_INET, L_SOCKET_INET);
  jeq(a, AF_INET6, L_SOCKET_INET);
  jeq(a, AF_PACKET, L_EPERM);
  jmp(a, L_EAFNOSUPPORT);
  mark(a, L_SOCKET_INET);
  load_arg_lo(a, 1);
  emit(a, BPF_ALU | BPF_AND | BPF_K, 0xf, 0, 0); /* the type without SOCK_NONBLOCK / SOCK_CLOEXEC */
  jeq(a, SOCK_STREAM, L_NOTIF);
  jeq(a, SOCK_DGRAM, L_NOTIF);
  jmp(a, L_EPERM);

  /* setsockopt/getsockopt(fd, level, name, ...): only the levels a Unix socket cannot answer for a fast-path
   * connection; SOL_SOCKET options (buffers, timeouts, SO_ERROR...) work on both kinds and stay untrapped. */
  mark(a, L_SOCKOPT);
  load_arg_lo(a, 1);
  jeq(a, IPPROTO_TCP, L_NOTIF);
  jeq(a, SOL_IP, L_NOTIF);
  jeq(a, SOL_IPV6, L_NOTIF);
  jeq(a, SOL_SOCKET, L_SOCKOPT_SOL);
  jmp(a, L_ALLOW);
  mark(a, L_SOCKOPT_SOL);
  load_arg_lo(a, 2);
  jeq(a, SO_DOMAIN, L_NOTIF);
  jeq(a, SO_PROTOCOL, L_NOTIF);
  jmp(a, L_ALLOW);

  mark(a, L_SENDTO); /* sendto(fd, buf, len, flags, dest, addrlen) */
  load_arg_lo(a, 3);
  jset(a, MSG_FASTOPEN, L_EOPNOTSUPP);
  load_arg_lo(a, 4);
  emit(a, BPF_JMP | BPF_JEQ | BPF_K, 0, L_NONE, L_NOTIF); /* low word of dest != 0: trap */
  load_arg_hi(a, 4);
  emit(a, BPF_JMP | BPF_JEQ | BPF_K, 0, L_ALLOW, L_NOTIF);

  mark(a, L_RECVFROM); /* recvfrom(fd, buf, len, flags, src, srclen): only when the caller wants the source */
  load_arg_lo(a, 4);
  emit(a, BPF_JMP | BPF_JEQ | BPF_K, 0, L_NONE, L_NOTIF);
  load_arg_hi(a, 4);
  emit(a, BPF_JMP | BPF_JEQ | BPF_K, 0, L_ALLOW, L_NOTIF);

  mark(a, L_SENDMSG); /* sendmsg(fd, msg, flags) */
  load_arg_lo(a, 2);
  jset(a, MSG_FASTOPEN, L_EOPNOTSUPP);
  jmp(a, L_NOTIF);

  mark(a, L_SENDMMSG); /* sendmmsg(fd, msgvec, vlen, flags) */
  load_arg_lo(a, 3);
  jset(a, MSG_FASTOPEN, L_EOPNOTSUPP);
  jmp(a, L_NOTIF);

  mark(a, L_UNSHARE);
  load_arg_lo(a, 0);
  jset(a, REFUSED_NS_FLAGS, L_EPERM);
  jmp(a, L_ALLOW);

  mark(a, L_CLONE);
  load_arg_lo(a, 0);
  jset(a, REFUSED_NS_FLAGS, L_EPERM);
  jmp(a, L_ALLOW);

  mark(a, L_ALLOW);
  ret(a, SECCOMP_RET_ALLOW);
  mark(a, L_NOTIF);
  ret(a, SECCOMP_RET_USER_NOTIF);
  mark(a, L_EPERM);
  ret(a, SECCOMP_RET_ERRNO | EPERM);
  mark(a, L_ENOSYS);
  ret(a, SECCOMP_RET_ERRNO | ENOSYS);
  mark(a, L_EAFNOSUPPORT);
  ret(a, SECCOMP_RET_ERRNO | EAFNOSUPPORT);
  mark(a, L_EOPNOTSUPP);
  ret(a, SECCOMP_RET_ERRNO | EOPNOTSUPP);
}

int as_filter_install(int *killable) {
  struct assembler a;
  build(&a);
  int rc = resolve(&a);
  if (rc < 0) return rc;
  struct sock_filter prog_ins[MAX_INS];
  for (int i = 0; i < a.n; i++) prog_ins[i] = a.ins[i].f;
  struct sock_fprog prog = {.len = (unsigned short)a.n, .filter = prog_ins};

  unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
  long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  *killable = 1;
  if (fd < 0 && errno == EINVAL) { /* kernel < 5.19: no WAIT_KILLABLE_RECV */
    flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    *killable = 0;
  }
  if (fd < 0) return -errno;
  return (int)fd; /* the listener is created O_CLOEXEC by the kernel */
}
