/* appswitch-relay: connection slots (preallocated, free-listed; each keeps its two pipes between connections, so a
 * new connection costs no pipe2(2)) and the pumping: splice(2) socket -> pipe -> socket, one pipe per direction,
 * SPLICE_F_NONBLOCK | SPLICE_F_MOVE, edge-triggered epoll on both sockets (small exchanges by recv/send: pump_dir). EOF one way shuts the other socket down for
 * writing (half close); the connection is closed when both ways have ended, or at the first error either way. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

int relay_conns_init(struct relay *r, int max) {
  r->conns = calloc((size_t)max, sizeof(struct relay_conn));
  if (!r->conns) return -ENOMEM;
  r->max_conns = max;
  for (int i = 0; i < max; i++) {
    struct relay_conn *c = &r->conns[i];
    c->cfd = c->ufd = -1;
    c->p_cu[0] = c->p_cu[1] = c->p_uc[0] = c->p_uc[1] = -1;
    c->next_free = i + 1 < max ? i + 1 : -1;
  }
  r->free_head = 0;
  return 0;
}

int relay_conn_index(const struct relay *r, const struct relay_conn *c) { return (int)(c - r->conns); }

struct relay_conn *relay_conn_alloc(struct relay *r) {
  if (r->free_head < 0) return NULL;
  struct relay_conn *c = &r->conns[r->free_head];
  r->free_head = c->next_free;
  c->state = C_CONNECTING;
  c->gen++;
  c->cfd = c->ufd = -1;
  memset(&c->cu, 0, sizeof(c->cu));
  memset(&c->uc, 0, sizeof(c->uc));
  c->cu.ready = 1; /* the client's first bytes may be there already; the instance's come with an event */
  c->ntried = 0;
  r->st.active++;
  return c;
}

static void close_pipe(int p[2]) {
  if (p[0] >= 0) close(p[0]);
  if (p[1] >= 0) close(p[1]);
  p[0] = p[1] = -1;
}

void relay_conn_free(struct relay *r, struct relay_conn *c) {
  if (c->state == C_FREE) return;
  if (c->cfd >= 0) close(c->cfd); /* closing leaves the epoll set */
  if (c->ufd >= 0) close(c->ufd);
  c->cfd = c->ufd = -1;
  if (c->cu.inpipe) close_pipe(c->p_cu); /* bytes left in a pipe: a fresh one for the next connection */
  if (c->uc.inpipe) close_pipe(c->p_uc);
  c->state = C_FREE;
  c->gen++;
  c->next_free = r->free_head;
  r->free_head = relay_conn_index(r, c);
  r->st.active--;
}

static int make_pipe(int p[2]) {
  if (p[0] >= 0) return 0;
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  fcntl(p[1], F_SETPIPE_SZ, (int)RELAY_PIPE_BYTES); /* a bigger pipe moves more per splice; the default 64 KiB if refused */
  return 0;
}

/* Moves what src has toward dst until neither side can make progress. 0 or -errno (the connection is broken).
 * A direction starts with recv/send through a small buffer (cheaper than two splices for a request or an answer of
 * a few bytes); once a read fills the buffer it switches to splice for good (bulk). Bytes a send could not take go
 * into the pipe (empty at that point, and larger than the buffer) and leave by splice. */
#define SMALL_BYTES 16384
static __thread uint8_t small_buf[SMALL_BYTES];

static int pump_dir(struct relay *r, int src, int dst, int p[2], struct relay_dir *d, const struct relay_dir *other) {
  for (;;) {
    int progress = 0;
    if (d->inpipe) {
      ssize_t n = splice(p[0], NULL, dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->inpipe -= (uint32_t)n;
        r->st.bytes += (uint64_t)n;
        progress = 1;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return -errno;
      }
    }
    if (!d->eof && !d->bulk && !d->inpipe && d->ready) {
      ssize_t n = recv(src, small_buf, SMALL_BYTES, MSG_DONTWAIT);
      if (n > 0) {
        ssize_t w = send(dst, small_buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) return -errno;
        if (w < 0) w = 0;
        r->st.bytes += (uint64_t)w;
        if (w < n) {
          ssize_t k = write(p[1], small_buf + w, (size_t)(n - w));
          if (k != n - w) return k < 0 ? -errno : -EIO;
          d->inpipe += (uint32_t)k;
        }
        if (n == SMALL_BYTES) d->bulk = 1;
        progress = 1;
      } else if (n == 0) {
        d->eof = 1;
        progress = 1;
      } else if (errno == EAGAIN) {
        d->ready = 0;
      } else if (errno != EINTR) {
        return -errno;
      }
    } else if (!d->eof && d->bulk && d->inpipe < RELAY_PIPE_BYTES) {
      ssize_t n = splice(src, NULL, p[1], NULL, RELAY_PIPE_BYTES - d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->inpipe += (uint32_t)n;
        progress = 1;
      } else if (n == 0) {
        d->eof = 1;
        progress = 1;
      } else if (errno != EAGAIN && errno != EINTR) { /* EAGAIN may be a full pipe, not an empty socket: ready stays */
        return -errno;
      }
    }
    if (d->eof && !d->inpipe && !d->shut) {
      if (!other->shut) shutdown(dst, SHUT_WR); /* else both ways are done: the close that follows sends the FIN */
      d->shut = 1;
    }
    if (!progress) return 0;
  }
}

void relay_pump(struct relay *r, struct relay_conn *c) {
  if (make_pipe(c->p_cu) < 0 || make_pipe(c->p_uc) < 0) {
    relay_conn_free(r, c);
    return;
  }
  if (pump_dir(r, c->cfd, c->ufd, c->p_cu, &c->cu, &c->uc) < 0 || pump_dir(r, c->ufd, c->cfd, c->p_uc, &c->uc, &c->cu) < 0) {
    relay_conn_free(r, c);
    return;
  }
  if (c->cu.shut && c->uc.shut) relay_conn_free(r, c);
}
