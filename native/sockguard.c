/* The kernel-side socket guard (see sockguard.h): cgroup v2 directories for generators and programs, and the
 * BPF_PROG_TYPE_CGROUP_SOCK_ADDR programs attached to generators. cgroups(7), cgroup_namespaces(7), bpf(2),
 * proc(5) (mountinfo), fspick(2)/fsopen(2)/fsconfig(2)/fsmount(2), flock(2). */
#define _GNU_SOURCE
#include "sockguard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GUARD_PROG_NAME "as_sockguard"

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
}
#define AUTO_FD __attribute__((cleanup(close_fd))) int

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(SYS_bpf, cmd, a, sizeof(*a)); }

/* mountinfo escapes space, tab, newline and backslash as \ooo */
static void unescape(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
      *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
      r += 3;
    } else {
      *w++ = *r;
    }
  }
  *w = 0;
}

/* The first cgroup2 mount in MOUNTINFO whose root is the hierarchy's root ("/"): its path (prefixed) and its super
 * options. Returns 0, -ENOENT or -errno. */
static int find_mount(const char *mountinfo, const char *prefix, char *path, size_t pn, char *sopts, size_t sn) {
  FILE *f = fopen(mountinfo, "re");
  if (!f) return -errno;
  char *line = NULL;
  size_t cap = 0;
  int r = -ENOENT;
  while (r == -ENOENT && getline(&line, &cap, f) > 0) {
    /* id parent maj:min root mountpoint options [optional...] - fstype source superoptions */
    char *sep = strstr(line, " - ");
    if (!sep || strncmp(sep + 3, "cgroup2 ", 8)) continue;
    char *super = strrchr(sep, ' ');
    if (!super) continue;
    super++;
    super[strcspn(super, "\n")] = 0;
    *sep = 0;
    char *save = NULL, *tok = strtok_r(line, " ", &save);
    for (int i = 0; tok && i < 3; i++) tok = strtok_r(NULL, " ", &save);
    if (!tok || strcmp(tok, "/")) continue; /* a bind mount of a sub-tree */
    tok = strtok_r(NULL, " ", &save);
    if (!tok) continue;
    unescape(tok);
    if ((size_t)snprintf(path, pn, "%s%s", prefix, tok) >= pn || (size_t)snprintf(sopts, sn, "%s", super) >= sn) r = -ENAMETOOLONG;
    else r = 0;
  }
  free(line);
  fclose(f);
  return r;
}

static int has_opt(const char *opts, const char *opt) {
  size_t n = strlen(opt);
  for (const char *p = opts; (p = strstr(p, opt)); p += n)
    if ((p == opts || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
  return 0;
}

/* Sets every superblock option of sopts (but rw/ro) on the fs context fs, and nsdelegate when asked. */
static int set_opts(int fs, const char *sopts, int nsdelegate) {
  char opts[512];
  snprintf(opts, sizeof(opts), "%s", sopts);
  char *save = NULL;
  for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
    if (!strcmp(o, "rw") || !strcmp(o, "ro")) continue;
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, o, NULL, 0) < 0) return -errno;
  }
  if (nsdelegate && syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "nsdelegate", NULL, 0) < 0) return -errno;
  return 0;
}

/* Opens the hierarchy's root; with reconfigure, also turns nsdelegate on if it is off (*enabled = 1). Without
 * nsdelegate, a cgroup namespace is no boundary: a root program could write its pid into generators/cgroup.procs;
 * systemd mounts cgroup2 with it. Every other superblock option is kept: mounting or reconfiguring cgroup2 from the
 * init cgroup namespace sets the hierarchy's options to exactly those given.
 *   1. our mount namespace's cgroup2 mount: open it (fspick(2)+fsconfig(2) reconfigure the superblock if asked);
 *   2. else (`ip netns exec` remounts /sys) init's, found in /proc/1/mountinfo: through /proc/1/root when we may,
 *      else a detached mount of our own (fsopen/fsmount, attached nowhere) given init's options plus nsdelegate —
 *      always plus nsdelegate, so that no caller can ever turn it off by mounting with options read a moment ago;
 *   3. no cgroup2 mount anywhere: -ENOENT (we do not guess the hierarchy's options). */
static int open_hierarchy(int reconfigure, int *enabled) {
  char path[PATH_MAX], sopts[512];
  *enabled = 0;
  int r = find_mount("/proc/self/mountinfo", "", path, sizeof(path), sopts, sizeof(sopts));
  if (r == 0) {
    if (reconfigure && !has_opt(sopts, "nsdelegate")) {
      AUTO_FD fs = (int)syscall(SYS_fspick, AT_FDCWD, path, FSPICK_CLOEXEC);
      if (fs < 0) return -errno;
      if ((r = set_opts(fs, sopts, 1)) < 0) return r;
      if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0) < 0) return -errno;
      *enabled = 1;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
  }
  if (r != -ENOENT) return r;
  if ((r = find_mount("/proc/1/mountinfo", "/proc/1/root", path, sizeof(path), sopts, sizeof(sopts))) < 0) return r;
  int add = !has_opt(sopts, "nsdelegate");
  if (!(reconfigure && add)) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) return fd;
  }
  AUTO_FD fs = (int)syscall(SYS_fsopen, "cgroup2", FSOPEN_CLOEXEC);
  if (fs < 0) return -errno;
  if ((r = set_opts(fs, sopts, add)) < 0) return r;
  if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) return -errno;
  int m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
  if (m < 0) return -errno;
  *enabled = add;
  return m;
}

int as_cgroup2_open(void) {
  int enabled;
  return open_hierarchy(0, &enabled);
}

static int dir_id(int dir, const char *name, uint64_t *id) {
  struct stat st;
  if (fstatat(dir, name, &st, 0) < 0) return -errno;
  if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
  *id = (uint64_t)st.st_ino; /* a cgroup v2 directory's inode number is its cgroup id on 64-bit kernels */
  return 0;
}

int as_guard_generators_id(uint64_t *id) {
  AUTO_FD root = as_cgroup2_open();
  if (root < 0) return root;
  return dir_id(root, "appswitch/generators", id);
}

static int mkdir_at(int dir, const char *name) { return mkdirat(dir, name, 0755) < 0 && errno != EEXIST ? -errno : 0; }

/* Writes "0" (the calling process) to DIR/NAME/cgroup.procs. */
static int join(int dir, const char *name) {
  char path[128];
  if (snprintf(path, sizeof(path), "%s/cgroup.procs", name) >= (int)sizeof(path)) return -ENAMETOOLONG;
  AUTO_FD fd = openat(dir, path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t w;
  do w = write(fd, "0", 1);
  while (w < 0 && errno == EINTR);
  return w == 1 ? 0 : -errno;
}

/* allow (1) iff bpf_get_current_cgroup_id() == id, else refuse (0: the syscall fails with EPERM). */
static int load_prog(enum bpf_attach_type type, uint64_t id) {
  struct bpf_insn insns[] = {
      {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_get_current_cgroup_id},
      {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .imm = (int32_t)(uint32_t)id},
      {.imm = (int32_t)(uint32_t)(id >> 32)},
      {.code = BPF_JMP | BPF_JEQ | BPF_X, .dst_reg = BPF_REG_0, .src_reg = BPF_REG_1, .off = 2},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
      {.code = BPF_JMP | BPF_EXIT},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
      {.code = BPF_JMP | BPF_EXIT},
  };
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
  a.expected_attach_type = type;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
  a.license = (uint64_t)(uintptr_t) "Dual MIT/GPL";
  memcpy(a.prog_name, GUARD_PROG_NAME, sizeof(GUARD_PROG_NAME));
  long fd = sys_bpf(BPF_PROG_LOAD, &a); /* bpf(2) fds are O_CLOEXEC */
  return fd < 0 ? -errno : (int)fd;
}

/* Whether a program named GUARD_PROG_NAME is attached to the cgroup for this type. Returns 1, 0 or -errno. */
static int attached(int cgfd, enum bpf_attach_type type) {
  uint32_t ids[64];
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.query.target_fd = (uint32_t)cgfd;
  a.query.attach_type = type;
  a.query.prog_ids = (uint64_t)(uintptr_t)ids;
  a.query.prog_cnt = sizeof(ids) / sizeof(ids[0]);
  if (sys_bpf(BPF_PROG_QUERY, &a) < 0) return -errno;
  for (uint32_t i = 0; i < a.query.prog_cnt && i < sizeof(ids) / sizeof(ids[0]); i++) {
    union bpf_attr g;
    memset(&g, 0, sizeof(g));
    g.prog_id = ids[i];
    AUTO_FD pfd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &g);
    if (pfd < 0) continue; /* detached meanwhile */
    struct bpf_prog_info info;
    memset(&info, 0, sizeof(info));
    union bpf_attr q;
    memset(&q, 0, sizeof(q));
    q.info.bpf_fd = (uint32_t)pfd;
    q.info.info_len = sizeof(info);
    q.info.info = (uint64_t)(uintptr_t)&info;
    if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &q) == 0 && !strncmp(info.name, GUARD_PROG_NAME, sizeof(info.name))) return 1;
  }
  return 0;
}

static const enum bpf_attach_type HOOKS[] = {
    BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG,
    BPF_CGROUP_UDP6_SENDMSG,  BPF_CGROUP_INET4_BIND,    BPF_CGROUP_INET6_BIND,
};

static int attach_all(int cgfd, uint64_t id, const char **step) {
  for (size_t i = 0; i < sizeof(HOOKS) / sizeof(HOOKS[0]); i++) {
    *step = "querying the generators cgroup's BPF programs (bpf BPF_PROG_QUERY)";
    int r = attached(cgfd, HOOKS[i]);
    if (r < 0) return r;
    if (r) continue;
    *step = "loading the socket guard BPF program (bpf BPF_PROG_LOAD, cgroup sock_addr)";
    AUTO_FD pfd = load_prog(HOOKS[i], id);
    if (pfd < 0) return pfd;
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.target_fd = (uint32_t)cgfd;
    a.attach_bpf_fd = (uint32_t)pfd;
    a.attach_type = HOOKS[i];
    a.attach_flags = BPF_F_ALLOW_MULTI; /* coexists with other managers' programs (systemd's use MULTI too) */
    *step = "attaching the socket guard to the generators cgroup (bpf BPF_PROG_ATTACH)";
    if (sys_bpf(BPF_PROG_ATTACH, &a) < 0) return -errno;
  }
  return 0;
}

/* Removes apps/<pid> leaves whose launcher is gone; rmdir fails (EBUSY) on populated ones, which is what we want. */
static void remove_stale(int apps) {
  int fd = dup(apps);
  DIR *d = fd < 0 ? NULL : fdopendir(fd);
  if (!d) {
    if (fd >= 0) close(fd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || e->d_type != DT_DIR) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* its launcher may still be setting it up */
    unlinkat(apps, e->d_name, AT_REMOVEDIR);
  }
  closedir(d);
}

int as_guard_setup(struct as_guard *g, const char **step) {
  g->dir = -1;
  g->gen_id = 0;
  g->enabled_nsdelegate = 0;
  *step = "opening the cgroup v2 hierarchy with nsdelegate (so that a program cannot leave its cgroup namespace; "
          "mountinfo, fspick/fsconfig or fsopen/fsmount)";
  AUTO_FD root = open_hierarchy(1, &g->enabled_nsdelegate);
  if (root < 0) return root;
  *step = "creating the appswitch cgroup directories";
  int r = mkdir_at(root, "appswitch");
  if (r < 0) return r;
  AUTO_FD dir = openat(root, "appswitch", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -errno;
  *step = "locking the appswitch cgroup directory (flock)";
  while (flock(dir, LOCK_EX) < 0)
    if (errno != EINTR) return -errno;
  *step = "creating the appswitch cgroup directories";
  if ((r = mkdir_at(dir, "generators")) < 0 || (r = mkdir_at(dir, "apps")) < 0) return r;
  if ((r = dir_id(dir, "generators", &g->gen_id)) < 0) return r;
  AUTO_FD cgfd = openat(dir, "generators", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgfd < 0) return -errno;
  if ((r = attach_all(cgfd, g->gen_id, step)) < 0) return r;
  AUTO_FD apps = openat(dir, "apps", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (apps >= 0) remove_stale(apps);
  flock(dir, LOCK_UN);
  g->dir = dir;
  dir = -1; /* ownership moves to g */
  return 0;
}

int as_guard_join_generators(const struct as_guard *g) { return join(g->dir, "generators"); }

int as_guard_enter_app(const struct as_guard *g, pid_t launcher, const char **step) {
  char name[64];
  snprintf(name, sizeof(name), "apps/%d", (int)launcher);
  *step = "creating the program's cgroup";
  int r = mkdir_at(g->dir, name);
  if (r < 0) return r;
  *step = "moving the program into its cgroup";
  if ((r = join(g->dir, name)) < 0) return r;
  *step = "unshare(CLONE_NEWCGROUP)";
  return unshare(CLONE_NEWCGROUP) < 0 ? -errno : 0;
}

int as_guard_remove_app(const struct as_guard *g, pid_t launcher, int wait_ms) {
  char name[64];
  snprintf(name, sizeof(name), "apps/%d", (int)launcher);
  for (int waited = 0;; waited += 5) {
    if (unlinkat(g->dir, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
    if (errno != EBUSY || waited >= wait_ms) return -errno;
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}
