/* The hot wait: while a program's system calls keep coming and nothing else is awaited, the generator waits for the
 * next one in SECCOMP_IOCTL_NOTIF_RECV itself rather than in epoll_wait.
 *
 * Why: with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP the kernel wakes a supervisor blocked in RECV on the trapping thread's
 * CPU, which is about to sleep; a supervisor blocked in epoll_wait is woken the ordinary way, often on another CPU,
 * and ADDFD then pulls the program's thread over to it. On a 2-CPU machine the pair hopped between CPUs at every
 * accept, waking a halted CPU each time: an accept loop ran at half the rate of one whose supervisor waits in RECV
 * (bench/trapfloor.c: epoll + ADDFD 0.53x native, RECV + ADDFD 0.89x; bench/RESULTS.md, "Ingress").
 *
 * RECV cannot wait for anything else, so the hot wait is used only when no pending entry waits for the daemon or a
 * socket and no datagram receive waits (gen_loop.c asks as_hot_ok), and a timer interrupts it every HOT_TICK_US:
 * the loop then looks at its other descriptors without waiting (a daemon message, a signal, a timer is seen within
 * a tick). Two ticks without a notification and the generator goes back to epoll_wait, the timer off: an idle
 * program costs nothing. The tick's signal is blocked except inside the hot RECV, so no other call of the generator
 * is ever interrupted by it. seccomp_unotify(2), timer_create(2), signal(7). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>
#include <time.h>
#include <unistd.h>

#include "gen_internal.h"

#define HOT_TICK_US 2000
#define HOT_IDLE_TICKS 2

static void on_tick(int sig) { (void)sig; }

static int tick_signal(void) { return SIGRTMIN + 1; }

int as_hot_init(struct as_gen *g) {
  g->hot_timer_ok = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_tick; /* no SA_RESTART: the RECV it interrupts returns EINTR */
  sigemptyset(&sa.sa_mask);
  if (sigaction(tick_signal(), &sa, NULL) < 0) return -errno;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, tick_signal());
  if (sigprocmask(SIG_BLOCK, &s, NULL) < 0) return -errno;
  struct sigevent ev;
  memset(&ev, 0, sizeof(ev));
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = tick_signal();
  ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
  if (timer_create(CLOCK_MONOTONIC, &ev, &g->hot_timer) < 0) return -errno;
  g->hot_timer_ok = 1;
  return 0;
}

void as_hot_free(struct as_gen *g) {
  if (g->hot_timer_ok) timer_delete(g->hot_timer);
  g->hot_timer_ok = 0;
}

static void arm(struct as_gen *g, int on) {
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  if (on) its.it_value.tv_nsec = its.it_interval.tv_nsec = HOT_TICK_US * 1000L;
  if (timer_settime(g->hot_timer, 0, &its, NULL) == 0) g->hot = on;
}

int as_hot_ok(struct as_gen *g) {
  if (!g->hot_timer_ok || g->notif_hup || g->npend || as_urecv_waiting(g)) {
    if (g->hot) arm(g, 0);
    return 0;
  }
  if (g->hot_idle >= HOT_IDLE_TICKS) { /* quiet: back to epoll_wait, the timer off */
    if (g->hot) arm(g, 0);
    return 0;
  }
  if (!g->hot) arm(g, 1);
  return g->hot;
}

int as_hot_recv(struct as_gen *g) {
  sigset_t s, old;
  sigemptyset(&s);
  sigaddset(&s, tick_signal());
  memset(g->nc.req, 0, g->nc.req_size); /* the kernel insists on a zeroed buffer */
  sigprocmask(SIG_UNBLOCK, &s, &old); /* a tick that came meanwhile is taken here, before the wait */
  int r = ioctl(g->notif_fd, SECCOMP_IOCTL_NOTIF_RECV, g->nc.req);
  int e = errno;
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (r == 0) {
    g->hot_idle = 0;
    return 1;
  }
  g->hot_idle++; /* a tick, or a failure (ENOENT: the task died in between, or none is left): epoll_wait says what
                  * happened, and a RECV that keeps failing ends the hot wait instead of spinning */
  return e == EINTR ? 0 : -e;
}
