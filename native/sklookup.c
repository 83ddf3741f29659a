/* sk_lookup steering (see sklookup.h): the maps, the hand-assembled BPF_PROG_TYPE_SK_LOOKUP program and its link to
 * the network namespace. bpf(2), socket(7) (SO_ACCEPTCONN, SO_PROTOCOL), network_namespaces(7). */
#define _GNU_SOURCE
#include "sklookup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SKL_PROG_NAME "as_sklookup"

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(SYS_bpf, cmd, a, sizeof(*a)); }

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
}
#define AUTO_FD __attribute__((cleanup(close_fd))) int

static int map_create(enum bpf_map_type type, uint32_t key, uint32_t value, uint32_t max, const char *name) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_type = type;
  a.key_size = key;
  a.value_size = value;
  a.max_entries = max;
  snprintf(a.map_name, sizeof(a.map_name), "%s", name);
  long fd = sys_bpf(BPF_MAP_CREATE, &a);
  return fd < 0 ? -errno : (int)fd;
}

static int map_update(int map, const void *key, const void *value) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_fd = (uint32_t)map;
  a.key = (uint64_t)(uintptr_t)key;
  a.value = (uint64_t)(uintptr_t)value;
  a.flags = BPF_ANY;
  return sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0 ? -errno : 0;
}

static int map_lookup(int map, const void *key, void *value) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_fd = (uint32_t)map;
  a.key = (uint64_t)(uintptr_t)key;
  a.value = (uint64_t)(uintptr_t)value;
  return sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) < 0 ? -errno : 0;
}

static int map_delete(int map, const void *key) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_fd = (uint32_t)map;
  a.key = (uint64_t)(uintptr_t)key;
  return sys_bpf(BPF_MAP_DELETE_ELEM, &a) < 0 ? -errno : 0;
}

/* Instruction builders (struct bpf_insn, <linux/bpf.h>). */
#define I_MOV64_REG(d, s) ((struct bpf_insn){.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = (d), .src_reg = (s)})
#define I_MOV64_IMM(d, i) ((struct bpf_insn){.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = (d), .imm = (i)})
#define I_ADD64_IMM(d, i) ((struct bpf_insn){.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = (d), .imm = (i)})
#define I_ALU32_REG(op, d, s) ((struct bpf_insn){.code = BPF_ALU | (op) | BPF_X, .dst_reg = (d), .src_reg = (s)})
#define I_ALU32_IMM(op, d, i) ((struct bpf_insn){.code = BPF_ALU | (op) | BPF_K, .dst_reg = (d), .imm = (i)})
#define I_LDX_W(d, s, o) ((struct bpf_insn){.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = (d), .src_reg = (s), .off = (o)})
#define I_STX_W(d, s, o) ((struct bpf_insn){.code = BPF_STX | BPF_MEM | BPF_W, .dst_reg = (d), .src_reg = (s), .off = (o)})
#define I_JEQ_IMM(d, i, o) ((struct bpf_insn){.code = BPF_JMP | BPF_JEQ | BPF_K, .dst_reg = (d), .imm = (i), .off = (o)})
#define I_JNE_IMM(d, i, o) ((struct bpf_insn){.code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = (d), .imm = (i), .off = (o)})
#define I_CALL(f) ((struct bpf_insn){.code = BPF_JMP | BPF_CALL, .imm = (f)})
#define I_EXIT() ((struct bpf_insn){.code = BPF_JMP | BPF_EXIT})
#define I_LD_MAP(d, fd) \
  ((struct bpf_insn){.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = (d), .src_reg = BPF_PSEUDO_MAP_FD, .imm = (fd)}), \
  ((struct bpf_insn){0})

#define CTX_OFF(f) ((int16_t)offsetof(struct bpf_sk_lookup, f))

/* The program. r6 = ctx, r7 = local port (then the socket key), r8 = the port's socket count, r9 = the socket. */
static int load_prog(int counts, int socks, char *log, size_t logn) {
  enum { PASS = 31 }; /* index of the SK_PASS tail; a jump at index i uses .off = PASS - (i + 1) */
  struct bpf_insn insns[] = {
      /*  0 */ I_MOV64_REG(BPF_REG_6, BPF_REG_1),
      /*  1 */ I_LDX_W(BPF_REG_2, BPF_REG_6, CTX_OFF(protocol)),
      /*  2 */ I_JNE_IMM(BPF_REG_2, IPPROTO_TCP, PASS - 3),
      /*  3 */ I_LDX_W(BPF_REG_7, BPF_REG_6, CTX_OFF(local_port)), /* host byte order */
      /*  4 */ I_STX_W(BPF_REG_10, BPF_REG_7, -4),
      /*  5 */ I_LD_MAP(BPF_REG_1, counts),                       /* two slots: 5, 6 */
      /*  7 */ I_MOV64_REG(BPF_REG_2, BPF_REG_10),
      /*  8 */ I_ADD64_IMM(BPF_REG_2, -4),
      /*  9 */ I_CALL(BPF_FUNC_map_lookup_elem),
      /* 10 */ I_JEQ_IMM(BPF_REG_0, 0, PASS - 11),
      /* 11 */ I_LDX_W(BPF_REG_8, BPF_REG_0, 0),
      /* 12 */ I_JEQ_IMM(BPF_REG_8, 0, PASS - 13),
      /* 13 */ I_CALL(BPF_FUNC_get_prandom_u32),
      /* 14 */ I_ALU32_REG(BPF_MOD, BPF_REG_0, BPF_REG_8),         /* slot = prandom % n */
      /* 15 */ I_ALU32_IMM(BPF_LSH, BPF_REG_7, 3),                 /* key = port * AS_SKL_SLOTS + slot */
      /* 16 */ I_ALU32_REG(BPF_ADD, BPF_REG_7, BPF_REG_0),
      /* 17 */ I_STX_W(BPF_REG_10, BPF_REG_7, -8),
      /* 18 */ I_LD_MAP(BPF_REG_1, socks),                        /* two slots: 18, 19 */
      /* 20 */ I_MOV64_REG(BPF_REG_2, BPF_REG_10),
      /* 21 */ I_ADD64_IMM(BPF_REG_2, -8),
      /* 22 */ I_CALL(BPF_FUNC_map_lookup_elem),                   /* a referenced socket, or NULL */
      /* 23 */ I_JEQ_IMM(BPF_REG_0, 0, PASS - 24),
      /* 24 */ I_MOV64_REG(BPF_REG_9, BPF_REG_0),
      /* 25 */ I_MOV64_REG(BPF_REG_1, BPF_REG_6),
      /* 26 */ I_MOV64_REG(BPF_REG_2, BPF_REG_0),
      /* 27 */ I_MOV64_IMM(BPF_REG_3, 0),
      /* 28 */ I_CALL(BPF_FUNC_sk_assign),                         /* an error leaves the normal lookup */
      /* 29 */ I_MOV64_REG(BPF_REG_1, BPF_REG_9),
      /* 30 */ I_CALL(BPF_FUNC_sk_release),
      /* 31 */ I_MOV64_IMM(BPF_REG_0, SK_PASS),
      /* 32 */ I_EXIT(),
  };
  _Static_assert(AS_SKL_SLOTS == 8, "the program shifts the port by 3");
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_SK_LOOKUP;
  a.expected_attach_type = BPF_SK_LOOKUP;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
  a.license = (uint64_t)(uintptr_t) "Dual MIT/GPL";
  memcpy(a.prog_name, SKL_PROG_NAME, sizeof(SKL_PROG_NAME));
  if (log && logn > 0) {
    log[0] = 0;
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = (uint32_t)(logn > UINT32_MAX ? UINT32_MAX : logn);
    a.log_level = 1;
  }
  long fd = sys_bpf(BPF_PROG_LOAD, &a);
  if (fd >= 0) return (int)fd;
  int e = errno;
  /* An unknown program type is refused with EINVAL before the verifier runs (no log): no sk_lookup here. */
  if (e == EINVAL && (!log || logn == 0 || log[0] == 0)) return -EOPNOTSUPP;
  return -e;
}

static int link_netns(int prog, int netns) {
  AUTO_FD own = netns >= 0 ? -1 : open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (netns < 0 && own < 0) return -errno;
  int ns = netns >= 0 ? netns : own;
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.link_create.prog_fd = (uint32_t)prog;
  a.link_create.target_fd = (uint32_t)ns;
  a.link_create.attach_type = BPF_SK_LOOKUP;
  long fd = sys_bpf(BPF_LINK_CREATE, &a);
  if (fd >= 0) return (int)fd;
  return errno == EINVAL ? -EOPNOTSUPP : -errno;
}

int as_skl_open(struct as_skl *s, char *log, size_t logn) { return as_skl_open_in(s, -1, log, logn); }

int as_skl_open_in(struct as_skl *s, int netns, char *log, size_t logn) {
  s->counts = s->socks = s->prog = s->link = -1;
  AUTO_FD counts = map_create(BPF_MAP_TYPE_HASH, 4, 4, AS_SKL_PORTS, "as_skl_counts");
  if (counts < 0) return counts;
  /* value 8 bytes: userspace writes a u64 fd and reads back the socket cookie */
  AUTO_FD socks = map_create(BPF_MAP_TYPE_SOCKHASH, 4, 8, AS_SKL_PORTS * AS_SKL_SLOTS, "as_skl_socks");
  if (socks < 0) return socks == -EINVAL ? -EOPNOTSUPP : socks;
  AUTO_FD prog = load_prog(counts, socks, log, logn);
  if (prog < 0) return prog;
  int link = link_netns(prog, netns);
  if (link < 0) return link;
  s->counts = counts; counts = -1; /* ownership moves */
  s->socks = socks; socks = -1;
  s->prog = prog; prog = -1;
  s->link = link;
  return 0;
}

static uint32_t key_of(unsigned port, unsigned slot) { return (uint32_t)(port * AS_SKL_SLOTS + slot); }

static int old_count(struct as_skl *s, unsigned port, uint32_t *n) {
  uint32_t p = port;
  int r = map_lookup(s->counts, &p, n);
  if (r == -ENOENT) {
    *n = 0;
    return 0;
  }
  return r;
}

static int tcp_listener(int fd) {
  int v = 0;
  socklen_t l = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) < 0) return -errno;
  if (v != IPPROTO_TCP) return -EOPNOTSUPP;
  l = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) < 0) return -errno;
  return v ? 0 : -EOPNOTSUPP;
}

int as_skl_del(struct as_skl *s, unsigned port) {
  if (s->counts < 0) return -EBADF;
  if (port == 0 || port > 65535) return -EINVAL;
  uint32_t n, p = port;
  int r = old_count(s, port, &n);
  if (r < 0) return r;
  r = map_delete(s->counts, &p); /* first: no new connection picks a slot from here on */
  for (unsigned i = 0; i < AS_SKL_SLOTS; i++) {
    uint32_t k = key_of(port, i);
    map_delete(s->socks, &k); /* -ENOENT for slots never used */
  }
  return r;
}

int as_skl_set(struct as_skl *s, unsigned port, const int *fds, unsigned n) {
  if (s->counts < 0) return -EBADF;
  if (port == 0 || port > 65535 || n == 0 || n > AS_SKL_SLOTS) return -EINVAL;
  for (unsigned i = 0; i < n; i++) {
    int r = tcp_listener(fds[i]);
    if (r < 0) return r;
  }
  uint32_t old;
  int r = old_count(s, port, &old);
  if (r < 0) return r;
  for (unsigned i = 0; i < n; i++) { /* grow: the sockets before the count */
    uint32_t k = key_of(port, i);
    uint64_t v = (uint64_t)fds[i];
    if ((r = map_update(s->socks, &k, &v)) < 0) goto fail;
  }
  uint32_t p = port, c = n;
  if ((r = map_update(s->counts, &p, &c)) < 0) goto fail;
  for (unsigned i = n; i < old && i < AS_SKL_SLOTS; i++) { /* shrink: the count before the sockets */
    uint32_t k = key_of(port, i);
    map_delete(s->socks, &k);
  }
  return 0;
fail: /* a half-written set must not steer: the port goes back to the normal lookup */
  as_skl_del(s, port);
  return r;
}

void as_skl_close(struct as_skl *s) {
  int *fds[] = {&s->link, &s->prog, &s->socks, &s->counts};
  for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
    if (*fds[i] >= 0) close(*fds[i]);
    *fds[i] = -1;
  }
}
