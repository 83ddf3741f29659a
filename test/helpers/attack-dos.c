/* Attack probe for test/security: reaching the daemons' own ports, exhausting the daemon (connects never accepted,
 * thousands of bound sockets) and UDP sendmmsg to a vip. Prints one result line per step; socket(2), connect(2),
 * sendto(2), sendmmsg(2), bind(2), listen(2), setrlimit(2).
 * usage:
 *   attack-dos send IP PORT udp|tcp          one datagram / one connect; prints "send ok" or "send ERRNO"
 *   attack-dos sendmmsg IP PORT N            N datagrams in one sendmmsg vector, resumed until all are sent
 *   attack-dos udpsink PORT N SECONDS        binds UDP PORT, prints "listening", counts datagrams: "received=K"
 *   attack-dos selfconnect PORT N            listens on PORT, connects to 127.0.0.1:PORT N times, never accepts
 *   attack-dos udpbind N                     binds N UDP sockets (port 0), then waits until killed
 *   attack-dos bindclose N                   binds and closes N UDP sockets (port 0), one after another
 * Each line is flushed; the waiting commands wait until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *ename(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "E?";
}

static struct sockaddr_in sin_of(const char *ip, int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void out(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

/* A TCP connect that waits at most 3 s; 0 or an errno. */
static int connect_wait(int s, const struct sockaddr_in *a) {
  int fl = fcntl(s, F_GETFL);
  fcntl(s, F_SETFL, fl | O_NONBLOCK);
  if (connect(s, (const struct sockaddr *)a, sizeof(*a)) == 0) return 0;
  if (errno != EINPROGRESS) return errno;
  struct pollfd p = {.fd = s, .events = POLLOUT};
  if (poll(&p, 1, 3000) != 1) return ETIMEDOUT;
  int err = 0;
  socklen_t l = sizeof(err);
  getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
  return err;
}

static int c_send(const char *ip, int port, const char *proto) {
  struct sockaddr_in a = sin_of(ip, port);
  if (!strcmp(proto, "udp")) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sendto(s, "attack", 6, 0, (struct sockaddr *)&a, sizeof(a)) < 0) out("send %s", ename(errno));
    else out("send ok");
    close(s);
    return 0;
  }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int e = connect_wait(s, &a);
  if (e) out("send %s", ename(e));
  else {
    if (write(s, "GET / HTTP/1.0\r\n\r\n", 18) < 0) { /* whatever answers, it was reached */
    }
    out("send ok");
  }
  close(s);
  return 0;
}

static int c_sendmmsg(const char *ip, int port, int n) {
  struct sockaddr_in a = sin_of(ip, port);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct mmsghdr *mm = calloc((size_t)n, sizeof(*mm));
  struct iovec *iov = calloc((size_t)n, sizeof(*iov));
  char (*bufs)[16] = calloc((size_t)n, 16);
  for (int i = 0; i < n; i++) {
    snprintf(bufs[i], 16, "m%d", i);
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = strlen(bufs[i]);
    mm[i].msg_hdr.msg_iov = &iov[i];
    mm[i].msg_hdr.msg_iovlen = 1;
    mm[i].msg_hdr.msg_name = &a;
    mm[i].msg_hdr.msg_namelen = sizeof(a);
  }
  int sent = 0;
  while (sent < n) {
    int r = sendmmsg(s, mm + sent, (unsigned)(n - sent), 0);
    if (r < 0) {
      out("sendmmsg sent=%d %s", sent, ename(errno));
      return 0;
    }
    if (r == 0) break;
    for (int i = sent; i < sent + r; i++) {
      if (mm[i].msg_len != iov[i].iov_len) {
        out("sendmmsg sent=%d bad msg_len %u", sent, mm[i].msg_len);
        return 0;
      }
    }
    sent += r;
  }
  out("sendmmsg sent=%d", sent);
  return 0;
}

static int c_udpsink(int port, int n, int seconds) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = sin_of("0.0.0.0", port);
  if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
    out("bind %s", ename(errno));
    return 1;
  }
  out("listening %d", port);
  int got = 0;
  struct timeval end, now;
  gettimeofday(&end, NULL);
  end.tv_sec += seconds;
  while (got < n) {
    gettimeofday(&now, NULL);
    long ms = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_usec - now.tv_usec) / 1000;
    if (ms <= 0) break;
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, (int)ms) != 1) continue;
    char buf[2048];
    if (recv(s, buf, sizeof(buf), 0) >= 0) {
      got++;
      out("datagram %d", got);
    }
  }
  out("received=%d", got);
  return 0;
}

static int c_selfconnect(int port, int n) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = sin_of("0.0.0.0", port);
  if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 4096) < 0) {
    out("listen %s", ename(errno));
    return 1;
  }
  out("listening %d", port);
  struct sockaddr_in to = sin_of("127.0.0.1", port);
  int ok = 0, inprogress = 0, other = 0, refused = 0;
  int first_err = 0;
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
      other++;
      if (!first_err) first_err = errno;
      continue;
    }
    if (connect(s, (struct sockaddr *)&to, sizeof(to)) == 0) ok++;
    else if (errno == EINPROGRESS) inprogress++;
    else if (errno == ECONNREFUSED) refused++;
    else {
      other++;
      if (!first_err) first_err = errno;
    }
    close(s); /* the program stays under its own descriptor limit; what it left in the daemon is the question */
  }
  out("selfconnect ok=%d inprogress=%d refused=%d other=%d first=%s", ok, inprogress, refused, other, first_err ? ename(first_err) : "-");
  for (;;) pause();
  return 0;
}

/* A program that binds and closes in a loop holds one socket at a time, whatever the per-app limit. */
static int c_bindclose(int n) {
  int ok = 0, first_err = 0;
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      first_err = errno;
      break;
    }
    struct sockaddr_in a = sin_of("0.0.0.0", 0);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) == 0) ok++;
    else if (!first_err) first_err = errno;
    close(s);
  }
  out("bindclose ok=%d first=%s\n", ok, first_err ? ename(first_err) : "-");
  return 0;
}

static int c_udpbind(int n) {
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max < (rlim_t)n + 64 ? r.rlim_max : (rlim_t)n + 64;
  setrlimit(RLIMIT_NOFILE, &r);
  int bound = 0, first_err = 0;
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      first_err = errno;
      break;
    }
    struct sockaddr_in a = sin_of("0.0.0.0", 0);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
      if (!first_err) first_err = errno;
      close(s);
      continue;
    }
    bound++;
  }
  out("udpbind bound=%d first=%s", bound, first_err ? ename(first_err) : "-");
  for (;;) pause();
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 5 && !strcmp(argv[1], "send")) return c_send(argv[2], atoi(argv[3]), argv[4]);
  if (argc >= 5 && !strcmp(argv[1], "sendmmsg")) return c_sendmmsg(argv[2], atoi(argv[3]), atoi(argv[4]));
  if (argc >= 5 && !strcmp(argv[1], "udpsink")) return c_udpsink(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
  if (argc >= 4 && !strcmp(argv[1], "selfconnect")) return c_selfconnect(atoi(argv[2]), atoi(argv[3]));
  if (argc >= 3 && !strcmp(argv[1], "udpbind")) return c_udpbind(atoi(argv[2]));
  if (argc >= 3 && !strcmp(argv[1], "bindclose")) return c_bindclose(atoi(argv[2]));
  fprintf(stderr, "usage: attack-dos send|sendmmsg|udpsink|selfconnect|udpbind ...\n");
  return 2;
}
