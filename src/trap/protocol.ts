/** Wire format of the trap socket, mirrored from native/proto.h (a unit test pins the offsets), the sockaddr_in /
 * sockaddr_in6 encoding the generator uses, the typed request each message decodes into (once, at the trap server:
 * nothing behind it sees sockaddr bytes) and the Reply the trap server encodes. Pure: no I/O. */
import ipaddr from 'ipaddr.js';
import { Errno } from '../errors.js';
import { canonicalIp, type Endpoint } from '../table/endpoint.js';
import type { Proto } from '../table/service-table.js';
import { type DecidedRecord, decodeDecided } from './decided-wire.js';

export const PROTO_VERSION = 1;
export const HEADER_SIZE = 112;
export const ADDR_MAX = 32;
export const PAYLOAD_MAX = 8192;

export const MsgType = {
  HELLO: 1,
  BIND: 2,
  BOUND: 3,
  LISTEN: 4,
  CONNECT: 5,
  EXIT: 6,
  UNBOUND: 7,
  STARTED: 8,
  CONNECTED: 9,
  ACCEPT: 10,
  STATS: 11,
  OFFER: 12,
  CLAIMED: 13,
  UDP_FROM: 14,
  UDP_WHO: 15,
  DECIDED: 16,
} as const;
export type MsgTypeValue = (typeof MsgType)[keyof typeof MsgType];

/** Keep in sync with native/proto.h (AS_F_*). */
export const MsgFlag = { RETRY: 1, NONBLOCK: 2, ALTERNATIVES: 4, FASTPATH: 8, OFFER: 16, OFFERED: 32, SENTINEL: 64, UDP_PEER: 128, NOWHERE: 256, V6ONLY: 512, DECIDED: 1024, EGRESS: 2048, RELAYED: 4096 } as const;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;

/** One trap-socket message. Addresses are raw sockaddr bytes (empty when absent). */
export interface TrapMsg {
  type: number;
  version: number;
  seq: number;
  result: number;
  flags: number;
  pid: number;
  arg: number;
  cookie: bigint;
  addr: Buffer;
  addr2: Buffer;
  payload: Buffer;
}

export const OFFSETS = {
  type: 0,
  version: 2,
  seq: 4,
  result: 8,
  flags: 12,
  pid: 16,
  arg: 20,
  cookie: 24,
  addrLen: 32,
  addr2Len: 36,
  addr: 40,
  addr2: 72,
  payloadLen: 104,
} as const;

/** Decodes a message; returns undefined for anything malformed (short, bad lengths, unknown version). */
export function decodeMsg(buf: Buffer): TrapMsg | undefined {
  if (buf.length < HEADER_SIZE) return undefined;
  const version = buf.readUInt16LE(OFFSETS.version);
  if (version !== PROTO_VERSION) return undefined;
  const addrLen = buf.readUInt32LE(OFFSETS.addrLen);
  const addr2Len = buf.readUInt32LE(OFFSETS.addr2Len);
  const payloadLen = buf.readUInt32LE(OFFSETS.payloadLen);
  if (addrLen > ADDR_MAX || addr2Len > ADDR_MAX || payloadLen > PAYLOAD_MAX) return undefined;
  if (buf.length < HEADER_SIZE + payloadLen) return undefined;
  return {
    type: buf.readUInt16LE(OFFSETS.type),
    version,
    seq: buf.readUInt32LE(OFFSETS.seq),
    result: buf.readInt32LE(OFFSETS.result),
    flags: buf.readUInt32LE(OFFSETS.flags),
    pid: buf.readUInt32LE(OFFSETS.pid),
    arg: buf.readInt32LE(OFFSETS.arg),
    cookie: buf.readBigUInt64LE(OFFSETS.cookie),
    addr: Buffer.from(buf.subarray(OFFSETS.addr, OFFSETS.addr + addrLen)),
    addr2: Buffer.from(buf.subarray(OFFSETS.addr2, OFFSETS.addr2 + addr2Len)),
    payload: Buffer.from(buf.subarray(HEADER_SIZE, HEADER_SIZE + payloadLen)),
  };
}

/** Encodes a message; fields left out are zero. */
export function encodeMsg(m: Partial<TrapMsg> & { type: number }): Buffer {
  const payload = m.payload ?? Buffer.alloc(0);
  const addr = m.addr ?? Buffer.alloc(0);
  const addr2 = m.addr2 ?? Buffer.alloc(0);
  if (addr.length > ADDR_MAX || addr2.length > ADDR_MAX) throw new RangeError('address longer than ADDR_MAX');
  if (payload.length > PAYLOAD_MAX) throw new RangeError('payload longer than PAYLOAD_MAX');
  const buf = Buffer.alloc(HEADER_SIZE + payload.length);
  buf.writeUInt16LE(m.type, OFFSETS.type);
  buf.writeUInt16LE(m.version ?? PROTO_VERSION, OFFSETS.version);
  buf.writeUInt32LE(m.seq ?? 0, OFFSETS.seq);
  buf.writeInt32LE(m.result ?? 0, OFFSETS.result);
  buf.writeUInt32LE(m.flags ?? 0, OFFSETS.flags);
  buf.writeUInt32LE(m.pid ?? 0, OFFSETS.pid);
  buf.writeInt32LE(m.arg ?? 0, OFFSETS.arg);
  buf.writeBigUInt64LE(m.cookie ?? 0n, OFFSETS.cookie);
  buf.writeUInt32LE(addr.length, OFFSETS.addrLen);
  buf.writeUInt32LE(addr2.length, OFFSETS.addr2Len);
  addr.copy(buf, OFFSETS.addr);
  addr2.copy(buf, OFFSETS.addr2);
  buf.writeUInt32LE(payload.length, OFFSETS.payloadLen);
  payload.copy(buf, HEADER_SIZE);
  return buf;
}

/** AS_STATS payload (native/proto.h): the generator's trap counters since its previous AS_STATS. */
export const STATS_HEAD_SIZE = 8;
export const STATS_COUNT_SIZE = 8;
export const STATS_HIST_SIZE = 72;
export const STATS_BUCKETS = 13;
/** Upper bounds of the latency buckets (ns); the last bucket has none. Mirrors AS_STATS_BOUNDS_NS. */
export const STATS_BOUNDS_NS: readonly number[] = [5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 1e7, 1e8, 1e9];
/** AS_STATS_OTHER: a syscall outside the trapped set, or an errno too large to have its own counter. */
export const STATS_OTHER = 0xffff;
export const STATS_ERRNO_MAX = 134;

/** Answered traps of one syscall (x86_64 number) with one result (errno 0 = success). */
export interface TrapCount {
  syscall: number;
  errno: number;
  count: number;
}

/** Latencies of one syscall's traps: per-bucket counts (not cumulative; see STATS_BOUNDS_NS) and their sum. */
export interface TrapLatency {
  syscall: number;
  sumNs: number;
  buckets: number[];
}

/** One AS_STATS message: deltas since the generator's previous one. */
export interface TrapStatsDelta {
  counts: TrapCount[];
  latency: TrapLatency[];
}

/** Decodes an AS_STATS payload; undefined when its lengths do not add up. */
export function decodeTrapStats(p: Buffer): TrapStatsDelta | undefined {
  if (p.length < STATS_HEAD_SIZE) return undefined;
  const nCounts = p.readUInt16LE(0);
  const nHists = p.readUInt16LE(2);
  if (p.length !== STATS_HEAD_SIZE + nCounts * STATS_COUNT_SIZE + nHists * STATS_HIST_SIZE) return undefined;
  const counts: TrapCount[] = [];
  let o = STATS_HEAD_SIZE;
  for (let i = 0; i < nCounts; i++, o += STATS_COUNT_SIZE) {
    counts.push({ syscall: p.readUInt16LE(o), errno: p.readUInt16LE(o + 2), count: p.readUInt32LE(o + 4) });
  }
  const latency: TrapLatency[] = [];
  for (let i = 0; i < nHists; i++, o += STATS_HIST_SIZE) {
    const buckets: number[] = [];
    for (let b = 0; b < STATS_BUCKETS; b++) buckets.push(p.readUInt32LE(o + 16 + 4 * b));
    latency.push({ syscall: p.readUInt16LE(o), sumNs: Number(p.readBigUInt64LE(o + 8)), buckets });
  }
  return { counts, latency };
}

/** Encodes an AS_STATS payload (the generator's side; used by tests). */
export function encodeTrapStats(d: TrapStatsDelta): Buffer {
  const p = Buffer.alloc(STATS_HEAD_SIZE + d.counts.length * STATS_COUNT_SIZE + d.latency.length * STATS_HIST_SIZE);
  p.writeUInt16LE(d.counts.length, 0);
  p.writeUInt16LE(d.latency.length, 2);
  let o = STATS_HEAD_SIZE;
  for (const c of d.counts) {
    p.writeUInt16LE(c.syscall, o);
    p.writeUInt16LE(c.errno, o + 2);
    p.writeUInt32LE(c.count, o + 4);
    o += STATS_COUNT_SIZE;
  }
  for (const h of d.latency) {
    p.writeUInt16LE(h.syscall, o);
    p.writeBigUInt64LE(BigInt(Math.round(h.sumNs)), o + 8);
    for (let b = 0; b < STATS_BUCKETS; b++) p.writeUInt32LE(h.buckets[b] ?? 0, o + 16 + 4 * b);
    o += STATS_HIST_SIZE;
  }
  return p;
}

/** Names of the x86_64 syscalls the filter traps (the numbers AS_STATS carries). */
export const TRAPPED_SYSCALLS: Readonly<Record<number, string>> = {
  41: 'socket',
  42: 'connect',
  43: 'accept',
  44: 'sendto',
  45: 'recvfrom',
  46: 'sendmsg',
  47: 'recvmsg',
  49: 'bind',
  50: 'listen',
  51: 'getsockname',
  52: 'getpeername',
  54: 'setsockopt',
  55: 'getsockopt',
  288: 'accept4',
  299: 'recvmmsg',
  307: 'sendmmsg',
};

/** Decodes sockaddr_in / sockaddr_in6 bytes; undefined when not an inet address. */
export function decodeSockaddr(b: Buffer): Endpoint | undefined {
  if (b.length < 2) return undefined;
  const family = b.readUInt16LE(0);
  if (family === AF_INET && b.length >= 8) {
    return { ip: `${b[4]}.${b[5]}.${b[6]}.${b[7]}`, port: b.readUInt16BE(2) };
  }
  if (family === AF_INET6 && b.length >= 24 && b.readUInt32BE(8) === 0 && b.readUInt32BE(12) === 0 && b.readUInt32BE(16) === 0xffff) {
    return { ip: `${b[20]}.${b[21]}.${b[22]}.${b[23]}`, port: b.readUInt16BE(2) }; /* v4-mapped: shown as IPv4 */
  }
  if (family === AF_INET6 && b.length >= 24) {
    return { ip: canonicalIp(ipaddr.fromByteArray([...b.subarray(8, 24)]).toString()), port: b.readUInt16BE(2) };
  }
  return undefined;
}

/** Encodes an endpoint as sockaddr_in (IPv4) or sockaddr_in6 (IPv6); `family` forces AF_INET6 with a mapped v4. */
/** Parsed addresses by their text: the trap path encodes the same few endpoints over and over (node address, vips),
 * and ipaddr.js parsing was a visible part of the daemon's time per connection. Bounded: cleared when it grows. */
const parsed = new Map<string, ipaddr.IPv4 | ipaddr.IPv6>();

export function encodeSockaddr(ep: Endpoint, family?: number): Buffer {
  let a = parsed.get(ep.ip);
  if (!a) {
    a = ipaddr.parse(ep.ip);
    if (parsed.size >= 4096) parsed.clear();
    parsed.set(ep.ip, a);
  }
  const v4 = a.kind() === 'ipv4' ? (a as ipaddr.IPv4) : undefined;
  if (v4 && family !== AF_INET6) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(ep.port, 2);
    Buffer.from(v4.toByteArray()).copy(b, 4);
    return b;
  }
  const v6 = v4 ? v4.toIPv4MappedAddress() : (a as ipaddr.IPv6);
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(ep.port, 2);
  Buffer.from(v6.toByteArray()).copy(b, 8);
  return b;
}

/** What the daemon answers a request: a result (>= 0 or -errno) and up to two addresses. The trap server encodes it. */
export interface Reply {
  result: number;
  addr?: Buffer;
  addr2?: Buffer;
  payload?: Buffer;
  arg?: number;
  flags?: number;
  /** Descriptors sent with the reply (SCM_RIGHTS); the trap server closes its copies afterwards. */
  fds?: number[];
  /** Sent first, to another app's generator (AS_OFFER): see TrapHandler.connect. `sent` says whether it went out (the
   * trap server then owns `fd`). */
  push?: { appId: string; addr: Buffer; addr2: Buffer; fd: number; sent: (ok: boolean) => void };
}

/** One AS_CLAIMED entry (native/proto.h): the peer's 16-byte address (IPv4 as ::ffff:a.b.c.d) and port (network
 * order); the kind; a pad byte; an outside client's address and port; the accepted socket's local port. */
export const CLAIMED_ENTRY_SIZE = 40;
const CLAIM_KINDS = { 1: 'steered', 2: 'relayed' } as const;

/** An outside client's connection that a server's generator answered by itself (see native/dtab.h, ingress):
 * steered to it by sk_lookup, or relayed by a gateway whose preamble named the client. */
export interface OutsideClaim {
  peer: Endpoint;
  client: Endpoint;
  how: (typeof CLAIM_KINDS)[keyof typeof CLAIM_KINDS];
  /** The accepted socket's local port: the host port (steered), the instance's port (relayed). */
  localPort: number;
}

/** The outside claims of one AS_CLAIMED batch, validated here (every entry's kind is steered or relayed; any 16 bytes
 * are an address) and kept as the generator's entries: at tens of thousands of connections a second, an object per
 * connection was a visible part of the daemon's time (bench/RESULTS.md, "Ingress"). decodeOutsideClaim reads one. */
export interface OutsideClaims {
  /** count entries of CLAIMED_ENTRY_SIZE bytes. */
  entries: Buffer;
  count: number;
  steered: number;
  relayed: number;
}

/** Entry i of validated outside claims (OutsideClaims.entries, or a copy of its bytes). */
export function decodeOutsideClaim(entries: Buffer, i: number): OutsideClaim {
  const o = i * CLAIMED_ENTRY_SIZE;
  const how = CLAIM_KINDS[entries[o + 18] as keyof typeof CLAIM_KINDS] ?? 'steered';
  return { peer: outsideClaimPeer(entries, i), client: claimEndpoint(entries, o + 20) as Endpoint, how, localPort: entries.readUInt16BE(o + 38) };
}

/** The peer of entry i alone (the server socket's remote end), as the sweep's liveness check needs it. */
export function outsideClaimPeer(entries: Buffer, i: number): Endpoint {
  return claimEndpoint(entries, i * CLAIMED_ENTRY_SIZE) as Endpoint;
}

/** A trap message decoded once, at the trap server: the modules behind it see endpoints, never sockaddr bytes.
 * `seq` identifies a program's request (the reply carries it back); `socket` is a socket's inode (the cookie). */
export type TrapRequest =
  | { kind: 'hello'; payload: Buffer }
  /** bind(2): `requested` is what the program asked for; `family` its sockaddr's (a v4-mapped AF_INET6 address is 6
   * here though `requested.ip` shows IPv4); `retry`: the generator found the planned port taken (MsgFlag.RETRY). */
  | { kind: 'bind'; seq: number; proto: Proto; requested: Endpoint; family: 4 | 6; v6only: boolean; retry: boolean }
  | { kind: 'bound'; real: Endpoint; socket: string }
  | { kind: 'unbound'; real: Endpoint }
  | { kind: 'listen'; socket: string }
  /** connect(2) or a datagram send: `retryFailed` is the instance that refused (MsgFlag.RETRY); `offer`, a speculative
   * fast-path offer (MsgFlag.OFFER) whose placeholder is bound to `offer.port`. */
  | { kind: 'connect'; seq: number; proto: Proto; dst: Endpoint; retry: boolean; retryFailed?: Endpoint; offer?: { port: number }; socket?: string }
  /** A client connection left from `local` to the real `dst`; `fast`: over the fast path (fds came with it). */
  /** `decided`: the generator decided the connect itself from the decision table (MsgFlag.DECIDED), after `retried`
   * instances refused it. */
  | { kind: 'connected'; local: Endpoint; dst?: Endpoint; fast: boolean; decided: boolean; retried: number; socket?: string }
  /** Connects a generator decided from the decision table (decided-wire.ts); `bad`: records that did not decode. */
  | { kind: 'decided'; records: DecidedRecord[]; bad: number; bytes: number }
  /** Accepts a generator answered by itself: `peers`, same-host apps' connections (identity table, fast-path offers);
   * `outside`, outside clients' (steered or relayed). */
  | { kind: 'claimed'; peers: Endpoint[]; outside: OutsideClaims }
  /** accept(2): a connection from real `peer` reached the listener at real `listener`. */
  | { kind: 'accept'; peer: Endpoint; listener?: Endpoint }
  | { kind: 'udpFrom'; local: Endpoint; socket: string }
  /** A datagram from real `src` reached the program's socket at real `local`. */
  | { kind: 'udpWho'; src: Endpoint; local?: Endpoint }
  | { kind: 'started'; pid: number }
  /** `delta` undefined: the payload's lengths do not add up (`bytes` long). */
  | { kind: 'stats'; delta: TrapStatsDelta | undefined; bytes: number }
  | { kind: 'exit'; pid: number; status: number }
  /** Its address is no inet sockaddr: a trapped call is answered `errno` (negated), a report (no errno) is dropped. */
  | { kind: 'undecodable'; errno?: number }
  | { kind: 'unknown'; type: number };

/** Requests of one kind. */
export type RequestOf<K extends TrapRequest['kind']> = Extract<TrapRequest, { kind: K }>;

function protoOf(sockType: number): Proto {
  return sockType === SOCK_DGRAM ? 'udp' : 'tcp';
}

/** The endpoint of optional sockaddr bytes (empty: absent). */
function optional(b: Buffer): Endpoint | undefined {
  return b.length ? decodeSockaddr(b) : undefined;
}

/** 16 bytes of address then 2 of port (network order) at p[off]: an endpoint, or undefined. */
function claimEndpoint(p: Buffer, off: number): Endpoint | undefined {
  const sa = Buffer.alloc(28);
  sa.writeUInt16LE(AF_INET6, 0);
  p.copy(sa, 2, off + 16, off + 18);
  p.copy(sa, 8, off, off + 16);
  return decodeSockaddr(sa);
}

/** The entries of an AS_CLAIMED payload (entries of an unknown kind are skipped; a short tail is ignored). Outside
 * claims stay bytes (OutsideClaims): runs of them are sliced, not copied. */
function claimedEntries(p: Buffer): RequestOf<'claimed'> {
  const peers: Endpoint[] = [];
  const runs: Buffer[] = [];
  let steered = 0;
  let relayed = 0;
  let run = -1; /* where the current run of outside entries began */
  const end = p.length - (p.length % CLAIMED_ENTRY_SIZE);
  for (let i = 0; i < end; i += CLAIMED_ENTRY_SIZE) {
    const kind = p[i + 18] as number;
    if (kind === 1 || kind === 2) {
      if (kind === 1) steered++;
      else relayed++;
      if (run < 0) run = i;
      continue;
    }
    if (run >= 0) runs.push(p.subarray(run, i));
    run = -1;
    const peer = kind === 0 ? claimEndpoint(p, i) : undefined;
    if (peer) peers.push(peer);
  }
  if (run >= 0) runs.push(p.subarray(run, end));
  const entries = runs.length === 1 ? (runs[0] as Buffer) : Buffer.concat(runs);
  return { kind: 'claimed', peers, outside: { entries, count: steered + relayed, steered, relayed } };
}

/** Errnos a trapped call gets when its address does not decode (what the daemon has always answered). */
const UNDECODABLE: Readonly<Record<number, number>> = {
  [MsgType.BIND]: Errno.EAFNOSUPPORT,
  [MsgType.CONNECT]: Errno.EAFNOSUPPORT,
  [MsgType.ACCEPT]: Errno.ECONNREFUSED,
  [MsgType.UDP_WHO]: Errno.EINVAL,
};

/** Decodes a message into its request (see TrapRequest). */
export function decodeRequest(m: TrapMsg): TrapRequest {
  switch (m.type) {
    case MsgType.HELLO:
      return { kind: 'hello', payload: m.payload };
    case MsgType.LISTEN:
      return { kind: 'listen', socket: m.cookie.toString() };
    case MsgType.STARTED:
      return { kind: 'started', pid: m.pid };
    case MsgType.STATS:
      return { kind: 'stats', delta: decodeTrapStats(m.payload), bytes: m.payload.length };
    case MsgType.EXIT:
      return { kind: 'exit', pid: m.pid, status: m.arg };
    case MsgType.CLAIMED:
      return claimedEntries(m.payload);
    case MsgType.DECIDED:
      return { kind: 'decided', ...decodeDecided(m.payload), bytes: m.payload.length };
    case MsgType.BIND:
    case MsgType.BOUND:
    case MsgType.UNBOUND:
    case MsgType.CONNECT:
    case MsgType.CONNECTED:
    case MsgType.ACCEPT:
    case MsgType.UDP_FROM:
    case MsgType.UDP_WHO:
      break;
    default:
      return { kind: 'unknown', type: m.type };
  }
  const addr = decodeSockaddr(m.addr);
  if (!addr) {
    const errno = UNDECODABLE[m.type];
    return errno === undefined ? { kind: 'undecodable' } : { kind: 'undecodable', errno };
  }
  switch (m.type) {
    case MsgType.BIND: {
      const family = m.addr.readUInt16LE(0) === AF_INET6 ? 6 : 4;
      return { kind: 'bind', seq: m.seq, proto: protoOf(m.arg), requested: addr, family, v6only: family === 6 && (m.flags & MsgFlag.V6ONLY) !== 0, retry: (m.flags & MsgFlag.RETRY) !== 0 };
    }
    case MsgType.BOUND:
      return { kind: 'bound', real: addr, socket: m.cookie.toString() };
    case MsgType.UNBOUND:
      return { kind: 'unbound', real: addr };
    case MsgType.CONNECT: {
      const req: RequestOf<'connect'> = { kind: 'connect', seq: m.seq, proto: protoOf(m.arg), dst: addr, retry: (m.flags & MsgFlag.RETRY) !== 0 };
      const addr2 = m.flags & (MsgFlag.RETRY | MsgFlag.OFFER) ? decodeSockaddr(m.addr2) : undefined;
      if (req.retry && addr2) req.retryFailed = addr2;
      if (m.flags & MsgFlag.OFFER && addr2) req.offer = { port: addr2.port };
      if (m.cookie !== 0n) req.socket = m.cookie.toString(); /* the socket's inode: names the connection in CONNECTED */
      return req;
    }
    case MsgType.CONNECTED: {
      const decided = (m.flags & MsgFlag.DECIDED) !== 0;
      const req: RequestOf<'connected'> = { kind: 'connected', local: addr, fast: (m.flags & MsgFlag.FASTPATH) !== 0, decided, retried: decided ? Math.max(0, Math.min(m.arg, 8)) : 0 };
      const dst = decodeSockaddr(m.addr2);
      if (dst) req.dst = dst;
      if (m.cookie !== 0n) req.socket = m.cookie.toString(); /* the socket's inode, as in its CONNECT */
      return req;
    }
    case MsgType.ACCEPT: {
      const req: RequestOf<'accept'> = { kind: 'accept', peer: addr };
      const listener = optional(m.addr2);
      if (listener) req.listener = listener;
      return req;
    }
    case MsgType.UDP_FROM:
      return { kind: 'udpFrom', local: addr, socket: m.cookie.toString() };
    default: {
      const req: RequestOf<'udpWho'> = { kind: 'udpWho', src: addr };
      const local = optional(m.addr2);
      if (local) req.local = local;
      return req;
    }
  }
}
