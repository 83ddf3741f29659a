/* Message + file-descriptor passing over Unix sockets (SCM_RIGHTS). unix(7), cmsg(3). */
#ifndef APPSWITCH_SCM_RIGHTS_H
#define APPSWITCH_SCM_RIGHTS_H

#include <stddef.h>
#include <sys/types.h>

#define AS_MAX_FDS 16

/* Sends one message with nfds descriptors. Returns bytes sent or -errno. */
ssize_t as_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags);
/* Receives one message; descriptors arrive O_CLOEXEC into fds (up to AS_MAX_FDS), their count in *nfds.
 * Returns bytes received (0 = peer closed) or -errno; a truncated message is -EMSGSIZE. A truncated control block
 * (MSG_CTRUNC: the receiver had no room for the descriptors, e.g. at its RLIMIT_NOFILE, and the kernel closed
 * them) is -EMSGSIZE too when lost is NULL; otherwise the message is returned with *lost = 1 and no descriptors.
 * Whatever descriptors did arrive with a truncated message are closed. */
ssize_t as_recv_fds_ex(int sock, void *buf, size_t cap, int *fds, int *nfds, int flags, int *lost);
ssize_t as_recv_fds(int sock, void *buf, size_t cap, int *fds, int *nfds, int flags);

#endif
