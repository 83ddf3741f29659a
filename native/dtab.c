/* The decision table: reader (generators) and writer (the daemon's addon). Format and design: dtab.h. */
#define _GNU_SOURCE
#include "dtab.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fnv.h"

static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ---- mapping ---------------------------------------------------------------------------------------------------- */

void as_dtab_detach(struct as_dtab *t) {
  if (t->map) munmap((void *)t->map, AS_DTAB_SIZE);
  if (t->shm) munmap(t->shm, AS_SHM_SIZE);
  t->map = NULL;
  t->shm = NULL;
  t->app_gen = 0;
  t->app_index = -1;
}

int as_dtab_attach(struct as_dtab *t, int table_fd, int shm_fd, const char *app_id) {
  const uint8_t *map = NULL;
  struct as_hostshm *shm = NULL;
  if (table_fd >= 0) {
    void *m = mmap(NULL, AS_DTAB_SIZE, PROT_READ, MAP_SHARED, table_fd, 0);
    if (m == MAP_FAILED) return -errno;
    const struct as_dtab_header *h = m;
    if (h->magic != AS_DTAB_MAGIC || h->format != AS_DTAB_FORMAT || h->half_size != AS_DTAB_HALF) {
      munmap(m, AS_DTAB_SIZE);
      return -EPROTO;
    }
    map = m;
  }
  if (shm_fd >= 0) {
    void *m = mmap(NULL, AS_SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
    if (m != MAP_FAILED && ((struct as_hostshm *)m)->magic == AS_SHM_MAGIC) shm = m;
    else if (m != MAP_FAILED) munmap(m, AS_SHM_SIZE);
  }
  as_dtab_detach(t);
  t->map = map;
  t->shm = shm;
  if (app_id) snprintf(t->app_id, sizeof(t->app_id), "%s", app_id);
  return 0;
}

/* ---- reading one half ------------------------------------------------------------------------------------------- */

/* A view of the active half's body, with the sequence it was read at. */
struct view {
  const uint8_t *body;
  uint32_t len;
  uint32_t seq;
  const volatile uint32_t *seqp;
  uint64_t gen;
};

static int view_open(const struct as_dtab *t, struct view *v) {
  const volatile struct as_dtab_header *h = (const volatile struct as_dtab_header *)t->map;
  if (h->disabled) return -1;
  uint32_t a = h->active & 1;
  const uint8_t *half = t->map + AS_DTAB_HEADER + (size_t)a * AS_DTAB_HALF;
  v->seqp = (const volatile uint32_t *)half;
  v->seq = __atomic_load_n((const uint32_t *)half, __ATOMIC_ACQUIRE);
  if (v->seq & 1) return -1;
  v->gen = h->generation;
  v->len = ((const volatile struct as_dtab_half *)half)->len;
  if (v->len < sizeof(struct as_dt_head) || v->len > AS_DTAB_HALF - sizeof(struct as_dtab_half)) return -1;
  v->body = half + sizeof(struct as_dtab_half);
  return 0;
}

/* Whether what was read from the view is consistent (no writer came by meanwhile). */
static int view_valid(const struct view *v) {
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return *v->seqp == v->seq;
}

/* A pointer to n records of size sz at off, or NULL when they do not lie inside the body. */
static const void *at(const struct view *v, uint32_t off, uint32_t n, size_t sz) {
  if (off > v->len || (uint64_t)n * sz > v->len - off) return NULL;
  return v->body + off;
}

static int in_range(const struct as_dt_range *r, const uint8_t ip[16]) {
  unsigned bits = r->bits > 128 ? 128 : r->bits;
  unsigned full = bits / 8, rest = bits % 8;
  if (memcmp(r->ip, ip, full)) return 0;
  if (!rest) return 1;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (r->ip[full] & mask) == (ip[full] & mask);
}

static int is_loopback(const uint8_t ip[16]) {
  static const uint8_t v6lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (!memcmp(ip, v6lo, 16)) return 1;
  return !memcmp(ip, v4prefix, 12) && ip[12] == 127;
}

static uint32_t svc_hash(const uint8_t vip[16], uint16_t port) { return as_fnv_ep(vip, port); }

static const struct as_dt_app *find_app(struct as_dtab *t, const struct view *v, const struct as_dt_head *hd) {
  const struct as_dt_app *apps = at(v, hd->off_apps, hd->n_apps, sizeof(struct as_dt_app));
  if (!apps) return NULL;
  if (t->app_gen == v->gen && t->app_index >= 0 && (uint32_t)t->app_index < hd->n_apps &&
      !strncmp(apps[t->app_index].id, t->app_id, AS_DTAB_ID_MAX))
    return &apps[t->app_index];
  for (uint32_t i = 0; i < hd->n_apps; i++) {
    if (!strncmp(apps[i].id, t->app_id, AS_DTAB_ID_MAX)) {
      t->app_index = (int)i;
      t->app_gen = v->gen;
      return &apps[i];
    }
  }
  return NULL;
}

static uint32_t rnd(void) {
  static __thread uint64_t s;
  if (!s) s = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&s;
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return (uint32_t)(s >> 11);
}

#define CAND_MAX 256

static uint32_t load_of(const struct as_dtab *t, const struct as_dt_inst *i) {
  return t->shm ? __atomic_load_n(&t->shm->inflight[i->ctr_slot % AS_SHM_SLOTS], __ATOMIC_RELAXED) : 0;
}

/* The service vip:port in the view's hash table; NULL when absent or when the table is malformed. */
static const struct as_dt_svc *find_svc(const struct view *v, const struct as_dt_head *hd, const uint8_t vip[16], uint16_t port) {
  uint32_t nb = hd->n_buckets;
  const struct as_dt_svc *b = at(v, hd->off_svc, nb, sizeof(*b));
  if (!b || !nb || (nb & (nb - 1))) return NULL;
  uint32_t h = svc_hash(vip, port);
  for (uint32_t probe = 0; probe < nb; probe++) {
    const struct as_dt_svc *s = &b[(h + probe) & (nb - 1)];
    if (!s->used) break;
    if (s->port == port && !memcmp(s->vip, vip, 16)) return s;
  }
  return NULL;
}

/* The core both readers share: among the service's instances allowed by bits (NULL: every instance), not in tried,
 * the wanted family preferred (4 or 6), live nodes first, one picked by the service's strategy on the shared counters
 * (its in-flight counter is taken). Returns AS_DT_PICKED (*pick, *alternatives), AS_DT_DENIED, AS_DT_ALL_TRIED, or
 * AS_DT_ASK (a malformed table). */
static int choose(struct as_dtab *t, const struct view *v, const struct as_dt_head *hd, const struct as_dt_svc *svc,
                  const uint64_t *bits, int want, const struct as_ep *tried, int ntried, const struct as_dt_inst **pick_out,
                  int *alternatives) {
  const struct as_dt_inst *inst = at(v, hd->off_inst, hd->n_inst, sizeof(*inst));
  if (!inst || svc->first > hd->n_inst || svc->count > hd->n_inst - svc->first || svc->count > CAND_MAX) return AS_DT_ASK;

  /* the policy, then what this connect tried already */
  const struct as_dt_inst *cand[CAND_MAX];
  int n = 0, allowed = 0;
  for (uint32_t i = svc->first; i < svc->first + svc->count; i++) {
    if (bits && !(bits[i / 64] >> (i % 64) & 1)) continue;
    allowed++;
    int seen = 0;
    for (int k = 0; k < ntried && !seen; k++) seen = tried[k].port == inst[i].port && !memcmp(tried[k].ip, inst[i].ip, 16);
    if (!seen) cand[n++] = &inst[i];
  }
  if (!allowed) return AS_DT_DENIED;
  if (!n) return AS_DT_ALL_TRIED;
  /* a dual-stack server: each family to its own socket (src/table/family.ts preferFamily) */
  if (n > 1) {
    int m = 0;
    for (int i = 0; i < n; i++) {
      const struct as_dt_inst *c = cand[i];
      int drop = 0;
      if (c->family && c->family != want)
        for (int k = 0; k < n && !drop; k++) drop = cand[k]->family == want && cand[k]->owner == c->owner;
      if (!drop) cand[m++] = c;
    }
    n = m;
  }
  /* live nodes first */
  int live = 0;
  for (int i = 0; i < n; i++) live += (cand[i]->flags & AS_DT_ALIVE) != 0;
  if (live && live < n) {
    int m = 0;
    for (int i = 0; i < n; i++)
      if (cand[i]->flags & AS_DT_ALIVE) cand[m++] = cand[i];
    n = m;
  }
  const struct as_dt_inst *pick = cand[0];
  if (n > 1) {
    switch (svc->lb) {
    case AS_DT_LB_RR: {
      uint32_t i = t->shm ? __atomic_fetch_add(&t->shm->rr[svc->rr_slot % AS_SHM_SLOTS], 1, __ATOMIC_RELAXED) : rnd();
      pick = cand[i % (uint32_t)n];
      break;
    }
    case AS_DT_LB_LEAST:
      for (int i = 1; i < n; i++)
        if (load_of(t, cand[i]) < load_of(t, pick)) pick = cand[i];
      break;
    case AS_DT_LB_P2C: {
      const struct as_dt_inst *a = cand[rnd() % (uint32_t)n], *c = cand[rnd() % (uint32_t)(n - 1)];
      if (c == a) c = cand[n - 1];
      pick = load_of(t, c) < load_of(t, a) ? c : a;
      break;
    }
    default: pick = cand[rnd() % (uint32_t)n];
    }
  }
  if (t->shm) __atomic_fetch_add(&t->shm->inflight[pick->ctr_slot % AS_SHM_SLOTS], 1, __ATOMIC_RELAXED);
  *pick_out = pick;
  *alternatives = n > 1;
  return AS_DT_PICKED;
}

/* One decision on one view; *out is filled from the view, the caller checks the view afterwards. */
static int decide_once(struct as_dtab *t, const struct view *v, const struct as_ep *dst, int family,
                       const struct as_ep *tried, int ntried, struct as_dt_pick *out) {
  const struct as_dt_head *hd = at(v, 0, 1, sizeof(*hd));
  if (!hd) return AS_DT_ASK;
  const struct as_dt_app *me = find_app(t, v, hd);
  if (!me) return AS_DT_ASK; /* a table from before this app registered: the daemon knows better */
  uint8_t vip[16];
  if (is_loopback(dst->ip)) {
    memcpy(vip, me->identity, 16); /* the app's own port space, wherever its members run */
  } else {
    const struct as_dt_range *r = at(v, hd->off_ranges, hd->n_ranges, sizeof(*r));
    if (!r) return AS_DT_ASK;
    uint32_t k = 0;
    while (k < hd->n_ranges && !in_range(&r[k], dst->ip)) k++;
    if (k == hd->n_ranges) return AS_DT_ASK; /* not virtual: egress, the daemon's doors, the virtual DNS */
    memcpy(vip, dst->ip, 16);
  }
  /* a service the table does not list may not be published yet: the daemon knows (and refuses, logs) */
  const struct as_dt_svc *svc = find_svc(v, hd, vip, dst->port);
  if (!svc) return AS_DT_ASK;
  const uint64_t *bits = at(v, me->off_bits, hd->bits_words, sizeof(uint64_t));
  if (!bits || (uint64_t)hd->bits_words * 64 < hd->n_inst) return AS_DT_ASK;
  const struct as_dt_inst *pick;
  int alternatives;
  int r = choose(t, v, hd, svc, bits, memcmp(dst->ip, v4prefix, 12) ? 6 : 4, tried, ntried, &pick, &alternatives);
  if (r != AS_DT_PICKED) return r;
  memset(out, 0, sizeof(*out));
  memcpy(out->real.ip, pick->ip, 16);
  out->real.port = pick->port;
  out->virt = *dst;
  out->alternatives = alternatives;
  const struct as_dt_app *apps = at(v, hd->off_apps, hd->n_apps, sizeof(struct as_dt_app));
  if ((hd->flags & AS_DT_FASTPATH) && (me->flags & AS_DT_APP_FAST) && (pick->flags & AS_DT_FAST) && apps &&
      pick->app >= 0 && (uint32_t)pick->app < hd->n_apps && (apps[pick->app].flags & AS_DT_APP_FAST) &&
      apps[pick->app].sock[0]) {
    out->fast = 1;
    memcpy(out->server_sock, apps[pick->app].sock, AS_DTAB_SOCK_MAX);
    out->server_sock[AS_DTAB_SOCK_MAX - 1] = 0;
    memcpy(out->server_app, apps[pick->app].id, AS_DTAB_ID_MAX);
    out->server_app[AS_DTAB_ID_MAX - 1] = 0;
  }
  (void)family;
  return AS_DT_PICKED;
}

/* One ingress pick on one view (as_dtab_pick_ingress). */
static int ingress_once(struct as_dtab *t, const struct view *v, const uint8_t vip[16], uint16_t port, int client_family,
                        const struct as_ep *tried, int ntried, struct as_dt_pick *out) {
  const struct as_dt_head *hd = at(v, 0, 1, sizeof(*hd));
  if (!hd) return AS_DT_ASK;
  const struct as_dt_svc *svc = find_svc(v, hd, vip, port);
  if (!svc) return AS_DT_NO_SERVICE;
  const struct as_dt_inst *pick;
  int alternatives;
  int r = choose(t, v, hd, svc, NULL, client_family == 6 ? 6 : 4, tried, ntried, &pick, &alternatives);
  if (r != AS_DT_PICKED) return r;
  memset(out, 0, sizeof(*out));
  memcpy(out->real.ip, pick->ip, 16);
  out->real.port = pick->port;
  memcpy(out->virt.ip, pick->vip, 16);
  out->virt.port = port;
  out->alternatives = alternatives;
  out->external = (pick->flags & AS_DT_EXTERNAL) != 0;
  return AS_DT_PICKED;
}

int as_dtab_pick_ingress(struct as_dtab *t, const uint8_t vip[16], uint16_t port, int client_family, const struct as_ep *tried,
                         int ntried, struct as_dt_pick *out) {
  if (!t->map) return AS_DT_ASK;
  for (int attempt = 0; attempt < 3; attempt++) {
    struct view v;
    if (view_open(t, &v) < 0) continue;
    int r = ingress_once(t, &v, vip, port, client_family, tried, ntried, out);
    if (view_valid(&v)) return r;
  }
  return AS_DT_ASK;
}

int as_dtab_decide(struct as_dtab *t, const struct as_ep *dst, int family, const struct as_ep *tried, int ntried,
                   struct as_dt_pick *out) {
  if (!t->map) return AS_DT_ASK;
  for (int attempt = 0; attempt < 3; attempt++) {
    struct view v;
    if (view_open(t, &v) < 0) continue;
    int r = decide_once(t, &v, dst, family, tried, ntried, out);
    if (view_valid(&v)) return r;
  }
  return AS_DT_ASK;
}

int as_dtab_is_node(struct as_dtab *t, const uint8_t ip[16]) {
  if (!t->map) return 0;
  for (int attempt = 0; attempt < 3; attempt++) {
    struct view v;
    if (view_open(t, &v) < 0) continue;
    const struct as_dt_head *hd = at(&v, 0, 1, sizeof(*hd));
    int r = hd && !memcmp(hd->node_ip, ip, 16);
    if (view_valid(&v)) return r;
  }
  return 0;
}

/* ---- ingress (dtab.h struct as_dt_ingress) ------------------------------------------------------------------------ */

/* The view's ingress section, NULL when there is none or it does not lie inside the body. */
static const struct as_dt_ingress *ingress_of(const struct view *v, const struct as_dt_head **hd_out) {
  const struct as_dt_head *hd = at(v, 0, 1, sizeof(*hd));
  *hd_out = hd;
  if (!hd) return NULL;
  uint32_t off = hd->off_ingress;
  if (!off || off % 4) return NULL;
  return at(v, off, 1, sizeof(struct as_dt_ingress));
}

/* Whether ip is in the n 16-byte addresses at off (0: not there, or they do not lie inside the body). */
static int listed(const struct view *v, uint32_t off, uint32_t n, const uint8_t ip[16]) {
  const uint8_t *a = at(v, off, n, 16);
  if (!a) return 0;
  for (uint32_t i = 0; i < n; i++)
    if (!memcmp(a + (size_t)i * 16, ip, 16)) return 1;
  return 0;
}

/* One read of the active half by fn, retried while a writer came by (at most 3 times, then 0). */
typedef int (*ingress_fn)(struct as_dtab *t, const struct view *v, const void *arg, void *out);
static int ingress_read(struct as_dtab *t, ingress_fn fn, const void *arg, void *out) {
  if (!t->map) return 0;
  for (int attempt = 0; attempt < 3; attempt++) {
    struct view v;
    if (view_open(t, &v) < 0) continue;
    int r = fn(t, &v, arg, out);
    if (view_valid(&v)) return r;
  }
  return 0;
}

static int gateway_once(struct as_dtab *t, const struct view *v, const void *ip, void *out) {
  const struct as_dt_head *hd;
  const struct as_dt_ingress *in = ingress_of(v, &hd);
  return in && listed(v, in->off_gateways, in->n_gateways, ip);
}

int as_dtab_is_gateway(struct as_dtab *t, const uint8_t ip[16]) { return ingress_read(t, gateway_once, ip, NULL); }

static int steered_once(struct as_dtab *t, const struct view *v, const void *port, void *out) {
  const struct as_dt_head *hd;
  const struct as_dt_ingress *in = ingress_of(v, &hd);
  if (!in || !find_app(t, v, hd)) return 0; /* an app the table does not know: the daemon decides */
  int32_t me = t->app_index;
  uint16_t p = *(const uint16_t *)port;
  uint32_t n = in->n_steered;
  const struct as_dt_steered *s = at(v, in->off_steered, n, sizeof(*s));
  if (!s || me < 0) return 0;
  for (uint32_t i = 0; i < n; i++)
    if (s[i].host_port == p && s[i].app == me) return 1;
  return 0;
}

int as_dtab_steered_here(struct as_dtab *t, uint16_t host_port) { return ingress_read(t, steered_once, &host_port, NULL); }

/* Loopback and the node address are this host's whatever the table says (a table without an ingress section too):
 * an error here can only send an accept to the daemon, never let a local peer pass for an outside one. */
static int local_once(struct as_dtab *t, const struct view *v, const void *ip, void *out) {
  const struct as_dt_head *hd;
  const struct as_dt_ingress *in = ingress_of(v, &hd);
  if (hd && !memcmp(hd->node_ip, ip, 16)) return 1;
  return in && listed(v, in->off_local, in->n_local, ip);
}

int as_dtab_is_local(struct as_dtab *t, const uint8_t ip[16]) {
  if (is_loopback(ip)) return 1;
  return ingress_read(t, local_once, ip, NULL);
}

struct keys_out {
  uint8_t keys[AS_DT_INGRESS_KEYS][16];
  int max;
};

static int keys_once(struct as_dtab *t, const struct view *v, const void *arg, void *out) {
  struct keys_out *k = out;
  const struct as_dt_head *hd;
  const struct as_dt_ingress *in = ingress_of(v, &hd);
  if (!in) return 0;
  uint32_t n = in->n_keys;
  if (n > AS_DT_INGRESS_KEYS) n = AS_DT_INGRESS_KEYS; /* a torn read, or a bad writer: at most the array */
  if (n > (uint32_t)k->max) n = (uint32_t)k->max;
  memcpy(k->keys, in->keys, (size_t)n * 16);
  return (int)n;
}

int as_dtab_preamble_keys(struct as_dtab *t, uint8_t keys[][16], int max) {
  if (max <= 0) return 0;
  struct keys_out k;
  k.max = max;
  int n = ingress_read(t, keys_once, NULL, &k); /* copied out only once the read checked */
  if (n > 0) memcpy(keys, k.keys, (size_t)n * 16);
  return n;
}

/* ---- the identity table (dtab.h as_ident) --------------------------------------------------------------------- */

static uint64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static uint32_t ident_slot(uint16_t sport, const struct as_ep *dst) {
  uint32_t h = as_fnv_port(svc_hash(dst->ip, dst->port), sport);
  return (h % (AS_IDENT_SLOTS / AS_IDENT_WAYS)) * AS_IDENT_WAYS;
}

int as_ident_put(struct as_hostshm *shm, const struct as_ep *src, const struct as_ep *dst, const uint8_t identity[16], const char *app) {
  uint16_t sport = src->port;
  uint32_t base = ident_slot(sport, dst);
  uint64_t now = mono_ms();
  /* the same key's slot, else a free or expired one, else the oldest */
  struct as_ident *best = NULL;
  for (uint32_t w = 0; w < AS_IDENT_WAYS; w++) {
    struct as_ident *e = &shm->ident[base + w];
    if (e->sport == sport && e->dport == dst->port && !memcmp(e->dip, dst->ip, 16) && !memcmp(e->sip, src->ip, 16)) {
      best = e;
      break;
    }
    if (!best || e->at_ms < best->at_ms) best = e;
  }
  uint32_t seq = __atomic_load_n(&best->seq, __ATOMIC_RELAXED);
  if ((seq & 1) || !__atomic_compare_exchange_n(&best->seq, &seq, seq + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return -EBUSY;
  __atomic_thread_fence(__ATOMIC_RELEASE);
  best->sport = sport;
  best->dport = dst->port;
  memcpy(best->dip, dst->ip, 16);
  memcpy(best->sip, src->ip, 16);
  memcpy(best->identity, identity, 16);
  memset(best->app, 0, sizeof(best->app));
  if (app) memcpy(best->app, app, strnlen(app, sizeof(best->app)));
  best->at_ms = now;
  __atomic_store_n(&best->seq, seq + 2, __ATOMIC_RELEASE);
  return 0;
}

int as_ident_get(struct as_hostshm *shm, const struct as_ep *src, const struct as_ep *dst, struct as_ident_found *out, int take) {
  uint16_t sport = src->port;
  uint32_t base = ident_slot(sport, dst);
  uint64_t now = mono_ms();
  for (uint32_t w = 0; w < AS_IDENT_WAYS; w++) {
    struct as_ident *e = &shm->ident[base + w];
    for (int attempt = 0; attempt < 3; attempt++) {
      uint32_t s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
      if (s1 & 1) continue;
      struct as_ident c;
      memcpy(&c, (const void *)e, sizeof(c));
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) != s1) continue;
      if (c.sport != sport || c.dport != dst->port || memcmp(c.dip, dst->ip, 16) || !c.at_ms || now - c.at_ms > AS_IDENT_TTL_MS) break;
      if (memcmp(c.sip, src->ip, 16)) break; /* the same port and destination from another address: not this connection */
      memcpy(out->identity, c.identity, 16);
      memset(out->app, 0, sizeof(out->app));
      memcpy(out->app, c.app, sizeof(c.app));
      if (take && __atomic_compare_exchange_n(&e->seq, &s1, s1 + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        e->at_ms = 0; /* one accept per connection: an entry never names a later one */
        __atomic_store_n(&e->seq, s1 + 2, __ATOMIC_RELEASE);
      }
      return 1;
    }
  }
  return 0;
}

/* ---- the writer --------------------------------------------------------------------------------------------------- */

int as_dtab_create(const char *name, size_t size) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -errno;
  if (ftruncate(fd, (off_t)size) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

int64_t as_dtab_publish(uint8_t *map, const uint8_t *body, size_t len) {
  struct as_dtab_header *h = (struct as_dtab_header *)map;
  if (h->magic != AS_DTAB_MAGIC) { /* a new table: no reader has it yet */
    h->format = AS_DTAB_FORMAT;
    h->half_size = AS_DTAB_HALF;
    h->active = 0;
    h->disabled = 1;
    __atomic_store_n(&h->magic, AS_DTAB_MAGIC, __ATOMIC_RELEASE);
  }
  if (len > AS_DTAB_HALF - sizeof(struct as_dtab_half)) {
    __atomic_store_n(&h->disabled, 1, __ATOMIC_RELEASE);
    return -E2BIG;
  }
  uint32_t next = (__atomic_load_n(&h->active, __ATOMIC_RELAXED) & 1) ^ 1;
  struct as_dtab_half *half = (struct as_dtab_half *)(map + AS_DTAB_HEADER + (size_t)next * AS_DTAB_HALF);
  uint32_t seq = __atomic_load_n(&half->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&half->seq, seq | 1, __ATOMIC_RELAXED); /* odd: being written */
  __atomic_thread_fence(__ATOMIC_RELEASE);
  half->len = (uint32_t)len;
  memcpy((uint8_t *)half + sizeof(*half), body, len);
  __atomic_store_n(&half->seq, (seq | 1) + 1, __ATOMIC_RELEASE);
  h->generation++;
  __atomic_store_n(&h->active, next, __ATOMIC_RELEASE);
  __atomic_store_n(&h->disabled, 0, __ATOMIC_RELEASE);
  return (int64_t)h->generation;
}
