/* The floor of a trapped accept (bench/ingress.ts --floor): what any design pays that sends a program's accept(2)
 * through a seccomp user-notification supervisor, with none of appswitch's work in it.
 *   trapfloor continue CMD...  accept/accept4 trap, the supervisor answers SECCOMP_USER_NOTIF_FLAG_CONTINUE at once
 *                              (the kernel then runs the program's own accept: one round trip, nothing else)
 *   trapfloor addfd CMD...     the supervisor accepts on its copy of the listener (pidfd_getfd once per fd number) and
 *                              hands the connection over with SECCOMP_ADDFD_FLAG_SEND: the fewest calls of a design
 *                              that sees the connection before the program does (no vetting, no address written)
 * One supervisor thread, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP as appswitch's generator. seccomp_unotify(2). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static int install(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_accept, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_accept4, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
  };
  struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -1;
  return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "continue") && strcmp(argv[1], "addfd") && strcmp(argv[1], "epoll"))) {
    fprintf(stderr, "usage: trapfloor continue|addfd CMD...\n");
    return 2;
  }
  int addfd = !strcmp(argv[1], "addfd");
  int use_epoll = !strcmp(argv[1], "epoll");
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    int nfd = install();
    if (nfd < 0) _exit(1);
    char c[CMSG_SPACE(sizeof(int))] = {0};
    char b = 0;
    struct iovec iov = {&b, 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof(c)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &nfd, sizeof(int));
    if (sendmsg(sv[1], &mh, 0) != 1) _exit(1);
    close(nfd);
    close(sv[1]);
    execvp(argv[2], argv + 2);
    _exit(127);
  }
  close(sv[1]);
  char c[CMSG_SPACE(sizeof(int))] = {0};
  char b;
  struct iovec iov = {&b, 1};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof(c)};
  if (recvmsg(sv[0], &mh, 0) != 1) return 1;
  int nfd;
  memcpy(&nfd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
  ioctl(nfd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0);
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  int cached_num = -1, cached = -1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = nfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, nfd, &ev);
  for (;;) {
    if (use_epoll) {
      struct epoll_event got;
      if (epoll_wait(ep, &got, 1, -1) < 0 && errno != EINTR) break;
      if (got.events & EPOLLHUP) break;
    }
    struct seccomp_notif req;
    memset(&req, 0, sizeof(req));
    if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
      if (errno == EINTR) continue;
      break; /* the program is gone */
    }
    struct seccomp_notif_resp resp;
    memset(&resp, 0, sizeof(resp));
    resp.id = req.id;
    if (!addfd) {
      resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
      ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
      continue;
    }
    int num = (int)req.data.args[0];
    if (num != cached_num) {
      if (cached >= 0) close(cached);
      cached = (int)syscall(SYS_pidfd_getfd, pidfd, num, 0);
      cached_num = cached >= 0 ? num : -1;
    }
    int conn = cached >= 0 ? accept4(cached, NULL, NULL, SOCK_CLOEXEC) : -1;
    if (conn < 0) {
      resp.error = cached >= 0 ? -errno : -EBADF;
      ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
      continue;
    }
    struct seccomp_notif_addfd a = {.id = req.id, .flags = SECCOMP_ADDFD_FLAG_SEND, .srcfd = (__u32)conn};
    if (req.data.nr == __NR_accept4 && (req.data.args[3] & SOCK_CLOEXEC)) a.newfd_flags = O_CLOEXEC;
    if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0) {
      resp.error = -errno;
      ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
    close(conn);
  }
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
