/* Per-program trap counters kept by the generator and sent to the daemon as AS_STATS deltas (payload: proto.h).
 * clock_gettime(2), unix(7) (SOCK_SEQPACKET: one message per send). */
#define _GNU_SOURCE
#include "trapstats.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include "scm_rights.h"

static const uint16_t slot_nr[AS_TSTATS_SLOTS] = {
    __NR_socket,  __NR_bind,     __NR_listen,     __NR_connect,    __NR_accept,     __NR_accept4,
    __NR_sendto,  __NR_sendmsg,  __NR_sendmmsg,   __NR_getsockname, __NR_getpeername, __NR_setsockopt,
    __NR_getsockopt, __NR_recvfrom, __NR_recvmsg, __NR_recvmmsg, AS_STATS_OTHER,
};
#define SLOT_OTHER (AS_TSTATS_SLOTS - 1)

static const uint64_t bounds_ns[AS_STATS_BUCKETS - 1] = AS_STATS_BOUNDS_NS;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint16_t slot_of(int nr) {
  for (uint16_t i = 0; i < SLOT_OTHER; i++)
    if (slot_nr[i] == nr) return i;
  return SLOT_OTHER;
}

void as_tstats_begin(struct as_tmark *m, uint64_t id, int nr) {
  m->id = id;
  m->slot = slot_of(nr);
  m->t0_ns = now_ns();
  m->live = 1;
}

void as_tstats_end(struct as_tstats *s, struct as_tmark *m, int64_t result) {
  if (!m->live) return;
  m->live = 0;
  uint64_t dt = now_ns() - m->t0_ns;
  int err = result < 0 ? (int)-result : 0;
  if (err >= AS_STATS_ERRNO_MAX) err = AS_STATS_ERRNO_MAX;
  unsigned b = 0;
  while (b < AS_STATS_BUCKETS - 1 && dt > bounds_ns[b]) b++;
  s->count[m->slot][err]++;
  s->hist[m->slot][b]++;
  s->sum_ns[m->slot] += dt;
  s->dirty |= 1u << m->slot;
}

/* Room for the header, every slot's histogram and as many counts as fit. */
#define HIST_ROOM (AS_TSTATS_SLOTS * sizeof(struct as_stats_hist))
#define COUNT_ROOM ((AS_PAYLOAD_MAX - sizeof(struct as_stats_head) - HIST_ROOM) / sizeof(struct as_stats_count))

int as_tstats_flush(struct as_tstats *s, int fd) {
  if (!s->dirty) return 0;
  if (fd < 0) return -ENOTCONN;
  enum { E = AS_STATS_ERRNO_MAX + 1, N = AS_TSTATS_SLOTS * E };
  static uint8_t buf[sizeof(struct as_msg) + AS_PAYLOAD_MAX]; /* the generator is single-threaded */
  struct as_stats_count counts[COUNT_ROOM];
  struct as_stats_hist hists[AS_TSTATS_SLOTS];
  /* The counts, in (slot, err) order, go out in as many messages as they need; the histograms with the first. */
  unsigned k = 0;
  int first = 1;
  while (first || k < N) {
    unsigned nh = 0, nc = 0, end = k;
    for (unsigned i = 0; first && i < AS_TSTATS_SLOTS; i++) {
      if (!(s->dirty & (1u << i))) continue;
      memset(&hists[nh], 0, sizeof(hists[nh]));
      hists[nh].syscall = slot_nr[i];
      hists[nh].sum_ns = s->sum_ns[i];
      memcpy(hists[nh].buckets, s->hist[i], sizeof(s->hist[i]));
      nh++;
    }
    for (; end < N && nc < COUNT_ROOM; end++) {
      unsigned slot = end / E, err = end % E;
      if (!(s->dirty & (1u << slot))) {
        end = (slot + 1) * E - 1; /* skip the idle slot */
        continue;
      }
      if (!s->count[slot][err]) continue;
      counts[nc].syscall = slot_nr[slot];
      counts[nc].err = err == AS_STATS_ERRNO_MAX ? AS_STATS_OTHER : (uint16_t)err;
      counts[nc].count = s->count[slot][err];
      nc++;
    }
    struct as_msg *m = (struct as_msg *)buf;
    memset(m, 0, sizeof(*m));
    m->type = AS_STATS;
    m->version = AS_PROTO_VERSION;
    struct as_stats_head head = {.n_counts = (uint16_t)nc, .n_hists = (uint16_t)nh};
    uint8_t *p = buf + sizeof(*m);
    memcpy(p, &head, sizeof(head));
    p += sizeof(head);
    memcpy(p, counts, nc * sizeof(counts[0]));
    p += nc * sizeof(counts[0]);
    memcpy(p, hists, nh * sizeof(hists[0]));
    p += nh * sizeof(hists[0]);
    m->payload_len = (uint32_t)(p - buf - sizeof(*m));
    ssize_t r = as_send_fds(fd, buf, (size_t)(p - buf), NULL, 0, MSG_DONTWAIT);
    if (r < 0) return (int)r; /* kept: what was not sent goes next time */
    if (first) {
      for (unsigned i = 0; i < AS_TSTATS_SLOTS; i++) {
        memset(s->hist[i], 0, sizeof(s->hist[i]));
        s->sum_ns[i] = 0;
      }
      first = 0;
    }
    for (; k < end; k++) s->count[k / E][k % E] = 0;
  }
  s->dirty = 0;
  return 0;
}
