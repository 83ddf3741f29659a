// The daemon's native boundary (the only file that includes napi.h): the trap socket (SOCK_SEQPACKET with
// SCM_RIGHTS, which Node's net module cannot do), readiness polling of raw fds on libuv's loop, execve for
// `appswitch run`, the state directory's lock (flock, statelock.h), and the socket guard's accept-time check (sock_diag cgroup lookup, sockdiag.h/sockguard.h). C helpers return -errno; here that becomes a JS Error carrying errno, code and syscall.
#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

extern "C" {
#include "scm_rights.h"
#include "sockdiag.h"
#include "sockguard.h"
#include "statelock.h"
#include "dtab.h"
#include "sklookup.h"
#include "taskfd.h"
#include "preamble.h"
}

#include <sys/mman.h>
#include <map>

namespace {

const char *ErrnoName(int e) {
  switch (e) {
  case EACCES: return "EACCES";
  case EADDRINUSE: return "EADDRINUSE";
  case EAGAIN: return "EAGAIN";
  case EBADF: return "EBADF";
  case ECONNREFUSED: return "ECONNREFUSED";
  case EINVAL: return "EINVAL";
  case EMSGSIZE: return "EMSGSIZE";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  case ENOENT: return "ENOENT";
  case ENOTSOCK: return "ENOTSOCK";
  case EPERM: return "EPERM";
  case EPIPE: return "EPIPE";
  case ECONNRESET: return "ECONNRESET";
  case ENOTCONN: return "ENOTCONN";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case ENOBUFS: return "ENOBUFS";
  case ENOMEM: return "ENOMEM";
  case EAFNOSUPPORT: return "EAFNOSUPPORT";
  case EPROTO: return "EPROTO";
  case ENOTDIR: return "ENOTDIR";
  case ELOOP: return "ELOOP";
  case EROFS: return "EROFS";
  case EIO: return "EIO";
  case E2BIG: return "E2BIG";
  case EOPNOTSUPP: return "EOPNOTSUPP";
  case ESRCH: return "ESRCH";
  case EBUSY: return "EBUSY";
  case ENOSPC: return "ENOSPC";
  default: return "EUNKNOWN";
  }
}

// Node's errnoException shape: message "syscall CODE (text)", fields errno, code, syscall.
Napi::Value ThrowErrno(Napi::Env env, int err, const char *syscall) {
  std::string msg = std::string(syscall) + " " + ErrnoName(err) + " (" + strerror(err) + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowType(Napi::Env env, const char *msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool GetFd(const Napi::CallbackInfo &info, size_t i, int *fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0 || v > INT32_MAX) return false;
  *fd = static_cast<int>(v);
  return true;
}

// seqpacketListen(path: string, mode: number): fd — a non-blocking SOCK_SEQPACKET listener at path.
Napi::Value SeqpacketListen(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) return ThrowType(env, "seqpacketListen(path, mode)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int mode = info[1].As<Napi::Number>().Int32Value();
  struct sockaddr_un sun;
  if (path.empty() || path.size() >= sizeof(sun.sun_path)) return ThrowErrno(env, ENAMETOOLONG, "bind");
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path.c_str(), path.size());
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return ThrowErrno(env, errno, "socket");
  unlink(path.c_str());
  if (bind(s, reinterpret_cast<struct sockaddr *>(&sun), sizeof(sun)) < 0) {
    int e = errno;
    close(s);
    return ThrowErrno(env, e, "bind");
  }
  if (chmod(path.c_str(), static_cast<mode_t>(mode)) < 0 || listen(s, 512) < 0) {
    int e = errno;
    close(s);
    return ThrowErrno(env, e, "listen");
  }
  return Napi::Number::New(env, s);
}

// seqpacketConnect(path): fd — blocking client socket (tests and tools).
Napi::Value SeqpacketConnect(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowType(env, "seqpacketConnect(path)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  struct sockaddr_un sun;
  if (path.empty() || path.size() >= sizeof(sun.sun_path)) return ThrowErrno(env, ENAMETOOLONG, "connect");
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path.c_str(), path.size());
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(env, errno, "socket");
  if (connect(s, reinterpret_cast<struct sockaddr *>(&sun), sizeof(sun)) < 0) {
    int e = errno;
    close(s);
    return ThrowErrno(env, e, "connect");
  }
  return Napi::Number::New(env, s);
}

// seqpacketPair(): [a, b] — a connected SOCK_SEQPACKET pair, both close-on-exec (a child's control socket: the
// parent keeps a, hands b to the child as one of its stdio fds, which clears close-on-exec there).
Napi::Value SeqpacketPair(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return ThrowErrno(env, errno, "socketpair");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(static_cast<uint32_t>(0), sv[0]);
  a.Set(static_cast<uint32_t>(1), sv[1]);
  return a;
}

// accept(fd): { fd, pid, uid, gid } | null when none is waiting.
Napi::Value Accept(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return ThrowType(env, "accept(fd)");
  int c;
  do c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (c < 0 && errno == EINTR);
  if (c < 0) {
    if (errno == EAGAIN || errno == ECONNABORTED) return env.Null();
    return ThrowErrno(env, errno, "accept4");
  }
  struct ucred cred;
  socklen_t l = sizeof(cred);
  if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &l) < 0) {
    int e = errno;
    close(c);
    return ThrowErrno(env, e, "getsockopt");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", c);
  o.Set("pid", cred.pid);
  o.Set("uid", cred.uid);
  o.Set("gid", cred.gid);
  return o;
}

// peerCred(fd): { pid, uid, gid } of a connected Unix socket's peer, as of its connect() (SO_PEERCRED, unix(7)).
Napi::Value PeerCred(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return ThrowType(env, "peerCred(fd)");
  struct ucred cred;
  socklen_t l = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &l) < 0) return ThrowErrno(env, errno, "getsockopt");
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", cred.pid);
  o.Set("uid", cred.uid);
  o.Set("gid", cred.gid);
  return o;
}

// recv(fd): { data: Buffer, fds: number[], fdsLost: boolean } | null (nothing waiting); data.length === 0 means the
// peer closed. fdsLost: descriptors came with the message but did not fit (MSG_CTRUNC; the kernel closed them).
Napi::Value Recv(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return ThrowType(env, "recv(fd)");
  static thread_local char buf[65536];
  int fds[AS_MAX_FDS], nfds = 0;
  int lost = 0;
  ssize_t n = as_recv_fds_ex(fd, buf, sizeof(buf), fds, &nfds, MSG_DONTWAIT, &lost);
  if (n == -EAGAIN) return env.Null();
  if (n < 0) return ThrowErrno(env, static_cast<int>(-n), "recvmsg");
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<char>::Copy(env, buf, static_cast<size_t>(n)));
  Napi::Array a = Napi::Array::New(env, static_cast<size_t>(nfds));
  for (int i = 0; i < nfds; i++) a.Set(static_cast<uint32_t>(i), fds[i]);
  o.Set("fds", a);
  o.Set("fdsLost", Napi::Boolean::New(env, lost != 0));
  return o;
}

// drain(fd, max): bytes read and thrown away (at most max, without waiting; 0 when none are there).
Napi::Value Drain(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsNumber()) return ThrowType(env, "drain(fd, max)");
  int64_t max = info[1].As<Napi::Number>().Int64Value();
  if (max < 0 || max > 4096) return ThrowErrno(env, EINVAL, "recv");
  char buf[4096];
  ssize_t n;
  do n = recv(fd, buf, static_cast<size_t>(max), MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    return ThrowErrno(env, errno, "recv");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// send(fd, data: Buffer, fds?: number[]): bytes sent. Throws EAGAIN when the peer's queue is full.
Napi::Value Send(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsBuffer()) return ThrowType(env, "send(fd, buffer, fds?)");
  Napi::Buffer<char> b = info[1].As<Napi::Buffer<char>>();
  std::vector<int> fds;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsArray()) return ThrowType(env, "send: fds must be an array of numbers");
    Napi::Array a = info[2].As<Napi::Array>();
    if (a.Length() > AS_MAX_FDS) return ThrowErrno(env, EINVAL, "sendmsg");
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber() || v.As<Napi::Number>().Int64Value() < 0) return ThrowType(env, "send: bad fd");
      fds.push_back(v.As<Napi::Number>().Int32Value());
    }
  }
  ssize_t n = as_send_fds(fd, b.Data(), b.Length(), fds.data(), static_cast<int>(fds.size()), MSG_DONTWAIT);
  if (n < 0) return ThrowErrno(env, static_cast<int>(-n), "sendmsg");
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value Close(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return ThrowType(env, "close(fd)");
  if (close(fd) < 0 && errno != EINTR) return ThrowErrno(env, errno, "close");
  return env.Undefined();
}

// execve(path, argv: string[], env: string[]): replaces this process; returns only by throwing.
Napi::Value Execve(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsArray())
    return ThrowType(env, "execve(path, argv, env)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> av, ev;
  Napi::Array a = info[1].As<Napi::Array>(), e = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    if (!a.Get(i).IsString()) return ThrowType(env, "execve: argv must be strings");
    av.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  }
  for (uint32_t i = 0; i < e.Length(); i++) {
    if (!e.Get(i).IsString()) return ThrowType(env, "execve: env must be strings");
    ev.push_back(e.Get(i).As<Napi::String>().Utf8Value());
  }
  std::vector<char *> avp, evp;
  for (auto &s : av) avp.push_back(const_cast<char *>(s.c_str()));
  for (auto &s : ev) evp.push_back(const_cast<char *>(s.c_str()));
  avp.push_back(nullptr);
  evp.push_back(nullptr);
  // Node marks the standard streams close-on-exec and may have left them non-blocking; the program expects
  // them as a shell gives them.
  for (int fd = 0; fd < 3; fd++) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    int fdf = fcntl(fd, F_GETFD);
    if (fdf >= 0 && (fdf & FD_CLOEXEC)) fcntl(fd, F_SETFD, fdf & ~FD_CLOEXEC);
  }
  execve(path.c_str(), avp.data(), evp.data());
  return ThrowErrno(env, errno, "execve");
}

// Poller: readiness of a raw fd on libuv's loop. new Poller(fd, cb); start(events); stop().
// events: 1 readable, 2 writable. cb(err: number, events: number).
class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Poller", {InstanceMethod("start", &Poller::Start), InstanceMethod("stop", &Poller::Stop)});
  }

  explicit Poller(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    if (!GetFd(info, 0, &fd_) || info.Length() < 2 || !info[1].IsFunction()) {
      ThrowType(env, "new Poller(fd, callback)");
      return;
    }
    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    env_ = env;
  }

  ~Poller() override { Release(); }

 private:
  Napi::Value Start(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int events = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
    int uvev = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
    if (!handle_) {
      uv_loop_t *loop = nullptr;
      if (napi_get_uv_event_loop(env, &loop) != napi_ok) return ThrowType(env, "no event loop");
      handle_ = new uv_poll_t;
      int r = uv_poll_init(loop, handle_, fd_);
      if (r < 0) {
        delete handle_;
        handle_ = nullptr;
        return ThrowErrno(env, -r, "uv_poll_init");
      }
      handle_->data = this;
      Ref();  // alive while polling
    }
    int r = uv_poll_start(handle_, uvev, OnPoll);
    if (r < 0) return ThrowErrno(env, -r, "uv_poll_start");
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo &info) {
    if (handle_) {
      uv_poll_stop(handle_);
      uv_close(reinterpret_cast<uv_handle_t *>(handle_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
      handle_ = nullptr;
      Unref();
    }
    return info.Env().Undefined();
  }

  void Release() {
    if (handle_) {
      uv_poll_stop(handle_);
      handle_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t *>(handle_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
      handle_ = nullptr;
    }
  }

  static void OnPoll(uv_poll_t *h, int status, int events) {
    Poller *self = static_cast<Poller *>(h->data);
    if (!self) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    int ev = ((events & UV_READABLE) ? 1 : 0) | ((events & UV_WRITABLE) ? 2 : 0);
    self->cb_.Call({Napi::Number::New(env, status), Napi::Number::New(env, ev)});
    if (env.IsExceptionPending()) {
      Napi::Error err = env.GetAndClearPendingException();
      napi_fatal_exception(env, err.Value());
    }
  }

  int fd_ = -1;
  uv_poll_t *handle_ = nullptr;
  Napi::FunctionReference cb_;
  Napi::Env env_ = nullptr;
};

// tcpSocketCgroup(src: string, sport: number, dst: string, dport: number): {state, cgroup: bigint | null} | null
// The TCP socket whose local end is src:sport and remote end dst:dport (both IPv4 or both IPv6 text), by one
// synchronous NETLINK_SOCK_DIAG round trip on a socket kept open between calls; null when there is none. cgroup is
// null for a mini-socket (time-wait), which keeps no cgroup.
int g_diag_fd = -1;

// Opens the kept sock_diag socket when it is not open; 0 or an errno.
static int EnsureDiag() {
  if (g_diag_fd >= 0) return 0;
  int fd = as_sockdiag_open();
  if (fd < 0) return -fd;
  g_diag_fd = fd;
  return 0;
}

Napi::Value TcpSocketCgroup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsNumber())
    return ThrowType(env, "tcpSocketCgroup(src: string, sport: number, dst: string, dport: number)");
  std::string src = info[0].As<Napi::String>().Utf8Value(), dst = info[2].As<Napi::String>().Utf8Value();
  int64_t sport = info[1].As<Napi::Number>().Int64Value(), dport = info[3].As<Napi::Number>().Int64Value();
  if (sport < 0 || sport > 65535 || dport < 0 || dport > 65535) return ThrowErrno(env, EINVAL, "sock_diag");
  uint8_t s[16], d[16];
  int family = AF_INET;
  if (inet_pton(AF_INET, src.c_str(), s) != 1 || inet_pton(AF_INET, dst.c_str(), d) != 1) {
    family = AF_INET6;
    if (inet_pton(AF_INET6, src.c_str(), s) != 1 || inet_pton(AF_INET6, dst.c_str(), d) != 1)
      return ThrowErrno(env, EINVAL, "sock_diag");
  }
  int e = EnsureDiag();
  if (e) return ThrowErrno(env, e, "socket");
  struct as_sockdiag_result r;
  int n = as_sockdiag_tcp(g_diag_fd, family, s, static_cast<uint16_t>(sport), d, static_cast<uint16_t>(dport), &r);
  if (n < 0) { /* a fresh socket next time: no stale reply can linger */
    close(g_diag_fd);
    g_diag_fd = -1;
    return ThrowErrno(env, -n, "sock_diag");
  }
  if (n == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", Napi::Number::New(env, r.state));
  o.Set("cgroup", r.has_cgroup ? Napi::Value(Napi::BigInt::New(env, r.cgroup)) : env.Null());
  o.Set("inode", Napi::Number::New(env, r.inode));
  return o;
}

// udpSocketInode(ip: string, port: number): number | null — the inode of the UDP socket a datagram to ip:port would
// reach (sockdiag.h), by one synchronous sock_diag round trip; null when none.
Napi::Value UdpSocketInode(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) return ThrowType(env, "udpSocketInode(ip: string, port: number)");
  std::string ip = info[0].As<Napi::String>().Utf8Value();
  int64_t port = info[1].As<Napi::Number>().Int64Value();
  if (port < 0 || port > 65535) return ThrowErrno(env, EINVAL, "sock_diag");
  uint8_t a[16];
  int family = AF_INET;
  if (inet_pton(AF_INET, ip.c_str(), a) != 1) {
    family = AF_INET6;
    if (inet_pton(AF_INET6, ip.c_str(), a) != 1) return ThrowErrno(env, EINVAL, "sock_diag");
  }
  int e = EnsureDiag();
  if (e) return ThrowErrno(env, e, "socket");
  struct as_sockdiag_result r;
  int n = as_sockdiag_udp(g_diag_fd, family, a, static_cast<uint16_t>(port), &r);
  if (n < 0) { /* a fresh socket next time: no stale reply can linger */
    close(g_diag_fd);
    g_diag_fd = -1;
    return ThrowErrno(env, -n, "sock_diag");
  }
  return n == 0 ? env.Null() : Napi::Number::New(env, r.inode);
}

// tcpDiagDump(): Buffer — every TCP socket of this network namespace except TIME_WAIT ones (LISTEN included), both
// families, as AS_SOCKDIAG_REC_SIZE-byte records (sockdiag.h), by NLM_F_DUMP on the kept sock_diag socket: the kernel
// leaves the TIME_WAIT sockets out, so they are never formatted nor copied (the daemon's sweep, src/daemon/listeners.ts).
// A kernel without IPv6 answers the AF_INET6 dump with EAFNOSUPPORT or ENOENT: no IPv6 sockets. Throws an errno error
// otherwise (EAGAIN: the dump overran the socket's buffer, some sockets were lost); the socket is then reopened on the
// next call, since a failed dump may still be running on it.
Napi::Value TcpDiagDump(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const uint32_t states = ((1u << 12) - 2) & ~(1u << 6); /* TCP_ESTABLISHED (1) .. TCP_CLOSING (11), not TIME_WAIT (6) */
  int e = EnsureDiag();
  if (e) return ThrowErrno(env, e, "socket");
  uint8_t *part[2] = {nullptr, nullptr};
  size_t len[2] = {0, 0};
  const int families[2] = {AF_INET, AF_INET6};
  for (int i = 0; i < 2; i++) {
    int n = as_sockdiag_dump_tcp(g_diag_fd, families[i], states, &part[i], &len[i]);
    if (n == 0) continue;
    if (families[i] == AF_INET6 && (n == -EAFNOSUPPORT || n == -ENOENT)) continue; /* no IPv6 in this kernel */
    free(part[0]);
    close(g_diag_fd);
    g_diag_fd = -1;
    return ThrowErrno(env, -n, "sock_diag");
  }
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, len[0] + len[1]);
  if (len[0]) memcpy(out.Data(), part[0], len[0]);
  if (len[1]) memcpy(out.Data() + len[0], part[1], len[1]);
  free(part[0]);
  free(part[1]);
  return out;
}

// lockFile(path: string): {fd} | {holder} — an exclusive flock on path, held by fd for the process's life, with this
// process's pid written in the file (statelock.h); {holder: pid} when another process holds it (0: pid unknown).
Napi::Value LockFile(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowType(env, "lockFile(path: string)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.empty() || path.find('\0') != std::string::npos) return ThrowErrno(env, EINVAL, "open");
  pid_t holder = 0;
  int fd = as_statelock_take(path.c_str(), getpid(), &holder);
  Napi::Object o = Napi::Object::New(env);
  if (fd == -EWOULDBLOCK) {
    o.Set("holder", Napi::Number::New(env, holder));
    return o;
  }
  if (fd < 0) return ThrowErrno(env, -fd, "flock");
  o.Set("fd", Napi::Number::New(env, fd));
  return o;
}

// generatorsCgroupId(): bigint — the cgroup id of <cgroup2>/appswitch/generators (ENOENT until a launcher made it).
Napi::Value GeneratorsCgroupId(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint64_t id = 0;
  int r = as_guard_generators_id(&id);
  if (r < 0) return ThrowErrno(env, -r, "stat");
  return Napi::BigInt::New(env, id);
}

// The decision table (dtab.h): the daemon maps each table it creates read-write, once, for its lifetime.
std::map<int, uint8_t *> g_tables;
// The host's shared counters and identity table, by fd (hostShmCreate), mapped read-write for the process's life.
std::map<int, struct as_hostshm *> g_shms;

// dtabCreate(): number — a new decision-table memfd (published by dtabPublish, handed to generators with dup()).
Napi::Value DtabCreate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = as_dtab_create("appswitch-decisions", AS_DTAB_SIZE);
  if (fd < 0) return ThrowErrno(env, -fd, "memfd_create");
  void *m = mmap(nullptr, AS_DTAB_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "mmap");
  }
  g_tables[fd] = static_cast<uint8_t *>(m);
  return Napi::Number::New(env, fd);
}

// dtabPublish(fd, body: Buffer): number — the new generation; E2BIG (the table is disabled) when it does not fit.
Napi::Value DtabPublish(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsBuffer()) return ThrowType(env, "dtabPublish(fd: number, body: Buffer)");
  auto it = g_tables.find(info[0].As<Napi::Number>().Int32Value());
  if (it == g_tables.end()) return ThrowErrno(env, EBADF, "dtabPublish");
  auto body = info[1].As<Napi::Buffer<uint8_t>>();
  int64_t g = as_dtab_publish(it->second, body.Data(), body.Length());
  if (g < 0) return ThrowErrno(env, (int)-g, "dtabPublish");
  return Napi::Number::New(env, (double)g);
}

// hostShmCreate(): { fd, counters: Buffer } — the shared counters (dtab.h struct as_hostshm), mapped read-write; the
// Buffer is a view of the mapping for the daemon's in-flight measurements (it lives as long as the process).
Napi::Value HostShmCreate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = as_dtab_create("appswitch-counters", AS_SHM_SIZE);
  if (fd < 0) return ThrowErrno(env, -fd, "memfd_create");
  void *m = mmap(nullptr, AS_SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "mmap");
  }
  auto *shm = static_cast<struct as_hostshm *>(m);
  shm->magic = AS_SHM_MAGIC;
  g_shms[fd] = shm;
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", Napi::Number::New(env, fd));
  o.Set("counters", Napi::Buffer<uint8_t>::New(env, reinterpret_cast<uint8_t *>(shm->inflight), sizeof(shm->inflight)));
  return o;
}

// The endpoint (ip16: Buffer of 16, port) at arguments i, i + 1.
static bool GetEp(const Napi::CallbackInfo &info, size_t i, struct as_ep *e) {
  if (info.Length() < i + 2 || !info[i].IsBuffer() || !info[i + 1].IsNumber()) return false;
  auto b = info[i].As<Napi::Buffer<uint8_t>>();
  uint32_t port = info[i + 1].As<Napi::Number>().Uint32Value();
  if (b.Length() != 16 || port > 65535) return false;
  memcpy(e->ip, b.Data(), 16);
  e->port = (uint16_t)port;
  return true;
}

// identPut(shmFd, srcIp16, srcPort, dstIp16, dstPort, vip16, appId): number — writes an entry into the host's identity
// table (dtab.h as_ident) as a client's generator does after its connect(): the connection src -> dst comes from the
// app appId known as vip16 (tests of the table). 0, or EBUSY (not written).
Napi::Value IdentPut(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct as_ep src, dst;
  if (info.Length() < 7 || !info[0].IsNumber() || !GetEp(info, 1, &src) || !GetEp(info, 3, &dst) || !info[5].IsBuffer() ||
      info[5].As<Napi::Buffer<uint8_t>>().Length() != 16 || !info[6].IsString())
    return ThrowType(env, "identPut(shmFd, srcIp16, srcPort, dstIp16, dstPort, vip16, appId)");
  auto it = g_shms.find(info[0].As<Napi::Number>().Int32Value());
  if (it == g_shms.end()) return ThrowErrno(env, EBADF, "identPut");
  std::string app = info[6].As<Napi::String>().Utf8Value();
  int r = as_ident_put(it->second, &src, &dst, info[5].As<Napi::Buffer<uint8_t>>().Data(), app.c_str());
  return Napi::Number::New(env, r < 0 ? -r : 0);
}

// preambleMake(key16, clientIp16, clientPort, fromIp16, fromPort, toIp16, toPort, nowMs): Buffer — the ingress preamble
// (preamble.h) for a relayed connection from -> to on behalf of client (the Node forwarder's, and tests').
Napi::Value PreambleMake(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct as_ep client, from, to;
  if (info.Length() < 8 || !info[0].IsBuffer() || info[0].As<Napi::Buffer<uint8_t>>().Length() != AS_MAC_KEY ||
      !GetEp(info, 1, &client) || !GetEp(info, 3, &from) || !GetEp(info, 5, &to) || !info[7].IsNumber())
    return ThrowType(env, "preambleMake(key16, clientIp16, clientPort, fromIp16, fromPort, toIp16, toPort, nowMs)");
  uint8_t out[AS_PREAMBLE_LEN];
  as_preamble_make(out, info[0].As<Napi::Buffer<uint8_t>>().Data(), &client, &from, &to, (uint64_t)info[7].As<Napi::Number>().Int64Value());
  return Napi::Buffer<uint8_t>::Copy(env, out, sizeof(out));
}

// preambleCheck(preamble48, keys (n*16 bytes), fromIp16, fromPort, toIp16, toPort, nowMs): { ip16, port } | errno —
// what an instance's generator concludes from a preamble (tests).
Napi::Value PreambleCheck(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct as_ep from, to, client;
  if (info.Length() < 7 || !info[0].IsBuffer() || info[0].As<Napi::Buffer<uint8_t>>().Length() != AS_PREAMBLE_LEN || !info[1].IsBuffer() ||
      info[1].As<Napi::Buffer<uint8_t>>().Length() % AS_MAC_KEY || !GetEp(info, 2, &from) || !GetEp(info, 4, &to) || !info[6].IsNumber())
    return ThrowType(env, "preambleCheck(preamble48, keys, fromIp16, fromPort, toIp16, toPort, nowMs)");
  auto keys = info[1].As<Napi::Buffer<uint8_t>>();
  int r = as_preamble_check(info[0].As<Napi::Buffer<uint8_t>>().Data(), (const uint8_t(*)[AS_MAC_KEY])keys.Data(),
                            (int)(keys.Length() / AS_MAC_KEY), &from, &to, (uint64_t)info[6].As<Napi::Number>().Int64Value(), &client);
  if (r < 0) return Napi::Number::New(env, -r);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ip16", Napi::Buffer<uint8_t>::Copy(env, client.ip, 16));
  o.Set("port", Napi::Number::New(env, client.port));
  return o;
}

// identGet(shmFd, srcIp16, srcPort, dstIp16, dstPort, take): { ip16, app } | null — the
// entry for the connection src -> dst, as a server's generator finds it (take: used up, as an accept does).
Napi::Value IdentGet(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct as_ep src, dst;
  if (info.Length() < 6 || !info[0].IsNumber() || !GetEp(info, 1, &src) || !GetEp(info, 3, &dst) || !info[5].IsBoolean())
    return ThrowType(env, "identGet(shmFd, srcIp16, srcPort, dstIp16, dstPort, take)");
  auto it = g_shms.find(info[0].As<Napi::Number>().Int32Value());
  if (it == g_shms.end()) return ThrowErrno(env, EBADF, "identGet");
  struct as_ident_found f;
  if (!as_ident_get(it->second, &src, &dst, &f, info[5].As<Napi::Boolean>().Value() ? 1 : 0)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ip16", Napi::Buffer<uint8_t>::Copy(env, f.identity, 16));
  o.Set("app", Napi::String::New(env, std::string(f.app, strnlen(f.app, sizeof(f.app)))));
  return o;
}

// dtabDecide(tableFd, shmFd, appId, ip16: Buffer, port, tried?: Buffer): {verdict, ip16?, port?, fast?, alternatives?,
// serverSock?} — the generator's own decision (dtab.c), for tests of what the daemon publishes.
Napi::Value DtabDecide(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsBuffer() || !info[4].IsNumber())
    return ThrowType(env, "dtabDecide(tableFd, shmFd, appId, ip16, port, tried?)");
  struct as_dtab t;
  memset(&t, 0, sizeof(t));
  t.app_index = -1;
  std::string id = info[2].As<Napi::String>().Utf8Value();
  int r = as_dtab_attach(&t, info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(), id.c_str());
  if (r < 0) return ThrowErrno(env, -r, "mmap");
  struct as_ep dst;
  auto ip = info[3].As<Napi::Buffer<uint8_t>>();
  if (ip.Length() != 16) return ThrowType(env, "ip16 must be 16 bytes");
  memcpy(dst.ip, ip.Data(), 16);
  dst.port = (uint16_t)info[4].As<Napi::Number>().Uint32Value();
  struct as_ep tried[8];
  int ntried = 0;
  if (info.Length() > 5 && info[5].IsBuffer()) {
    auto tb = info[5].As<Napi::Buffer<uint8_t>>();
    for (size_t o = 0; o + 18 <= tb.Length() && ntried < 8; o += 18, ntried++) {
      memcpy(tried[ntried].ip, tb.Data() + o, 16);
      tried[ntried].port = (uint16_t)(tb.Data()[o + 16] << 8 | tb.Data()[o + 17]);
    }
  }
  struct as_dt_pick out;
  int v = as_dtab_decide(&t, &dst, 0, tried, ntried, &out);
  as_dtab_detach(&t);
  Napi::Object o = Napi::Object::New(env);
  o.Set("verdict", Napi::Number::New(env, v));
  if (v == AS_DT_PICKED) {
    o.Set("ip16", Napi::Buffer<uint8_t>::Copy(env, out.real.ip, 16));
    o.Set("port", Napi::Number::New(env, out.real.port));
    o.Set("fast", Napi::Boolean::New(env, out.fast != 0));
    o.Set("alternatives", Napi::Boolean::New(env, out.alternatives != 0));
    o.Set("serverSock", Napi::String::New(env, out.server_sock));
  }
  return o;
}

// dtabIngressProbe(tableFd, appId, ip16: Buffer, hostPort): { isGateway, steeredHere, isLocal, keys: Buffer[] } — the
// generators' ingress readers (dtab.c) on a published table, as app appId's generator would call them, for tests of
// what the daemon publishes.
Napi::Value DtabIngressProbe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsBuffer() || !info[3].IsNumber())
    return ThrowType(env, "dtabIngressProbe(tableFd, appId, ip16, hostPort)");
  auto ip = info[2].As<Napi::Buffer<uint8_t>>();
  uint32_t port = info[3].As<Napi::Number>().Uint32Value();
  if (ip.Length() != 16 || port > 65535) return ThrowType(env, "dtabIngressProbe: ip16 must be 16 bytes and hostPort at most 65535");
  struct as_dtab t;
  memset(&t, 0, sizeof(t));
  t.app_index = -1;
  std::string id = info[1].As<Napi::String>().Utf8Value();
  int r = as_dtab_attach(&t, info[0].As<Napi::Number>().Int32Value(), -1, id.c_str());
  if (r < 0) return ThrowErrno(env, -r, "mmap");
  uint8_t keys[AS_DT_INGRESS_KEYS][16];
  int gw = as_dtab_is_gateway(&t, ip.Data());
  int here = as_dtab_steered_here(&t, (uint16_t)port);
  int local = as_dtab_is_local(&t, ip.Data());
  int nkeys = as_dtab_preamble_keys(&t, keys, AS_DT_INGRESS_KEYS);
  as_dtab_detach(&t);
  Napi::Object o = Napi::Object::New(env);
  o.Set("isGateway", Napi::Boolean::New(env, gw != 0));
  o.Set("steeredHere", Napi::Boolean::New(env, here != 0));
  o.Set("isLocal", Napi::Boolean::New(env, local != 0));
  Napi::Array ka = Napi::Array::New(env, nkeys > 0 ? nkeys : 0);
  for (int i = 0; i < nkeys; i++) ka.Set(i, Napi::Buffer<uint8_t>::Copy(env, keys[i], 16));
  o.Set("keys", ka);
  return o;
}

// dup(fd): number — a new O_CLOEXEC descriptor for the same file (a HELLO reply's fds are closed once sent).
Napi::Value Dup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return ThrowType(env, "dup(fd: number)");
  int fd = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return ThrowErrno(env, errno, "dup");
  return Napi::Number::New(env, fd);
}

// sk_lookup steering (sklookup.h): handles are small integers naming an open program + maps + link.
std::map<int, struct as_skl> g_skl;
int g_skl_next = 1;

// skLookupOpen(netnsPath?: string): number — loads the program and links it to the daemon's network namespace, or to
// the namespace file given (e.g. /run/netns/NAME: tests). EOPNOTSUPP: no sk_lookup in this kernel; EPERM: no
// CAP_BPF/CAP_NET_ADMIN. The verifier's log, when it refused the program, is in the error's message.
Napi::Value SkLookupOpen(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int ns = -1;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsString()) return ThrowType(env, "skLookupOpen(netnsPath?: string)");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) return ThrowErrno(env, errno, "open");
  }
  static char log[16384];
  struct as_skl s;
  int r = as_skl_open_in(&s, ns, log, sizeof(log));
  if (ns >= 0) close(ns);
  if (r < 0) {
    if ((r == -EACCES || r == -EINVAL) && log[0]) {  // the verifier refused the program: a bug of ours, say why
      std::string msg = std::string("bpf ") + ErrnoName(-r) + " (" + strerror(-r) + "): verifier: " + std::string(log).substr(0, 2000);
      Napi::Error e = Napi::Error::New(env, msg);
      e.Set("errno", Napi::Number::New(env, r));
      e.Set("code", Napi::String::New(env, ErrnoName(-r)));
      e.Set("syscall", Napi::String::New(env, "bpf"));
      e.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return ThrowErrno(env, -r, "bpf");
  }
  int h = g_skl_next++;
  g_skl[h] = s;
  return Napi::Number::New(env, h);
}

struct as_skl *SklOf(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) return nullptr;
  auto it = g_skl.find(info[0].As<Napi::Number>().Int32Value());
  return it == g_skl.end() ? nullptr : &it->second;
}

bool GetPort(const Napi::CallbackInfo &info, size_t i, unsigned *port) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 1 || v > 65535) return false;
  *port = static_cast<unsigned>(v);
  return true;
}

// skLookupSet(h, port, fd | fds[]): steers new TCP connections to port (any local address) to the listening
// socket(s) (up to 8; one is picked at random per connection). The maps keep their own references.
Napi::Value SkLookupSet(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  unsigned port;
  if (!GetPort(info, 1, &port) || info.Length() < 3) return ThrowType(env, "skLookupSet(handle, port 1..65535, fd | fds)");
  struct as_skl *s = SklOf(info);
  if (!s) return ThrowErrno(env, EBADF, "skLookupSet");
  int fds[AS_SKL_SLOTS];
  unsigned n = 0;
  if (info[2].IsArray()) {
    Napi::Array a = info[2].As<Napi::Array>();
    if (a.Length() < 1 || a.Length() > AS_SKL_SLOTS) return ThrowType(env, "skLookupSet: 1 to 8 fds");
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber()) return ThrowType(env, "skLookupSet: fds must be numbers");
      int64_t f = v.As<Napi::Number>().Int64Value();
      if (f < 0 || f > INT32_MAX) return ThrowType(env, "skLookupSet: bad fd");
      fds[n++] = static_cast<int>(f);
    }
  } else if (GetFd(info, 2, &fds[0])) {
    n = 1;
  } else {
    return ThrowType(env, "skLookupSet(handle, port, fd | fds)");
  }
  int r = as_skl_set(s, port, fds, n);
  if (r < 0) return ThrowErrno(env, -r, "skLookupSet");
  return env.Undefined();
}

// skLookupDelete(h, port): stops steering port (ENOENT when it was not steered).
Napi::Value SkLookupDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  unsigned port;
  if (!GetPort(info, 1, &port)) return ThrowType(env, "skLookupDelete(handle, port 1..65535)");
  struct as_skl *s = SklOf(info);
  if (!s) return ThrowErrno(env, EBADF, "skLookupDelete");
  int r = as_skl_del(s, port);
  if (r < 0) return ThrowErrno(env, -r, "skLookupDelete");
  return env.Undefined();
}

// skLookupClose(h): detaches the program and frees its maps (EBADF for an unknown handle).
Napi::Value SkLookupClose(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return ThrowType(env, "skLookupClose(handle)");
  auto it = g_skl.find(info[0].As<Napi::Number>().Int32Value());
  if (it == g_skl.end()) return ThrowErrno(env, EBADF, "skLookupClose");
  as_skl_close(&it->second);
  g_skl.erase(it);
  return env.Undefined();
}

// pidGetFd(pid, fd): number — an O_CLOEXEC duplicate of process pid's descriptor fd (pidfd_getfd(2), taskfd.h).
Napi::Value PidGetFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int pid, fd;
  if (!GetFd(info, 0, &pid) || pid == 0 || !GetFd(info, 1, &fd)) return ThrowType(env, "pidGetFd(pid > 0, fd >= 0)");
  int r = as_task_dup_fd(pid, fd);
  if (r < 0) return ThrowErrno(env, -r, "pidfd_getfd");
  return Napi::Number::New(env, r);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("skLookupOpen", Napi::Function::New(env, SkLookupOpen));
  exports.Set("skLookupSet", Napi::Function::New(env, SkLookupSet));
  exports.Set("skLookupDelete", Napi::Function::New(env, SkLookupDelete));
  exports.Set("skLookupClose", Napi::Function::New(env, SkLookupClose));
  exports.Set("pidGetFd", Napi::Function::New(env, PidGetFd));
  exports.Set("dtabCreate", Napi::Function::New(env, DtabCreate));
  exports.Set("dtabPublish", Napi::Function::New(env, DtabPublish));
  exports.Set("hostShmCreate", Napi::Function::New(env, HostShmCreate));
  exports.Set("dup", Napi::Function::New(env, Dup));
  exports.Set("identPut", Napi::Function::New(env, IdentPut));
  exports.Set("identGet", Napi::Function::New(env, IdentGet));
  exports.Set("preambleMake", Napi::Function::New(env, PreambleMake));
  exports.Set("preambleCheck", Napi::Function::New(env, PreambleCheck));
  exports.Set("dtabDecide", Napi::Function::New(env, DtabDecide));
  exports.Set("dtabIngressProbe", Napi::Function::New(env, DtabIngressProbe));
  exports.Set("tcpSocketCgroup", Napi::Function::New(env, TcpSocketCgroup));
  exports.Set("udpSocketInode", Napi::Function::New(env, UdpSocketInode));
  exports.Set("tcpDiagDump", Napi::Function::New(env, TcpDiagDump));
  exports.Set("tcpDiagRecordSize", Napi::Number::New(env, AS_SOCKDIAG_REC_SIZE));
  exports.Set("generatorsCgroupId", Napi::Function::New(env, GeneratorsCgroupId));
  exports.Set("lockFile", Napi::Function::New(env, LockFile));
  exports.Set("seqpacketListen", Napi::Function::New(env, SeqpacketListen));
  exports.Set("seqpacketConnect", Napi::Function::New(env, SeqpacketConnect));
  exports.Set("seqpacketPair", Napi::Function::New(env, SeqpacketPair));
  exports.Set("accept", Napi::Function::New(env, Accept));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred));
  exports.Set("recv", Napi::Function::New(env, Recv));
  exports.Set("send", Napi::Function::New(env, Send));
  exports.Set("drain", Napi::Function::New(env, Drain));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("execve", Napi::Function::New(env, Execve));
  exports.Set("Poller", Poller::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(appswitch, Init)
