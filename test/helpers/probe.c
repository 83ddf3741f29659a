/* A hostile/curious test program run under appswitch: each case makes system calls directly and checks the
 * exact result. Prints "ok <case>" and exits 0, or "FAIL <case>: ..." and exits 1.
 * usage: probe CASE [ARGS...] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *cname;
static int failed;

#define EXPECT_ERR(call, err)                                                                                  \
  do {                                                                                                         \
    errno = 0;                                                                                                 \
    long r_ = (long)(call);                                                                                    \
    if (r_ != -1 || errno != (err)) {                                                                          \
      printf("FAIL %s: %s returned %ld errno %d (%s), expected errno %d (%s)\n", cname, #call, r_, errno,     \
             strerror(errno), (err), strerror(err));                                                           \
      failed = 1;                                                                                              \
    }                                                                                                          \
  } while (0)

#define EXPECT_OK(call)                                                                                        \
  ({                                                                                                           \
    errno = 0;                                                                                                 \
    long r_ = (long)(call);                                                                                    \
    if (r_ < 0) {                                                                                              \
      printf("FAIL %s: %s returned %ld errno %d (%s)\n", cname, #call, r_, errno, strerror(errno));            \
      failed = 1;                                                                                              \
    }                                                                                                          \
    r_;                                                                                                        \
  })

static struct sockaddr_in sin_of(const char *ip, int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

static void print_addr(const char *what, struct sockaddr_storage *ss) {
  char buf[64] = "?";
  int port = 0;
  if (ss->ss_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &s->sin_addr, buf, sizeof(buf));
    port = ntohs(s->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof(buf));
    port = ntohs(s->sin6_port);
  }
  printf("%s %s:%d\n", what, buf, port);
}

/* Bad arguments: the kernel's errno for each. */
static void c_errno(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = sin_of("10.0.0.99", 80);
  struct sockaddr_in6 a6;
  memset(&a6, 0, sizeof(a6));
  a6.sin6_family = AF_INET6;
  int p[2];
  pipe(p);
  EXPECT_ERR(connect(s, (struct sockaddr *)1, sizeof(a)), EFAULT);
  EXPECT_ERR(connect(12345, (struct sockaddr *)&a, sizeof(a)), EBADF);
  EXPECT_ERR(connect(-1, (struct sockaddr *)&a, sizeof(a)), EBADF);
  EXPECT_ERR(connect(s, (struct sockaddr *)&a, 8), EINVAL);
  EXPECT_ERR(connect(s, (struct sockaddr *)&a, -1), EINVAL);
  EXPECT_ERR(connect(s, (struct sockaddr *)&a6, sizeof(a6)), EAFNOSUPPORT);
  EXPECT_ERR(connect(p[0], (struct sockaddr *)&a, sizeof(a)), ENOTSOCK);
  EXPECT_ERR(bind(s, (struct sockaddr *)1, sizeof(a)), EFAULT);
  EXPECT_ERR(bind(12345, (struct sockaddr *)&a, sizeof(a)), EBADF);
  EXPECT_ERR(bind(s, (struct sockaddr *)&a, 4), EINVAL);
  EXPECT_ERR(bind(s, (struct sockaddr *)&a6, sizeof(a6)), EAFNOSUPPORT);
  EXPECT_ERR(bind(p[0], (struct sockaddr *)&a, sizeof(a)), ENOTSOCK);
  struct sockaddr_in other = sin_of("10.9.9.9", 80); /* a vip that is not ours */
  EXPECT_ERR(bind(s, (struct sockaddr *)&other, sizeof(other)), EADDRNOTAVAIL);
  EXPECT_ERR(listen(12345, 5), EBADF);
  EXPECT_ERR(listen(p[0], 5), ENOTSOCK);
  socklen_t l = sizeof(a);
  EXPECT_ERR(getsockname(s, (struct sockaddr *)1, &l), EFAULT);
  EXPECT_ERR(getsockname(s, (struct sockaddr *)&a, (socklen_t *)1), EFAULT);
  EXPECT_ERR(getsockname(12345, (struct sockaddr *)&a, &l), EBADF);
  EXPECT_ERR(getsockname(p[0], (struct sockaddr *)&a, &l), ENOTSOCK);
  EXPECT_ERR(getpeername(s, (struct sockaddr *)&a, &l), ENOTCONN);
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  EXPECT_ERR(listen(u, 5), EOPNOTSUPP);
  EXPECT_ERR(sendto(u, "x", 1, 0, (struct sockaddr *)1, sizeof(a)), EFAULT);
  EXPECT_ERR(socket(AF_INET, SOCK_STREAM | 0x10000000, 0), EINVAL);
  EXPECT_ERR(socket(AF_INET, SOCK_STREAM, IPPROTO_UDP), EPROTONOSUPPORT);
  close(s);
  close(u);
}

static sigjmp_buf segv_jmp;
static void on_segv(int sig) {
  (void)sig;
  siglongjmp(segv_jmp, 1);
}

/* Escapes: raw and packet sockets, other namespaces, other ABIs, io_uring. */
static void c_escape(void) {
  EXPECT_ERR(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), EPERM);
  EXPECT_ERR(socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6), EPERM);
  EXPECT_ERR(socket(AF_PACKET, SOCK_RAW, 0), EPERM);
  EXPECT_ERR(socket(AF_INET, SOCK_PACKET, 0), EPERM);
  EXPECT_ERR(socket(AF_BLUETOOTH, SOCK_STREAM, 0), EAFNOSUPPORT);
  EXPECT_ERR(socket(AF_VSOCK, SOCK_STREAM, 0), EAFNOSUPPORT);
  int fd = open("/proc/1/ns/net", O_RDONLY);
  if (fd >= 0) EXPECT_ERR(setns(fd, CLONE_NEWNET), EPERM);
  EXPECT_ERR(setns(0, 0), EPERM);
  EXPECT_ERR(unshare(CLONE_NEWNET), EPERM);
  EXPECT_ERR(unshare(CLONE_NEWUSER | CLONE_NEWNET), EPERM);
  EXPECT_ERR(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0), EPERM);
  EXPECT_ERR(syscall(SYS_clone3, NULL, 0), ENOSYS);
  EXPECT_ERR(syscall(SYS_io_uring_setup, 4, NULL), EPERM);
  EXPECT_ERR(syscall(0x40000000 + 41, AF_INET, SOCK_STREAM, 0), EPERM); /* x32 socket() */
  /* i386 ABI from a 64-bit process: socketcall(SYS_SOCKET) and socket() via int 0x80. Some hypervisors have no
   * IA32 syscall entry (int 0x80 faults with SIGSEGV): then the kernel refuses the ABI itself, and we say so. */
  long ret = 0;
  static unsigned int args[3] = {AF_INET, SOCK_RAW, IPPROTO_ICMP};
  struct sigaction sa, old;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_segv;
  sigaction(SIGSEGV, &sa, &old);
  if (sigsetjmp(segv_jmp, 1) == 0) {
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(102), "b"(1), "c"(args) : "memory");
    if (ret != -EPERM) {
      printf("FAIL %s: int 0x80 socketcall returned %ld, expected %d\n", cname, ret, -EPERM);
      failed = 1;
    }
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(359), "b"(AF_INET), "c"(SOCK_STREAM), "d"(0) : "memory");
    if (ret != -EPERM) {
      printf("FAIL %s: int 0x80 socket returned %ld, expected %d\n", cname, ret, -EPERM);
      failed = 1;
    }
    printf("ia32 refused\n");
  } else {
    printf("ia32 unavailable: int 0x80 faults on this machine\n");
  }
  sigaction(SIGSEGV, &old, NULL);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = sin_of("192.0.2.1", 80);
  EXPECT_ERR(sendto(s, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof(a)), EOPNOTSUPP);
  /* AF_UNIX and netlink are not trapped and work */
  int sp[2];
  EXPECT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
  EXPECT_OK(socket(AF_NETLINK, SOCK_RAW, 0));
}

/* socket() flags are honoured on the host socket we get. */
static void c_flags(void) {
  int s = EXPECT_OK(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if ((fcntl(s, F_GETFL) & O_NONBLOCK) == 0 || (fcntl(s, F_GETFD) & FD_CLOEXEC) == 0) {
    printf("FAIL %s: flags lost\n", cname);
    failed = 1;
  }
  int t = EXPECT_OK(socket(AF_INET6, SOCK_DGRAM, 0));
  if ((fcntl(t, F_GETFL) & O_NONBLOCK) || (fcntl(t, F_GETFD) & FD_CLOEXEC)) {
    printf("FAIL %s: unexpected flags\n", cname);
    failed = 1;
  }
  int one = 1;
  EXPECT_OK(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
  int v = 0;
  socklen_t l = sizeof(v);
  EXPECT_OK(getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l));
  if (v != 1) {
    printf("FAIL %s: TCP_NODELAY did not stick\n", cname);
    failed = 1;
  }
}

/* connect IP PORT [nonblock]: a connect that must succeed; prints the names the program sees. */
static void c_connect(const char *ip, int port, int nonblock) {
  int s = EXPECT_OK(socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0));
  struct sockaddr_in a = sin_of(ip, port);
  int r = connect(s, (struct sockaddr *)&a, sizeof(a));
  if (nonblock) {
    if (r != -1 || errno != EINPROGRESS) {
      printf("FAIL %s: non-blocking connect returned %d errno %d\n", cname, r, errno);
      failed = 1;
      return;
    }
    struct pollfd pfd = {.fd = s, .events = POLLOUT};
    poll(&pfd, 1, 5000);
    int err = -1;
    socklen_t l = sizeof(err);
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err != 0) {
      printf("FAIL %s: SO_ERROR %d\n", cname, err);
      failed = 1;
      return;
    }
  } else if (r != 0) {
    printf("FAIL %s: connect errno %d (%s)\n", cname, errno, strerror(errno));
    failed = 1;
    return;
  }
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  EXPECT_OK(getpeername(s, (struct sockaddr *)&ss, &l));
  print_addr("peer", &ss);
  l = sizeof(ss);
  EXPECT_OK(getsockname(s, (struct sockaddr *)&ss, &l));
  print_addr("local", &ss);
  write(s, "ping\n", 5);
  char buf[64];
  ssize_t n = read(s, buf, sizeof(buf));
  printf("read %zd\n", n);
}

/* refused IP PORT [udp]: connect (and a UDP send) must fail with ECONNREFUSED. */
static void c_refused(const char *ip, int port) {
  struct sockaddr_in a = sin_of(ip, port);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_ERR(connect(s, (struct sockaddr *)&a, sizeof(a)), ECONNREFUSED);
  int n = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  EXPECT_ERR(connect(n, (struct sockaddr *)&a, sizeof(a)), ECONNREFUSED);
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  EXPECT_ERR(sendto(u, "x", 1, 0, (struct sockaddr *)&a, sizeof(a)), ECONNREFUSED);
  struct iovec iov = {.iov_base = "x", .iov_len = 1};
  struct msghdr mh = {.msg_name = &a, .msg_namelen = sizeof(a), .msg_iov = &iov, .msg_iovlen = 1};
  EXPECT_ERR(sendmsg(u, &mh, 0), ECONNREFUSED);
  EXPECT_ERR(connect(u, (struct sockaddr *)&a, sizeof(a)), ECONNREFUSED);
}

/* bindname IP PORT: bind + listen, print what getsockname says, then close. */
static void c_bindname(const char *ip, int port) {
  int s = EXPECT_OK(socket(AF_INET, SOCK_STREAM, 0));
  struct sockaddr_in a = sin_of(ip, port);
  EXPECT_OK(bind(s, (struct sockaddr *)&a, sizeof(a)));
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  EXPECT_OK(getsockname(s, (struct sockaddr *)&ss, &l));
  print_addr("bound", &ss);
  EXPECT_OK(listen(s, 16));
  l = sizeof(ss);
  EXPECT_OK(getsockname(s, (struct sockaddr *)&ss, &l));
  print_addr("listening", &ss);
  /* a short addrlen truncates, and the full length comes back */
  struct sockaddr_in small;
  l = 4;
  EXPECT_OK(getsockname(s, (struct sockaddr *)&small, &l));
  if (l != sizeof(struct sockaddr_in)) {
    printf("FAIL %s: addrlen %u after truncation\n", cname, l);
    failed = 1;
  }
  EXPECT_ERR(bind(s, (struct sockaddr *)&a, sizeof(a)), EINVAL); /* bound already */
  int s2 = socket(AF_INET, SOCK_STREAM, 0);
  if (port) EXPECT_ERR(bind(s2, (struct sockaddr *)&a, sizeof(a)), EADDRINUSE);
  /* a socket listening without bind gets a virtual ephemeral port */
  int s3 = EXPECT_OK(socket(AF_INET6, SOCK_STREAM, 0));
  EXPECT_OK(listen(s3, 4));
  l = sizeof(ss);
  EXPECT_OK(getsockname(s3, (struct sockaddr *)&ss, &l));
  print_addr("autobound", &ss);
  fflush(stdout);
}

static const char *g_ip;
static int g_port;
static void *thread_connect(void *arg) {
  (void)arg;
  for (int i = 0; i < 20; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of(g_ip, g_port);
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) return (void *)1;
    close(s);
  }
  return NULL;
}

/* forks IP PORT: 4 processes x 4 threads x 20 connects each, all must succeed. */
static void c_forks(const char *ip, int port) {
  g_ip = ip;
  g_port = port;
  pid_t kids[4];
  for (int k = 0; k < 4; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      pthread_t t[4];
      for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, thread_connect, NULL);
      int bad = 0;
      for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
      }
      _exit(bad);
    }
  }
  for (int k = 0; k < 4; k++) {
    int st;
    waitpid(kids[k], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      printf("FAIL %s: child %d failed\n", cname, k);
      failed = 1;
    }
  }
}

/* udpecho IP PORT: egress UDP to a real address (a native echo server) goes through and comes back. */
static void c_udpecho(const char *ip, int port) {
  int u = EXPECT_OK(socket(AF_INET, SOCK_DGRAM, 0));
  struct sockaddr_in a = sin_of(ip, port);
  EXPECT_OK(sendto(u, "hello", 5, 0, (struct sockaddr *)&a, sizeof(a)));
  struct pollfd pfd = {.fd = u, .events = POLLIN};
  if (poll(&pfd, 1, 3000) != 1) {
    printf("FAIL %s: no echo\n", cname);
    failed = 1;
    return;
  }
  char buf[16];
  ssize_t n = recv(u, buf, sizeof(buf), 0);
  if (n != 5 || memcmp(buf, "hello", 5)) {
    printf("FAIL %s: bad echo\n", cname);
    failed = 1;
  }
  /* connected socket + sendmmsg without names (what glibc's resolver does) */
  EXPECT_OK(connect(u, (struct sockaddr *)&a, sizeof(a)));
  struct iovec iov[2] = {{.iov_base = "ab", .iov_len = 2}, {.iov_base = "cd", .iov_len = 2}};
  struct mmsghdr mm[2];
  memset(mm, 0, sizeof(mm));
  mm[0].msg_hdr.msg_iov = &iov[0];
  mm[0].msg_hdr.msg_iovlen = 1;
  mm[1].msg_hdr.msg_iov = &iov[1];
  mm[1].msg_hdr.msg_iovlen = 1;
  int sent = 0;
  while (sent < 2) {
    int r = (int)EXPECT_OK(sendmmsg(u, mm + sent, 2 - (unsigned)sent, 0));
    if (r <= 0) break;
    sent += r;
  }
  if (mm[0].msg_len != 2) {
    printf("FAIL %s: msg_len %u\n", cname, mm[0].msg_len);
    failed = 1;
  }
  for (int i = 0; i < 2; i++) {
    if (poll(&pfd, 1, 3000) != 1 || recv(u, buf, sizeof(buf), 0) != 2) {
      printf("FAIL %s: no echo for sendmmsg %d\n", cname, i);
      failed = 1;
    }
  }
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* loop N: N getsockname calls on one socket; prints the mean time per call. */
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* loop N: N getsockname() calls (a cheap trapped call), each timed; prints the mean, median and p99 per call. */
static void c_loop(int n) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_storage ss;
  for (int i = 0; i < n / 10 + 1; i++) { /* warm up */
    socklen_t l = sizeof(ss);
    getsockname(s, (struct sockaddr *)&ss, &l);
  }
  double *lat = malloc(sizeof(double) * (size_t)n);
  if (!lat) return;
  double t0 = now_ns();
  for (int i = 0; i < n; i++) {
    socklen_t l = sizeof(ss);
    double a = now_ns();
    if (getsockname(s, (struct sockaddr *)&ss, &l) < 0) {
      printf("FAIL %s: getsockname errno %d\n", cname, errno);
      failed = 1;
      free(lat);
      return;
    }
    lat[i] = now_ns() - a;
  }
  double total = now_ns() - t0;
  qsort(lat, (size_t)n, sizeof(double), cmp_double);
  printf("ns_per_call %.0f median_ns %.0f p99_ns %.0f\n", total / n, lat[n / 2], lat[(size_t)((double)(n - 1) * 0.99)]);
  free(lat);
}

/* connloop IP PORT N: N x (socket + connect + close); prints the mean time per iteration. */
static void c_connloop(const char *ip, int port, int n) {
  struct sockaddr_in a = sin_of(ip, port);
  double t0 = now_ns();
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
      printf("FAIL %s: iteration %d errno %d (%s)\n", cname, i, errno, strerror(errno));
      failed = 1;
      return;
    }
    close(s);
  }
  printf("ns_per_conn %.0f\n", (now_ns() - t0) / n);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) return 2;
  cname = argv[1];
  if (!strcmp(cname, "errno")) c_errno();
  else if (!strcmp(cname, "escape")) c_escape();
  else if (!strcmp(cname, "flags")) c_flags();
  else if (!strcmp(cname, "connect") && argc >= 4) c_connect(argv[2], atoi(argv[3]), argc > 4);
  else if (!strcmp(cname, "refused") && argc >= 4) c_refused(argv[2], atoi(argv[3]));
  else if (!strcmp(cname, "bindname") && argc >= 4) c_bindname(argv[2], atoi(argv[3]));
  else if (!strcmp(cname, "forks") && argc >= 4) c_forks(argv[2], atoi(argv[3]));
  else if (!strcmp(cname, "udpecho") && argc >= 4) c_udpecho(argv[2], atoi(argv[3]));
  else if (!strcmp(cname, "loop") && argc >= 3) c_loop(atoi(argv[2]));
  else if (!strcmp(cname, "connloop") && argc >= 5) c_connloop(argv[2], atoi(argv[3]), atoi(argv[4]));
  else {
    printf("FAIL unknown case %s\n", cname);
    return 2;
  }
  if (!failed) printf("ok %s\n", cname);
  return failed;
}
