/* The program's credentials and capabilities: which user it runs as and which capabilities it keeps.
 * capabilities(7), prctl(2) (PR_CAPBSET_DROP, PR_CAP_AMBIENT), capset(2), setresuid(2), getgrouplist(3). */
#ifndef APPSWITCH_CAPS_H
#define APPSWITCH_CAPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AS_CAP_BIT(c) (1ULL << (c))

/* Docker's default set (moby oci/caps/defaults.go): what a program started by root keeps. */
#define AS_CAPS_DEFAULT                                                                                             \
  (AS_CAP_BIT(0) /* CHOWN */ | AS_CAP_BIT(1) /* DAC_OVERRIDE */ | AS_CAP_BIT(3) /* FOWNER */ |                    \
   AS_CAP_BIT(4) /* FSETID */ | AS_CAP_BIT(5) /* KILL */ | AS_CAP_BIT(6) /* SETGID */ | AS_CAP_BIT(7) /* SETUID */ | \
   AS_CAP_BIT(8) /* SETPCAP */ | AS_CAP_BIT(10) /* NET_BIND_SERVICE */ | AS_CAP_BIT(18) /* SYS_CHROOT */ |          \
   AS_CAP_BIT(27) /* MKNOD */ | AS_CAP_BIT(29) /* AUDIT_WRITE */ | AS_CAP_BIT(31) /* SETFCAP */)

/* Never given to a program, whatever --cap-add says: each one reaches the generator, the daemon or the host's
 * network around the trap (ptrace, mounts and namespaces, interfaces, BPF, raw devices, modules, reboot, reading
 * any file by handle). */
#define AS_CAPS_FORBIDDEN                                                                                          \
  (AS_CAP_BIT(2) /* DAC_READ_SEARCH */ | AS_CAP_BIT(12) /* NET_ADMIN */ | AS_CAP_BIT(16) /* SYS_MODULE */ |        \
   AS_CAP_BIT(17) /* SYS_RAWIO */ | AS_CAP_BIT(19) /* SYS_PTRACE */ | AS_CAP_BIT(21) /* SYS_ADMIN */ |             \
   AS_CAP_BIT(22) /* SYS_BOOT */ | AS_CAP_BIT(38) /* PERFMON */ | AS_CAP_BIT(39) /* BPF */)

#define AS_CAPS_ALL (~0ULL)
#define AS_MAX_GROUPS 256

/* Who the program runs as and what it keeps; computed before fork (NSS look-ups happen there), applied in the
 * child just before execve. */
struct as_cred_plan {
  uint64_t keep;   /* bounding = permitted = effective; inheritable and ambient are empty */
  int switch_user; /* --user given, or the setuid launcher's caller: the ids below replace root's */
  int keep_env;    /* the setuid launcher's caller: HOME, USER, LOGNAME stay as the caller gave them */
  int in_userns;   /* a private caller (caller.h as_caller_private_ns): setgroups(2) is denied in its user namespace,
                    * so the supplementary groups stay as the caller had them; every capability drop must succeed */
  uid_t uid;
  gid_t gid;
  int ngroups;
  gid_t groups[AS_MAX_GROUPS];
  char user[256];
  char home[1024];
};

/* Adds the capability NAME ("NET_RAW", "cap_net_raw", "ALL" when all_ok) to *mask. -EINVAL for an unknown name. */
int as_cap_parse(const char *name, int all_ok, uint64_t *mask);

/* The name of capability c ("NET_RAW"), or "?" */
const char *as_cap_name(int c);

/* Builds the plan: started by root (ruid 0) the default set; by a member through the setuid launcher (caller.h) its
 * own real uid, gid and supplementary groups and no capabilities; then `user` ("NAME[:GROUP]", a name or a
 * number; NULL to stay), then add and drop. Returns 0, or -errno with a message for the user in why
 * (-EPERM: a forbidden capability was asked for, or a non-root launcher asked for --user/--cap-add). */
int as_cred_plan_init(struct as_cred_plan *p, const char *user, uint64_t add, uint64_t drop, char *why, size_t whylen);

/* In the child, last thing before execve: drops every capability outside plan->keep from the bounding set, clears
 * the ambient set, switches user (groups, gid, uid, HOME/USER/LOGNAME, a cwd it can enter), sets permitted =
 * effective = keep and inheritable = 0, and arms the parent-death signal again (a uid change clears it).
 * Returns 0 or -errno; `what` names the step that failed. */
int as_cred_apply(const struct as_cred_plan *p, const char **what);

#endif
