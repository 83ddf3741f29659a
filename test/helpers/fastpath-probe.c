/* A program that checks, from the inside, that a fast-path connection looks and behaves like TCP.
 *   fastpath-probe server PORT N      epoll server: accepts N connections (listener in epoll), for each prints what it
 *                                     sees, reads to EOF with splice(2), answers "n=<bytes> sum=<sum>", closes
 *   fastpath-probe client IP PORT MODE  MODE: blocking | nonblock | epoll-first (socket registered in epoll before
 *                                     connect, as nginx does) | epoll-high (the same, the instance at fd 200) |
 *                                     epoll-other (epoll instances with other descriptors only) | epoll-last
 *                                     (registered in the last of them, after another file under its number) |
 *                                     many-fds (300 descriptors open) | sendfile (1 MiB with sendfile(2))
 * Prints "ok ..." lines, or "FAIL ..." and exits 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static int failed;

#define CHECK(cond, ...)                                                                                       \
  do {                                                                                                         \
    if (!(cond)) {                                                                                             \
      printf("FAIL " __VA_ARGS__);                                                                             \
      printf(" (errno %d %s)\n", errno, strerror(errno));                                                      \
      failed = 1;                                                                                              \
    }                                                                                                          \
  } while (0)

static const char *ep(const struct sockaddr_storage *ss, char *buf, size_t n) {
  const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
  char ip[64] = "?";
  if (ss->ss_family == AF_INET) inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
  else snprintf(ip, sizeof(ip), "family%d", ss->ss_family);
  snprintf(buf, n, "%s:%d", ip, ss->ss_family == AF_INET ? ntohs(in->sin_port) : 0);
  return buf;
}

/* Everything a program could ask a TCP socket about, asked of fd; prints one line. */
static void inspect(const char *who, int fd) {
  struct sockaddr_storage a, b;
  socklen_t al = sizeof(a), bl = sizeof(b);
  char sa[80], sb[80];
  CHECK(getsockname(fd, (struct sockaddr *)&a, &al) == 0 && a.ss_family == AF_INET, "%s getsockname family %d", who, a.ss_family);
  CHECK(getpeername(fd, (struct sockaddr *)&b, &bl) == 0 && b.ss_family == AF_INET, "%s getpeername family %d", who, b.ss_family);
  int v;
  socklen_t l = sizeof(v);
  CHECK(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) == 0 && v == AF_INET, "%s SO_DOMAIN %d", who, v);
  l = sizeof(v);
  CHECK(getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) == 0 && v == IPPROTO_TCP, "%s SO_PROTOCOL %d", who, v);
  l = sizeof(v);
  CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) == 0 && v == SOCK_STREAM, "%s SO_TYPE %d", who, v);
  int one = 1, idle = 33;
  CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0, "%s set TCP_NODELAY", who);
  l = sizeof(v);
  v = -1;
  CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v == 1, "%s TCP_NODELAY reads %d", who, v);
  CHECK(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) == 0, "%s SO_KEEPALIVE", who);
  CHECK(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) == 0, "%s set TCP_KEEPIDLE", who);
  l = sizeof(v);
  CHECK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l) == 0 && v == 33, "%s TCP_KEEPIDLE reads %d", who, v);
  int zero = 0;
  CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) == 0 &&
            setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero)) == 0, "%s TCP_CORK", who);
  l = sizeof(v);
  CHECK(getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &v, &l) == 0 && v > 0, "%s TCP_MAXSEG %d", who, v);
  struct tcp_info ti;
  l = sizeof(ti);
  memset(&ti, 0, sizeof(ti));
  CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 && (ti.tcpi_state == TCP_ESTABLISHED || ti.tcpi_state == TCP_CLOSE_WAIT) && l > 0,
        "%s TCP_INFO state %d", who, ti.tcpi_state);
  int tos = 0x10;
  CHECK(setsockopt(fd, SOL_IP, IP_TOS, &tos, sizeof(tos)) == 0, "%s IP_TOS", who);
  printf("%s local=%s peer=%s\n", who, ep(&a, sa, sizeof(sa)), ep(&b, sb, sizeof(sb)));
}

/* Reads the connection to EOF through a pipe with splice(2); returns bytes and a byte sum. */
static long drain(int c, unsigned long *sum) {
  int pp[2];
  if (pipe(pp) < 0) return -1;
  long total = 0;
  *sum = 0;
  for (;;) {
    ssize_t n = splice(c, NULL, pp[1], NULL, 65536, SPLICE_F_MOVE);
    if (n < 0 && errno == EAGAIN) {
      struct pollfd pf = {.fd = c, .events = POLLIN};
      poll(&pf, 1, 5000);
      continue;
    }
    if (n <= 0) break;
    unsigned char buf[65536];
    ssize_t got = 0;
    while (got < n) {
      ssize_t r = read(pp[0], buf, (size_t)(n - got));
      if (r <= 0) break;
      for (ssize_t i = 0; i < r; i++) *sum += buf[i];
      got += r;
    }
    total += n;
  }
  close(pp[0]);
  close(pp[1]);
  return total;
}

static int serve(int port, int n) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 64) < 0) {
    printf("FAIL server bind/listen: %s\n", strerror(errno));
    return 1;
  }
  int epfd = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
  epoll_ctl(epfd, EPOLL_CTL_ADD, l, &ev);
  printf("listening\n");
  fflush(stdout);
  for (int done = 0; done < n;) {
    struct epoll_event out;
    if (epoll_wait(epfd, &out, 1, 30000) != 1) {
      printf("FAIL server: no connection within 30 s\n");
      return 1;
    }
    struct sockaddr_storage peer;
    socklen_t pl = sizeof(peer);
    int c = accept4(l, (struct sockaddr *)&peer, &pl, 0);
    if (c < 0) {
      if (errno == EAGAIN) continue;
      printf("FAIL server accept: %s\n", strerror(errno));
      return 1;
    }
    char pa[80];
    printf("server accepted %s\n", ep(&peer, pa, sizeof(pa)));
    inspect("server", c);
    unsigned long sum;
    long got = drain(c, &sum);
    char reply[96];
    int rl = snprintf(reply, sizeof(reply), "n=%ld sum=%lu", got, sum);
    CHECK(write(c, reply, (size_t)rl) == rl, "server write");
    close(c);
    done++;
    fflush(stdout);
  }
  return failed;
}

static int wait_fd(int fd, short events) {
  struct pollfd pf = {.fd = fd, .events = events};
  return poll(&pf, 1, 10000);
}

static int client(const char *ip, int port, const char *mode) {
  int nonblock = strcmp(mode, "blocking") != 0 && strcmp(mode, "sendfile") != 0;
  int s = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
  int epfd = -1;
  /* registered before connect: must keep working (TCP fallback) */
  if (!strcmp(mode, "epoll-first") || !strcmp(mode, "epoll-high")) {
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.fd = s};
    CHECK(epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) == 0, "epoll_ctl");
    if (!strcmp(mode, "epoll-high")) { /* the instance far above the other descriptors (a sparse table) */
      CHECK(dup2(epfd, 200) == 200, "dup2");
      close(epfd);
      epfd = 200;
    }
  }
  if (!strcmp(mode, "epoll-other") || !strcmp(mode, "epoll-last")) {
    /* epoll instances busy with other descriptors (pipes); for epoll-last the socket is registered in the last of
     * them, among many others, after another file (still open elsewhere) was registered under the same number, so
     * only a look at every instance and at every item of that number finds it */
    int last = -1;
    for (int i = 0; i < 3; i++) {
      last = epoll_create1(0);
      for (int j = 0; j < 40; j++) {
        int pp[2];
        CHECK(pipe(pp) == 0, "pipe");
        struct epoll_event pe = {.events = EPOLLIN, .data.fd = pp[0]};
        CHECK(epoll_ctl(last, EPOLL_CTL_ADD, pp[0], &pe) == 0, "epoll_ctl pipe");
      }
    }
    if (!strcmp(mode, "epoll-last")) {
      int pp[2], keep = dup(s); /* a pipe's read end goes in under s's number, then s is given back; pp[0] keeps the
                                 * pipe, and its item, alive (a pipe reports nothing to epoll while empty) */
      CHECK(pipe(pp) == 0 && keep >= 0 && dup2(pp[0], s) == s, "dup2");
      struct epoll_event oe = {.events = EPOLLIN, .data.fd = -1};
      CHECK(epoll_ctl(last, EPOLL_CTL_ADD, s, &oe) == 0, "epoll_ctl other");
      CHECK(dup2(keep, s) == s, "dup2 back");
      close(keep);
      epfd = last;
      struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.fd = s};
      CHECK(epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) == 0, "epoll_ctl");
    }
  }
  if (!strcmp(mode, "many-fds")) /* more descriptors than the generator looks through (fd_inspect.h): TCP */
    for (int i = 0; i < 150; i++) {
      int pp[2];
      CHECK(pipe(pp) == 0, "pipe");
    }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  int r = connect(s, (struct sockaddr *)&a, sizeof(a));
  if (r < 0 && !(nonblock && errno == EINPROGRESS)) {
    printf("FAIL connect: %s\n", strerror(errno));
    return 1;
  }
  if (r < 0) {
    if (epfd >= 0) {
      struct epoll_event out;
      CHECK(epoll_wait(epfd, &out, 1, 10000) == 1 && out.data.fd == s, "epoll did not report the connect");
    } else {
      CHECK(wait_fd(s, POLLOUT) == 1, "poll for connect");
    }
    int err = -1;
    socklen_t l = sizeof(err);
    CHECK(getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err == 0, "SO_ERROR %d", err);
  }
  if (nonblock) { /* some programs call connect() again to learn the outcome: a TCP socket answers 0, EISCONN, or (seen
                    * on loopback after SO_ERROR) EINPROGRESS; never EINVAL/EAFNOSUPPORT, which a Unix socket would say */
    CHECK(r < 0, "a non-blocking connect returned 0 (loopback TCP says EINPROGRESS)");
    int r2 = connect(s, (struct sockaddr *)&a, sizeof(a));
    CHECK(r2 == 0 || errno == EISCONN || errno == EINPROGRESS || errno == EALREADY, "second connect: %s", strerror(errno));
  }
  inspect("client", s);
  unsigned long want_sum = 0;
  long want = 0;
  if (!strcmp(mode, "sendfile")) {
    char path[] = "/tmp/fastpath-probe-XXXXXX";
    int f = mkstemp(path);
    unlink(path);
    unsigned char blk[4096];
    for (int i = 0; i < 256; i++) {
      for (size_t j = 0; j < sizeof(blk); j++) blk[j] = (unsigned char)(i * 7 + j);
      for (size_t j = 0; j < sizeof(blk); j++) want_sum += blk[j];
      CHECK(write(f, blk, sizeof(blk)) == (ssize_t)sizeof(blk), "tmp write");
    }
    want = 256 * 4096;
    off_t off = 0;
    while (off < want) {
      ssize_t n = sendfile(s, f, &off, (size_t)(want - off));
      if (n <= 0) {
        printf("FAIL sendfile: %s\n", strerror(errno));
        return 1;
      }
    }
    close(f);
  } else {
    const char *msg = "hello";
    for (const char *c = msg; *c; c++) want_sum += (unsigned char)*c;
    want = 5;
    CHECK(send(s, msg, 5, MSG_NOSIGNAL) == 5, "send");
  }
  CHECK(shutdown(s, SHUT_WR) == 0, "shutdown(SHUT_WR)");
  char reply[128];
  size_t got = 0;
  for (;;) {
    if (nonblock) wait_fd(s, POLLIN);
    ssize_t n = read(s, reply + got, sizeof(reply) - 1 - got);
    if (n < 0 && errno == EAGAIN) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  reply[got] = 0;
  char expect[96];
  snprintf(expect, sizeof(expect), "n=%ld sum=%lu", want, want_sum);
  CHECK(!strcmp(reply, expect), "half-close reply \"%s\", expected \"%s\"", reply, expect);
  close(s);
  if (!failed) printf("ok client %s\n", mode);
  return failed;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && !strcmp(argv[1], "server")) return serve(atoi(argv[2]), atoi(argv[3]));
  if (argc == 5 && !strcmp(argv[1], "client")) return client(argv[2], atoi(argv[3]), argv[4]);
  fprintf(stderr, "usage: fastpath-probe server PORT N | client IP PORT blocking|nonblock|epoll-first|epoll-high|epoll-other|epoll-last|many-fds|sendfile\n");
  return 2;
}
