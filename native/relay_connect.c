/* appswitch-relay: picking an instance (as_dtab_pick_ingress on the daemon's decision table) and connecting to it
 * (connect(2) non-blocking, getsockname(2) right after it for the preamble's MAC, SO_ERROR when it completes). An
 * instance that refuses, is unreachable or does not answer is added to the connection's tried list and the next one
 * is picked, up to RELAY_TRIES; then the client is closed and REFUSED 'all-refused' is reported. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "preamble.h"
#include "relay.h"

static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* How many times a connect to an instance retransmits its SYN before ETIMEDOUT moves on to the next one: a host cut
 * off is marked dead in the table only after gossip's suspicion timeout, and the outside client should not wait that
 * long (the kernel's default is ~2 min). One retry gives up after about 3 s (tcp(7) TCP_SYNCNT; 1 s and then 2 s, or
 * 1 s twice with net.ipv4.tcp_syn_linear_timeouts). It bounds the handshake alone: a slow peer is never cut by it,
 * and it needs no second call to undo, as TCP_USER_TIMEOUT would. */
#define RELAY_SYN_RETRIES 1

/* Whether this connection opens with a preamble (preamble.h): to an appswitch instance, once the daemon gave the key. */
static int wants_preamble(const struct relay *r, const struct relay_conn *c) {
  return !c->plain && __atomic_load_n(&r->sh->have_key, __ATOMIC_ACQUIRE);
}

/* Writes the preamble for c on its fresh upstream socket (its send buffer is empty: all 48 bytes go at once).
 * 0 or -errno. */
static int send_preamble(struct relay *r, struct relay_conn *c) {
  uint64_t k[2] = {__atomic_load_n(&r->sh->key[0], __ATOMIC_RELAXED), __atomic_load_n(&r->sh->key[1], __ATOMIC_RELAXED)};
  uint8_t key[AS_MAC_KEY], pre[AS_PREAMBLE_LEN];
  memcpy(key, k, sizeof(key));
  as_preamble_make(pre, key, &c->client, &c->from, &c->to, as_preamble_now_ms());
  ssize_t n;
  do n = send(c->ufd, pre, sizeof(pre), MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  return n == (ssize_t)sizeof(pre) ? 0 : -EPROTO;
}

static int retryable(int e) { return e == ECONNREFUSED || e == EHOSTUNREACH || e == ETIMEDOUT || e == ENETUNREACH; }
static int resource(int e) { return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM || e == EADDRNOTAVAIL; }

static void refuse(struct relay *r, struct relay_conn *c, int reason) {
  relay_send_refused(r, c->route, &c->client, reason);
  relay_conn_free(r, c);
}

/* Starts a connect to c->to; 0 (in progress) or -errno (nothing left open). */
static int try_connect(struct relay *r, struct relay_conn *c) {
  int family = memcmp(c->to.ip, v4prefix, 12) ? AF_INET6 : AF_INET;
  struct sockaddr_storage ss;
  int sl = as_ep_to_sockaddr(&c->to, family, &ss);
  if (sl < 0) return sl;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1, retries = RELAY_SYN_RETRIES;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &retries, sizeof(retries));
  /* the handshake's last ACK waits for our first data (the preamble) and goes with it: the connection reaches the
   * instance's accept queue with its preamble already readable (tcp_rcv_synsent_state_process, rskq_defer_accept) */
  if (wants_preamble(r, c)) setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one));
  int rc;
  do rc = connect(fd, (struct sockaddr *)&ss, (socklen_t)sl);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return -e;
  }
  struct sockaddr_storage ls;
  socklen_t ll = sizeof(ls);
  struct as_ep from;
  if (getsockname(fd, (struct sockaddr *)&ls, &ll) < 0 || as_ep_from_sockaddr(&ls, ll, &from) < 0) memset(&from, 0, sizeof(from));
  c->from = from;
  c->ufd = fd;
  c->state = C_CONNECTING;
  int idx = relay_conn_index(r, c);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = RELAY_EV(K_UP, c->gen, idx)};
  if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    int e = errno;
    close(fd);
    c->ufd = -1;
    return -e;
  }
  return 0;
}

/* Picks the next instance and connects; on failure reports and frees c. */
static void pick_and_connect(struct relay *r, struct relay_conn *c) {
  int family = memcmp(c->client.ip, v4prefix, 12) ? 6 : 4;
  for (;;) {
    struct as_dt_pick p;
    int v = as_dtab_pick_ingress(&r->sh->table, c->vip, c->port, family, c->tried, c->ntried, &p);
    if (v != AS_DT_PICKED) {
      refuse(r, c, v == AS_DT_ALL_TRIED ? AS_RELAY_ALL_REFUSED : AS_RELAY_NO_INSTANCE);
      return;
    }
    c->to = p.real;
    c->plain = (uint8_t)p.external;
    int e = try_connect(r, c);
    if (!e) return;
    if (retryable(-e) && c->ntried < RELAY_TRIES) {
      c->tried[c->ntried++] = c->to;
      continue;
    }
    refuse(r, c, resource(-e) ? AS_RELAY_LIMIT : AS_RELAY_ALL_REFUSED);
    return;
  }
}

void relay_start(struct relay *r, struct relay_conn *c) {
  int idx = relay_conn_index(r, c);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = RELAY_EV(K_CLIENT, c->gen, idx)};
  if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->cfd, &ev) < 0) {
    refuse(r, c, AS_RELAY_LIMIT);
    return;
  }
  pick_and_connect(r, c);
}

void relay_connected(struct relay *r, struct relay_conn *c, uint32_t events) {
  if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return; /* not done yet */
  int err = 0;
  socklen_t el = sizeof(err);
  /* a connect that failed reports EPOLLERR (tcp_poll: sk_err set); EPOLLOUT alone is an established connection */
  if ((events & (EPOLLERR | EPOLLHUP)) && getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
  if (!err && !(events & EPOLLOUT)) err = ECONNRESET;
  if (!err && wants_preamble(r, c)) err = -send_preamble(r, c);
  if (err) {
    close(c->ufd);
    c->ufd = -1;
    /* a new generation: an event of the closed socket still in this turn's batch must not be taken for the next one */
    c->gen++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = RELAY_EV(K_CLIENT, c->gen, relay_conn_index(r, c))};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->cfd, &ev);
    if (retryable(err) && c->ntried < RELAY_TRIES) {
      c->tried[c->ntried++] = c->to;
      pick_and_connect(r, c);
    } else {
      refuse(r, c, AS_RELAY_ALL_REFUSED);
    }
    return;
  }
  c->state = C_OPEN; /* uc.ready: dispatch() noted these events' EPOLLIN before calling us */
  r->st.forwarded++;
  relay_pump(r, c);
}
