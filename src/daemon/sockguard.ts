/** The daemon's side of the socket guard (native/sockguard.h): tells, from the kernel's own records (sock_diag), whether
 * the client socket of a connection was created by a trap generator. Only a generator's socket can ever be reported
 * by a CONNECTED message, so a server's accept need not wait for a report about any other (issue 10, item 5d). */
import type { Logger } from 'pino';
import { native } from '../native/binding.js';
import type { ClientSocketOrigin } from '../trap/handler.js';
import type { Endpoint } from '../table/endpoint.js';

const TCP_TIME_WAIT = 6;
/** How often the generators cgroup id is read again when a socket's cgroup does not match it (it is recreated only
 * when someone removed it, e.g. a cleanup script). */
const REREAD_MS = 1000;

export interface SocketOriginDeps {
  tcpSocketCgroup: typeof native.tcpSocketCgroup;
  generatorsCgroupId: typeof native.generatorsCgroupId;
  now: () => number;
}

/** Returns the lookup the trap handler uses at accept time. Every failure of the lookup answers undefined (the
 * caller then waits for a report as without the guard): a kernel state we cannot read is never taken as proof. */
export function socketOrigin(log: Logger, deps: SocketOriginDeps = { tcpSocketCgroup: native.tcpSocketCgroup, generatorsCgroupId: native.generatorsCgroupId, now: Date.now }): (client: Endpoint, server: Endpoint) => ClientSocketOrigin | undefined {
  let genId: bigint | null | undefined; /* null: no generators cgroup yet (no guarded generator exists) */
  let readAt = -Infinity;
  let warned = false;
  const generators = (force: boolean): bigint | null | undefined => {
    if (genId !== undefined && !(force && deps.now() - readAt >= REREAD_MS)) return genId;
    readAt = deps.now();
    try {
      genId = deps.generatorsCgroupId();
    } catch (e) {
      genId = (e as { code?: string }).code === 'ENOENT' ? null : undefined;
      if (genId === undefined && !warned) {
        warned = true;
        log.warn({ err: e }, 'cannot read the generators cgroup id: unidentified connections are waited for at accept');
      }
    }
    return genId;
  };
  return (client, server) => {
    let info;
    try {
      info = deps.tcpSocketCgroup(client.ip, client.port, server.ip, server.port);
      if (!info && !client.ip.includes(':')) info = deps.tcpSocketCgroup(`::ffff:${client.ip}`, client.port, `::ffff:${server.ip}`, server.port);
    } catch (e) {
      log.debug({ err: e, client, server }, 'sock_diag lookup failed');
      return undefined;
    }
    if (!info || info.cgroup === null) return info && info.state !== TCP_TIME_WAIT ? undefined : 'gone';
    const id = generators(false);
    if (id === undefined) return undefined;
    if (info.cgroup === id) return 'generator';
    const again = generators(true);
    if (again === undefined) return undefined;
    return info.cgroup === again ? 'generator' : 'other';
  };
}
