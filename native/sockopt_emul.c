/* Socket options kept by the generator instead of the kernel on real inet sockets. See sockopt_emul.h. */
#define _GNU_SOURCE
#include "sockopt_emul.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "fastpath.h"
#include "notif.h"
#include "procmem.h"

struct as_oemu_ent *as_oemu_get(struct as_oemu *t, uint64_t cookie) {
  if (!cookie || !t->count) return NULL;
  for (unsigned i = 0; i < AS_OEMU_SLOTS; i++)
    if (t->ent[i].cookie == cookie) return &t->ent[i];
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Inodes of every TCP socket of our network namespace, sorted; NULL when they cannot be read (then nothing is
 * dropped: a socket we cannot see is not a closed socket). */
static uint64_t *tcp_inodes(size_t *n) {
  size_t cap = 1024;
  uint64_t *inos = malloc(cap * sizeof(*inos));
  if (!inos) return NULL;
  *n = 0;
  static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  for (int f = 0; f < 2; f++) {
    FILE *fp = fopen(files[f], "re");
    if (!fp) {
      if (f == 1) continue; /* no IPv6 in this kernel */
      free(inos);
      return NULL;
    }
    char line[512];
    if (!fgets(line, sizeof(line), fp)) { /* the header */
      fclose(fp);
      free(inos);
      return NULL;
    }
    /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
    while (fgets(line, sizeof(line), fp)) {
      unsigned long long ino;
      if (sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %llu", &ino) != 1) continue;
      if (*n == cap) {
        uint64_t *m = realloc(inos, cap * 2 * sizeof(*inos));
        if (!m) {
          fclose(fp);
          free(inos);
          return NULL;
        }
        inos = m;
        cap *= 2;
      }
      inos[(*n)++] = ino;
    }
    fclose(fp);
  }
  qsort(inos, *n, sizeof(*inos), cmp_u64);
  return inos;
}

static void gc(struct as_oemu *t) {
  size_t n;
  uint64_t *inos = tcp_inodes(&n);
  if (!inos) return;
  for (unsigned i = 0; i < AS_OEMU_SLOTS; i++) {
    struct as_oemu_ent *e = &t->ent[i];
    if (e->cookie && !bsearch(&e->ino, inos, n, sizeof(*inos), cmp_u64)) {
      memset(e, 0, sizeof(*e));
      t->count--;
    }
  }
  free(inos);
}

struct as_oemu_ent *as_oemu_take(struct as_oemu *t, uint64_t cookie, uint64_t ino) {
  if (!cookie) return NULL;
  struct as_oemu_ent *e = as_oemu_get(t, cookie);
  if (e) return e;
  if (t->count >= AS_OEMU_SLOTS) gc(t);
  for (unsigned i = 0; i < AS_OEMU_SLOTS; i++) {
    if (!t->ent[i].cookie) {
      e = &t->ent[i];
      memset(e, 0, sizeof(*e));
      e->cookie = cookie;
      e->ino = ino;
      t->count++;
      return e;
    }
  }
  return NULL;
}

uint8_t as_defer_secs_to_retrans(int seconds) {
  int timeout = 1, rto_max = 120;
  uint8_t res = 0;
  if (seconds > 0) {
    int period = timeout;
    res = 1;
    while (seconds > period && res < 255) {
      res++;
      timeout <<= 1;
      if (timeout > rto_max) timeout = rto_max;
      period += timeout;
    }
  }
  return res;
}

int as_defer_retrans_to_secs(uint8_t retrans) {
  int timeout = 1, rto_max = 120, period = 0;
  if (retrans > 0) {
    period = timeout;
    while (--retrans) {
      timeout <<= 1;
      if (timeout > rto_max) timeout = rto_max;
      period += timeout;
    }
  }
  return period;
}

int as_oemu_wants(const struct as_oemu *t, int level, int name, int set) {
  if (level == IPPROTO_TCP && name == TCP_DEFER_ACCEPT) return 1;
  return !set && t->count && level == IPPROTO_IPV6 && name == IPV6_V6ONLY;
}

int as_oemu_serve(struct as_oemu *t, int s, uint64_t cookie, int pid, const __u64 args[6], int set, int notif_fd,
                  uint64_t id, int *result) {
  int level = (int)args[1];
  uint64_t uval = args[3];
  struct as_oemu_ent *e = as_oemu_get(t, cookie);
  if (level == IPPROTO_IPV6) { /* a read of IPV6_V6ONLY: ours only where we turned it off on the real socket */
    if (!e || !e->v6only) return 0;
  } else {
    int type = 0, proto = 0;
    socklen_t l = sizeof(int);
    /* only TCP sockets take TCP options; the kernel gives the others their errno */
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM) return 0;
    l = sizeof(int);
    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &proto, &l) < 0 || proto != IPPROTO_TCP) return 0;
    if (!set && (!e || !e->has_defer)) return 0; /* never set: the kernel's 0 is the answer */
    if (set && !e) {
      struct stat st;
      e = fstat(s, &st) == 0 ? as_oemu_take(t, cookie, (uint64_t)st.st_ino) : NULL;
      if (!e) return 0; /* full of live sockets: the kernel keeps it, as before */
    }
  }
  if (set) { /* __sys_setsockopt: a negative length is EINVAL; do_tcp_setsockopt: then too short, the read, the value */
    int len = (int)args[4];
    int32_t val = 0;
    int r = len < (int)sizeof(int32_t) ? -EINVAL : as_mem_read(pid, uval, &val, sizeof(val));
    if (as_notif_id_valid(notif_fd, id) < 0) return -1;
    if (r == 0) {
      e->has_defer = 1;
      e->defer = as_defer_secs_to_retrans(val);
    }
    *result = r;
    return 1;
  }
  uint64_t ulenp = args[4];
  int32_t len;
  int r = as_mem_read(pid, ulenp, &len, sizeof(len));
  if (r == 0 && len < 0 && level == IPPROTO_TCP) r = -EINVAL; /* do_tcp_getsockopt */
  if (r == 0) {
    /* do_ipv6_getsockopt: min_t(unsigned int, sizeof(int), len), so a negative length reads as a large one */
    len = (uint32_t)len < sizeof(int32_t) ? len : (int32_t)sizeof(int32_t);
    int32_t val = level == IPPROTO_IPV6 ? 1 : as_defer_retrans_to_secs(e->defer);
    r = as_mem_write2(pid, uval, &val, (size_t)len, ulenp, &len, sizeof(len));
  }
  *result = r;
  return 1;
}

int as_v6only(int s, int family) {
  if (family != AF_INET6) return 0;
  int v = 0;
  socklen_t l = sizeof(v);
  return getsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) == 0 && v != 0;
}

int as_v6only_clear(int s, const void *addr, uint32_t len) {
  struct sockaddr_in6 sin6;
  if (len < sizeof(sin6)) return 0;
  memcpy(&sin6, addr, sizeof(sin6));
  if (sin6.sin6_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) return 0;
  int off = 0;
  return setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == 0;
}

void as_v6only_restore(int s) {
  int on = 1;
  setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
}

void as_oemu_note_v6only(struct as_oemu *t, int s, uint64_t ino) {
  struct as_oemu_ent *e = as_oemu_take(t, as_sock_cookie(s), ino);
  if (e) e->v6only = 1;
}
