/* Fast-path socket table and TCP option emulation. See fastpath.h for the design. */
#define _GNU_SOURCE
#include "fastpath.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* ---- the table: open addressing on the cookie, tombstones, doubling ----------------------------------------- */

#define TOMB UINT64_MAX

static uint32_t slot_of(uint64_t cookie, uint32_t cap) {
  uint64_t h = cookie * 0x9E3779B97F4A7C15ull;
  return (uint32_t)(h >> 32) & (cap - 1);
}

static int grow(struct as_ftab *t) {
  uint32_t cap = t->cap ? t->cap * 2 : 64;
  if (t->count * 4 < t->cap) cap = t->cap; /* mostly tombstones: rehash at the same size */
  struct as_fsock *s = calloc(cap, sizeof(*s));
  if (!s) return -ENOMEM;
  for (uint32_t i = 0; i < t->cap; i++) {
    struct as_fsock *e = &t->slots[i];
    if (!e->cookie || e->cookie == TOMB) continue;
    uint32_t j = slot_of(e->cookie, cap);
    while (s[j].cookie) j = (j + 1) & (cap - 1);
    s[j] = *e;
  }
  free(t->slots);
  t->slots = s;
  t->cap = cap;
  t->used = t->count;
  return 0;
}

int as_ftab_put(struct as_ftab *t, const struct as_fsock *e) {
  if (!e->cookie || e->cookie == TOMB) return -EINVAL;
  struct as_fsock *old = as_ftab_get(t, e->cookie);
  if (old) {
    *old = *e;
    return 0;
  }
  if ((t->used + 1) * 10 > t->cap * 7) {
    /* before doubling a large table, drop the entries of sockets already closed: at thousands of connections a second
     * the table otherwise grows to hold the seconds between two timer-driven collections, and never shrinks */
    if (t->count >= 1024 && as_ftab_gc(t) > 0 && (t->count + 1) * 4 < t->cap) {
      int r = grow(t); /* mostly tombstones now: rehash at the same size */
      if (r < 0) return r;
    }
  }
  if ((t->used + 1) * 10 > t->cap * 7) {
    int r = grow(t);
    if (r < 0) return r;
  }
  uint32_t j = slot_of(e->cookie, t->cap);
  while (t->slots[j].cookie && t->slots[j].cookie != TOMB) j = (j + 1) & (t->cap - 1);
  if (!t->slots[j].cookie) t->used++;
  t->slots[j] = *e;
  t->count++;
  return 0;
}

struct as_fsock *as_ftab_get(struct as_ftab *t, uint64_t cookie) {
  if (!t->cap || !cookie || cookie == TOMB) return NULL;
  for (uint32_t j = slot_of(cookie, t->cap), n = 0; n < t->cap; j = (j + 1) & (t->cap - 1), n++) {
    if (!t->slots[j].cookie) return NULL;
    if (t->slots[j].cookie == cookie) return &t->slots[j];
  }
  return NULL;
}

void as_ftab_del(struct as_ftab *t, uint64_t cookie) {
  struct as_fsock *e = as_ftab_get(t, cookie);
  if (!e) return;
  memset(e, 0, sizeof(*e));
  e->cookie = TOMB;
  t->count--;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int as_ftab_gc(struct as_ftab *t) {
  if (!t->count) return 0;
  FILE *f = fopen("/proc/net/unix", "re");
  if (!f) return 0;
  size_t n = 0, cap = 1024;
  uint64_t *inos = malloc(cap * sizeof(*inos));
  char line[512];
  if (!inos || !fgets(line, sizeof(line), f)) { /* the header */
    free(inos);
    fclose(f);
    return 0;
  }
  /* Num RefCount Protocol Flags Type St Inode Path */
  while (fgets(line, sizeof(line), f)) {
    unsigned long long ino;
    if (sscanf(line, "%*s %*s %*s %*s %*s %*s %llu", &ino) != 1) continue;
    if (n == cap) {
      uint64_t *m = realloc(inos, cap * 2 * sizeof(*inos));
      if (!m) break;
      inos = m;
      cap *= 2;
    }
    inos[n++] = ino;
  }
  fclose(f);
  qsort(inos, n, sizeof(*inos), cmp_u64);
  int dropped = 0;
  for (uint32_t i = 0; i < t->cap; i++) {
    struct as_fsock *e = &t->slots[i];
    if (!e->cookie || e->cookie == TOMB) continue;
    if (bsearch(&e->ino, inos, n, sizeof(*inos), cmp_u64)) continue;
    memset(e, 0, sizeof(*e));
    e->cookie = TOMB;
    t->count--;
    dropped++;
  }
  free(inos);
  return dropped;
}

void as_ftab_free(struct as_ftab *t) {
  free(t->slots);
  memset(t, 0, sizeof(*t));
}

uint64_t as_sock_cookie(int s) {
  uint64_t c = 0;
  socklen_t l = sizeof(c);
  return getsockopt(s, SOL_SOCKET, SO_COOKIE, &c, &l) == 0 ? c : 0;
}

/* ---- option emulation ---------------------------------------------------------------------------------------- */

enum kind { K_NONE, K_BOOL, K_INT, K_GETONLY };

struct optdef {
  int level, name;
  enum kind kind;
  int def;        /* what getsockopt answers before any setsockopt */
  int lo, hi;     /* accepted range for K_INT */
};

/* What an established loopback TCP connection answers; ranges as net/ipv4/tcp.c and ip_sockglue.c check them. */
static const struct optdef OPTS[] = {
    {IPPROTO_TCP, TCP_NODELAY, K_BOOL, 0, 0, 1},
    {IPPROTO_TCP, TCP_MAXSEG, K_INT, 65483, 0, 32767},
    {IPPROTO_TCP, TCP_CORK, K_BOOL, 0, 0, 1},
    {IPPROTO_TCP, TCP_KEEPIDLE, K_INT, 7200, 1, 32767},
    {IPPROTO_TCP, TCP_KEEPINTVL, K_INT, 75, 1, 32767},
    {IPPROTO_TCP, TCP_KEEPCNT, K_INT, 9, 1, 127},
    {IPPROTO_TCP, TCP_SYNCNT, K_INT, 6, 1, 127},
    {IPPROTO_TCP, TCP_LINGER2, K_INT, 60, -1, 0x7fffffff},
    {IPPROTO_TCP, TCP_DEFER_ACCEPT, K_INT, 0, 0, 0x7fffffff},
    {IPPROTO_TCP, TCP_WINDOW_CLAMP, K_INT, 0, 0, 0x7fffffff},
    {IPPROTO_TCP, TCP_QUICKACK, K_BOOL, 1, 0, 1},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, K_INT, 0, 0, 0x7fffffff},
    {IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, K_BOOL, 0, 0, 1},
    {IPPROTO_TCP, TCP_THIN_DUPACK, K_BOOL, 0, 0, 1},
    {IPPROTO_TCP, TCP_FASTOPEN, K_INT, 0, 0, 0x7fffffff},
    {IPPROTO_TCP, TCP_NOTSENT_LOWAT, K_INT, -1, -2147483647 - 1, 0x7fffffff},
    {IPPROTO_TCP, TCP_FASTOPEN_CONNECT, K_BOOL, 0, 0, 1},
    {IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, K_BOOL, 0, 0, 1},
    {IPPROTO_TCP, TCP_INQ, K_BOOL, 0, 0, 1},
    {SOL_IP, IP_TOS, K_INT, 0, 0, 255},
    {SOL_IP, IP_TTL, K_INT, 64, -1, 255},
    {SOL_IP, IP_MTU_DISCOVER, K_INT, 1, 0, 5},
    {SOL_IP, IP_RECVERR, K_BOOL, 0, 0, 1},
    {SOL_IP, IP_FREEBIND, K_BOOL, 0, 0, 1},
    {SOL_IP, IP_BIND_ADDRESS_NO_PORT, K_BOOL, 0, 0, 1},
    {SOL_IP, IP_RECVTOS, K_BOOL, 0, 0, 1},
    {SOL_IP, IP_PKTINFO, K_BOOL, 0, 0, 1},
    {SOL_IP, IP_MTU, K_GETONLY, 65536, 0, 0},
    {SOL_IPV6, IPV6_V6ONLY, K_BOOL, 0, 0, 1},
    {SOL_IPV6, IPV6_TCLASS, K_INT, 0, -1, 255},
    {SOL_IPV6, IPV6_UNICAST_HOPS, K_INT, 64, -1, 255},
    {SOL_IPV6, IPV6_RECVERR, K_BOOL, 0, 0, 1},
    {SOL_IPV6, IPV6_MTU, K_GETONLY, 65536, 0, 0},
};

static const struct optdef *find_opt(int level, int name) {
  for (size_t i = 0; i < sizeof(OPTS) / sizeof(OPTS[0]); i++)
    if (OPTS[i].level == level && OPTS[i].name == name) return &OPTS[i];
  return NULL;
}

static struct as_fopt *stored(struct as_fsock *e, int level, int name) {
  for (int i = 0; i < e->nopt; i++)
    if (e->opt[i].level == level && e->opt[i].name == name) return &e->opt[i];
  return NULL;
}

void as_fsock_store(struct as_fsock *e, int level, int name, int val) {
  struct as_fopt *o = stored(e, level, name);
  if (!o) {
    if (e->nopt >= AS_FSOCK_OPTS) return;
    o = &e->opt[e->nopt++];
    o->level = level;
    o->name = name;
  }
  o->val = val;
}

/* The level belongs to the socket's family: SOL_IPV6 on an AF_INET socket is ENOPROTOOPT, as in ip_setsockopt. */
static int level_ok(const struct as_fsock *e, int level) {
  if (level == SOL_IPV6) return e->family == AF_INET6;
  return level == IPPROTO_TCP || level == SOL_IP;
}

int as_fsock_setopt(struct as_fsock *e, int level, int name, const void *val, int len) {
  if (level == SOL_SOCKET) return -ENOPROTOOPT; /* SO_DOMAIN / SO_PROTOCOL are read-only */
  if (!level_ok(e, level)) return -ENOPROTOOPT;
  if (level == IPPROTO_TCP && name == TCP_CONGESTION) {
    if (len < 1) return -EINVAL;
    char name_buf[sizeof(e->cc)];
    size_t n = (size_t)len < sizeof(name_buf) - 1 ? (size_t)len : sizeof(name_buf) - 1;
    memcpy(name_buf, val, n);
    name_buf[n] = 0;
    if (!name_buf[0]) return -ENOENT;
    memcpy(e->cc, name_buf, sizeof(e->cc));
    return 0;
  }
  const struct optdef *d = find_opt(level, name);
  if (!d || d->kind == K_GETONLY) return -ENOPROTOOPT; /* TCP_INFO, IP_MTU: read-only */
  if (len < (int)sizeof(int)) return -EINVAL;
  int v;
  memcpy(&v, val, sizeof(v));
  if (d->kind == K_BOOL) v = v != 0;
  else if (v < d->lo || v > d->hi) return -EINVAL;
  if (level == IPPROTO_TCP && name == TCP_MAXSEG && v != 0 && v < 88) return -EINVAL;
  as_fsock_store(e, level, name, v);
  return 0;
}

static int fill_tcp_info(struct as_fsock *e, void *out, int len) {
  struct tcp_info ti;
  memset(&ti, 0, sizeof(ti));
  ti.tcpi_state = 1; /* TCP_ESTABLISHED */
  ti.tcpi_rto = 204000;
  ti.tcpi_ato = 40000;
  ti.tcpi_snd_mss = 65483;
  ti.tcpi_rcv_mss = 65483;
  ti.tcpi_pmtu = 65535;
  ti.tcpi_rcv_ssthresh = 65483;
  ti.tcpi_rtt = 10;
  ti.tcpi_rttvar = 5;
  ti.tcpi_snd_ssthresh = 0x7fffffff;
  ti.tcpi_snd_cwnd = 10;
  ti.tcpi_advmss = 65483;
  ti.tcpi_reordering = 3;
  ti.tcpi_rcv_space = 65483;
  (void)e;
  int n = len < (int)sizeof(ti) ? len : (int)sizeof(ti);
  memcpy(out, &ti, (size_t)n);
  return n;
}

int as_fsock_getopt(struct as_fsock *e, int level, int name, void *out, int *len) {
  if (level == SOL_SOCKET) {
    if (*len < 0) return -EINVAL;
    int v = name == SO_DOMAIN ? e->family : IPPROTO_TCP;
    *len = *len < (int)sizeof(int) ? *len : (int)sizeof(int);
    memcpy(out, &v, (size_t)*len);
    return 0;
  }
  if (!level_ok(e, level)) return -ENOPROTOOPT;
  if (level == IPPROTO_TCP && name == TCP_INFO) {
    if (*len < 0) return -EINVAL;
    *len = fill_tcp_info(e, out, *len);
    return 0;
  }
  if (level == IPPROTO_TCP && name == TCP_CONGESTION) {
    if (*len < 0) return -EINVAL;
    char cc[16] = "cubic";
    if (e->cc[0]) memcpy(cc, e->cc, sizeof(cc));
    *len = *len < (int)sizeof(cc) ? *len : (int)sizeof(cc);
    memcpy(out, cc, (size_t)*len);
    return 0;
  }
  const struct optdef *d = find_opt(level, name);
  if (!d) return -ENOPROTOOPT;
  /* do_tcp_getsockopt: len = min_t(unsigned int, len, sizeof(int)), so a negative length reads as 4 */
  unsigned int ul = (unsigned int)*len;
  if (ul > sizeof(int)) ul = sizeof(int);
  if (level != IPPROTO_TCP && *len < 0) return -EINVAL;
  struct as_fopt *o = stored(e, level, name);
  int v = o ? o->val : d->def;
  if (level == IPPROTO_TCP && name == TCP_MAXSEG && o && o->val == 0) v = d->def;
  *len = (int)ul;
  memcpy(out, &v, ul);
  return 0;
}
