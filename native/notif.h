/* Seccomp user-notification primitives: receive, reply, validate, inject fds. seccomp_unotify(2). */
#ifndef APPSWITCH_NOTIF_H
#define APPSWITCH_NOTIF_H

#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>

struct as_notif {
  int fd;
  size_t req_size, resp_size;
  struct seccomp_notif *req;       /* sized by SECCOMP_GET_NOTIF_SIZES, zeroed before each RECV */
  struct seccomp_notif_resp *resp;
};

/* Sizes the buffers from SECCOMP_GET_NOTIF_SIZES. Returns 0 or -errno. */
int as_notif_init(struct as_notif *n, int fd);
void as_notif_free(struct as_notif *n);
/* Sets SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (kernel >= 6.6). Returns 0, or -errno where the kernel lacks it. */
int as_notif_set_sync_wakeup(int fd);
/* Receives one notification into n->req. Returns 0, -ENOENT when the target vanished before we got it, or -errno. */
int as_notif_recv(struct as_notif *n);
/* Replies: error < 0 fails the syscall with -error, else the syscall returns val. -ENOENT: target gone (not an error). */
int as_notif_reply(struct as_notif *n, uint64_t id, int64_t val, int error);
/* Lets the kernel run the syscall as the program made it. Only where the decision did not read program memory. */
int as_notif_continue(struct as_notif *n, uint64_t id);
/* 0 while the notification is still pending, -ENOENT once the target died or the kernel withdrew it. */
int as_notif_id_valid(int fd, uint64_t id);
/* Installs srcfd in the target and answers the syscall with the new fd number, atomically (ADDFD_FLAG_SEND).
 * Returns the target's fd number or -errno (then the notification is still pending and needs a reply). */
int as_notif_addfd_send(int fd, uint64_t id, int srcfd, int cloexec);

/* Installs srcfd in the target at fd number newfd, replacing what was there (ADDFD_FLAG_SETFD), without answering
 * the syscall. Returns newfd or -errno. */
int as_notif_addfd_at(int fd, uint64_t id, int srcfd, int newfd, int cloexec);

#endif
