/* Per-program trap counters kept by the generator and sent to the daemon as AS_STATS deltas (payload: proto.h).
 * Fixed arrays only: counting a trap costs two CLOCK_MONOTONIC reads (vDSO) and a few increments. clock_gettime(2). */
#ifndef APPSWITCH_TRAPSTATS_H
#define APPSWITCH_TRAPSTATS_H

#include <stdint.h>

#include "proto.h"

#define AS_TSTATS_SLOTS 17 /* the trapped syscalls; the last slot takes anything else */

/* One notification being served: when it was received and which call it is. live = not yet counted. */
struct as_tmark {
  uint64_t id;
  uint64_t t0_ns;
  uint16_t slot;
  uint8_t live;
};

struct as_tstats {
  uint32_t count[AS_TSTATS_SLOTS][AS_STATS_ERRNO_MAX + 1]; /* [slot][0 = ok, errno, AS_STATS_ERRNO_MAX = other] */
  uint32_t hist[AS_TSTATS_SLOTS][AS_STATS_BUCKETS];
  uint64_t sum_ns[AS_TSTATS_SLOTS];
  uint32_t dirty; /* one bit per slot with something to send */
};

/* Starts timing notification id of syscall nr (x86_64 __NR_*). */
void as_tstats_begin(struct as_tmark *m, uint64_t id, int nr);
/* Counts the answer to m (result >= 0: success, < 0: -errno) once; later calls on the same mark do nothing. */
void as_tstats_end(struct as_tstats *s, struct as_tmark *m, int64_t result);
/* Sends what was counted since the last flush as AS_STATS messages on fd (non-blocking) and clears what was sent.
 * Returns 0 (also when there was nothing to send) or -errno; unsent counts are kept for the next call. */
int as_tstats_flush(struct as_tstats *s, int fd);

#endif
