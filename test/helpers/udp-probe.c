/* UDP cases for test/integration/udp-identity.test.ts and bench/udp.ts, run under appswitch (and natively).
 *   mmsg-server PORT N       bind 0.0.0.0:PORT, receive N datagrams with recvmmsg (vectors of 4), print "from IP PORT"
 *                            for each and echo it back with sendto
 *   sigwait PORT restart|intr  bind, block in recvfrom; SIGALRM (SA_RESTART or not) fires after 1 s: prints
 *                            "eintr" (interrupted, as without SA_RESTART) or, restarted, waits for a datagram and prints
 *                            "got IP PORT" after "alarm"
 *   timeout PORT MS          bind, SO_RCVTIMEO MS, recvfrom: prints "eagain" when it times out
 *   nonblock PORT            bind, MSG_DONTWAIT recvfrom on an empty socket: prints "eagain"
 *   peek PORT                bind, wait for one datagram: MSG_PEEK, then a 2-byte buffer with MSG_TRUNC (returns the full
 *                            length), then prints "peek IP PORT LEN / trunc N flags" and checks the datagram is gone
 *   send IP PORT N           unconnected: send N datagrams to IP:PORT, print "sent N"
 *   connected-recv IP PORT N connect to IP:PORT, send one datagram, then N recv() calls on replies it asks for with
 *                            one datagram each (the server echoes): prints "ok N" (the data path: never trapped)
 *   tcp-recv IP PORT N       TCP: connect, then N rounds of send + recv() of one byte (an echo server): prints "ok N"
 *   recvcost IP PORT N [nosrc] bind 0.0.0.0:PORT, connect a second socket to IP:PORT; N times: send one datagram on
 *                            it (already queued when) recvfrom is timed alone, with a source buffer (or NULL: nosrc);
 *                            prints "recv median_ns p90_ns"
 *   echo PORT                bind 0.0.0.0:PORT and echo every datagram to its source for ever
 *   rtt IP PORT N [connected] round trips of 32 bytes (sendto+recvfrom, or send+recv on a connected socket), prints
 *                            "rtt median_ns p90_ns" */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int udp_bound(int port) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
    perror("bind");
    exit(2);
  }
  return s;
}

static struct sockaddr_in addr_of(const char *ip, const char *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char m[] = "alarm\n";
  ssize_t w = write(1, m, sizeof(m) - 1);
  (void)w;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 3) return 2;
  const char *mode = argv[1];
  if (!strcmp(mode, "mmsg-server") && argc >= 4) {
    int s = udp_bound(atoi(argv[2]));
    int n = atoi(argv[3]), got = 0;
    printf("up\n");
    while (got < n) {
      struct mmsghdr v[4];
      struct sockaddr_in from[4];
      char buf[4][256];
      struct iovec iov[4];
      memset(v, 0, sizeof(v));
      for (int i = 0; i < 4; i++) {
        iov[i] = (struct iovec){buf[i], sizeof(buf[i])};
        v[i].msg_hdr.msg_iov = &iov[i];
        v[i].msg_hdr.msg_iovlen = 1;
        v[i].msg_hdr.msg_name = &from[i];
        v[i].msg_hdr.msg_namelen = sizeof(from[i]);
      }
      int r = recvmmsg(s, v, 4, MSG_WAITFORONE, NULL);
      if (r < 0) {
        perror("recvmmsg");
        return 1;
      }
      for (int i = 0; i < r; i++) {
        char ip[32];
        inet_ntop(AF_INET, &from[i].sin_addr, ip, sizeof(ip));
        printf("from %s %d len %u namelen %u\n", ip, ntohs(from[i].sin_port), v[i].msg_len, v[i].msg_hdr.msg_namelen);
        sendto(s, buf[i], v[i].msg_len, 0, (struct sockaddr *)&from[i], sizeof(from[i]));
        got++;
      }
    }
    printf("received=%d\n", got);
    return 0;
  }
  if (!strcmp(mode, "sigwait") && argc >= 4) {
    int s = udp_bound(atoi(argv[2]));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = !strcmp(argv[3], "restart") ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    printf("up\n");
    alarm(1);
    char b[64];
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    ssize_t r = recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&a, &al);
    if (r < 0 && errno == EINTR) {
      printf("eintr\n");
      return 0;
    }
    if (r < 0) {
      printf("error %s\n", strerror(errno));
      return 1;
    }
    char ip[32];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
    printf("got %s %d\n", ip, ntohs(a.sin_port));
    return 0;
  }
  if (!strcmp(mode, "timeout") && argc >= 4) {
    int s = udp_bound(atoi(argv[2]));
    int ms = atoi(argv[3]);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char b[64];
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    ssize_t r = recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&a, &al);
    printf("%s\n", r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "eagain" : "other");
    return 0;
  }
  if (!strcmp(mode, "nonblock")) {
    int s = udp_bound(atoi(argv[2]));
    char b[64];
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    ssize_t r = recvfrom(s, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&a, &al);
    printf("%s\n", r < 0 && errno == EAGAIN ? "eagain" : "other");
    return 0;
  }
  if (!strcmp(mode, "peek")) {
    int s = udp_bound(atoi(argv[2]));
    printf("up\n");
    char b[64];
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    ssize_t n = recvfrom(s, b, sizeof(b), MSG_PEEK, (struct sockaddr *)&a, &al);
    char ip[32];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
    printf("peek %s %d %zd\n", ip, ntohs(a.sin_port), n);
    struct sockaddr_in6 big; /* a short name buffer: cut, with the full length reported */
    socklen_t bl = 4;
    char two[2];
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    struct iovec io = {two, sizeof(two)};
    mh.msg_iov = &io;
    mh.msg_iovlen = 1;
    mh.msg_name = &big;
    mh.msg_namelen = bl;
    ssize_t t = recvmsg(s, &mh, MSG_TRUNC);
    printf("trunc %zd flags %s namelen %u\n", t, (mh.msg_flags & MSG_TRUNC) ? "MSG_TRUNC" : "-", mh.msg_namelen);
    ssize_t again = recvfrom(s, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&a, &al);
    printf("after %s\n", again < 0 && errno == EAGAIN ? "empty" : "not-empty");
    return 0;
  }
  if (!strcmp(mode, "send") && argc >= 5) {
    struct sockaddr_in d = addr_of(argv[2], argv[3]);
    int s = socket(AF_INET, SOCK_DGRAM, 0), n = atoi(argv[4]), ok = 0;
    for (int i = 0; i < n; i++) ok += sendto(s, "x", 1, 0, (struct sockaddr *)&d, sizeof(d)) == 1;
    printf("sent %d\n", ok);
    return 0;
  }
  if (!strcmp(mode, "connected-recv") && argc >= 5) {
    struct sockaddr_in d = addr_of(argv[2], argv[3]);
    int s = socket(AF_INET, SOCK_DGRAM, 0), n = atoi(argv[4]), ok = 0;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(s, (struct sockaddr *)&d, sizeof(d)) < 0) {
      perror("connect");
      return 1;
    }
    char b[64];
    for (int i = 0; i < n; i++) {
      if (send(s, "q", 1, 0) != 1) break;
      if (recv(s, b, sizeof(b), 0) <= 0) break;
      ok++;
    }
    printf("ok %d\n", ok);
    return ok == n ? 0 : 1;
  }
  if (!strcmp(mode, "tcp-recv") && argc >= 5) {
    struct sockaddr_in d = addr_of(argv[2], argv[3]);
    int s = socket(AF_INET, SOCK_STREAM, 0), n = atoi(argv[4]), ok = 0;
    if (connect(s, (struct sockaddr *)&d, sizeof(d)) < 0) {
      perror("connect");
      return 1;
    }
    char b[8];
    for (int i = 0; i < n; i++) {
      if (send(s, "t", 1, 0) != 1 || recv(s, b, 1, MSG_WAITALL) != 1) break;
      ok++;
    }
    printf("ok %d\n", ok);
    return ok == n ? 0 : 1;
  }
  if (!strcmp(mode, "echo")) {
    int s = udp_bound(atoi(argv[2]));
    printf("up\n");
    char b[2048];
    for (;;) {
      struct sockaddr_in a;
      socklen_t al = sizeof(a);
      ssize_t r = recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&a, &al);
      if (r >= 0) sendto(s, b, (size_t)r, 0, (struct sockaddr *)&a, al);
    }
  }
  if (!strcmp(mode, "recvcost") && argc >= 5) {
    int s = udp_bound(atoi(argv[3]));
    struct sockaddr_in d = addr_of(argv[2], argv[3]);
    int c = socket(AF_INET, SOCK_DGRAM, 0), n = atoi(argv[4]), nosrc = argc >= 6 && !strcmp(argv[5], "nosrc");
    if (connect(c, (struct sockaddr *)&d, sizeof(d)) < 0) {
      perror("connect");
      return 1;
    }
    uint64_t *t = calloc((size_t)n, sizeof(*t));
    char b[64];
    for (int i = 0; i < n; i++) {
      if (send(c, "m", 1, 0) != 1) {
        perror("send");
        return 1;
      }
      struct sockaddr_in a;
      socklen_t al = sizeof(a);
      uint64_t t0 = now_ns();
      ssize_t r = nosrc ? recvfrom(s, b, sizeof(b), 0, NULL, NULL) : recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&a, &al);
      t[i] = now_ns() - t0;
      if (r != 1) {
        printf("failed at %d: %s\n", i, strerror(errno));
        return 1;
      }
    }
    qsort(t, (size_t)n, sizeof(*t), cmp64);
    printf("recv %llu %llu\n", (unsigned long long)t[n / 2], (unsigned long long)t[n * 9 / 10]);
    return 0;
  }
  if (!strcmp(mode, "rtt") && argc >= 5) {
    struct sockaddr_in d = addr_of(argv[2], argv[3]);
    int n = atoi(argv[4]), connected = argc >= 6 && !strcmp(argv[5], "connected");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connected && connect(s, (struct sockaddr *)&d, sizeof(d)) < 0) {
      perror("connect");
      return 1;
    }
    uint64_t *t = calloc((size_t)n, sizeof(*t));
    char b[64], m[32];
    memset(m, 'r', sizeof(m));
    for (int i = 0; i < n; i++) {
      uint64_t t0 = now_ns();
      ssize_t w = connected ? send(s, m, sizeof(m), 0) : sendto(s, m, sizeof(m), 0, (struct sockaddr *)&d, sizeof(d));
      struct sockaddr_in a;
      socklen_t al = sizeof(a);
      ssize_t r = connected ? recv(s, b, sizeof(b), 0) : recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&a, &al);
      if (w != sizeof(m) || r <= 0) {
        printf("failed at %d: %s\n", i, strerror(errno));
        return 1;
      }
      t[i] = now_ns() - t0;
    }
    qsort(t, (size_t)n, sizeof(*t), cmp64);
    printf("rtt %llu %llu\n", (unsigned long long)t[n / 2], (unsigned long long)t[n * 9 / 10]);
    return 0;
  }
  return 2;
}
