/* appswitch-launcher: the per-program trap generator process. Registers the program with the daemon, starts it
 * in a new, empty network namespace under the seccomp filter, then serves its notifications (gen_loop.c).
 * It is a small C process (not Node.js), so a program's overhead stays a few hundred KiB, and it does not live
 * in the daemon, so the daemon can restart under running programs. unshare(2), seccomp(2), signalfd(2).
 *
 * usage: appswitch-launcher --socket PATH [--meta JSON] [--resolv FILE] [--daemon-wait MS] [--user NAME[:GROUP]]
 *                           [--cap-add CAP]... [--cap-drop CAP|ALL]... [--no-sockguard] [--private] -- CMD [ARG...]
 * --private: the daemon is an ordinary user's own (`appswitch daemon --private`, docs/private-daemon.md): the launcher
 *   first makes a user namespace of its own (caller.h as_caller_private_ns), where it has the capabilities the
 *   program's namespaces take; the program runs as the user with none, and without the socket guard (it needs root)
 * --daemon-wait: how long a trapped call waits for a daemon that went away to come back (default 10000 ms)
 * --no-sockguard: run without the kernel-side socket guard (sockguard.h); only for a real uid 0 caller (who could
 *   detach the guard's BPF programs anyway), given by `appswitch run` when the daemon runs --insecure-no-sockguard
 * Started by an ordinary user, it must be the installation's setuid-root copy and the user a member of its group
 * (caller.h): then --user, --cap-add, --cap-drop (but ALL) and --no-sockguard are refused, --socket must lead to a
 * root daemon and --resolv to a root-owned file, the environment is not read (glibc's secure mode: secure_getenv), and
 * the program runs as that user, with its groups, environment and cwd, and no capabilities (caps.c).
 * exit status: the program's (128+N when killed by signal N); 125 when appswitch itself failed; 126/127 as a
 * shell would when CMD cannot be executed / found. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <limits.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "caller.h"
#include "caps.h"
#include "generator.h"
#include "offer_chan.h"
#include "notif.h"
#include "proto.h"
#include "scm_rights.h"
#include "seccomp_filter.h"
#include "session.h"
#include "sockguard.h"

#define EXIT_APPSWITCH 125
#define USAGE                                                                                                    \
  "usage: appswitch-launcher --socket PATH [--meta JSON] [--resolv FILE] [--daemon-wait MS] [--user NAME[:GROUP]]" \
   " [--cap-add CAP]... [--cap-drop CAP|ALL]... [--no-sockguard] [--private] -- CMD [ARG...]\n"

static void die(const char *what, int err) {
  fprintf(stderr, "appswitch: %s: %s\n", what, strerror(err));
  exit(EXIT_APPSWITCH);
}

static int loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strcpy(ifr.ifr_name, "lo");
  int r = 0;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) r = -errno;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (!r && ioctl(s, SIOCSIFFLAGS, &ifr) < 0) r = -errno;
  close(s);
  return r;
}

/* The program's private mount namespace (host mounts still propagate in: rslave). mount_namespaces(7).
 * resolv (may be NULL): the daemon's resolv.conf, opened here, in the new namespace (a bind mount's source must be
 * in it), with the caller's checks (as_caller_open_resolv), and bound over /etc/resolv.conf without touching the
 * host's file. state_dir: the daemon's state directory (control and trap sockets), covered with
 * an empty read-only tmpfs, so the program cannot connect to either socket by path; the cwd is looked up again (with
 * the caller's filesystem rights: root must not lead a setuid caller into a directory it could not reach), in case
 * it was in there. */
static int private_mounts(const char *resolv, const char *state_dir, const struct as_caller *caller) {
  if (unshare(CLONE_NEWNS) < 0) return -errno;
  if (mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) return -errno;
  if (resolv && access("/etc/resolv.conf", F_OK) == 0) {
    int fd = as_caller_open_resolv(caller, resolv, NULL, 0);
    if (fd < 0) return fd;
    char src[64];
    snprintf(src, sizeof(src), "/proc/self/fd/%d", fd); /* the file opened and checked, not its path again */
    int r = mount(src, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0 ? -errno : 0;
    close(fd);
    if (r < 0) return r;
  }
  if (strcmp(state_dir, "/") == 0) return -EINVAL;
  if (mount("appswitch", state_dir, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=2,mode=0555") < 0) return -errno;
  char cwd[PATH_MAX];
  int r = as_caller_fs_enter(caller);
  if (r < 0) return r;
  r = getcwd(cwd, sizeof(cwd)) && chdir(cwd) < 0 && chdir("/") < 0 ? -errno : 0;
  as_caller_fs_leave(caller);
  return r;
}

/* In the child: new network namespace, filter, hand the listener to the parent, exec. Never returns. */

static void child_main(int chan, char **cmd, const sigset_t *orig, const char *resolv, const char *state_dir,
                       const struct as_cred_plan *cred, const struct as_guard *guard, pid_t launcher,
                       const struct as_caller *caller) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) _exit(EXIT_APPSWITCH);
  /* A private caller (caller.h): our memory belongs to the host's user namespace, where the launcher has no
   * CAP_SYS_PTRACE, so it can take the seccomp listener (pidfd_getfd) only from a dumpable child of its own uid.
   * Nothing here is secret from the user, and the program (dumpable after execve anyway) does not exist yet. */
  if (caller->private_ && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) _exit(EXIT_APPSWITCH);
  if (unshare(CLONE_NEWNET) < 0) {
    fprintf(stderr, "appswitch: unshare(CLONE_NEWNET): %s (appswitch run needs CAP_SYS_ADMIN)\n", strerror(errno));
    _exit(EXIT_APPSWITCH);
  }
  int r;
  const char *step;
  if (guard && (r = as_guard_enter_app(guard, launcher, &step)) < 0) { /* needs CAP_SYS_ADMIN: before any drop */
    fprintf(stderr, "appswitch: socket guard: %s: %s\n", step, strerror(-r));
    _exit(EXIT_APPSWITCH);
  }
  if ((r = private_mounts(resolv, state_dir, caller)) < 0) {
    fprintf(stderr, "appswitch: private mounts (resolv.conf %s, hiding %s): %s\n", resolv ? resolv : "kept", state_dir, strerror(-r));
    _exit(EXIT_APPSWITCH);
  }
  r = loopback_up();
  if (r < 0) {
    fprintf(stderr, "appswitch: bringing up lo: %s\n", strerror(-r));
    _exit(EXIT_APPSWITCH);
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    fprintf(stderr, "appswitch: PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno));
    _exit(EXIT_APPSWITCH);
  }
  int killable;
  int lfd = as_filter_install(&killable);
  if (lfd < 0) {
    fprintf(stderr, "appswitch: installing the seccomp filter: %s\n", strerror(-lfd));
    _exit(EXIT_APPSWITCH);
  }
  /* From here on, sendmsg() and friends are trapped and nobody serves them yet: tell the parent the listener's
   * fd number with write(2) (not trapped), let it take the fd with pidfd_getfd(2), and wait for its go. */
  int msg[2] = {lfd, killable};
  if (write(chan, msg, sizeof(msg)) != (ssize_t)sizeof(msg)) _exit(EXIT_APPSWITCH);
  char go;
  if (read(chan, &go, 1) != 1) _exit(EXIT_APPSWITCH);
  close(lfd);
  close(chan);
  sigprocmask(SIG_SETMASK, orig, NULL);
  if ((r = as_cred_apply(cred, &step)) < 0) { /* last: nothing after this needs a capability */
    fprintf(stderr, "appswitch: %s: %s\n", step, strerror(-r));
    _exit(EXIT_APPSWITCH);
  }
  execvp(cmd[0], cmd);
  int e = errno;
  fprintf(stderr, "appswitch: %s: %s\n", cmd[0], strerror(e));
  _exit(e == ENOENT ? 127 : 126);
}

static int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return EXIT_APPSWITCH;
}

int main(int argc, char **argv) {
  const char *sock_path = NULL, *meta = "{}", *resolv = NULL, *user = NULL;
  uint64_t cap_add = 0, cap_drop = 0;
  int wait_ms = 10000, sockguard = 1, private_ = 0;
  static struct as_caller caller;
  char why[512];
  for (int k = 1; k < argc && strcmp(argv[k], "--"); k++) private_ |= !strcmp(argv[k], "--private");
  if (private_ && as_caller_private_ns(&caller, why, sizeof(why)) < 0) { /* before the next step: the maps are
                                                                          * written through /proc/self */
    fprintf(stderr, "appswitch: %s\n", why);
    return EXIT_APPSWITCH;
  }
  /* first: neither the program nor the invoking user may ptrace this process, pidfd_getfd(2) its daemon session
   * and seccomp listener, or read its memory (process_vm_readv, /proc/PID/mem); fork keeps it, execve resets it */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die("PR_SET_DUMPABLE", errno);
  int i = 1;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) {
      i++;
      break;
    } else if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
      sock_path = argv[++i];
    } else if (!strcmp(argv[i], "--meta") && i + 1 < argc) {
      meta = argv[++i];
    } else if (!strcmp(argv[i], "--resolv") && i + 1 < argc) {
      resolv = argv[++i];
    } else if (!strcmp(argv[i], "--user") && i + 1 < argc) {
      user = argv[++i];
    } else if ((!strcmp(argv[i], "--cap-add") || !strcmp(argv[i], "--cap-drop")) && i + 1 < argc) {
      int drop = !strcmp(argv[i], "--cap-drop");
      if (as_cap_parse(argv[++i], drop, drop ? &cap_drop : &cap_add) < 0) {
        fprintf(stderr, "appswitch: %s %s: unknown capability\n", drop ? "--cap-drop" : "--cap-add", argv[i]);
        return EXIT_APPSWITCH;
      }
    } else if (!strcmp(argv[i], "--no-sockguard")) {
      sockguard = 0;
    } else if (!strcmp(argv[i], "--private")) {
      sockguard = 0; /* the socket guard's cgroup BPF programs need root in the host's namespaces */
    } else if (!strcmp(argv[i], "--daemon-wait") && i + 1 < argc) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 0 || v > 86400000) {
        fprintf(stderr, "appswitch: --daemon-wait must be a number of milliseconds\n");
        return EXIT_APPSWITCH;
      }
      wait_ms = (int)v;
    } else {
      fprintf(stderr, "%s", USAGE);
      return EXIT_APPSWITCH;
    }
  }
  if (!sock_path || i >= argc) {
    fprintf(stderr, "%s", USAGE);
    return EXIT_APPSWITCH;
  }
  char **cmd = argv + i;
  static struct as_cred_plan cred;
  if (!sockguard && getuid() != 0 && !private_) {
    fprintf(stderr, "appswitch: --no-sockguard: only root may run a program without the socket guard\n");
    return EXIT_APPSWITCH;
  }
  /* root, or a member of the launcher's group through the setuid bit: nothing privileged happens before this */
  if ((!private_ && as_caller_init(&caller, why, sizeof(why)) < 0) ||
      as_caller_check_options(&caller, user != NULL, cap_add, cap_drop, sockguard, why, sizeof(why)) < 0) {
    fprintf(stderr, "appswitch: %s\n", why);
    return EXIT_APPSWITCH;
  }
  if (as_cred_plan_init(&cred, user, cap_add, cap_drop, why, sizeof(why)) < 0) {
    fprintf(stderr, "appswitch: %s\n", why);
    return EXIT_APPSWITCH;
  }
  cred.in_userns = private_;

  /* Whoever exec'd us (Node ignores SIGPIPE) may have left dispositions the program must not inherit. */
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    signal(sig, SIG_DFL);
  }
  sigset_t orig, mask;
  sigemptyset(&orig);
  sigemptyset(&mask);
  int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD, SIGWINCH, SIGCONT};
  for (size_t k = 0; k < sizeof(fwd) / sizeof(fwd[0]); k++) sigaddset(&mask, fwd[k]);
  sigprocmask(SIG_SETMASK, &mask, NULL);
  int sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) die("signalfd", errno);
  prctl(PR_SET_CHILD_SUBREAPER, 1); /* orphans of the program come back to us and are reaped */

  why[0] = 0;
  int dfd = as_caller_connect(&caller, sock_path, why, sizeof(why));
  if (dfd < 0) {
    if (why[0]) fprintf(stderr, "appswitch: %s\n", why);
    else fprintf(stderr, "appswitch: cannot reach the daemon at %s: %s\n", sock_path, strerror(-dfd));
    return EXIT_APPSWITCH;
  }
  char state_dir[PATH_MAX]; /* the daemon's state directory, hidden from the program */
  int r;
  why[0] = 0;
  if ((r = as_caller_state_dir(&caller, sock_path, state_dir, sizeof(state_dir), why, sizeof(why))) < 0) {
    if (why[0]) fprintf(stderr, "appswitch: %s\n", why);
    else fprintf(stderr, "appswitch: %s: %s\n", sock_path, strerror(-r));
    return EXIT_APPSWITCH;
  }
  why[0] = 0;
  int resolv_fd = resolv ? as_caller_open_resolv(&caller, resolv, why, sizeof(why)) : -1; /* checked again in the child */
  if (resolv_fd < 0 && resolv) {
    if (why[0]) fprintf(stderr, "appswitch: %s\n", why);
    else fprintf(stderr, "appswitch: --resolv %s: %s\n", resolv, strerror(-resolv_fd));
    return EXIT_APPSWITCH;
  }
  if (resolv_fd >= 0) close(resolv_fd);
  /* Our offer socket (offer_chan.h), announced in the HELLO: other generators hand us same-host connections there.
   * Without one, the program still works; connections to it take TCP. */
  static char ochan_name[64], meta_offers[AS_PAYLOAD_MAX];
  int ochan = as_ochan_open(ochan_name, sizeof(ochan_name));
  if (ochan >= 0 && as_meta_add(meta_offers, sizeof(meta_offers), meta, "offers", ochan_name) == 0) meta = meta_offers;
  struct as_msg hr;
  static char ticket[AS_TICKET_MAX];
  int hfds[AS_SESSION_FDS], nh = 0;
  r = as_session_hello_fds(dfd, meta, NULL, NULL, 10000, &hr, ticket, sizeof(ticket), why, sizeof(why), hfds, &nh);
  if (r < 0) die("registering with the daemon", -r);
  if (hr.result < 0) {
    fprintf(stderr, "appswitch: %s\n", why[0] ? why : strerror(-hr.result));
    return EXIT_APPSWITCH;
  }

  /* The socket guard (sockguard.h): without it, a program that races a trapped call against dup2() reaches host
   * addresses directly, so appswitch refuses to run unless the daemon's operator opted out. Set up once the daemon
   * admitted us: whoever may not register (not root, under a seccomp filter) is told that first, by the daemon. */
  static struct as_guard guard;
  if (sockguard) {
    const char *step;
    int gr = as_guard_setup(&guard, &step);
    if (gr < 0) {
      fprintf(stderr,
              "appswitch: socket guard unavailable: %s: %s. appswitch needs cgroup v2 and cgroup sock_addr BPF programs "
              "(root) to stop a program from racing a trapped call against dup2() to reach host addresses directly; "
              "run the daemon with --insecure-no-sockguard to run programs without that protection\n",
              step, strerror(-gr));
      return EXIT_APPSWITCH;
    }
    if (guard.enabled_nsdelegate)
      fprintf(stderr, "appswitch: turned on nsdelegate on the cgroup v2 hierarchy (cgroup namespaces become delegation "
                      "boundaries, as systemd mounts it), so that programs cannot leave their cgroup\n");
  } else if (!private_) {
    fprintf(stderr, "appswitch: warning: running without the socket guard (--insecure-no-sockguard): the program can "
                    "bypass appswitch with a dup2() race\n");
  }

  pid_t launcher = getpid();
  int chan[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) < 0) die("socketpair", errno);
  pid_t child = fork();
  if (child < 0) die("fork", errno);
  if (child == 0) {
    close(chan[0]);
    close(dfd);
    close(sigfd);
    child_main(chan[1], cmd, &orig, resolv, state_dir, &cred, sockguard ? &guard : NULL, launcher, &caller);
  }
  close(chan[1]);
  /* Before the first notification is served, hence before the program's first socket is created. */
  if (sockguard && (r = as_guard_join_generators(&guard)) < 0) {
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    as_guard_remove_app(&guard, launcher, 1000);
    die("socket guard: moving the generator into the generators cgroup", -r);
  }
  int cmsg[2];
  ssize_t n = read(chan[0], cmsg, sizeof(cmsg));
  if (n != (ssize_t)sizeof(cmsg)) { /* the child failed before the filter and said why */
    int st;
    waitpid(child, &st, 0);
    if (sockguard) as_guard_remove_app(&guard, launcher, 1000);
    return exit_code(st) == 0 ? EXIT_APPSWITCH : exit_code(st);
  }
  int cpidfd = (int)syscall(SYS_pidfd_open, child, 0);
  int lfd = cpidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, cpidfd, cmsg[0], 0);
  if (lfd < 0) {
    int e = errno;
    kill(child, SIGKILL);
    die("taking the seccomp listener", e);
  }
  close(cpidfd);
  int sync_rc = as_notif_set_sync_wakeup(lfd); /* kernels before 6.6 lack it: slower, not wrong */
  if (secure_getenv("APPSWITCH_GENERATOR_DEBUG") /* NULL when setuid */) fprintf(stderr, "appswitch-generator: sync wake-up: %s\n", sync_rc ? strerror(-sync_rc) : "on");

  static struct as_gen g;
  r = as_gen_init(&g, lfd, dfd, sigfd, child);
  if (r < 0) {
    kill(child, SIGKILL);
    die("starting the trap generator", -r);
  }
  if (hr.addr_len && as_ep_from_sockaddr(hr.addr, hr.addr_len, &g.identity) == 0) g.has_identity = 1;
  { /* the decision table and the shared counters (dtab.h): connects are decided here from now on */
    char id[AS_DTAB_ID_MAX];
    snprintf(id, sizeof(id), "%.*s", (int)strcspn(ticket, "."), ticket);
    int ar = as_dtab_attach(&g.dtab, nh > 0 ? hfds[0] : -1, nh > 1 ? hfds[1] : -1, id);
    if (ar < 0 && secure_getenv("APPSWITCH_GENERATOR_DEBUG") /* NULL when setuid */) fprintf(stderr, "appswitch-generator: no decision table: %s\n", strerror(-ar));
    for (int i = 0; i < nh; i++) close(hfds[i]);
    if (ochan >= 0) as_gen_offers(&g, ochan);
  }
  /* what a new session needs when the daemon restarts under the program */
  g.daemon_path = sock_path;
  g.caller = &caller; /* a new session is checked as this one was */
  g.meta = meta;
  g.wait_ms = wait_ms;
  snprintf(g.ticket, sizeof(g.ticket), "%s", ticket);
  struct as_msg started;
  memset(&started, 0, sizeof(started));
  started.type = AS_STARTED;
  started.version = AS_PROTO_VERSION;
  started.pid = (uint32_t)child;
  as_send_fds(dfd, &started, sizeof(started), NULL, 0, 0);
  if (write(chan[0], "g", 1) != 1) die("starting the program", errno);
  close(chan[0]);

  int status = as_gen_run(&g, 1);
  if (!g.notif_hup) {
    /* The program's main process exited but it left descendants under the filter (a daemonizing server):
     * report the exit status now and keep serving them in the background until the last one is gone. */
    pid_t bg = fork();
    if (bg == 0) {
      setsid();
      int null = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
      }
      as_gen_run(&g, 0);
      if (sockguard) as_guard_remove_app(&guard, launcher, 2000);
      _exit(0);
    }
  } else if (sockguard) { /* the last program process is gone */
    as_guard_remove_app(&guard, launcher, 2000);
  }
  return exit_code(status);
}
