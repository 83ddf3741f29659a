/* Builds and installs the classic-BPF seccomp filter that traps the network control plane. seccomp(2), seccomp_unotify(2). */
#ifndef APPSWITCH_SECCOMP_FILTER_H
#define APPSWITCH_SECCOMP_FILTER_H

/* Installs the filter on the calling thread (NO_NEW_PRIVS must be set) and returns the listener fd
 * (O_CLOEXEC) or -errno. Uses SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV when the kernel has it;
 * *killable tells whether it did. */
int as_filter_install(int *killable);

#endif
