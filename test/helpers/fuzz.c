/* A hostile program for appswitch: random argument sets for every trapped socket call, and racing threads that
 * rewrite a sockaddr while the call is trapped. socket(2), bind(2), connect(2), accept(2), sendmsg(2), sendmmsg(2),
 * getsockopt(2), seccomp_unotify(2) ("pointer arguments are read in the supervisor").
 *
 * usage:
 *   fuzz cases --unix-dir DIR [--seed N] [--iterations N] [--port P]
 *       N random cases per syscall, made with raw syscall(2); one line per case:
 *       "C <index> <syscall> <fd kind> <destination class> <info> <result>", result "OK", "=<count>" or an errno
 *       name; destination v (virtual), l (loopback/any), o (other), u (AF_UNSPEC), x (no valid inet address),
 *       n (none), - (n/a);
 *       info: for socket() i (inet stream/dgram), r (other inet type), u (unix/netlink), p (packet), f (other family);
 *       for sends F when MSG_FASTOPEN is set.
 *       Run once natively and once under appswitch with the same seed; the lines are compared by the test.
 *       Every socket is non-blocking and every send has MSG_DONTWAIT, so no case can hang natively.
 *       DIR must be an empty directory of this run alone: the program works in it, and the Unix socket paths of
 *       the cases are relative names there. Whether bind/connect/sendto to a path succeed depends on which socket
 *       files exist, so the native run and the run under appswitch must each start from an empty directory that
 *       nothing else writes (with fixed /tmp paths, the native run's sockets were still there for the appswitch
 *       run, and a first run on a machine disagreed with every later one).
 *   fuzz race --allowed IP:PORT --denied IP:PORT [--iterations N] [--threads N]
 *       thread A connects (TCP) / sends (UDP) to a sockaddr that thread B flips between the two addresses;
 *       prints "race tcp ok=.. refused=.. wrong=.." and "race udp sent=.. refused=.. wrong=..".
 *   fuzz listen --port P
 *       bind+listen TCP on 0.0.0.0:P; prints "listening P" or "bind|listen <errno name>", then waits for SIGTERM.
 *   fuzz burst --allowed IP:PORT --iterations N
 *       N connections in a row, each reads one byte (5 s timeout); prints "burst ok=.. timeout=.. <errno>=..".
 *   fuzz fdlimit
 *       socket() until it fails; prints "fdlimit opened=N errno=<name>" and whether socket() works after a close.
 *   fuzz serve --port P --id C
 *       TCP and UDP server on 0.0.0.0:P: each TCP connection gets one byte C; counts connections and datagrams;
 *       on SIGTERM prints "served <C> tcp=N udp=M" and exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

/* ---- random numbers (xorshift64*: the same seed gives the same cases in both runs) ------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return x * 0x2545F4914F6CDD1DULL;
}
static uint32_t below(uint32_t n) { return (uint32_t)(rnd() % n); }
static int chance(int pct) { return (int)below(100) < pct; }

/* ---- memory: good, straddling, PROT_NONE and unmapped addresses ------------------------------------------- */

static uint8_t *region; /* page 0..1 read-write, page 2 PROT_NONE, page 3 unmapped */
static size_t page;
static size_t bump;

enum ptrkind { P_GOOD, P_NULL, P_UNMAPPED, P_PROTNONE, P_STRADDLE, P_KERNEL, P_RANDOM, P_MISALIGNED, P_COUNT };

static void mem_init(void) {
  page = (size_t)sysconf(_SC_PAGESIZE);
  region = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  mprotect(region + 2 * page, page, PROT_NONE);
  munmap(region + 3 * page, page);
}

/* A pointer of the given kind holding n bytes of src (as far as the kind lets them be readable). Good pointers come
 * from a bump area reset per case; the straddling one ends the read-write part, so only its first k bytes exist. */
static uint64_t place(enum ptrkind k, const void *src, size_t n) {
  switch (k) {
  case P_NULL: return 0;
  case P_UNMAPPED: return (uint64_t)(uintptr_t)(region + 3 * page + below(64));
  case P_PROTNONE: return (uint64_t)(uintptr_t)(region + 2 * page + below(64));
  case P_KERNEL: return 0xffffffff81000000ULL + below(4096);
  case P_RANDOM: return (rnd() & 0x00007fffffffffffULL) | 0x100000000000ULL;
  case P_STRADDLE: {
    size_t keep = n > 1 ? 1 + below((uint32_t)(n - 1)) : 0;
    uint8_t *p = region + 2 * page - keep;
    if (keep) memcpy(p, src, keep);
    return (uint64_t)(uintptr_t)p;
  }
  case P_MISALIGNED:
  case P_GOOD:
  default: {
    size_t off = (bump + (k == P_MISALIGNED ? 1 : 0) + 7) & ~(size_t)7;
    if (k == P_MISALIGNED) off += 3;
    if (off + n > page + page / 2) off = 0; /* the last half page belongs to the straddling pointer */
    uint8_t *p = region + off;
    if (n) memcpy(p, src, n);
    bump = off + n;
    return (uint64_t)(uintptr_t)p;
  }
  }
}

static enum ptrkind any_ptr(int good_pct) { return chance(good_pct) ? P_GOOD : (enum ptrkind)below(P_COUNT); }

/* ---- destinations ------------------------------------------------------------------------------------------ */

static struct sockaddr_in allowed4, denied4;
static int self_port = 7000;
/* The persistent listener moves to a new port each time it is remade: under appswitch a closed listener's port is
 * released when the daemon's sweep notices the close (every 0.5 s), not at close(2). */
static int lst_port = 7002;
static long generation;

/* Destination classes the comparison cares about: a virtual address (a name under appswitch, a route natively),
 * the own listener, anything else, or no valid sockaddr at all. */
static char dest_class;
/* The test host's node address (192.0.2.1, TestHost's default): its daemon ports and port pool are closed doors. */
#define NODE_ADDR4 0xc0000201u

static void v4(struct sockaddr_in *a, const char *ip, int port) {
  memset(a, 0, sizeof(*a));
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, ip, &a->sin_addr);
}

static int is_virtual4(uint32_t be) {
  uint32_t h = ntohl(be);
  return (h >> 24) == 10 || (h >> 16) == 0xa9fe;
}

static int rand_port(void) {
  switch (below(6)) {
  case 0: return 0;
  case 1: return lst_port;
  case 2: return 7; /* nothing listens */
  case 3: return ntohs(allowed4.sin_port);
  case 4: return 1 + (int)below(1023);
  default: return (int)below(65536);
  }
}

/* Whether this case's Unix socket paths are names in the run's directory (for the Unix socket fixture) or under a
 * directory that never exists (every other fd kind). Under appswitch F_CONN is the fast path's Unix stream socket,
 * where a bind to a path succeeds (natively, on TCP, EINVAL: a known difference) and would leave a socket file that
 * changes what the Unix fixture's later bind/connect/sendto to that name give: only the Unix fixture may make them. */
static int unix_paths_live;

/* Fills buf with a sockaddr of some family; returns its natural length. */
static size_t make_addr(uint8_t *buf, int sock_family) {
  memset(buf, 0, 128);
  int fam;
  switch (below(10)) {
  case 0: fam = AF_UNIX; break;
  case 1: fam = AF_PACKET; break;
  case 2: fam = AF_UNSPEC; break;
  case 3: fam = (int)below(64); break;
  case 4: fam = sock_family == AF_INET ? AF_INET6 : AF_INET; break;
  default: fam = sock_family == AF_INET6 ? AF_INET6 : AF_INET;
  }
  dest_class = 'o';
  if (fam == AF_INET || (fam == AF_UNSPEC && chance(50))) {
    struct sockaddr_in a;
    static const char *ips[] = {"127.0.0.1", "0.0.0.0",     "10.77.0.1",   "192.0.2.1", "192.0.2.77",
                                "203.0.113.5", "169.254.9.9", "255.255.255.255", "224.0.0.1"};
    int pick = (int)below(12);
    if (pick < 9) v4(&a, ips[pick], rand_port());
    else if (pick == 9) a = allowed4;
    else if (pick == 10) a = denied4;
    else {
      v4(&a, "0.0.0.0", rand_port());
      a.sin_addr.s_addr = (uint32_t)rnd();
    }
    a.sin_family = (sa_family_t)fam;
    if (is_virtual4(a.sin_addr.s_addr)) dest_class = 'v';
    else if (ntohl(a.sin_addr.s_addr) == INADDR_LOOPBACK || a.sin_addr.s_addr == 0) dest_class = 'l';
    else if (ntohl(a.sin_addr.s_addr) == NODE_ADDR4) dest_class = 'd';
    memcpy(buf, &a, sizeof(a));
    return sizeof(a);
  }
  if (fam == AF_INET6 || fam == AF_UNSPEC) {
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = (sa_family_t)fam;
    a.sin6_port = htons((uint16_t)rand_port());
    static const char *ips[] = {"::1", "::", "::ffff:127.0.0.1", "::ffff:10.77.0.1", "fe80::1", "2001:db8::1",
                                "::ffff:192.0.2.1"};
    int pick = (int)below(8);
    if (pick < 7) inet_pton(AF_INET6, ips[pick], &a.sin6_addr);
    else
      for (int i = 0; i < 16; i++) a.sin6_addr.s6_addr[i] = (uint8_t)rnd();
    if (chance(10)) a.sin6_scope_id = (uint32_t)below(4);
    if (chance(10)) a.sin6_flowinfo = (uint32_t)rnd();
    const uint8_t *b = a.sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(b, mapped, 12)) {
      uint32_t be;
      memcpy(&be, b + 12, 4);
      if (is_virtual4(be)) dest_class = 'v';
      else if (ntohl(be) == INADDR_LOOPBACK) dest_class = 'l';
      else if (ntohl(be) == NODE_ADDR4) dest_class = 'd';
    } else if (IN6_IS_ADDR_LOOPBACK(&a.sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr)) {
      dest_class = 'l';
    }
    memcpy(buf, &a, sizeof(a));
    return sizeof(a);
  }
  buf[0] = (uint8_t)fam;
  for (int i = 2; i < 110; i++) buf[i] = (uint8_t)rnd();
  /* a relative path: in the run's own --unix-dir (see the usage above), never a name another run can see */
  if (fam == AF_UNIX) snprintf((char *)buf + 2, 100, unix_paths_live ? "appswitch-fuzz-%u" : "absent/appswitch-fuzz-%u", below(4));
  dest_class = 'x';
  return fam == AF_UNIX ? sizeof(struct sockaddr_un) : 16 + below(100);
}

/* A length for a buffer of natural size n: exact, 0, 1, just short, negative, huge, larger. */
static int64_t any_len(size_t n) {
  switch (below(12)) {
  case 0: return 0;
  case 1: return 1;
  case 2: return (int64_t)n - 1;
  case 3: return -1;
  case 4: return INT32_MIN;
  case 5: return 0x7fffffff;
  case 6: return 128;
  case 7: return 129;
  case 8: return (int64_t)below(200);
  case 9: return (int64_t)(rnd() & 0xffffffffffffULL); /* the upper half must be ignored (socklen_t is 32 bits) */
  default: return (int64_t)n;
  }
}

/* The address argument of bind/connect/sendto: pointer and length. */
static void any_sockaddr(int sock_family, uint64_t *ptr, int64_t *len) {
  uint8_t buf[128];
  size_t n = make_addr(buf, sock_family);
  enum ptrkind k = any_ptr(60);
  *ptr = place(k, buf, n);
  *len = chance(60) ? (int64_t)n : any_len(n);
  if (k != P_GOOD && k != P_MISALIGNED) dest_class = 'x';
  else if (*len >= 2 && buf[0] == AF_UNSPEC && buf[1] == 0 && dest_class != 'x') dest_class = 'u';
}

/* ---- the descriptors a case acts on ------------------------------------------------------------------------ */

enum fdkind {
  F_NEG,
  F_CLOSED,
  F_RANDOM,
  F_FILE,
  F_PIPE,
  F_EPOLL,
  F_UNIX,
  F_TCP4,
  F_TCP6,
  F_UDP4,
  F_UDP6,
  F_LISTEN,
  F_PENDING, /* the listener with a connection waiting in its queue */
  F_CONN,    /* the client end of an established connection (the fast path under appswitch) */
  F_CONN_SRV,
  F_COUNT
};
static const char *fd_names[] = {"neg",  "closed", "random", "file", "pipe",    "epoll", "unix",     "tcp4",
                                 "tcp6", "udp4",   "udp6",   "listen", "pending", "conn", "conn_srv"};

static struct {
  int file, pipe_r, pipe_w, ep, unix_a, unix_b;
  int lst, conn, conn_srv, fix_lst; /* fix_lst: a private listener the fixtures connect to */
  int stale;                        /* a case changed a persistent socket: remake them */
} fx = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0};

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static int tcp_listener(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a;
  v4(&a, "127.0.0.1", port);
  int r = -1;
  for (int tries = 0; s >= 0 && tries < 300 && (r = bind(s, (struct sockaddr *)&a, sizeof(a))) < 0 && errno == EADDRINUSE;
       tries++)
    usleep(10000); /* under appswitch the port of a closed listener is free once the daemon's sweep saw it closed */
  if (r < 0 || listen(s, 128) < 0) {
    fprintf(stderr, "fuzz: listener on %d: %s\n", port, strerror(errno));
    exit(2);
  }
  return s;
}

static int wait_readable(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, ms) == 1;
}

/* A connection to port from a new socket; *accepted gets the far end from listener l (when asked). */
static int connect_local(int l, int port, int *accepted) {
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  v4(&a, "127.0.0.1", port);
  if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0) {
    fprintf(stderr, "fuzz: connect to own listener %d: %s\n", port, strerror(errno));
    exit(2);
  }
  fcntl(c, F_SETFL, O_NONBLOCK);
  if (accepted) {
    if (!wait_readable(l, 5000)) {
      fprintf(stderr, "fuzz: own listener %d never saw the connection\n", port);
      exit(2);
    }
    *accepted = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (*accepted < 0) {
      fprintf(stderr, "fuzz: accept on own listener: %s\n", strerror(errno));
      exit(2);
    }
  }
  return c;
}

static void remake_sockets(void) {
  close_fd(&fx.lst);
  close_fd(&fx.conn);
  close_fd(&fx.conn_srv);
  lst_port = self_port + 2 + (int)(generation++ % 500);
  fx.lst = tcp_listener(lst_port);
  fx.conn = connect_local(fx.fix_lst, self_port + 1, &fx.conn_srv);
  fx.stale = 0;
}

static void fixtures_init(void) {
  char path[] = "/tmp/appswitch-fuzz-XXXXXX";
  fx.file = mkstemp(path);
  unlink(path);
  int p[2];
  if (fx.file < 0 || pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) exit(2);
  fx.pipe_r = p[0];
  fx.pipe_w = p[1];
  fx.ep = epoll_create1(EPOLL_CLOEXEC);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) exit(2);
  fx.unix_a = sv[0];
  fx.unix_b = sv[1];
  fx.fix_lst = tcp_listener(self_port + 1);
  remake_sockets();
}

/* Per case: the fd for a kind (fresh sockets are made now and closed by case_end()). */
static int fresh = -1, pending_client = -1;

static int fd_of(enum fdkind k, int64_t rand_fd) {
  switch (k) {
  case F_NEG: return -1;
  case F_CLOSED: {
    int d = dup(0);
    close(d);
    return d; /* the lowest free number: nothing is opened again before the call */
  }
  case F_RANDOM: return (int)rand_fd;
  case F_FILE: return fx.file;
  case F_PIPE: return fx.pipe_w;
  case F_EPOLL: return fx.ep;
  case F_UNIX: return fx.unix_a;
  case F_TCP4: return fresh = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  case F_TCP6: return fresh = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  case F_UDP4: return fresh = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  case F_UDP6: return fresh = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  case F_LISTEN: return fx.lst;
  case F_PENDING:
    pending_client = connect_local(fx.lst, lst_port, NULL);
    if (!wait_readable(fx.lst, 5000)) fprintf(stderr, "fuzz: pending connection did not arrive\n");
    return fx.lst;
  case F_CONN: return fx.conn;
  case F_CONN_SRV: return fx.conn_srv;
  default: return -1;
  }
}

static int family_of(enum fdkind k) { return k == F_TCP6 || k == F_UDP6 ? AF_INET6 : AF_INET; }

static int persistent(enum fdkind k) { return k == F_LISTEN || k == F_PENDING || k == F_CONN || k == F_CONN_SRV; }

/* ---- one case ---------------------------------------------------------------------------------------------- */

enum sc { S_SOCKET, S_BIND, S_LISTEN, S_CONNECT, S_ACCEPT, S_ACCEPT4, S_GETSOCKNAME, S_GETPEERNAME, S_SETSOCKOPT,
          S_GETSOCKOPT, S_SENDTO, S_SENDMSG, S_SENDMMSG, S_COUNT };
static const char *sc_names[] = {"socket",      "bind",        "listen",     "connect",    "accept",
                                 "accept4",     "getsockname", "getpeername", "setsockopt", "getsockopt",
                                 "sendto",      "sendmsg",     "sendmmsg"};

static const char *errname(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "E?";
}

static long sys6(long nr, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, uint64_t f) {
  return syscall(nr, a, b, c, d, e, f);
}

/* Random send flags, always with MSG_DONTWAIT (no case may block natively) and MSG_NOSIGNAL. */
static uint64_t send_flags(void) {
  uint64_t f = MSG_DONTWAIT | MSG_NOSIGNAL;
  if (chance(20)) f |= MSG_CONFIRM;
  if (chance(10)) f |= MSG_MORE;
  if (chance(5)) f |= MSG_OOB;
  if (chance(5)) f |= MSG_EOR;
  if (chance(3)) f |= MSG_FASTOPEN;
  if (chance(3)) f |= 1u << below(32);
  if (chance(20)) f |= (rnd() & 0xffffffff00000000ULL); /* the upper half of an int argument: ignored */
  return f;
}

/* An iovec array of n entries (some pointing at bad memory or with absurd lengths); returns its address. */
static uint64_t make_iov(size_t n) {
  struct iovec iov[4];
  size_t m = n < 4 ? n : 4;
  static uint8_t payload[2048];
  for (size_t i = 0; i < m; i++) {
    size_t len = chance(70) ? below(200) : (size_t[]){0, 1, 65507, 65508, 70000, (size_t)-1}[below(6)];
    enum ptrkind k = any_ptr(75);
    iov[i].iov_len = len;
    iov[i].iov_base = (void *)(uintptr_t)place(k, payload, len < sizeof(payload) ? len : 0);
    if (k == P_GOOD && len > 200) iov[i].iov_base = (void *)(region + page); /* large reads stay inside the map */
  }
  return place(any_ptr(85), iov, m * sizeof(iov[0]));
}

static void make_msghdr(struct msghdr *mh, int family) {
  memset(mh, 0, sizeof(*mh));
  uint64_t name;
  int64_t namelen;
  if (chance(85)) {
    any_sockaddr(family, &name, &namelen);
  } else {
    name = 0;
    namelen = chance(50) ? 0 : 16;
    dest_class = 'n';
  }
  mh->msg_name = (void *)(uintptr_t)name;
  mh->msg_namelen = (socklen_t)namelen;
  size_t n = chance(85) ? below(3) : (size_t[]){1025, 0x7fffffff, 4}[below(3)];
  mh->msg_iov = (struct iovec *)(uintptr_t)make_iov(n);
  mh->msg_iovlen = n;
  if (chance(15)) {
    uint8_t ctl[64];
    for (size_t i = 0; i < sizeof(ctl); i++) ctl[i] = (uint8_t)rnd();
    if (chance(50)) { /* a well-formed but meaningless cmsg */
      struct cmsghdr *c = (struct cmsghdr *)ctl;
      c->cmsg_len = CMSG_LEN(4);
      c->cmsg_level = chance(50) ? SOL_SOCKET : SOL_IP;
      c->cmsg_type = (int)below(20);
    }
    size_t cl = chance(70) ? CMSG_SPACE(4) : (size_t[]){1, 64, 70000, (size_t)-1}[below(4)];
    mh->msg_control = (void *)(uintptr_t)place(any_ptr(80), ctl, cl <= sizeof(ctl) ? cl : sizeof(ctl));
    mh->msg_controllen = cl;
  }
}

static enum fdkind pick_fd(enum sc s, int64_t *rand_fd) {
  *rand_fd = chance(50) ? 900 + below(100) : (int64_t)(int32_t)rnd();
  (void)s;
  return (enum fdkind)below(F_COUNT);
}

static int sockopt_level(void) {
  switch (below(10)) {
  case 0: return SOL_IP;
  case 1: return SOL_IPV6;
  case 2: return (int)below(300);
  case 3:
  case 4:
  case 5: return SOL_SOCKET;
  default: return IPPROTO_TCP;
  }
}

static int sockopt_name(int level) {
  if (level == SOL_SOCKET) {
    int pick = (int)below(6);
    return pick == 0 ? SO_DOMAIN : pick == 1 ? SO_PROTOCOL : pick == 2 ? SO_TYPE : (int)below(80);
  }
  if (level == IPPROTO_TCP && chance(30)) {
    static const int common[] = {TCP_NODELAY, TCP_CORK, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT,
                                 TCP_CONGESTION, TCP_INFO, TCP_MAXSEG, TCP_QUICKACK, TCP_DEFER_ACCEPT};
    return common[below(sizeof(common) / sizeof(common[0]))];
  }
  /* options that change what the socket is (repair mode, an upper-layer protocol, a BPF program) are left out:
   * they are privileged surgery on the socket, not arguments to validate */
  for (;;) {
    int n = (int)below(level == IPPROTO_TCP ? 45 : 80);
    if (level == IPPROTO_TCP && (n == TCP_REPAIR || n == TCP_REPAIR_QUEUE || n == TCP_QUEUE_SEQ ||
                                 n == TCP_REPAIR_OPTIONS || n == TCP_REPAIR_WINDOW || n == TCP_ULP || n == TCP_MD5SIG ||
                                 n == TCP_MD5SIG_EXT || n == TCP_ZEROCOPY_RECEIVE || n == 42 /* TCP_AO_REPAIR */ || n >= 38 /* TCP_AO_* */))
      continue;
    if (level == SOL_SOCKET && (n == SO_ATTACH_FILTER || n == SO_ATTACH_BPF || n == SO_ATTACH_REUSEPORT_CBPF ||
                                n == SO_ATTACH_REUSEPORT_EBPF || n == SO_BINDTODEVICE || n == SO_BINDTOIFINDEX))
      continue;
    return n;
  }
}

static void run_case(long index, enum sc s) {
  bump = 0;
  char info = '-'; /* socket(): what the filter sees; sends: F when MSG_FASTOPEN is set */
  dest_class = '-';
  int64_t rand_fd;
  enum fdkind k = pick_fd(s, &rand_fd);
  unix_paths_live = k == F_UNIX;
  /* every argument is drawn before anything is created, so the random sequence never depends on results */
  uint64_t a[6] = {0};
  long nr = 0;
  int family = family_of(k);
  struct msghdr mh;
  struct mmsghdr mm[2];
  switch (s) {
  case S_SOCKET: {
    static const int doms[] = {AF_INET, AF_INET6, AF_UNIX, AF_PACKET, AF_NETLINK, AF_UNSPEC};
    int dom = chance(85) ? doms[below(6)] : (int)below(64);
    static const int types[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET, SOCK_PACKET, 0};
    int type = chance(90) ? types[below(6)] : (int)below(16);
    if (chance(50)) type |= SOCK_NONBLOCK;
    if (chance(50)) type |= SOCK_CLOEXEC;
    if (chance(5)) type |= 1 << below(32);
    static const int protos[] = {0, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_RAW};
    int proto = chance(90) ? protos[below(6)] : (int)rnd();
    int base = type & 0xf;
    info = dom == AF_INET || dom == AF_INET6 ? (base == SOCK_STREAM || base == SOCK_DGRAM ? 'i' : 'r')
           : dom == AF_UNIX || dom == AF_NETLINK ? 'u'
           : dom == AF_PACKET                    ? 'p'
                                                 : 'f';
    nr = SYS_socket;
    a[0] = (uint64_t)dom | (chance(10) ? rnd() << 32 : 0);
    a[1] = (uint32_t)type;
    a[2] = (uint32_t)proto;
    k = F_COUNT;
    break;
  }
  case S_BIND:
  case S_CONNECT: {
    int64_t len;
    any_sockaddr(family, &a[1], &len);
    a[2] = (uint64_t)len;
    nr = s == S_BIND ? SYS_bind : SYS_connect;
    break;
  }
  case S_LISTEN:
    nr = SYS_listen;
    a[1] = chance(70) ? below(256) : (uint64_t)(int64_t)(int32_t)rnd();
    break;
  case S_ACCEPT:
  case S_ACCEPT4:
  case S_GETSOCKNAME:
  case S_GETPEERNAME: {
    int32_t ulen = (int32_t)any_len(sizeof(struct sockaddr_in6));
    enum ptrkind lk = any_ptr(75), ak = any_ptr(70);
    a[2] = chance(10) ? 0 : place(lk, &ulen, sizeof(ulen));
    uint8_t junk[128];
    memset(junk, 0xa5, sizeof(junk));
    a[1] = chance(10) ? 0 : place(ak, junk, sizeof(junk));
    if (s == S_ACCEPT4) {
      static const int fl[] = {0, SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_NONBLOCK | SOCK_CLOEXEC};
      a[3] = chance(85) ? (uint64_t)fl[below(4)] : (uint64_t)(1u << below(32));
    }
    nr = s == S_ACCEPT ? SYS_accept : s == S_ACCEPT4 ? SYS_accept4 : s == S_GETSOCKNAME ? SYS_getsockname
                                                                                          : SYS_getpeername;
    break;
  }
  case S_SETSOCKOPT:
  case S_GETSOCKOPT: {
    int level = sockopt_level();
    a[1] = (uint32_t)level;
    a[2] = (uint32_t)sockopt_name(level);
    uint8_t val[64];
    for (size_t i = 0; i < sizeof(val); i++) val[i] = (uint8_t)(chance(50) ? 0 : rnd());
    if (chance(30)) {
      int one = (int)below(3);
      memcpy(val, &one, sizeof(one));
    }
    if (level == IPPROTO_TCP && (int)a[2] == TCP_CONGESTION && chance(50)) strcpy((char *)val, chance(50) ? "cubic" : "reno");
    if (s == S_SETSOCKOPT) {
      a[3] = place(any_ptr(70), val, sizeof(val));
      a[4] = (uint64_t)(chance(60) ? (int64_t)sizeof(int) : any_len(sizeof(int)));
      nr = SYS_setsockopt;
    } else {
      a[3] = place(any_ptr(70), val, sizeof(val));
      int32_t ulen = (int32_t)(chance(50) ? (int64_t)sizeof(int) : any_len(sizeof(int)));
      if (ulen > 64 && ulen < 4096 && chance(50)) ulen = 64; /* a real answer must fit in the good buffer */
      a[4] = chance(5) ? 0 : place(any_ptr(75), &ulen, sizeof(ulen));
      nr = SYS_getsockopt;
    }
    break;
  }
  case S_SENDTO: {
    static uint8_t payload[256];
    size_t len = chance(80) ? below(200) : (size_t[]){0, 65507, 65508, 70000, (size_t)-1}[below(5)];
    a[1] = place(any_ptr(80), payload, len < sizeof(payload) ? len : 0);
    if (len > sizeof(payload) && a[1] == (uint64_t)(uintptr_t)region) a[1] = (uint64_t)(uintptr_t)(region + page);
    a[2] = len;
    a[3] = send_flags();
    if (chance(85)) {
      int64_t l;
      any_sockaddr(family, &a[4], &l);
      a[5] = (uint64_t)l;
    } else {
      dest_class = 'n';
      a[5] = below(20);
    }
    nr = SYS_sendto;
    break;
  }
  case S_SENDMSG:
    make_msghdr(&mh, family);
    a[1] = place(any_ptr(85), &mh, sizeof(mh));
    a[2] = send_flags();
    nr = SYS_sendmsg;
    break;
  case S_SENDMMSG: {
    memset(mm, 0, sizeof(mm));
    make_msghdr(&mm[0].msg_hdr, family);
    char first = dest_class;
    make_msghdr(&mm[1].msg_hdr, family);
    if (first == 'v' || dest_class == 'v') dest_class = 'v';
    else dest_class = first;
    a[1] = place(any_ptr(85), mm, sizeof(mm));
    a[2] = chance(80) ? below(3) : (uint64_t)(rnd() & 0xffffffffu);
    a[3] = send_flags();
    nr = SYS_sendmmsg;
    break;
  }
  default: return;
  }
  if ((s == S_SENDTO || s == S_SENDMMSG) && (a[3] & MSG_FASTOPEN)) info = 'F';
  if (s == S_SENDMSG && (a[2] & MSG_FASTOPEN)) info = 'F';
  if (k != F_COUNT) a[0] = (uint64_t)(int64_t)fd_of(k, rand_fd);
  errno = 0;
  long r = sys6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  int e = errno;
  char res[32];
  if (r >= 0) {
    if (s == S_SENDTO || s == S_SENDMSG || s == S_SENDMMSG) snprintf(res, sizeof(res), "=%ld", r);
    else snprintf(res, sizeof(res), "OK");
  } else {
    snprintf(res, sizeof(res), "%s", errname(e));
  }
  if ((s == S_SOCKET || s == S_ACCEPT || s == S_ACCEPT4) && r >= 0) close((int)r);
  printf("C %ld %s %s %c %c %s\n", index, sc_names[s], k == F_COUNT ? "-" : fd_names[k], dest_class, info, res);
  if (fresh >= 0) close_fd(&fresh);
  if (pending_client >= 0) close_fd(&pending_client);
  if (k == F_PENDING && r < 0) fx.stale = 1; /* the waiting connection may still be queued */
  if (s == S_CONNECT) fx.stale = 1; /* a connection it started may still reach the listener's queue */
  if (persistent(k) && r >= 0 && s != S_GETSOCKNAME && s != S_GETPEERNAME && s != S_GETSOCKOPT) fx.stale = 1;
}

/* Enters dir, which must exist and be empty (see the usage: the Unix paths of the cases live there). */
static int enter_unix_dir(const char *dir) {
  if (!dir) {
    fprintf(stderr, "fuzz: cases needs --unix-dir DIR (an empty directory of this run alone)\n");
    return -1;
  }
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "fuzz: --unix-dir %s: %s\n", dir, errname(errno));
    return -1;
  }
  int entries = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
  closedir(d);
  if (entries) {
    fprintf(stderr, "fuzz: --unix-dir %s is not empty\n", dir);
    return -1;
  }
  if (chdir(dir) < 0) {
    fprintf(stderr, "fuzz: chdir %s: %s\n", dir, errname(errno));
    return -1;
  }
  return 0;
}

static int cmd_cases(uint64_t seed, long iterations, const char *unix_dir) {
  if (enter_unix_dir(unix_dir) < 0) return 2;
  printf("seed %" PRIu64 "\n", seed);
  rng_state = seed ? seed : 1;
  mem_init();
  fixtures_init();
  /* a datagram peer and sockets that received a case's bytes are drained by remaking the fixtures */
  long index = 0;
  for (long i = 0; i < iterations; i++) {
    for (int s = 0; s < S_COUNT; s++) {
      if (fx.stale || index % 64 == 0) remake_sockets();
      run_case(index++, (enum sc)s);
    }
  }
  printf("done cases=%ld\n", index);
  fflush(stdout);
  return 0;
}

/* ---- racing threads ----------------------------------------------------------------------------------------- */

static struct sockaddr_in race_buf; /* thread B rewrites this while thread A's call is trapped */
static atomic_int race_stop;

static void *flipper(void *arg) {
  (void)arg;
  volatile struct sockaddr_in *b = &race_buf;
  while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
    b->sin_addr.s_addr = denied4.sin_addr.s_addr;
    b->sin_port = denied4.sin_port;
    b->sin_addr.s_addr = allowed4.sin_addr.s_addr;
    b->sin_port = allowed4.sin_port;
  }
  return NULL;
}

static int parse_ep(const char *s, struct sockaddr_in *out) {
  char ip[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof(ip)) return -1;
  memcpy(ip, s, (size_t)(colon - s));
  ip[colon - s] = 0;
  v4(out, ip, atoi(colon + 1));
  return out->sin_addr.s_addr || !strcmp(ip, "0.0.0.0") ? 0 : -1;
}

static int cmd_race(long iterations, int flippers) {
  race_buf = allowed4;
  pthread_t th[8];
  if (flippers > 8) flippers = 8;
  for (int i = 0; i < flippers; i++) pthread_create(&th[i], NULL, flipper, NULL);
  long ok = 0, refused = 0, wrong = 0, other = 0;
  for (long i = 0; i < iterations; i++) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(s, (struct sockaddr *)&race_buf, sizeof(race_buf)) == 0) {
      struct sockaddr_in peer;
      socklen_t pl = sizeof(peer);
      char id = '?';
      struct timeval tv = {.tv_sec = 5};
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      int got = (int)read(s, &id, 1);
      if (getpeername(s, (struct sockaddr *)&peer, &pl) == 0 && peer.sin_addr.s_addr == allowed4.sin_addr.s_addr &&
          peer.sin_port == allowed4.sin_port && got == 1 && id == 'A')
        ok++;
      else {
        wrong++;
        char ip[32];
        inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
        printf("WRONG tcp connection %ld: peer %s:%d, server said '%c' (read %d)\n", i, ip, ntohs(peer.sin_port), id, got);
      }
    } else if (errno == ECONNREFUSED) {
      refused++;
    } else {
      other++;
      if (other < 5) printf("race tcp connect %ld: %s\n", i, strerror(errno));
    }
    close(s);
  }
  printf("race tcp ok=%ld refused=%ld wrong=%ld other=%ld\n", ok, refused, wrong, other);
  long sent = 0, urefused = 0, uother = 0;
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  for (long i = 0; i < iterations; i++) {
    if (sendto(u, "u", 1, 0, (struct sockaddr *)&race_buf, sizeof(race_buf)) == 1) sent++;
    else if (errno == ECONNREFUSED) urefused++;
    else uother++;
  }
  close(u);
  atomic_store(&race_stop, 1);
  for (int i = 0; i < flippers; i++) pthread_join(th[i], NULL);
  printf("race udp sent=%ld refused=%ld other=%ld\n", sent, urefused, uother);
  fflush(stdout);
  return wrong ? 1 : 0;
}

/* ---- the counting server ---------------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_flag;
static void on_term(int sig) {
  (void)sig;
  stop_flag = 1;
}

static int cmd_serve(int port, char id) {
  signal(SIGTERM, on_term);
  signal(SIGPIPE, SIG_IGN);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a;
  v4(&a, "0.0.0.0", port);
  if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1024) < 0 || bind(u, (struct sockaddr *)&a, sizeof(a)) < 0) {
    printf("serve: %s\n", strerror(errno));
    return 2;
  }
  printf("serving %c on %d\n", id, port);
  fflush(stdout);
  long tcp = 0, udp = 0;
  while (!stop_flag) {
    struct pollfd p[2] = {{.fd = l, .events = POLLIN}, {.fd = u, .events = POLLIN}};
    if (poll(p, 2, 200) <= 0) continue;
    for (;;) {
      int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) break;
      tcp++;
      if (write(c, &id, 1) < 0) { /* the client may be gone already */
      }
      close(c);
    }
    char b[64];
    while (recv(u, b, sizeof(b), MSG_DONTWAIT) >= 0) udp++;
  }
  printf("served %c tcp=%ld udp=%ld\n", id, tcp, udp);
  fflush(stdout);
  return 0;
}

static int cmd_listen(int port) {
  signal(SIGTERM, on_term);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  v4(&a, "0.0.0.0", port);
  if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0) printf("bind %s\n", errname(errno));
  else if (listen(l, 64) < 0) printf("listen %s\n", errname(errno));
  else printf("listening %d\n", port);
  fflush(stdout);
  while (!stop_flag) pause();
  return 0;
}

static int cmd_burst(long n) {
  long ok = 0, timeouts = 0, errs[200] = {0};
  for (long i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      errs[errno < 200 ? errno : 0]++;
      continue;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char b;
    if (connect(s, (struct sockaddr *)&allowed4, sizeof(allowed4)) < 0) errs[errno < 200 ? errno : 0]++;
    else if (read(s, &b, 1) == 1) ok++;
    else if (errno == EAGAIN) timeouts++;
    else errs[errno < 200 ? errno : 0]++;
    close(s);
  }
  printf("burst ok=%ld timeout=%ld", ok, timeouts);
  for (int e = 0; e < 200; e++)
    if (errs[e]) printf(" %s=%ld", e ? errname(e) : "E?", errs[e]);
  printf("\n");
  fflush(stdout);
  return 0;
}

static int cmd_fdlimit(void) {
  int first = -1, last = -1, n = 0;
  for (;;) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      printf("fdlimit opened=%d errno=%s\n", n, errname(errno));
      break;
    }
    if (first < 0) first = s;
    last = s;
    n++;
  }
  if (last >= 0) close(last);
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  printf("after close: %s\n", s >= 0 ? "socket ok" : errname(errno));
  fflush(stdout);
  (void)first;
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    fprintf(stderr, "usage: fuzz cases|race|serve [options]\n");
    return 2;
  }
  uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  long iterations = 10000;
  int port = 7000, threads = 2;
  char id = 'A';
  const char *unix_dir = NULL;
  v4(&allowed4, "10.200.0.1", 9000);
  v4(&denied4, "10.200.0.2", 9000);
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--seed")) seed = strtoull(v, NULL, 0);
    else if (!strcmp(k, "--iterations")) iterations = atol(v);
    else if (!strcmp(k, "--port")) port = atoi(v);
    else if (!strcmp(k, "--threads")) threads = atoi(v);
    else if (!strcmp(k, "--id")) id = v[0];
    else if (!strcmp(k, "--unix-dir")) unix_dir = v;
    else if (!strcmp(k, "--allowed") && parse_ep(v, &allowed4) == 0) continue;
    else if (!strcmp(k, "--denied") && parse_ep(v, &denied4) == 0) continue;
    else {
      fprintf(stderr, "fuzz: bad option %s %s\n", k, v);
      return 2;
    }
  }
  self_port = port;
  if (!strcmp(argv[1], "cases")) return cmd_cases(seed, iterations, unix_dir);
  if (!strcmp(argv[1], "race")) return cmd_race(iterations, threads);
  if (!strcmp(argv[1], "serve")) return cmd_serve(port, id);
  if (!strcmp(argv[1], "listen")) return cmd_listen(port);
  if (!strcmp(argv[1], "burst")) return cmd_burst(iterations);
  if (!strcmp(argv[1], "fdlimit")) return cmd_fdlimit();
  fprintf(stderr, "fuzz: unknown command %s\n", argv[1]);
  return 2;
}
