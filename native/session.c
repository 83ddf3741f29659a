/* The generator's session with the daemon: trap-socket connection and HELLO. See session.h. unix(7). */
#define _GNU_SOURCE
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "scm_rights.h"

int as_session_socket(const char *path, struct sockaddr_un *sun) {
  if (strlen(path) >= sizeof(sun->sun_path)) return -ENAMETOOLONG;
  memset(sun, 0, sizeof(*sun));
  sun->sun_family = AF_UNIX;
  strcpy(sun->sun_path, path);
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  return s < 0 ? -errno : s;
}

int as_session_connect(const char *path) {
  struct sockaddr_un sun;
  int s = as_session_socket(path, &sun);
  if (s < 0) return s;
  if (connect(s, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    int e = errno;
    close(s);
    return -e;
  }
  return s;
}

/* The HELLO payload: meta as given, or for a resumed session meta with "resume" (and "identity") put in front of
 * its other members. The ticket and the address are ours (hex, dots, an address), so they need no escaping. */
static int build_meta(char *out, size_t cap, const char *meta, const char *ticket, const struct as_ep *identity) {
  if (!ticket) return snprintf(out, cap, "%s", meta);
  const char *body = strchr(meta, '{');
  if (!body) return -1;
  body++;
  while (*body == ' ' || *body == '\n' || *body == '\t' || *body == '\r') body++;
  const char *sep = *body == '}' ? "" : ",";
  char ip[INET6_ADDRSTRLEN] = "";
  if (identity) {
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(identity->ip, v4mapped, 12)) inet_ntop(AF_INET, identity->ip + 12, ip, sizeof(ip));
    else inet_ntop(AF_INET6, identity->ip, ip, sizeof(ip));
  }
  if (ip[0]) return snprintf(out, cap, "{\"resume\":\"%s\",\"identity\":\"%s\"%s%s", ticket, ip, sep, body);
  return snprintf(out, cap, "{\"resume\":\"%s\"%s%s", ticket, sep, body);
}

int as_session_hello(int s, const char *meta, const char *ticket, const struct as_ep *identity, int timeout_ms,
                     struct as_msg *reply, char *ticket_out, size_t cap, char *err, size_t errcap) {
  int fds[AS_SESSION_FDS], nfds = 0;
  int r = as_session_hello_fds(s, meta, ticket, identity, timeout_ms, reply, ticket_out, cap, err, errcap, fds, &nfds);
  for (int i = 0; i < nfds; i++) close(fds[i]);
  return r;
}

int as_meta_add(char *out, size_t cap, const char *meta, const char *key, const char *value) {
  const char *body = strchr(meta, '{');
  if (!body) return -EINVAL;
  body++;
  while (*body == ' ' || *body == '\n' || *body == '\t' || *body == '\r') body++;
  int n = snprintf(out, cap, "{\"%s\":\"%s\"%s%s", key, value, *body == '}' ? "" : ",", body);
  return n < 0 || (size_t)n >= cap ? -E2BIG : 0;
}

static int hello(int s, const char *meta, const char *ticket, const struct as_ep *identity, int timeout_ms,
                 struct as_msg *reply, char *ticket_out, size_t cap, char *err, size_t errcap, int *fds_out,
                 int *nfds_out);

int as_session_hello_fds(int s, const char *meta, const char *ticket, const struct as_ep *identity, int timeout_ms,
                         struct as_msg *reply, char *ticket_out, size_t cap, char *err, size_t errcap, int *fds_out,
                         int *nfds_out) {
  *nfds_out = 0;
  int r = hello(s, meta, ticket, identity, timeout_ms, reply, ticket_out, cap, err, errcap, fds_out, nfds_out);
  if (r < 0 || reply->result < 0) { /* only an accepted registration hands descriptors over */
    for (int i = 0; i < *nfds_out; i++) close(fds_out[i]);
    *nfds_out = 0;
  }
  return r;
}

static int hello(int s, const char *meta, const char *ticket, const struct as_ep *identity, int timeout_ms,
                 struct as_msg *reply, char *ticket_out, size_t cap, char *err, size_t errcap, int *fds_out,
                 int *nfds_out) {
  static uint8_t buf[AS_MSG_MAX];
  struct as_msg m;
  memset(&m, 0, sizeof(m));
  m.type = AS_HELLO;
  m.version = AS_PROTO_VERSION;
  m.pid = (uint32_t)getpid();
  int ml = build_meta((char *)buf + sizeof(m), AS_PAYLOAD_MAX, meta, ticket, identity);
  if (ml < 0 || ml >= AS_PAYLOAD_MAX) return -E2BIG;
  m.payload_len = (uint32_t)ml;
  memcpy(buf, &m, sizeof(m));
  ssize_t r = as_send_fds(s, buf, sizeof(m) + (size_t)ml, NULL, 0, MSG_NOSIGNAL);
  /* A daemon out of descriptors answers (refuses) and closes before our HELLO arrives: its answer still waits in
   * our queue, and says more than EPIPE would. */
  int closed = r == -EPIPE || r == -ECONNRESET;
  if (r < 0 && !closed) return (int)r;
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int fds[AS_MAX_FDS], nfds = 0;
  ssize_t sent = r;
  r = as_recv_fds(s, buf, sizeof(buf), fds, &nfds, closed ? MSG_DONTWAIT : 0);
  if (closed && r <= 0) return (int)sent;
  /* a successful reply carries the decision table and the shared counters (dtab.h); anything more is closed */
  for (int i = 0; i < nfds; i++) {
    if (r >= (ssize_t)sizeof(struct as_msg) && *nfds_out < AS_SESSION_FDS) fds_out[(*nfds_out)++] = fds[i];
    else close(fds[i]);
  }
  struct timeval zero = {0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof(zero));
  if (r < 0) return r == -EWOULDBLOCK ? -EAGAIN : (int)r;
  if (r < (ssize_t)sizeof(struct as_msg)) return r == 0 ? -ECONNRESET : -EPROTO;
  memcpy(reply, buf, sizeof(*reply));
  if (reply->type != AS_HELLO) return -EPROTO;
  uint32_t pl = reply->payload_len;
  if (pl > (uint32_t)(r - (ssize_t)sizeof(struct as_msg))) pl = (uint32_t)(r - (ssize_t)sizeof(struct as_msg));
  const char *payload = (const char *)buf + sizeof(struct as_msg);
  if (reply->result < 0) {
    if (errcap) snprintf(err, errcap, "%.*s", (int)pl, payload);
    return 0;
  }
  if (cap) {
    if (pl >= cap) return -EPROTO;
    memcpy(ticket_out, payload, pl);
    ticket_out[pl] = 0;
  }
  return 0;
}
