/* Who started the launcher, and what an ordinary (setuid) caller may ask of it. See caller.h.
 * credentials(7), setfsuid(2), unix(7) SO_PEERCRED, getgroups(2). */
#define _GNU_SOURCE
#include "caller.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "caps.h"
#include "session.h"

#define INSTALL_HINT "install appswitch with sudo scripts/install.sh and be in its group (sudo usermod -aG appswitch USER, then log in again)"

__attribute__((format(printf, 3, 4))) static void say(char *why, size_t whylen, const char *fmt, ...) {
  if (!why || !whylen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
}

/* Is gid the real gid or one of the supplementary groups (which a setuid exec keeps as the caller had them)? */
static int in_group(gid_t gid) {
  if (getgid() == gid) return 1;
  int n = getgroups(0, NULL);
  if (n <= 0) return 0;
  gid_t *groups = calloc((size_t)n, sizeof(gid_t));
  if (!groups) return 0;
  n = getgroups(n, groups);
  int found = 0;
  for (int i = 0; i < n && !found; i++) found = groups[i] == gid;
  free(groups);
  return found;
}

int as_caller_init(struct as_caller *c, char *why, size_t whylen) {
  memset(c, 0, sizeof(*c));
  c->uid = getuid();
  c->gid = getgid();
  if (c->uid == 0) return 0;
  if (geteuid() != 0) {
    say(why, whylen,
        "this appswitch-launcher is not setuid root (real and effective uid %ld): an ordinary user runs programs through "
        "the installed launcher: " INSTALL_HINT "; or run appswitch run as root",
        (long)c->uid);
    return -EPERM;
  }
  struct stat st;
  if (stat("/proc/self/exe", &st) < 0) { /* our own file: its group is the one allowed */
    int e = errno;
    say(why, whylen, "cannot read the launcher's own file (/proc/self/exe): %s", strerror(e));
    return -e;
  }
  c->group = st.st_gid;
  c->setuid = 1;
  if (!in_group(c->group)) {
    say(why, whylen,
        "permission denied: uid %ld is not in the launcher's group (gid %ld): only root and members of the appswitch "
        "group may run programs; " INSTALL_HINT,
        (long)c->uid, (long)c->group);
    return -EPERM;
  }
  return 0;
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, text, strlen(text));
  int r = n == (ssize_t)strlen(text) ? 0 : n < 0 ? -errno : -EIO;
  close(fd);
  return r;
}

int as_caller_private_ns(struct as_caller *c, char *why, size_t whylen) {
  uid_t uid = getuid();
  gid_t gid = getgid();
  if (uid == 0) {
    say(why, whylen, "--private is for an ordinary user's own daemon; root runs programs with the system daemon");
    return -EPERM;
  }
  /* the setuid launcher (a group member): nothing of root's is needed or kept in private mode */
  if ((getegid() != gid && setresgid(gid, gid, gid) < 0) || (geteuid() != uid && setresuid(uid, uid, uid) < 0)) {
    int e = errno;
    say(why, whylen, "--private: giving up the setuid launcher's rights: %s", strerror(e));
    return -e;
  }
  if (geteuid() != uid || getegid() != gid) return -EPERM;
  /* a uid change made us non-dumpable, and /proc/self/uid_map root's: dumpable again for the maps (main() makes
   * us non-dumpable once they are written) */
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  if (unshare(CLONE_NEWUSER) < 0) {
    int e = errno;
    say(why, whylen,
        "--private: unshare(CLONE_NEWUSER): %s (the private daemon needs unprivileged user namespaces: "
        "sysctl kernel.unprivileged_userns_clone=1 on Debian, or an AppArmor profile allowing userns on Ubuntu)",
        strerror(e));
    return -e;
  }
  char map[64];
  const char *step = "/proc/self/setgroups";
  int r = write_file("/proc/self/setgroups", "deny");
  if (r == 0) {
    step = "/proc/self/uid_map";
    snprintf(map, sizeof(map), "%lu %lu 1\n", (unsigned long)uid, (unsigned long)uid);
    r = write_file("/proc/self/uid_map", map);
  }
  if (r == 0) {
    step = "/proc/self/gid_map";
    snprintf(map, sizeof(map), "%lu %lu 1\n", (unsigned long)gid, (unsigned long)gid);
    r = write_file("/proc/self/gid_map", map);
  }
  if (r < 0) {
    say(why, whylen, "--private: writing %s in the new user namespace: %s", step, strerror(-r));
    return r;
  }
  memset(c, 0, sizeof(*c));
  c->uid = uid;
  c->gid = gid;
  c->private_ = 1;
  return 0;
}

int as_caller_check_options(const struct as_caller *c, int user, uint64_t cap_add, uint64_t cap_drop, int sockguard,
                            char *why, size_t whylen) {
  if (c->private_) {
    const char *opt = user ? "--user" : cap_add ? "--cap-add" : (cap_drop && cap_drop != AS_CAPS_ALL) ? "--cap-drop" : NULL;
    if (opt) {
      say(why, whylen, "%s: a program of a private daemon runs as its user (uid %ld), with no capabilities", opt, (long)c->uid);
      return -EPERM;
    }
    (void)sockguard; /* a private daemon has no socket guard (it needs root): --no-sockguard is what it says */
    return 0;
  }
  if (!c->setuid) return 0;
  const char *opt = user ? "--user" : cap_add ? "--cap-add" : (cap_drop && cap_drop != AS_CAPS_ALL) ? "--cap-drop" : NULL;
  if (opt) {
    say(why, whylen,
        "%s: only root may choose the program's user or capabilities (uid %ld runs it as itself, with no capabilities)",
        opt, (long)c->uid);
    return -EPERM;
  }
  if (!sockguard) {
    say(why, whylen, "--no-sockguard: only root may run a program without the socket guard (uid %ld)", (long)c->uid);
    return -EPERM;
  }
  return 0;
}

int as_caller_fs_enter(const struct as_caller *c) {
  if (!c->setuid) return 0;
  setfsgid(c->gid);
  setfsuid(c->uid); /* from 0 to another uid: the filesystem capabilities leave the effective set too */
  /* setfsuid(2) reports no error: read both back (an invalid id changes nothing and returns the current one) */
  if ((uid_t)setfsuid((uid_t)-1) != c->uid || (gid_t)setfsgid((gid_t)-1) != c->gid) {
    as_caller_fs_leave(c);
    return -EPERM;
  }
  return 0;
}

void as_caller_fs_leave(const struct as_caller *c) {
  if (!c->setuid) return;
  setfsuid(0); /* back to 0: they come back from the permitted set */
  setfsgid(getegid());
}

int as_caller_connect(const struct as_caller *c, const char *path, char *why, size_t whylen) {
  struct sockaddr_un sun;
  int s = as_session_socket(path, &sun);
  if (s < 0) return s;
  int r = as_caller_fs_enter(c);
  if (r == 0 && c->setuid) {
    struct stat st;
    if (stat(path, &st) < 0) {
      r = -errno;
    } else if (!S_ISSOCK(st.st_mode) || st.st_uid != 0) {
      say(why, whylen, "%s is not the daemon's trap socket (it is not a socket owned by root; uid %ld): refused", path, (long)st.st_uid);
      r = -EPERM;
    }
  }
  if (r == 0 && c->private_) {
    struct stat st;
    if (stat(path, &st) < 0) {
      r = -errno;
    } else if (!S_ISSOCK(st.st_mode) || st.st_uid != c->uid) {
      say(why, whylen, "%s is not your private daemon's trap socket (it is not a socket owned by uid %ld; owner %ld): refused", path, (long)c->uid, (long)st.st_uid);
      r = -EPERM;
    }
  }
  if (r == 0 && connect(s, (struct sockaddr *)&sun, sizeof(sun)) < 0) r = -errno;
  as_caller_fs_leave(c);
  if (r == 0 && c->private_) { /* a private daemon runs as the caller: a listener of anyone else is not it */
    struct ucred peer;
    socklen_t len = sizeof(peer);
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) {
      r = -errno;
    } else if (peer.uid != c->uid) {
      say(why, whylen, "%s is not your private daemon's trap socket (its listener runs as uid %ld, not %ld): refused", path, (long)peer.uid, (long)c->uid);
      r = -EPERM;
    }
  }
  if (r == 0 && c->setuid) { /* the daemon runs as root: a listener of anyone else is not it */
    struct ucred peer;
    socklen_t len = sizeof(peer);
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) {
      r = -errno;
    } else if (peer.uid != 0) {
      say(why, whylen, "%s is not the daemon's trap socket (its listener runs as uid %ld, not root): refused", path, (long)peer.uid);
      r = -EPERM;
    }
  }
  if (r < 0) {
    close(s);
    return r;
  }
  return s;
}

int as_caller_open_resolv(const struct as_caller *c, const char *path, char *why, size_t whylen) {
  int r = as_caller_fs_enter(c);
  if (r < 0) return r;
  int fd = open(path, O_RDONLY | O_CLOEXEC | (c->setuid ? O_NOFOLLOW : 0));
  int e = errno;
  as_caller_fs_leave(c);
  if (fd < 0) return -e;
  struct stat st;
  memset(&st, 0, sizeof(st));
  if (c->private_ && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_uid != c->uid && st.st_uid != 0))) {
    say(why, whylen, "--resolv %s: refused: not a regular file owned by uid %ld or root (uid %ld)", path, (long)c->uid, (long)st.st_uid);
    close(fd);
    return -EPERM;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (c->setuid && st.st_uid != 0)) {
    say(why, whylen, "--resolv %s: refused: not a regular file owned by root (uid %ld)", path, (long)st.st_uid);
    close(fd);
    return -EPERM;
  }
  return fd;
}

int as_caller_state_dir(const struct as_caller *c, const char *sock_path, char *out, size_t cap, char *why, size_t whylen) {
  char buf[PATH_MAX];
  int r = as_caller_fs_enter(c);
  if (r < 0) return r;
  char *real = realpath(sock_path, buf);
  int e = errno;
  as_caller_fs_leave(c);
  if (!real) return -e;
  *strrchr(buf, '/') = 0; /* realpath: absolute, so there is a '/' */
  if (!buf[0]) {
    say(why, whylen, "the trap socket %s is in /: refusing to hide /", sock_path);
    return -EINVAL;
  }
  if (c->private_) {
    struct stat st;
    if (stat(buf, &st) < 0) return -errno;
    if (st.st_uid != c->uid) {
      say(why, whylen, "the trap socket's directory %s is not owned by uid %ld (owner %ld): refused", buf, (long)c->uid, (long)st.st_uid);
      return -EPERM;
    }
  }
  if (c->setuid) {
    struct stat st;
    if (stat(buf, &st) < 0) return -errno;
    if (st.st_uid != 0) {
      say(why, whylen, "the trap socket's directory %s is not owned by root (uid %ld): refused", buf, (long)st.st_uid);
      return -EPERM;
    }
  }
  if (strlen(buf) >= cap) return -ENAMETOOLONG;
  strcpy(out, buf);
  return 0;
}
