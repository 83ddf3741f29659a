/* The kernel-side socket guard: cgroup v2 sock_addr BPF hooks that let only trap generators connect, bind or send
 * to an address on the host sockets they create. cgroups(7), cgroup_namespaces(7), bpf(2).
 *
 * Why: a program may race a trapped call (the generator answers CONTINUE for a Unix socket) against dup2() of one
 * of its injected host sockets onto the same fd number; the kernel then re-runs the call on the host socket. With
 * the guard, every inet socket the program holds was created by a task in <cgroup2>/appswitch/generators, so the
 * kernel runs the hooks attached there for it, and they refuse (EPERM) any connect/bind/sendto-with-address issued
 * by a task outside that cgroup. The program lives in its own leaf <cgroup2>/appswitch/apps/<launcher pid> behind
 * a cgroup namespace rooted there, so it can never migrate into generators. */
#ifndef APPSWITCH_SOCKGUARD_H
#define APPSWITCH_SOCKGUARD_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

struct as_guard {
  int dir;         /* <cgroup2 root>/appswitch, O_CLOEXEC (the program never inherits it) */
  uint64_t gen_id; /* cgroup id of appswitch/generators */
  int enabled_nsdelegate; /* as_guard_setup turned nsdelegate on (it was off) */
};

/* Opens the root of the cgroup v2 hierarchy: the cgroup2 mount of /proc/self/mountinfo (/sys/fs/cgroup, or
 * /sys/fs/cgroup/unified on hybrid layouts), else — e.g. under `ip netns exec`, which remounts /sys — init's, through
 * /proc/1/root, or a detached mount given init's options plus nsdelegate (a mount from the init cgroup namespace
 * sets the hierarchy's options: never fewer than it has). Returns an O_CLOEXEC directory fd or -errno. */
int as_cgroup2_open(void);

/* The cgroup id of <cgroup2 mount>/appswitch/generators, creating nothing. Returns 0 with *id set, or -errno
 * (-ENOENT: no cgroup2 mount, or no launcher set the guard up yet). */
int as_guard_generators_id(uint64_t *id);

/* Turns on nsdelegate on the cgroup2 hierarchy if it is off (without it a cgroup namespace is no delegation boundary
 * and a root program could move itself into generators; systemd mounts cgroup2 with it), creates
 * <cgroup2>/appswitch/{generators,apps}, attaches the guard programs to generators unless they are there
 * already (serialised between launchers with flock on the appswitch directory), and removes empty leaves of launchers
 * that are gone. Returns 0 or -errno; *step names what failed (a static string). */
int as_guard_setup(struct as_guard *g, const char **step);

/* Moves the calling process into generators. Returns 0 or -errno. */
int as_guard_join_generators(const struct as_guard *g);

/* In the program's process, before exec, while it still has CAP_SYS_ADMIN: moves it into its own leaf
 * apps/<launcher>, then unshare(CLONE_NEWCGROUP) so that it can never migrate (or be migrated by itself) out of
 * that subtree. Returns 0 or -errno; *step names what failed. */
int as_guard_enter_app(const struct as_guard *g, pid_t launcher, const char **step);

/* Removes the leaf apps/<launcher> once its last process is gone, retrying for up to wait_ms while it is populated
 * (exiting tasks leave the cgroup a moment after the parent saw them end). Returns 0 (also when it is gone
 * already) or -errno. */
int as_guard_remove_app(const struct as_guard *g, pid_t launcher, int wait_ms);

#endif
