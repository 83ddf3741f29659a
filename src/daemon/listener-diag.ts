/** Whether a listening socket is still there, asked of the kernel (sock_diag, one exact lookup of the real endpoint
 * with no peer: the kernel's lookup finds the listener, native/sockdiag.h). The trap handler asks it when a bind
 * collides with a listener of the same app, so that a server that closed its listener and binds the port again
 * (iperf3 -s after each test) gets the port at once rather than after the next sweep of the TCP table (listeners.ts). */
import type { Logger } from 'pino';
import { native } from '../native/binding.js';
import type { Endpoint } from '../table/endpoint.js';

const TCP_LISTEN = 10;

export type ListenerLookup = (src: string, sport: number, dst: string, dport: number) => { state: number } | null;

/** Where a real endpoint's socket can be found, each address with its family's wildcard (a listener's remote end):
 * an IPv6 endpoint as it is; an IPv4 one as itself and v4-mapped, since the real socket of an AF_INET6 program socket
 * is bound to the node's IPv4 address v4-mapped, with V6ONLY off. */
function addressesOf(real: Endpoint): Array<[string, string]> {
  return real.ip.includes(':') ? [[real.ip, '::']] : [[real.ip, '0.0.0.0'], [`::ffff:${real.ip}`, '::']];
}

/** Returns the handler's `listenerGone`: true only when the kernel positively has no listener at `real` (a lookup
 * that fails says false: a socket we cannot see is not a closed socket). A real socket of an AF_INET6 program socket
 * is bound to the node's IPv4 address v4-mapped, with V6ONLY off: the IPv4 lookup finds it, the v4-mapped one too. */
export function listenerGone(log: Logger, lookup: ListenerLookup = native.tcpSocketCgroup): (real: Endpoint) => boolean {
  return (real) => {
    try {
      for (const [src, any] of addressesOf(real)) if (lookup(src, real.port, any, 0)?.state === TCP_LISTEN) return false;
      return true;
    } catch (e) {
      log.debug({ err: e, real }, 'sock_diag listener lookup failed');
      return false;
    }
  };
}

/** Opens the daemon's sock_diag socket now (the addon keeps one for the lookups and the sweep's dump, opened at the
 * first of them and reopened after a failure), so that its descriptor is part of the daemon's own from the start
 * instead of appearing at the first bind that collides with a listener (it would look like a descriptor leaked by
 * that program). A lookup of nothing: the answer does not matter; a failure is
 * logged and the socket is opened at the first real lookup instead. */
export function openListenerDiag(log: Logger, lookup: ListenerLookup = native.tcpSocketCgroup): void {
  try {
    lookup('127.0.0.1', 0, '0.0.0.0', 0);
  } catch (e) {
    log.debug({ err: e }, 'sock_diag socket not opened at start');
  }
}

export type UdpLookup = (ip: string, port: number) => number | null;
export type TcpLookup = (src: string, sport: number, dst: string, dport: number) => { state: number; inode: number } | null;

/** Returns the handler's `stillHeld`: whether the kernel still has the very socket (same inode) of a binding whose
 * inode a sweep missed in /proc/net/{tcp,udp}. Those files are read in pages while programs open and close sockets,
 * and a socket that moves in the kernel's hash table between two pages can be skipped: a service must not be withdrawn
 * on that alone (a program binding and closing sockets in a loop would otherwise take other programs' services down).
 * A lookup that fails says true: a socket we cannot see is not a closed socket. */
export function socketHeld(log: Logger, tcp: TcpLookup = native.tcpSocketCgroup, udp: UdpLookup = native.udpSocketInode): (ino: string, proto: 'tcp' | 'udp', real: Endpoint) => boolean {
  return (ino, proto, real) => {
    try {
      for (const [ip, any] of addressesOf(real)) {
        if (proto === 'udp') {
          if (String(udp(ip, real.port)) === ino) return true;
        } else {
          const r = tcp(ip, real.port, any, 0);
          if (r?.state === TCP_LISTEN && String(r.inode) === ino) return true;
        }
      }
      return false;
    } catch (e) {
      log.debug({ err: e, real, proto }, 'sock_diag socket lookup failed: the socket is taken to be there');
      return true;
    }
  };
}
