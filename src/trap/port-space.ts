/** An app's port space at bind(): which of its bound sockets a new bind collides with, as the kernel's bind conflict
 * rules say for one host (inet_csk_bind_conflict, with the IPv4/IPv6 overlap of ipv6_only_sock): an AF_INET socket and
 * an AF_INET6 socket with IPV6_V6ONLY may hold the same port side by side (a dual-stack server: redis `bind * -::*`,
 * nginx `listen 80; listen [::]:80;`); any other pair of one protocol on one port collides. Pure: no I/O. */
import type { Proto } from '../table/service-table.js';

/** The address family of a program's socket: 4 (AF_INET) or 6 (AF_INET6). */
export type Family = 4 | 6;

/** What the port space needs to know of a bound socket. `family` is missing on bindings saved by an older daemon:
 * those collide with everything on their port, as before. */
export interface PortHolder {
  proto: Proto;
  port: number;
  family?: Family;
  v6only?: boolean;
}

/** Whether two sockets of one app, bound to one virtual port, may not both hold it. */
export function collides(a: PortHolder, b: PortHolder): boolean {
  if (a.proto !== b.proto || a.port !== b.port) return false;
  if (a.family === undefined || b.family === undefined || a.family === b.family) return true;
  const v6 = a.family === 6 ? a : b;
  return !v6.v6only; /* a dual-stack AF_INET6 socket takes the IPv4 port too */
}
