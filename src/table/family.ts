/** Which of an app's sockets on one service gets a connection, by address family: a dual-stack server holds the same
 * service (vip:port) on an AF_INET and an AF_INET6 socket, and natively an IPv4 client reaches the first and an IPv6
 * client the second. Pure: no I/O. */
import type { ServiceEntry } from './service-table.js';

/** The family a connection to `ip` (canonical: a v4-mapped address is shown as IPv4) belongs to. */
export function familyOf(ip: string): 4 | 6 {
  return ip.includes(':') ? 6 : 4;
}

/** Drops, for each app on each node, its instances of the other family when it has one of `want` (an app that
 * listens only on one family keeps its instances: an AF_INET6 socket alone serves an IPv4 vip's clients, as
 * v4-mapped addresses, and an AF_INET socket alone an IPv6 vip's). Entries without a family (from an older daemon)
 * are never dropped. Returns the same array when nothing is dropped. */
export function preferFamily(instances: ServiceEntry[], want: 4 | 6): ServiceEntry[] {
  if (instances.length < 2) return instances;
  let mixed = false;
  const has = new Set<string>();
  for (const e of instances) {
    if (e.family === undefined) continue;
    if (e.family === want) has.add(`${e.node}/${e.appId}`);
    else mixed = true;
  }
  if (!mixed || has.size === 0) return instances;
  return instances.filter((e) => e.family === undefined || e.family === want || !has.has(`${e.node}/${e.appId}`));
}
