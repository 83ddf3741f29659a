/* A hostile program for test/security/caps*.test.ts and register*.test.ts: each case tries one escape that needs a
 * capability, the generator's memory or descriptors, or the daemon's sockets, and reports what the kernel answered,
 * one line "CASE RESULT" (RESULT: "ok" when the attack worked, else the errno name); the test decides.
 * ptrace(2), pidfd_getfd(2), process_vm_readv(2), netdevice(7), bpf(2), mount(2), unshare(2), seccomp(2).
 * usage: attack-caps CASE [ARGS...]
 *   status                        the capability lines of /proc/self/status, and the uid/gid lines
 *   ptrace                        PTRACE_ATTACH and PTRACE_SEIZE on the parent (the generator)
 *   pidfd-getfd                   pidfd_getfd(2) of each of the parent's descriptors 0..255
 *   vm-read                       process_vm_readv(2) of the parent's stack (address from /proc/PPID/stat)
 *   ifdown IFNAME                 SIOCSIFFLAGS without IFF_UP on an inet socket (the generator injects a host socket)
 *   bpf                           BPF_PROG_LOAD of an XDP program (return XDP_PASS)
 *   mount                         a tmpfs mounted on a new directory under /tmp
 *   userns                        unshare(CLONE_NEWUSER), clone(CLONE_NEWUSER), unshare(CLONE_NEWCGROUP)
 *   connect PATH stream|seqpacket connect(2) to a Unix socket by path
 *   control PATH                  connect to a control socket, ask for the apps; prints the first line of the answer
 *   hello PATH META               connect to a trap socket and send a HELLO with META; prints the reply's result/text
 *   seccomp-exec CMD [ARGS...]    installs an allow-all seccomp filter (as a trapped program has one), then execs CMD
 *   setuid UID GID                drops to UID/GID (setgroups, setgid, setuid) as sshd or postgres would, then status */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../native/proto.h"

static void report(const char *what, long r) {
  if (r >= 0)
    printf("%s ok\n", what);
  else
    printf("%s %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "E?");
  fflush(stdout);
}

static void status(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof(line), f)) {
    if (!strncmp(line, "Cap", 3) || !strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) || !strncmp(line, "Groups:", 7) ||
        !strncmp(line, "NoNewPrivs:", 11) || !strncmp(line, "Seccomp:", 8))
      fputs(line, stdout);
  }
  fclose(f);
  fflush(stdout);
}

static int do_ptrace(void) {
  pid_t pp = getppid();
  long r = ptrace(PTRACE_ATTACH, pp, 0, 0);
  report("ptrace-attach", r);
  if (r == 0) {
    waitpid(pp, NULL, __WALL);
    ptrace(PTRACE_DETACH, pp, 0, 0);
  }
  r = ptrace(PTRACE_SEIZE, pp, 0, 0);
  report("ptrace-seize", r);
  if (r == 0) ptrace(PTRACE_DETACH, pp, 0, 0);
  return 0;
}

static int do_pidfd_getfd(void) {
  int pfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
  report("pidfd-open", pfd);
  if (pfd < 0) return 0;
  int got = 0, err = 0;
  for (int fd = 0; fd < 256; fd++) {
    int r = (int)syscall(SYS_pidfd_getfd, pfd, fd, 0);
    if (r >= 0) {
      got++;
      close(r);
    } else if (errno != EBADF && !err) {
      err = errno;
    }
  }
  if (got) {
    printf("pidfd-getfd ok %d\n", got);
  } else {
    errno = err ? err : EBADF;
    report("pidfd-getfd", -1);
  }
  return 0;
}

static int do_vm_read(void) {
  pid_t pp = getppid();
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", pp);
  unsigned long start_stack = 0;
  FILE *f = fopen(path, "re");
  if (f) {
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    char *p = strrchr(buf, ')');
    /* field 28 (startstack), counted from field 3 just after ") " */
    for (int field = 3; p && field < 28; field++) p = strchr(p + 1, ' ');
    if (p) start_stack = strtoul(p + 1, NULL, 10);
  }
  if (!start_stack) start_stack = 0x7ffff000UL; /* unknown (stat hides it when we may not read): any address */
  char data[64];
  struct iovec local = {data, sizeof(data)}, remote = {(void *)(start_stack - sizeof(data)), sizeof(data)};
  long r = syscall(SYS_process_vm_readv, pp, &local, 1, &remote, 1, 0);
  report("vm-read", r);
  snprintf(path, sizeof(path), "/proc/%d/mem", pp);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  report("proc-mem-open", fd);
  if (fd >= 0) close(fd);
  return 0;
}

static int do_ifdown(const char *ifname) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  report("socket", s);
  if (s < 0) return 0;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  long r = ioctl(s, SIOCGIFFLAGS, &ifr);
  report("siocgifflags", r);
  if (r < 0) return 0;
  ifr.ifr_flags &= ~IFF_UP;
  report("siocsifflags", ioctl(s, SIOCSIFFLAGS, &ifr));
  return 0;
}

static int do_bpf(void) {
  struct bpf_insn prog[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 2 /* XDP_PASS */},
      {.code = BPF_JMP | BPF_EXIT},
  };
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_XDP;
  a.insn_cnt = 2;
  a.insns = (uint64_t)(uintptr_t)prog;
  a.license = (uint64_t)(uintptr_t) "GPL";
  long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
  report("bpf-prog-load", fd);
  if (fd >= 0) close((int)fd);
  return 0;
}

static int do_mount(void) {
  char dir[] = "/tmp/attack-caps-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  long r = mount("attack", dir, "tmpfs", 0, "size=4k");
  report("mount", r);
  if (r == 0) umount(dir);
  rmdir(dir);
  return 0;
}

static int do_userns(void) {
  long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  report("clone-newuser", pid);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  report("unshare-newcgroup", unshare(CLONE_NEWCGROUP));
  report("unshare-newuser", unshare(CLONE_NEWUSER)); /* last: once in a new user namespace, the others fail anyway */
  return 0;
}

static int unix_connect(const char *path, int type) {
  int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
  if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

static int do_hello(const char *path, const char *meta) {
  int s = unix_connect(path, SOCK_SEQPACKET);
  report("connect", s);
  if (s < 0) return 0;
  static uint8_t buf[AS_MSG_MAX + 1];
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_HELLO;
  m.version = AS_PROTO_VERSION;
  m.pid = (uint32_t)getpid();
  size_t ml = strlen(meta);
  if (ml > AS_PAYLOAD_MAX) ml = AS_PAYLOAD_MAX;
  m.payload_len = (uint32_t)ml;
  memcpy(buf, &m, sizeof(m));
  memcpy(buf + sizeof(m), meta, ml);
  report("send", send(s, buf, sizeof(m) + ml, MSG_NOSIGNAL));
  ssize_t n = recv(s, buf, AS_MSG_MAX, 0);
  if (n < (ssize_t)sizeof(m)) {
    if (n >= 0) errno = ECONNRESET;
    report("reply", -1);
    return 0;
  }
  memcpy(&m, buf, sizeof(m));
  buf[n] = 0;
  printf("reply result %d: %s\n", m.result, (char *)buf + sizeof(m));
  return 0;
}

static int do_control(const char *path) {
  int s = unix_connect(path, SOCK_STREAM);
  report("connect", s);
  if (s < 0) return 0;
  const char *req = "{\"id\":1,\"method\":\"apps\"}\n";
  report("send", send(s, req, strlen(req), MSG_NOSIGNAL));
  char buf[4096];
  size_t got = 0;
  while (got < sizeof(buf) - 1) {
    ssize_t n = recv(s, buf + got, sizeof(buf) - 1 - got, 0);
    if (n <= 0) break;
    got += (size_t)n;
    if (memchr(buf, '\n', got)) break;
  }
  buf[got] = 0;
  char *nl = strchr(buf, '\n');
  if (nl) *nl = 0;
  printf("answer %s\n", buf);
  return 0;
}

static int do_seccomp_exec(char **cmd) {
  struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  struct sock_fprog prog = {.len = 1, .filter = allow};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
    report("seccomp", -1);
    return 1;
  }
  execvp(cmd[0], cmd);
  report("exec", -1);
  return 127;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *c = argv[1];
  if (!strcmp(c, "status")) status();
  else if (!strcmp(c, "ptrace")) return do_ptrace();
  else if (!strcmp(c, "pidfd-getfd")) return do_pidfd_getfd();
  else if (!strcmp(c, "vm-read")) return do_vm_read();
  else if (!strcmp(c, "ifdown") && argc == 3) return do_ifdown(argv[2]);
  else if (!strcmp(c, "bpf")) return do_bpf();
  else if (!strcmp(c, "mount")) return do_mount();
  else if (!strcmp(c, "userns")) return do_userns();
  else if (!strcmp(c, "connect") && argc == 4) {
    int s = unix_connect(argv[2], !strcmp(argv[3], "seqpacket") ? SOCK_SEQPACKET : SOCK_STREAM);
    report("connect", s);
  } else if (!strcmp(c, "control") && argc == 3) return do_control(argv[2]);
  else if (!strcmp(c, "hello") && argc == 4) return do_hello(argv[2], argv[3]);
  else if (!strcmp(c, "seccomp-exec") && argc >= 3) return do_seccomp_exec(argv + 2);
  else if (!strcmp(c, "setuid") && argc == 4) {
    gid_t g = (gid_t)atoi(argv[3]);
    report("setgroups", setgroups(1, &g));
    report("setgid", setgid(g));
    report("setuid", setuid((uid_t)atoi(argv[2])));
    status();
  } else {
    fprintf(stderr, "attack-caps: unknown case %s\n", c);
    return 2;
  }
  return 0;
}
