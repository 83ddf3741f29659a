/* Who started the launcher, and what an ordinary caller may ask of it: root, or a member of the launcher's group
 * through the setuid bit (scripts/install.sh installs it root:GROUP 4750). The setuid launcher has root's
 * capabilities until the program's credentials are applied (caps.c), so every path and option that comes from such a
 * caller is checked here, with the caller's own filesystem rights (setfsuid(2)), before root acts on it.
 * credentials(7), setfsuid(2), unix(7) SO_PEERCRED, getgroups(2). */
#ifndef APPSWITCH_CALLER_H
#define APPSWITCH_CALLER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct as_caller {
  int setuid;    /* an ordinary user (real uid != 0) through the setuid bit; 0: started by root */
  uid_t uid;     /* the real ids: who the program runs as when setuid */
  gid_t gid;
  gid_t group;   /* the launcher file's group: its members may run programs (a renamed group still works) */
  int private_;  /* an ordinary user against its own private daemon (`appswitch daemon --private`), in a user
                  * namespace of its own (as_caller_private_ns): the daemon, its sockets and files are the user's */
};

/* `--private`, for an ordinary user (real uid != 0) with no setuid rights over the daemon: gives up whatever the
 * setuid bit gave (setresuid/setresgid to the real ids), then unshare(CLONE_NEWUSER) with the identity mapping
 * ("UID UID 1", setgroups deny, "GID GID 1"), which gives this process every capability inside that namespace and
 * none outside it; the program's network and mount namespaces are then made in it. Must run before
 * PR_SET_DUMPABLE 0 (a non-dumpable process cannot write its own /proc/self/uid_map). Sets c->private_.
 * 0, or -errno with the step in why. user_namespaces(7). */
int as_caller_private_ns(struct as_caller *c, char *why, size_t whylen);

/* Who we are. Root (real uid 0): 0. Else the launcher must be setuid root (effective uid 0) and the real user root or
 * a member of the launcher file's group (real gid or a supplementary group): 0, with c->setuid set. Otherwise
 * -EPERM and a message for the user in why. */
int as_caller_init(struct as_caller *c, char *why, size_t whylen);

/* The options only root may give: --user, --cap-add, --cap-drop other than ALL (a setuid caller's program keeps no
 * capability anyway), --no-sockguard. 0, or -EPERM with the reason in why. */
int as_caller_check_options(const struct as_caller *c, int user, uint64_t cap_add, uint64_t cap_drop, int sockguard,
                            char *why, size_t whylen);

/* Connects to the daemon's trap socket (SOCK_SEQPACKET, O_CLOEXEC). For a setuid caller, only the installation's
 * daemon: the path is looked up with the caller's filesystem rights (so it reaches only a socket the caller could
 * connect to itself), the socket file must belong to root, and the peer must be root (SO_PEERCRED uid 0) — a fake
 * daemon made by the caller never gets a HELLO. A private caller: the socket must be the caller's own and its
 * listener run as the caller (its own daemon). Returns the fd or -errno (why says which check failed, if whylen). */
int as_caller_connect(const struct as_caller *c, const char *path, char *why, size_t whylen);

/* Opens the resolv.conf to bind over the program's /etc/resolv.conf (O_RDONLY, O_CLOEXEC). For a setuid caller: with
 * the caller's filesystem rights, no symlink at the end, a regular file owned by root. A private caller: a regular file
 * owned by the caller (its daemon wrote it) or root. Returns the fd or -errno. */
int as_caller_open_resolv(const struct as_caller *c, const char *path, char *why, size_t whylen);

/* The daemon's state directory (the trap socket's directory, resolved), to hide from the program, in out. For a
 * setuid caller resolved with its filesystem rights and owned by root; for a private one owned by the caller. 0 or -errno. */
int as_caller_state_dir(const struct as_caller *c, const char *sock_path, char *out, size_t cap, char *why, size_t whylen);

/* Path lookups as the caller (setuid: fsuid/fsgid = the real ids; 0, or -EPERM when the switch did not take) or
 * back as root; nothing for a root caller. */
int as_caller_fs_enter(const struct as_caller *c);
void as_caller_fs_leave(const struct as_caller *c);

#endif
