/* appswitch-relay: the control socket (fd 3, SOCK_SEQPACKET; records in relay_proto.h), the sending side (the
 * daemon's requests are read in relay_main.c): what the relay reports is queued as records and sent in batches at the
 * end of each turn of the loop. A full
 * socket (a slow daemon) pauses accepting until it drains: a CONN record must reach the daemon before the instance's
 * node asks about it, so records are never dropped while there is room (out_cap records). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "relay.h"

#define OUT_CAP 16384u /* records: 1 MiB */

/* Worker 0 always watches the control socket for reading; a worker whose records wait also watches it for room. */
static void ctl_watch_out(struct relay *r, int on) {
  struct epoll_event ev = {.events = (r->index == 0 ? EPOLLIN : 0) | (on ? EPOLLOUT : 0), .data.u64 = RELAY_EV(K_CTL, 0, 0)};
  if (r->index == 0) epoll_ctl(r->ep, EPOLL_CTL_MOD, RELAY_CTL_FD, &ev);
  else epoll_ctl(r->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, RELAY_CTL_FD, &ev);
}

void relay_queue(struct relay *r, const void *rec) {
  if (!r->out) {
    r->out = malloc((size_t)OUT_CAP * AS_RELAY_REC);
    r->out_cap = r->out ? OUT_CAP : 0;
  }
  if (r->out_n >= r->out_cap) {
    r->out_dropped++;
    return;
  }
  memcpy(r->out + (size_t)r->out_n * AS_RELAY_REC, rec, AS_RELAY_REC);
  r->out_n++;
}

int relay_flush(struct relay *r) {
  int was = r->ctl_blocked;
  uint32_t sent = 0;
  while (sent < r->out_n) {
    uint32_t k = r->out_n - sent;
    if (k > AS_RELAY_BATCH) k = AS_RELAY_BATCH;
    ssize_t n = send(RELAY_CTL_FD, r->out + (size_t)sent * AS_RELAY_REC, (size_t)k * AS_RELAY_REC, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
      if (!r->ctl_blocked) {
        r->ctl_blocked = 1;
        ctl_watch_out(r, 1);
      }
      break;
    }
    if (n < 0) { /* the daemon is gone: the read side ends the loop */
      sent = r->out_n;
      break;
    }
    sent += k;
  }
  if (sent && sent < r->out_n) memmove(r->out, r->out + (size_t)sent * AS_RELAY_REC, (size_t)(r->out_n - sent) * AS_RELAY_REC);
  r->out_n -= sent;
  if (!r->out_n && r->ctl_blocked) {
    r->ctl_blocked = 0;
    ctl_watch_out(r, 0);
  }
  return r->ctl_blocked != was;
}

void relay_send_refused(struct relay *r, uint32_t route, const struct as_ep *client, int reason) {
  struct as_relay_refused m;
  memset(&m, 0, sizeof(m));
  m.type = AS_RELAY_REFUSED;
  m.route = route;
  memcpy(m.client, client->ip, 16);
  m.client_port = client->port;
  m.reason = (uint8_t)reason;
  r->st.refused++;
  relay_queue(r, &m);
}

void relay_send_listen_result(struct relay *r, uint32_t id, int err) {
  struct as_relay_listen_err m;
  memset(&m, 0, sizeof(m));
  m.type = err ? AS_RELAY_LISTEN_ERR : AS_RELAY_LISTENING;
  m.id = id;
  m.err = err;
  relay_queue(r, &m);
}

/* Worker 0: the sum over the workers (each counts its own; a figure read while it moves is off by one at most). */
void relay_send_stats(struct relay *r) {
  struct as_relay_stats m;
  memset(&m, 0, sizeof(m));
  m.type = AS_RELAY_STATS;
  const struct relay_shared *sh = r->sh;
  for (int w = 0; w < sh->nworkers; w++) {
    const volatile struct relay_stats *st = &sh->workers[w].st;
    m.accepted += st->accepted;
    m.forwarded += st->forwarded;
    m.refused += st->refused;
    m.active += st->active;
    m.bytes += st->bytes;
    m.max_conns += (uint32_t)sh->workers[w].max_conns;
    m.paused += (uint32_t)sh->workers[w].paused;
    m.dropped += sh->workers[w].out_dropped;
  }
  relay_queue(r, &m);
}
