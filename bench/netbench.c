/* netbench: connection load generators and small servers for bench/net.ts, bench/soak.ts and bench/scale.ts
 * (compiled at run time with gcc -O2 -lpthread).
 *   netbench serve IP PORT THREADS      THREADS accept loops on one listening socket: accept, write 1 byte, close
 *   netbench load IP PORT CONC SECONDS [FDS [reg]]
 *                                       CONC threads, each: socket, connect, read the byte, read EOF, close; repeat.
 *                                       FDS: first open an epoll instance holding pipes, FDS descriptors in all (a
 *                                       busy event loop's connections); reg: each socket is registered in it before
 *                                       connect (nginx's and Go's order)
 *   netbench echo IP PORT THREADS       like serve, but each connection: read 1 byte, write 1 byte, close
 *   netbench rate IP PORT THREADS SECONDS RATE
 *                                       paced client for echo: RATE connections/s in all, spread over THREADS threads,
 *                                       each: socket, connect, write 1 byte, read 1 byte, read EOF, close
 *   netbench http IP PORT THREADS BODY  tiny HTTP/1.0 server: reads a request, answers 200 with BODY, closes
 * serve, echo and http print "up" once listening.
 * load prints one line: count N seconds S conns_per_s R median_us M p99_us P errors E [first_error ...]
 * rate prints "tick SECOND ok N failed N" (running totals) every second, then
 *   count N failed F seconds S conns_per_s R median_us M p99_us P stuck K late L
 *   errors [STAGE:ERRNO=N ...]          failures by the step that failed and its errno (EOF: the peer closed early)
 * A rate thread that falls behind its schedule starts its next connections at once until it has caught up, so the
 * offered load stays RATE (an open-loop generator) as long as the machine keeps up. After the end the client waits
 * for the threads to work through what they owe: a thread whose current connection has taken more than HANG_S is
 * stuck (a hang: no step of one_conn may take that long), one still working after LATE_S is late (an overloaded
 * machine, not a hang); the process then exits without waiting for either.
 * The servers close first, so TIME_WAIT stays on the server's fixed port and the client never runs out of ports. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static double deadline;
static int reg_epoll = -1; /* load ... reg: the instance each socket joins before connect */

/* An epoll instance holding pipes' read ends, `fds` descriptors in all with the instance. Returns it, or -1. */
static int busy_epoll(int fds) {
  struct rlimit rl = {(rlim_t)fds + 1024, (rlim_t)fds + 1024};
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) perror("setrlimit");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; ep >= 0 && i < (fds - 1) / 2; i++) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -1;
    struct epoll_event e = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
  }
  return ep;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *serve(void *arg) {
  int ls = (int)(intptr_t)arg;
  for (;;) {
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE) usleep(1000);
      continue;
    }
    ssize_t w;
    do w = write(c, "x", 1); while (w < 0 && errno == EINTR);
    close(c);
  }
  return NULL;
}

struct worker {
  pthread_t tid;
  double *lat; /* seconds per connection */
  size_t n, cap;
  unsigned long errors;
  int first_errno;
  const char *first_what;
};

static void fail(struct worker *w, const char *what) {
  if (!w->errors++) {
    w->first_errno = errno;
    w->first_what = what;
  }
}

static void *load(void *arg) {
  struct worker *w = arg;
  char b[16];
  while (now() < deadline) {
    double t0 = now();
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) { fail(w, "socket"); usleep(1000); continue; }
    if (reg_epoll >= 0) {
      struct epoll_event e = {.events = EPOLLIN, .data.fd = s};
      epoll_ctl(reg_epoll, EPOLL_CTL_ADD, s, &e);
    }
    int r;
    do r = connect(s, (struct sockaddr *)&addr, sizeof addr); while (r < 0 && errno == EINTR);
    if (r < 0) { fail(w, "connect"); close(s); usleep(1000); continue; }
    ssize_t got = 0, k;
    for (;;) { /* the byte, then EOF */
      k = read(s, b, sizeof b);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) break;
      got += k;
    }
    close(s);
    if (k < 0 || got != 1) { if (k >= 0) errno = EPROTO; fail(w, "read"); continue; }
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 4096;
      w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
      if (!w->lat) { perror("realloc"); exit(1); }
    }
    w->lat[w->n++] = now() - t0;
  }
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* ---- echo and http servers */

static void *echo_serve(void *arg) {
  int ls = (int)(intptr_t)arg;
  char b[16];
  for (;;) {
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE) usleep(1000);
      continue;
    }
    struct pollfd p = {.fd = c, .events = POLLIN};
    int r;
    do r = poll(&p, 1, 10000); while (r < 0 && errno == EINTR);
    ssize_t k = 0;
    if (r > 0) do k = read(c, b, 1); while (k < 0 && errno == EINTR);
    if (k == 1) {
      ssize_t w;
      do w = write(c, "r", 1); while (w < 0 && errno == EINTR);
    }
    close(c);
  }
  return NULL;
}

static const char *http_body = "";

static void *http_serve(void *arg) {
  int ls = (int)(intptr_t)arg;
  char req[8192], resp[512];
  for (;;) {
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE) usleep(1000);
      continue;
    }
    size_t got = 0;
    int complete = 0;
    while (got < sizeof req - 1 && !complete) { /* up to the blank line that ends the request head */
      struct pollfd p = {.fd = c, .events = POLLIN};
      int r;
      do r = poll(&p, 1, 5000); while (r < 0 && errno == EINTR);
      if (r <= 0) break;
      ssize_t k;
      do k = read(c, req + got, sizeof req - 1 - got); while (k < 0 && errno == EINTR);
      if (k <= 0) break;
      got += (size_t)k;
      req[got] = 0;
      complete = strstr(req, "\r\n\r\n") != NULL;
    }
    if (complete) {
      int n = snprintf(resp, sizeof resp, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       strlen(http_body), http_body);
      for (int off = 0; off < n;) {
        ssize_t w = write(c, resp + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (int)w;
      }
    }
    close(c);
  }
  return NULL;
}

static int listen_on(void) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (ls < 0) { perror("socket"); return -1; }
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return -1; }
  if (listen(ls, 4096) < 0) { perror("listen"); return -1; }
  printf("up\n");
  fflush(stdout);
  return ls;
}

/* ---- paced client (rate) */

enum { ST_SOCKET, ST_CONNECT, ST_WRITE, ST_READ, ST_EOF, ST_N };
static const char *const stage_name[ST_N] = {"socket", "connect", "write", "read", "eof"};
#define MAX_ERRNO 256
static unsigned long err_count[ST_N][MAX_ERRNO]; /* [stage][errno]; errno 0: the peer closed before the reply */
static unsigned long ok_total, failed_total;       /* atomic */
static double rate, start_time;
static int rate_threads;

/* A connection taking longer than this is a hang (readable() gives up after 10 s, so only a blocked connect or two
 * slow reads in a row come near it); a thread still working through its backlog this long after the end is late. */
#define HANG_S 20.0
#define LATE_S 60.0

struct pacer {
  pthread_t tid;
  int idx, done;      /* done: atomic */
  long busy_since_us; /* atomic: when the current connection started (µs after start_time + 1), 0 between them */
  double *lat;
  size_t n, cap;
};

static void failed(int stage, int e) {
  if (e < 0 || e >= MAX_ERRNO) e = EIO;
  __atomic_fetch_add(&err_count[stage][e], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&failed_total, 1, __ATOMIC_RELAXED);
}

static void sleep_until(double t) {
  struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* Waits up to 10 s for s to become readable; -1 with errno (ETIMEDOUT when it did not). */
static int readable(int s) {
  struct pollfd p = {.fd = s, .events = POLLIN};
  int r;
  do r = poll(&p, 1, 10000); while (r < 0 && errno == EINTR);
  if (r == 0) errno = ETIMEDOUT;
  return r > 0 ? 0 : -1;
}

/* One connection: 0, or -1 after counting the failure. */
static int one_conn(void) {
  char b[16];
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) { failed(ST_SOCKET, errno); return -1; }
  int r, stage = ST_CONNECT;
  ssize_t k;
  do r = connect(s, (struct sockaddr *)&addr, sizeof addr); while (r < 0 && errno == EINTR);
  if (r < 0) goto fail;
  stage = ST_WRITE;
  do k = write(s, "q", 1); while (k < 0 && errno == EINTR);
  if (k != 1) goto fail;
  stage = ST_READ;
  if (readable(s) < 0) goto fail;
  do k = read(s, b, 1); while (k < 0 && errno == EINTR);
  if (k == 0) errno = 0; /* closed before the reply */
  if (k != 1) goto fail;
  stage = ST_EOF; /* then the server's close */
  if (readable(s) < 0) goto fail;
  do k = read(s, b, sizeof b); while (k < 0 && errno == EINTR);
  if (k > 0) errno = EPROTO; /* more than one byte */
  if (k != 0) goto fail;
  close(s);
  return 0;
fail:
  failed(stage, errno);
  close(s);
  return -1;
}

/* When thread idx's i-th slot starts: threads take turns, so the slots of all threads are 1/rate apart. */
static double slot_time(int idx, unsigned long i) {
  return start_time + ((double)idx + (double)i * rate_threads) / rate;
}

static void *paced(void *arg) {
  struct pacer *w = arg;
  for (unsigned long i = 0;; i++) {
    double at = slot_time(w->idx, i);
    if (at >= deadline) break;
    sleep_until(at);
    double t0 = now();
    __atomic_store_n(&w->busy_since_us, 1 + (long)((t0 - start_time) * 1e6), __ATOMIC_RELEASE);
    int r = one_conn();
    __atomic_store_n(&w->busy_since_us, 0, __ATOMIC_RELEASE);
    if (r < 0) continue;
    __atomic_fetch_add(&ok_total, 1, __ATOMIC_RELAXED);
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 4096;
      w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
      if (!w->lat) { perror("realloc"); exit(1); }
    }
    w->lat[w->n++] = now() - t0;
  }
  __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static int run_rate(int threads, double seconds) {
  start_time = now() + 0.01;
  deadline = start_time + seconds;
  rate_threads = threads;
  struct pacer *ws = calloc((size_t)threads, sizeof *ws);
  for (int i = 0; i < threads; i++) {
    ws[i].idx = i;
    pthread_create(&ws[i].tid, NULL, paced, &ws[i]);
  }
  for (int sec = 1; start_time + sec <= deadline + 1e-9; sec++) {
    sleep_until(start_time + sec);
    printf("tick %d ok %lu failed %lu\n", sec, __atomic_load_n(&ok_total, __ATOMIC_RELAXED),
           __atomic_load_n(&failed_total, __ATOMIC_RELAXED));
    fflush(stdout);
  }
  /* wait for the backlog; give up on a thread once its connection hangs, on all of them LATE_S after the end */
  int stuck, late;
  for (;;) {
    double t = now();
    stuck = late = 0;
    for (int i = 0; i < threads; i++) {
      if (__atomic_load_n(&ws[i].done, __ATOMIC_ACQUIRE)) continue;
      long since = __atomic_load_n(&ws[i].busy_since_us, __ATOMIC_ACQUIRE);
      if (since && t - (start_time + (double)(since - 1) / 1e6) > HANG_S) stuck++;
      else late++;
    }
    if (!late || t > deadline + LATE_S) break;
    usleep(10000);
  }
  double secs = now() - start_time;
  if (secs < seconds) secs = seconds;
  size_t total = 0;
  for (int i = 0; i < threads; i++)
    if (__atomic_load_n(&ws[i].done, __ATOMIC_ACQUIRE)) total += ws[i].n;
  double *all = malloc((total ? total : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < threads; i++)
    if (__atomic_load_n(&ws[i].done, __ATOMIC_ACQUIRE)) {
      memcpy(all + k, ws[i].lat, ws[i].n * sizeof *all);
      k += ws[i].n;
    }
  qsort(all, total, sizeof *all, cmp);
  double med = total ? all[total / 2] * 1e6 : 0, p99 = total ? all[(size_t)((double)(total - 1) * 0.99)] * 1e6 : 0;
  unsigned long ok = __atomic_load_n(&ok_total, __ATOMIC_RELAXED);
  printf("count %lu failed %lu seconds %.3f conns_per_s %.1f median_us %.1f p99_us %.1f stuck %d late %d\nerrors",
         ok, __atomic_load_n(&failed_total, __ATOMIC_RELAXED), secs, (double)ok / secs, med, p99, stuck, late);
  for (int s = 0; s < ST_N; s++)
    for (int e = 0; e < MAX_ERRNO; e++)
      if (err_count[s][e]) printf(" %s:%s=%lu", stage_name[s], e ? strerrorname_np(e) ? strerrorname_np(e) : "?" : "EOF", err_count[s][e]);
  printf("\n");
  fflush(stdout);
  _exit(0); /* without waiting for stuck threads */
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: netbench serve|echo IP PORT THREADS | load IP PORT CONC SECONDS [FDS [reg]] | rate IP PORT THREADS SECONDS RATE"
                    " | http IP PORT THREADS BODY\n");
    return 2;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", argv[2]); return 2; }
  int threads = atoi(argv[4]);
  if (threads < 1) threads = 1;
  if (!strcmp(argv[1], "serve") || !strcmp(argv[1], "echo") || !strcmp(argv[1], "http")) {
    void *(*loop)(void *) = argv[1][0] == 's' ? serve : argv[1][0] == 'e' ? echo_serve : http_serve;
    if (loop == http_serve) http_body = argc > 5 ? argv[5] : "";
    int ls = listen_on();
    if (ls < 0) return 1;
    pthread_t t;
    for (int i = 1; i < threads; i++) pthread_create(&t, NULL, loop, (void *)(intptr_t)ls);
    loop((void *)(intptr_t)ls);
    return 0;
  }
  if (!strcmp(argv[1], "rate")) {
    if (argc < 7 || atof(argv[5]) <= 0 || atof(argv[6]) <= 0) { fprintf(stderr, "rate needs SECONDS and RATE > 0\n"); return 2; }
    rate = atof(argv[6]);
    return run_rate(threads, atof(argv[5]));
  }
  if (strcmp(argv[1], "load") || argc < 6) { fprintf(stderr, "unknown command %s\n", argv[1]); return 2; }
  if (argc > 6) {
    int ep = busy_epoll(atoi(argv[6]));
    if (ep < 0) { perror("busy_epoll"); return 1; }
    if (argc > 7 && !strcmp(argv[7], "reg")) reg_epoll = ep;
  }
  double start = now();
  deadline = start + atof(argv[5]);
  struct worker *ws = calloc((size_t)threads, sizeof *ws);
  for (int i = 0; i < threads; i++) pthread_create(&ws[i].tid, NULL, load, &ws[i]);
  size_t total = 0;
  unsigned long errors = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(ws[i].tid, NULL);
    total += ws[i].n;
    errors += ws[i].errors;
  }
  double secs = now() - start;
  double *all = malloc((total ? total : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < threads; i++) {
    memcpy(all + k, ws[i].lat, ws[i].n * sizeof *all);
    k += ws[i].n;
  }
  qsort(all, total, sizeof *all, cmp);
  double med = total ? all[total / 2] * 1e6 : 0, p99 = total ? all[(size_t)((double)(total - 1) * 0.99)] * 1e6 : 0;
  printf("count %zu seconds %.3f conns_per_s %.1f median_us %.1f p99_us %.1f errors %lu", total, secs,
         (double)total / secs, med, p99, errors);
  for (int i = 0; i < threads; i++)
    if (ws[i].errors) { printf(" first_error %s:%s", ws[i].first_what, strerror(ws[i].first_errno)); break; }
  printf("\n");
  return total ? 0 : 1;
}
