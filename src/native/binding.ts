/** The only importer of the compiled addon: loads build/Release/appswitch.node and types its raw surface.
 * Also locates the appswitch-launcher executable (the per-program trap generator) built beside it. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppswitchError, SyscallError } from '../errors.js';

/** A received SEQPACKET message; `data.length === 0` means the peer closed. Received fds are O_CLOEXEC. */
export interface Received {
  data: Buffer;
  fds: number[];
  /** Descriptors came with the message but did not fit (MSG_CTRUNC: this process is at its RLIMIT_NOFILE or the
   * system at its file limit); the kernel closed them and `fds` is empty. The message itself is intact. */
  fdsLost: boolean;
}

/** Peer of an accepted trap connection, from SO_PEERCRED. */
export interface Accepted {
  fd: number;
  pid: number;
  uid: number;
  gid: number;
}

/** Credentials of a Unix socket's peer (SO_PEERCRED), as of its connect(). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** Readiness of a raw fd on libuv's loop. Events: 1 readable, 2 writable. */
export interface Poller {
  start(events: number): void;
  stop(): void;
}

/** A TCP socket found by sock_diag: its TCP state and the cgroup v2 id of the task that created it (null for a
 * time-wait mini-socket, which keeps none). */
export interface TcpSocketInfo {
  state: number;
  cgroup: bigint | null;
  /** The socket's inode (0 for a time-wait mini-socket). */
  inode: number;
}

/** lockFile's answer: the descriptor that holds the lock, or the pid of the process that holds it (0: unknown). */
export type LockResult = { fd: number; holder?: undefined } | { fd?: undefined; holder: number };

/** A generator's decision from a published table (tests: native/dtab.c run on the daemon's memfd). verdict: 0 ask the
 * daemon, 1 picked, 2 no such service, 3 denied by policy, 4 every instance tried. */
export interface DtabDecision {
  verdict: number;
  ip16?: Buffer;
  port?: number;
  fast?: boolean;
  alternatives?: boolean;
  serverSock?: string;
}

/** What a generator's ingress readers (native/dtab.c: as_dtab_is_gateway, as_dtab_steered_here, as_dtab_is_local,
 * as_dtab_preamble_keys) answer from a published table: for tests. */
export interface DtabIngressProbe {
  isGateway: boolean;
  steeredHere: boolean;
  isLocal: boolean;
  keys: Buffer[];
}

/** An entry of the host's identity table (native/dtab.h as_ident): 'outside' carries the outside client's address
 * (ip16) and port; 'app' a same-host app's vip and id. */
export interface IdentEntry {
  /** The client app's vip. */
  ip16: Buffer;
  app: string;
}

interface RawBinding {
  lockFile(path: string): LockResult;
  tcpSocketCgroup(src: string, sport: number, dst: string, dport: number): TcpSocketInfo | null;
  udpSocketInode(ip: string, port: number): number | null;
  tcpDiagDump(): Buffer;
  tcpDiagRecordSize: number;
  generatorsCgroupId(): bigint;
  seqpacketListen(path: string, mode: number): number;
  seqpacketConnect(path: string): number;
  seqpacketPair(): [number, number];
  accept(fd: number): Accepted | null;
  peerCred(fd: number): PeerCred;
  recv(fd: number): Received | null;
  send(fd: number, data: Buffer, fds?: number[]): number;
  drain(fd: number, max: number): number;
  close(fd: number): void;
  execve(file: string, argv: string[], env: string[]): never;
  dtabCreate(): number;
  dtabPublish(fd: number, body: Buffer): number;
  hostShmCreate(): { fd: number; counters: Buffer };
  dup(fd: number): number;
  identPut(shmFd: number, srcIp: Buffer, srcPort: number, dstIp: Buffer, dstPort: number, vip: Buffer, appId: string): number;
  identGet(shmFd: number, srcIp: Buffer, srcPort: number, dstIp: Buffer, dstPort: number, take: boolean): IdentEntry | null;
  preambleMake(key: Buffer, clientIp: Buffer, clientPort: number, fromIp: Buffer, fromPort: number, toIp: Buffer, toPort: number, nowMs: number): Buffer;
  preambleCheck(pre: Buffer, keys: Buffer, fromIp: Buffer, fromPort: number, toIp: Buffer, toPort: number, nowMs: number): { ip16: Buffer; port: number } | number;
  dtabDecide(t: number, s: number, app: string, ip: Buffer, port: number, tried?: Buffer): DtabDecision;
  dtabIngressProbe(t: number, app: string, ip: Buffer, hostPort: number): DtabIngressProbe;
  Poller: new (fd: number, cb: (status: number, events: number) => void) => Poller;
  skLookupOpen(netnsPath?: string): number;
  skLookupSet(h: number, port: number, fds: number | number[]): void;
  skLookupDelete(h: number, port: number): void;
  skLookupClose(h: number): void;
  pidGetFd(pid: number, fd: number): number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/src/native -> repo root, or src/native -> repo root (tests run the sources). */
function repoRoot(): string {
  for (const up of ['../../..', '../..']) {
    const root = path.resolve(here, up);
    if (existsSync(path.join(root, 'binding.gyp'))) return root;
  }
  return path.resolve(here, '../..');
}

const root = repoRoot();
const candidates = ['build/Release', 'build/Debug'].map((d) => path.join(root, d));

function load(): RawBinding {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const dir of candidates) {
    const file = path.join(dir, 'appswitch.node');
    tried.push(file);
    if (!existsSync(file)) continue;
    return require(file) as RawBinding;
  }
  throw new AppswitchError('ERR_NATIVE_LOAD', `appswitch native addon not found; tried:\n  ${tried.join('\n  ')}\nrun \`npm install\` (or \`npm run build\`)`);
}

let cached: RawBinding | undefined;
function raw(): RawBinding {
  cached ??= load();
  return cached;
}

/** Path of the trap generator executable: APPSWITCH_LAUNCHER when set (tests and packagers: the daemon admits only
 * that file, and the CLI execs it), else the one built beside this package. */
export function launcherPath(): string {
  const chosen = process.env.APPSWITCH_LAUNCHER;
  if (chosen) {
    if (!existsSync(chosen)) throw new AppswitchError('ERR_NATIVE_LOAD', `appswitch-launcher not found at APPSWITCH_LAUNCHER=${chosen}`);
    return path.resolve(chosen);
  }
  const tried: string[] = [];
  for (const dir of candidates) {
    const file = path.join(dir, 'appswitch-launcher');
    tried.push(file);
    if (existsSync(file)) return file;
  }
  throw new AppswitchError('ERR_NATIVE_LOAD', `appswitch-launcher not found; tried:\n  ${tried.join('\n  ')}`);
}

/** Path of the gateway's relay executable (native/relay_main.c), or undefined when it was not built. */
export function relayPath(): string | undefined {
  for (const dir of candidates) {
    const file = path.join(dir, 'appswitch-relay');
    if (existsSync(file)) return file;
  }
  return undefined;
}

function wrap<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    try {
      return fn(...args);
    } catch (e) {
      const err = e as { message?: string; errno?: number; code?: string; syscall?: string };
      if (typeof err.errno === 'number' && typeof err.code === 'string' && typeof err.syscall === 'string') {
        throw new SyscallError(err.message ?? 'system call failed', err.errno, err.code, err.syscall);
      }
      throw e;
    }
  };
}

/** Typed native surface; every failing system call throws SyscallError. */
export const native = {
  seqpacketListen: wrap((p: string, mode: number): number => raw().seqpacketListen(p, mode)),
  seqpacketConnect: wrap((p: string): number => raw().seqpacketConnect(p)),
  /** A connected SOCK_SEQPACKET pair, both close-on-exec (a child process's control socket). */
  seqpacketPair: wrap((): [number, number] => raw().seqpacketPair()),
  accept: wrap((fd: number): Accepted | null => raw().accept(fd)),
  peerCred: wrap((fd: number): PeerCred => raw().peerCred(fd)),
  recv: wrap((fd: number): Received | null => raw().recv(fd)),
  send: wrap((fd: number, data: Buffer, fds?: number[]): number => raw().send(fd, data, fds)),
  /** Reads and discards up to `max` (<= 4096) bytes from a stream socket without waiting; returns how many. */
  drain: wrap((fd: number, max: number): number => raw().drain(fd, max)),
  close: wrap((fd: number): void => raw().close(fd)),
  execve: wrap((file: string, argv: string[], env: string[]): never => raw().execve(file, argv, env)),
  /** The TCP socket whose local end is src:sport and remote end dst:dport (IPv4 or IPv6 text, same family), by one
   * synchronous NETLINK_SOCK_DIAG round trip (~10 µs); null when there is none. */
  tcpSocketCgroup: wrap((src: string, sport: number, dst: string, dport: number): TcpSocketInfo | null => raw().tcpSocketCgroup(src, sport, dst, dport)),
  /** The inode of the UDP socket a datagram to ip:port would reach (a socket bound there or a wildcard on that port),
   * or null: one sock_diag lookup. */
  udpSocketInode: wrap((ip: string, port: number): number | null => raw().udpSocketInode(ip, port)),
  /** Every TCP socket of this process's network namespace except TIME_WAIT ones (LISTEN included), IPv4 and IPv6, as
   * fixed records (native/sockdiag.h as_sockdiag_rec; decoded by src/daemon/tcp-diag.ts), by one sock_diag dump on the
   * socket the lookups above keep open. EMFILE/ENFILE: no descriptor for that socket; EAGAIN: the dump overran and
   * lost sockets; ENOENT (or another code): this kernel has no inet_diag for TCP. */
  tcpDiagDump: wrap((): Buffer => raw().tcpDiagDump()),
  /** The size of one tcpDiagDump record (AS_SOCKDIAG_REC_SIZE). */
  tcpDiagRecordSize: (): number => raw().tcpDiagRecordSize,
  /** The cgroup id of <cgroup2>/appswitch/generators, where every trap generator runs (native/sockguard.h). */
  generatorsCgroupId: wrap((): bigint => raw().generatorsCgroupId()),
  /** An exclusive flock(2) on path (created 0644), held by the returned fd until it is closed or the process ends,
   * with this process's pid written in the file; `{ holder }` when another process holds it (native/statelock.h). */
  lockFile: wrap((p: string): LockResult => raw().lockFile(p)),
  /** A new decision-table memfd, mapped read-write in this process (native/dtab.h). */
  dtabCreate: wrap((): number => raw().dtabCreate()),
  /** Publishes a compiled body (src/trap/decision-table.ts) into the table; returns its generation (E2BIG when it
   * does not fit: the table is then disabled and generators ask the daemon). */
  dtabPublish: wrap((fd: number, body: Buffer): number => raw().dtabPublish(fd, body)),
  /** The host's shared counters (round-robin positions, in-flight connections), mapped read-write; `counters` views
   * the in-flight array. */
  hostShmCreate: wrap((): { fd: number; counters: Buffer } => raw().hostShmCreate()),
  /** A close-on-exec duplicate of fd. */
  dup: wrap((fd: number): number => raw().dup(fd)),
  /** Writes an entry for the connection srcIp:srcPort -> dstIp:dstPort from app appId (vip) into the host's identity
   * table of hostShmCreate's fd (native/dtab.h as_ident), as a client's generator does: for tests. 0, or EBUSY. */
  identPut: wrap((shmFd: number, srcIp: Buffer, srcPort: number, dstIp: Buffer, dstPort: number, vip: Buffer, appId: string): number =>
    raw().identPut(shmFd, srcIp, srcPort, dstIp, dstPort, vip, appId),
  ),
  /** The ingress preamble (native/preamble.h) a relay writes first on a connection from -> to for an outside client. */
  preambleMake: wrap((key: Buffer, clientIp: Buffer, clientPort: number, fromIp: Buffer, fromPort: number, toIp: Buffer, toPort: number, nowMs: number): Buffer =>
    raw().preambleMake(key, clientIp, clientPort, fromIp, fromPort, toIp, toPort, nowMs),
  ),
  /** What a generator concludes from a preamble read on the connection from -> to: the outside client, or an errno
   * (EBADMSG: not a preamble; EPERM: no key makes its MAC, or its time is off). */
  preambleCheck: wrap((pre: Buffer, keys: Buffer, fromIp: Buffer, fromPort: number, toIp: Buffer, toPort: number, nowMs: number): { ip16: Buffer; port: number } | number =>
    raw().preambleCheck(pre, keys, fromIp, fromPort, toIp, toPort, nowMs),
  ),
  /** The identity table's entry for the connection src -> dst as a server's generator finds it (take: used up). */
  identGet: wrap((shmFd: number, srcIp: Buffer, srcPort: number, dstIp: Buffer, dstPort: number, take: boolean): IdentEntry | null =>
    raw().identGet(shmFd, srcIp, srcPort, dstIp, dstPort, take),
  ),
  /** What a generator would decide for app `app` connecting to ip16:port (tried: 18-byte records of endpoints that
   * refused), read from the table and counters by native/dtab.c itself: for tests. */
  dtabDecide: wrap((t: number, s: number, app: string, ip: Buffer, port: number, tried?: Buffer): DtabDecision => raw().dtabDecide(t, s, app, ip, port, tried)),
  /** The generators' ingress readers on table t, as app `app`'s generator would call them: whether ip16 is a live
   * gateway's address and this host's, whether hostPort is steered to the app, and the preamble keys: for tests. */
  dtabIngressProbe: wrap((t: number, app: string, ip: Buffer, hostPort: number): DtabIngressProbe => raw().dtabIngressProbe(t, app, ip, hostPort)),
  /** Loads the sk_lookup steering program (native/sklookup.h) and links it to this process's network namespace, or
   * to the namespace file netnsPath (/run/netns/NAME, /proc/PID/ns/net); returns a handle. EOPNOTSUPP: the kernel
   * has no sk_lookup (< 5.9); EPERM: no CAP_BPF + CAP_NET_ADMIN. Callers fall back to the relay on either. */
  skLookupOpen: wrap((netnsPath?: string): number => raw().skLookupOpen(netnsPath)),
  /** New TCP connections to `port` on any local address go to one of the listening sockets `fds` (1..8, picked at
   * random per connection) instead of the normal listener lookup; replaces the port's previous set. The kernel keeps
   * its own references: the caller may close fds afterwards. EOPNOTSUPP: an fd is not a TCP listener. */
  skLookupSet: wrap((h: number, port: number, fds: number | number[]): void => raw().skLookupSet(h, port, fds)),
  /** Stops steering `port` (ENOENT when it was not steered). */
  skLookupDelete: wrap((h: number, port: number): void => raw().skLookupDelete(h, port)),
  /** Detaches the program (steered ports go back to the normal lookup) and frees its maps. EBADF: unknown handle. */
  skLookupClose: wrap((h: number): void => raw().skLookupClose(h)),
  /** A close-on-exec duplicate of process pid's descriptor fd (pidfd_getfd(2): CAP_SYS_PTRACE over it, as root). */
  pidGetFd: wrap((pid: number, fd: number): number => raw().pidGetFd(pid, fd)),
  poller(fd: number, cb: (status: number, events: number) => void): Poller {
    const P = raw().Poller;
    return new P(fd, cb);
  },
};
