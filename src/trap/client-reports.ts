/** Client reports: who connected from which real endpoint of this node. A client's generator reports each connection
 * to a virtual endpoint (CONNECTED, or the connect request itself for the fast path); the accept of that connection
 * claims the report, so the server sees its client's identity. Also the connections whose report was lost (the
 * daemon had no room for their descriptors), refused at accept at once. Pure apart from timers: no I/O. */
import { CountedMap } from './limits.js';
import type { Endpoint } from '../table/endpoint.js';

/** Who is behind a client endpoint: what the accepting server will see as its peer. */
export interface ClientIdentity {
  identity: string;
  appId: string;
  tags: Record<string, string>;
  /** A datagram sender's port as its receivers see it (its bound virtual port; see udp-identity.ts). */
  port?: number;
  /** An external client of an exposure (appId 'external'): steered to the server by the kernel (identity and port its
   * real address and port), or relayed by a gateway (with `relayed`). Never a generator's report. */
  external?: boolean;
  /** A connection from a gateway's own socket, which no generator made (its relay's, or the Node forwarder's): the
   * outside client is named by the connection's preamble, which the instance's generator checks with the cluster's
   * key before the program gets the connection (native/preamble.h); identity and port are that socket's own. */
  relayed?: boolean;
  /** A connection sent through an egress gateway: the destination "ip:port" the app asked for (see
   * trap/egress-route.ts); the peer API tells it only to that gateway. */
  egress?: string;
}

/** Where the client socket of a connection came from, as the kernel says (see daemon/sockguard.ts): 'generator' (a trap
 * generator created it, so its report comes), 'other' (any other process: it can never be reported), 'gone' (no full
 * socket any more: closed, or time-wait). */
export type ClientSocketOrigin = 'generator' | 'other' | 'gone';

/** How long a report is good for: an accept may claim it until then. */
export const CLIENT_TTL_MS = 30_000;
const CLIENT_MAX = 200_000;
const LOST_MAX = 1024;

/** How long an accept waits for the report of a client whose socket is gone. Its generator sent the report before
 * the connect returned to the program, hence before the program could close the socket: the report is already in
 * the daemon's receive queue, and this only covers the daemon getting to it. Short, so that connections closed
 * right after connecting cannot make a server's accepts fall behind. */
const GONE_WAIT_MS = 20;

interface Report extends ClientIdentity {
  at: number;
  /** The server's real endpoint "ip:port" the connection went to, when known. */
  dst?: string;
}

/** "ip:port" (IPv6 without brackets: the port follows the last colon) back into an Endpoint. */
function parseEndpoint(key: string): Endpoint | undefined {
  const i = key.lastIndexOf(':');
  const port = Number(key.slice(i + 1));
  return i > 0 && Number.isInteger(port) && port >= 0 && port <= 65535 ? { ip: key.slice(0, i), port } : undefined;
}

export class ClientReports {
  /** Real client endpoint "ip:port" -> the report, in arrival order (oldest first). */
  private readonly reports = new CountedMap<string, Report>((c) => [c.appId]);
  private readonly waiters = new Map<string, Array<(c: ClientIdentity | undefined) => void>>();
  /** Connections whose report was lost, by client endpoint: their accept is refused at once. */
  private readonly lost = new Map<string, number>();

  constructor(
    /** How long an accept waits for a report that may still be on its way (ms). */
    private readonly waitMs: number,
    /** Where a client socket came from (undefined: unknown, so the accept waits for its report). */
    private readonly origin?: (client: Endpoint, server: Endpoint) => ClientSocketOrigin | undefined,
    /** Whether this node is a gateway: a socket no generator made may be its relay's (see `relayed`). Elsewhere such
     * a socket can never be identified. */
    private readonly relayHere = false,
  ) {}

  /** A client connection left from `key`: an accept already waiting claims it at once, else it is kept. */
  report(key: string, c: ClientIdentity, dst: Endpoint | undefined): void {
    this.lost.delete(key); /* a new connection from that endpoint */
    this.reports.delete(key); /* re-insert: the map stays in arrival order, oldest first */
    const ws = this.waiters.get(key);
    if (ws) {
      this.waiters.delete(key);
      for (const w of ws) w(c);
      return;
    }
    this.reports.set(key, { ...c, at: Date.now(), dst: dst ? `${dst.ip}:${dst.port}` : undefined });
    if (this.reports.size > CLIENT_MAX) this.prune();
  }

  /** The connection from `key` will never be reported (its descriptors were lost): its accept is refused at once. */
  markLost(key: string): void {
    this.reports.delete(key);
    this.lost.delete(key);
    this.lost.set(key, Date.now());
    if (this.lost.size > LOST_MAX) {
      const old = Date.now() - CLIENT_TTL_MS;
      for (const [k, at] of this.lost) {
        if (at >= old && this.lost.size <= LOST_MAX) break;
        this.lost.delete(k);
      }
    }
    const ws = this.waiters.get(key);
    if (ws) { /* an accept is already waiting for this report: it gets its answer now */
      this.waiters.delete(key);
      for (const w of ws) w(undefined);
    }
  }

  /** Whether the connection from `key` was lost (see markLost); the mark is taken. */
  takeLost(key: string): boolean {
    return this.lost.delete(key);
  }

  /** Forgets the report from `key` (a fast-path connection claimed without asking). */
  forget(key: string): void {
    this.reports.delete(key);
  }

  /** The report from `key` if it is here now (claimed), as claim() without waiting. */
  take(key: string, dst?: string): ClientIdentity | undefined {
    return this.takeWithDst(key, dst)?.who;
  }

  /** As take(), with the server's real endpoint the report named (if it did). */
  takeWithDst(key: string, dst?: string): { who: ClientIdentity; dst: Endpoint | undefined } | undefined {
    const c = this.reports.get(key);
    if (!c || Date.now() - c.at >= CLIENT_TTL_MS || (dst !== undefined && c.dst !== undefined && c.dst !== dst)) return undefined;
    this.reports.delete(key);
    const who: ClientIdentity = { identity: c.identity, appId: c.appId, tags: c.tags };
    if (c.egress !== undefined && c.dst !== undefined) who.egress = c.egress; /* a report with its real destination */
    return { who, dst: c.dst === undefined ? undefined : parseEndpoint(c.dst) };
  }

  /** Who connected from this node's endpoint `key`, waiting up to `waitMs` for a report still on its way. The answer is
   * claimed: a report identifies one connection, and the accept it answers is the only one for that connection. A
   * report nobody claimed must not answer for a later connection that reuses the ephemeral port (at thousands of
   * connections a second the same 4-tuple comes back within seconds: a stale answer would hand the server the
   * placeholder of a fast-path connection instead of its Unix socket). With `dst` (the server's real endpoint), a
   * report about a connection to somewhere else does not count either: the report for this one is still on its way. */
  claim(key: string, waitMs = this.waitMs, dst?: string): Promise<ClientIdentity | undefined> {
    const now = this.take(key, dst);
    if (now) return Promise.resolve(now);
    if (waitMs <= 0) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let list = this.waiters.get(key);
      if (!list) this.waiters.set(key, (list = []));
      const t = setTimeout(() => {
        const l = this.waiters.get(key);
        if (l) {
          const i = l.indexOf(done);
          if (i >= 0) l.splice(i, 1);
          if (!l.length) this.waiters.delete(key);
        }
        resolve(undefined);
      }, waitMs);
      const done = (v: ClientIdentity | undefined): void => {
        clearTimeout(t);
        resolve(v);
      };
      list.push(done);
    });
  }

  /** Who a client of this node connected from `key` ("ip:port") to the server's real endpoint `dst` is: the kernel
   * first says whether a generator created that socket (no wait for a report that can never come, and no stale
   * report claimed by another process's socket), then the report, waited for as claim() does. */
  identify(key: string, dst: string | undefined): Promise<ClientIdentity | undefined> {
    const client = parseEndpoint(key);
    const server = dst === undefined ? undefined : parseEndpoint(dst);
    const origin = client && server ? this.origin?.(client, server) : undefined;
    /* no generator made it: the gateway's forwarding socket, or any other process's, told apart by the preamble */
    if (origin === 'other') return Promise.resolve(this.relayed(client));
    const c = this.claim(key, origin === 'gone' ? Math.min(this.waitMs, GONE_WAIT_MS) : this.waitMs, dst);
    if (origin === 'generator' || !this.relayHere) return c;
    return c.then((who) => who ?? this.relayed(client)); /* gone, or the kernel could not say, and no report came */
  }

  /** The answer for a socket of this gateway that no generator made (see ClientIdentity.relayed). */
  private relayed(client: Endpoint | undefined): ClientIdentity | undefined {
    if (!this.relayHere || !client) return undefined;
    return { identity: client.ip, port: client.port, appId: 'external', tags: {}, external: true, relayed: true };
  }

  /** Reports an app holds (connections set up and not yet accepted). */
  count(appId: string): number {
    return this.reports.count(appId);
  }

  /** An app over its limit loses its own oldest report (never another app's): that connection, if a server ever
   * accepts it, is dropped there as unidentified. */
  dropOldest(appId: string): void {
    for (const [k, v] of this.reports) {
      if (v.appId !== appId) continue;
      this.reports.delete(k);
      return;
    }
  }

  /** Forgets reports older than CLIENT_TTL_MS (no accept may claim them any more) and, with `liveLocal` (the client
   * endpoints of open TCP sockets, read at `snapshotAt`), reports whose client socket the kernel no longer has (the
   * client closed it before any accept): they answer for no connection and would only count against the app's
   * --max-pending-per-app until their TTL. */
  expire(now = Date.now(), liveLocal?: Set<string>, snapshotAt = Infinity): void {
    const old = now - CLIENT_TTL_MS;
    for (const [k, v] of this.reports) {
      if (v.at >= old) break;
      this.reports.delete(k);
    }
    if (!liveLocal) return;
    for (const [k, v] of this.reports) if (v.at < snapshotAt && !liveLocal.has(k)) this.reports.delete(k);
  }

  /** Forgets the reports of `appId` whose client socket is not in `liveLocal` (read just now); returns how many. */
  forgetGone(appId: string, liveLocal: Set<string>): number {
    let gone = 0;
    for (const [k, c] of this.reports) {
      if (c.appId === appId && !liveLocal.has(k)) {
        this.reports.delete(k);
        gone++;
      }
    }
    return gone;
  }

  private prune(): void {
    const old = Date.now() - CLIENT_TTL_MS;
    for (const [k, v] of this.reports) {
      if (v.at >= old && this.reports.size <= CLIENT_MAX) break;
      this.reports.delete(k);
    }
  }
}
