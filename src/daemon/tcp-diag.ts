/** Decodes the TCP table that the addon's tcpDiagDump reads with sock_diag (native/sockdiag.h as_sockdiag_rec) into
 * the sweep's TcpSnapshot, once, at the native boundary: nothing behind it sees a record. Does no I/O. */
import ipaddr from 'ipaddr.js';

/** What the kernel's TCP table (and the UDP inodes) say about this network namespace (see listeners.ts). */
export interface TcpSnapshot {
  listening: Set<string>;
  /** Inodes of every TCP and UDP socket in the namespace (a bound socket that was closed is missing here). */
  sockets: Set<string>;
  /** Canonical "ip:port" of the remote end (as liveRemote) -> open (or opening) connections to it. */
  outbound: Map<string, number>;
  /** Local and remote "ip:port" (canonical ip, no brackets) of every socket its own side has not closed
   * (see OPEN_STATES): which tracked connections are still open (trap/connections.ts). */
  liveLocal: Set<string>;
  liveRemote: Set<string>;
}

/** Bytes per record: AS_SOCKDIAG_REC_SIZE (native/sockdiag.h; the addon's tcpDiagRecordSize, pinned by a test). */
export const DIAG_RECORD_SIZE = 44;

/** Offsets in a record (native/sockdiag.h). Integers are little-endian; addresses 16 bytes in network order, IPv4 as
 * ::ffff:a.b.c.d. */
const LOCAL_IP = 0;
const LOCAL_PORT = 16;
const REMOTE_IP = 18;
const REMOTE_PORT = 34;
const INODE = 36;
const STATE = 40;
const PAD = 41;

/** include/net/tcp_states.h */
export const TCP_ESTABLISHED = 1;
export const TCP_SYN_SENT = 2;
export const TCP_SYN_RECV = 3;
export const TCP_TIME_WAIT = 6;
export const TCP_CLOSE_WAIT = 8;
export const TCP_LISTEN = 10;
const TCP_CLOSING = 11;

/** States whose own side has not closed (the same as listeners.ts's OPEN_STATES for /proc). */
function isOpen(state: number): boolean {
  return state === TCP_ESTABLISHED || state === TCP_SYN_SENT || state === TCP_SYN_RECV || state === TCP_CLOSE_WAIT;
}

/** A record's address and port as the canonical "ip:port" of the /proc path: v4-mapped as IPv4, IPv6 as ipaddr.js
 * writes it (RFC 5952), no brackets. */
function endpointAt(buf: Buffer, ipAt: number, portAt: number): string {
  const port = buf.readUInt16LE(portAt);
  let mapped = buf[ipAt + 10] === 0xff && buf[ipAt + 11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) if (buf[ipAt + i] !== 0) mapped = false;
  if (mapped) return `${buf[ipAt + 12]}.${buf[ipAt + 13]}.${buf[ipAt + 14]}.${buf[ipAt + 15]}:${port}`;
  return `${ipaddr.fromByteArray([...buf.subarray(ipAt, ipAt + 16)]).toString()}:${port}`;
}

/** Whether `buf` is whole records with states that the dump can hold (1..11 but TIME_WAIT) and zero padding. */
export function wellFormed(buf: Buffer): boolean {
  if (buf.length % DIAG_RECORD_SIZE !== 0) return false;
  for (let o = 0; o < buf.length; o += DIAG_RECORD_SIZE) {
    const st = buf[o + STATE] as number;
    if (st < TCP_ESTABLISHED || st > TCP_CLOSING || st === TCP_TIME_WAIT) return false;
    if (buf[o + PAD] !== 0 || buf[o + PAD + 1] !== 0 || buf[o + PAD + 2] !== 0) return false;
  }
  return true;
}

/** Adds the sockets of a tcpDiagDump buffer to `into` by the rules of the /proc path (listeners.ts): every inode in
 * `sockets`, LISTEN inodes in `listening`, the endpoints of open sockets in liveLocal/liveRemote, ESTABLISHED and
 * SYN_SENT counted in `outbound` by remote end. A malformed buffer (see wellFormed) adds nothing and returns false:
 * the caller must then read the tables another way, never take it for "no sockets". */
export function decodeDiagRecords(buf: Buffer, into: TcpSnapshot): boolean {
  if (!wellFormed(buf)) return false;
  for (let o = 0; o < buf.length; o += DIAG_RECORD_SIZE) {
    const state = buf[o + STATE] as number;
    const inode = String(buf.readUInt32LE(o + INODE));
    into.sockets.add(inode);
    if (state === TCP_LISTEN) {
      into.listening.add(inode);
      continue;
    }
    if (!isOpen(state)) continue;
    const remote = endpointAt(buf, o + REMOTE_IP, o + REMOTE_PORT);
    into.liveLocal.add(endpointAt(buf, o + LOCAL_IP, o + LOCAL_PORT));
    into.liveRemote.add(remote);
    if (state === TCP_ESTABLISHED || state === TCP_SYN_SENT) into.outbound.set(remote, (into.outbound.get(remote) ?? 0) + 1);
  }
  return true;
}
