/* The program's credentials and capabilities: which user it runs as and which capabilities it keeps.
 * capabilities(7), prctl(2) (PR_CAPBSET_DROP, PR_CAP_AMBIENT), capset(2), setresuid(2), getgrouplist(3). */
#define _GNU_SOURCE
#include "caps.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

static const char *const cap_names[] = {
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
};
#define NCAPS ((int)(sizeof(cap_names) / sizeof(cap_names[0])))

const char *as_cap_name(int c) { return c >= 0 && c < NCAPS ? cap_names[c] : "?"; }

int as_cap_parse(const char *name, int all_ok, uint64_t *mask) {
  if (!strncasecmp(name, "CAP_", 4)) name += 4;
  if (all_ok && !strcasecmp(name, "ALL")) {
    *mask = AS_CAPS_ALL;
    return 0;
  }
  for (int c = 0; c < NCAPS; c++) {
    if (!strcasecmp(name, cap_names[c])) {
      *mask |= AS_CAP_BIT(c);
      return 0;
    }
  }
  return -EINVAL;
}

/* The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap), or what this file knows. */
static int last_cap(void) {
  int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NCAPS - 1;
  char buf[16] = {0};
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  int v = n > 0 ? atoi(buf) : 0;
  return v > 0 && v < 64 ? v : NCAPS - 1;
}

/* A name or a number: *id, and whether it was found by name. -ENOENT when a name is unknown. */
static int parse_id(const char *s, unsigned long *id) {
  if (!*s) return -EINVAL;
  for (const char *c = s; *c; c++)
    if (!isdigit((unsigned char)*c)) return -ENOENT;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v >= 0xffffffffUL) return -EINVAL;
  *id = v;
  return 0;
}

static int resolve_user(struct as_cred_plan *p, const char *spec, char *why, size_t whylen) {
  char name[256], group[256] = "";
  const char *colon = strchr(spec, ':');
  size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
  if (nlen == 0 || nlen >= sizeof(name) || (colon && (strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(group)))) {
    snprintf(why, whylen, "--user %s: expected NAME[:GROUP]", spec);
    return -EINVAL;
  }
  memcpy(name, spec, nlen);
  name[nlen] = 0;
  if (colon) strcpy(group, colon + 1);

  unsigned long id;
  struct passwd *pw = getpwnam(name);
  if (!pw && parse_id(name, &id) == 0) pw = getpwuid((uid_t)id);
  if (pw) {
    p->uid = pw->pw_uid;
    p->gid = pw->pw_gid;
    snprintf(p->user, sizeof(p->user), "%s", pw->pw_name);
    snprintf(p->home, sizeof(p->home), "%s", pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/");
  } else if (parse_id(name, &id) == 0) { /* a uid with no account: allowed with an explicit group */
    if (!colon) {
      snprintf(why, whylen, "--user %s: no such user in the passwd database; give a group too (--user %s:GID)", name, name);
      return -ENOENT;
    }
    p->uid = (uid_t)id;
    snprintf(p->user, sizeof(p->user), "%s", name);
    snprintf(p->home, sizeof(p->home), "/");
  } else {
    snprintf(why, whylen, "--user %s: no such user", name);
    return -ENOENT;
  }
  if (colon) {
    struct group *gr = getgrnam(group);
    if (gr) {
      p->gid = gr->gr_gid;
    } else if (parse_id(group, &id) == 0) {
      p->gid = (gid_t)id;
    } else {
      snprintf(why, whylen, "--user %s: no such group %s", spec, group);
      return -ENOENT;
    }
  }
  /* initgroups(3) semantics: the primary group and every group that lists the user */
  p->ngroups = AS_MAX_GROUPS;
  if (pw) {
    if (getgrouplist(p->user, p->gid, p->groups, &p->ngroups) < 0) {
      snprintf(why, whylen, "--user %s: member of more than %d groups", spec, AS_MAX_GROUPS);
      return -E2BIG;
    }
  } else {
    p->groups[0] = p->gid;
    p->ngroups = 1;
  }
  p->switch_user = 1;
  return 0;
}

int as_cred_plan_init(struct as_cred_plan *p, const char *user, uint64_t add, uint64_t drop, char *why, size_t whylen) {
  memset(p, 0, sizeof(*p));
  why[0] = 0;
  int root = getuid() == 0;
  if (!root && (user || add)) {
    snprintf(why, whylen, "%s needs appswitch run to be started by root", user ? "--user" : "--cap-add");
    return -EPERM;
  }
  if (add & AS_CAPS_FORBIDDEN) {
    for (int c = 0; c < 64; c++) {
      if (add & AS_CAPS_FORBIDDEN & AS_CAP_BIT(c)) {
        snprintf(why, whylen, "--cap-add %s: refused; a program under appswitch never gets CAP_%s (it would reach around the trap)",
                 as_cap_name(c), as_cap_name(c));
        break;
      }
    }
    return -EPERM;
  }
  p->keep = root ? AS_CAPS_DEFAULT : 0;
  if (!root) { /* a member through the setuid launcher (caller.h): the program runs as the caller, exactly */
    p->switch_user = 1;
    p->keep_env = 1;
    p->uid = getuid();
    p->gid = getgid();
    int n = getgroups(AS_MAX_GROUPS, p->groups);
    if (n < 0) {
      snprintf(why, whylen, "uid %ld is a member of more than %d groups", (long)p->uid, AS_MAX_GROUPS);
      return -E2BIG;
    }
    p->ngroups = n;
    snprintf(p->home, sizeof(p->home), "/");
  }
  if (user) {
    int r = resolve_user(p, user, why, whylen);
    if (r < 0) return r;
    if (p->uid != 0) {
      if (add) {
        snprintf(why, whylen, "--cap-add with --user %s: a program running as a user other than root gets no capabilities", user);
        return -EINVAL;
      }
      p->keep = 0; /* what a non-root exec under NO_NEW_PRIVS would have */
    }
  }
  p->keep = (p->keep | add) & ~drop & ~AS_CAPS_FORBIDDEN;
  return 0;
}

static int cap_set(uint64_t permitted, uint64_t effective, uint64_t inheritable) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof(d));
  d[0].permitted = (uint32_t)permitted;
  d[1].permitted = (uint32_t)(permitted >> 32);
  d[0].effective = (uint32_t)effective;
  d[1].effective = (uint32_t)(effective >> 32);
  d[0].inheritable = (uint32_t)inheritable;
  d[1].inheritable = (uint32_t)(inheritable >> 32);
  return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

int as_cred_apply(const struct as_cred_plan *p, const char **what) {
  pid_t parent = getppid();
  int root = geteuid() == 0 || p->in_userns; /* root, the setuid launcher or a private caller's user namespace
                                                 * (caller.h): every drop below must succeed */
  int last = last_cap();
  *what = "dropping capabilities from the bounding set (PR_CAPBSET_DROP)";
  for (int c = 0; c <= last; c++) {
    if (p->keep & AS_CAP_BIT(c)) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
      if (errno == EINVAL) continue;             /* the kernel does not know this one */
      if (errno == EPERM && !root) break;        /* an ordinary user's launcher: no CAP_SETPCAP, and nothing to drop */
      return -errno;
    }
  }
  *what = "clearing the ambient capabilities";
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -errno;
  if (p->switch_user) {
    *what = "setgroups";
    if (!p->in_userns && setgroups((size_t)p->ngroups, p->groups) < 0) return -errno;
    *what = "setresgid";
    if (setresgid(p->gid, p->gid, p->gid) < 0) return -errno;
    *what = "setresuid";
    if (setresuid(p->uid, p->uid, p->uid) < 0) return -errno; /* to a non-root uid: permitted/effective emptied */
    if (!p->keep_env && (setenv("HOME", p->home, 1) < 0 || setenv("USER", p->user, 1) < 0 || setenv("LOGNAME", p->user, 1) < 0)) return -ENOMEM;
    /* keep the cwd when the user may enter it, else its home, else / */
    if (access(".", X_OK) < 0 && chdir(p->home) < 0 && chdir("/") < 0) {
      *what = "chdir";
      return -errno;
    }
  }
  *what = "capset";
  int r = cap_set(p->keep, p->keep, 0);
  if (r < 0 && !(r == -EPERM && !root)) return r;
  /* a uid change cleared the parent-death signal: arm it again, then make sure the generator did not go meanwhile */
  *what = "PR_SET_PDEATHSIG";
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) return -errno;
  if (getppid() != parent) return -ESRCH;
  return 0;
}
