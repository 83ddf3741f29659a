/** The connections this daemon set up, for `appswitch get connections`.
 *
 * What is tracked:
 * - every TCP connection a program on this node made to a virtual endpoint (a vip, or 127.0.0.1 inside its own
 *   app), from the generator's AS_CONNECTED report: key = the client socket's real local endpoint;
 * - fast-path connections (same node, Unix socket pair) likewise, from AS_CONNECTED with AS_F_FASTPATH;
 * - connections that arrive at a server on this node from a client on another node, from AS_ACCEPT once the
 *   client's daemon identified it (direction "in"; the client's node tracks the same connection as "out").
 * An AS_ACCEPT for a connection already tracked (both ends on this node) marks it accepted.
 *
 * When an entry goes away (sweep(), every --sweep-interval):
 * - TCP "out": when the TCP table of the daemon's namespace (daemon/listeners.ts) no longer lists the client's
 *   socket (its local endpoint = the key) in SYN_SENT, SYN_RECV, ESTABLISHED or CLOSE_WAIT: the client closed it (or it died);
 * - TCP "in": likewise for the server's socket (its remote endpoint = the key): the server closed it;
 * - fast path: when the inode of the server's end of the socket pair is no longer in /proc/net/unix (the server
 *   closed it; a client that closed its end while the server keeps its end open still shows), or when the
 *   daemon gave the offer up because no server accepted it (60 s).
 *
 * Outside clients' connections that a server's generator accepted by itself (steered, or relayed with a preamble)
 * are kept apart, as bytes (outside-connections.ts): they come too fast for a record each.
 *
 * Not tracked: UDP (no connection), connections to addresses outside the virtual ranges (egress), and
 * connections made while the daemon was down. At most MAX_TRACKED entries are kept; the oldest are dropped first
 * (counted in `evicted`). */
import type { Endpoint } from '../table/endpoint.js';
import type { ConnectionSnapshot, ConnectionView } from './connection-view.js';
import type { ConnectObserver } from './observer.js';
import { OutsideConnections } from './outside-connections.js';
import type { OutsideClaims } from './protocol.js';

export type { ConnectionSnapshot, ConnectionView } from './connection-view.js';

/** What the tracker needs to know about a server endpoint (from the service table). */
export interface ServiceInfo {
  service: string;
  app: string;
  node: string;
  /** The service's vip and port (what `service` spells): the observer's edge is keyed by them. */
  vip?: string;
  port?: number;
}

/** A tracked connection: the view's fields, with the report's time instead of its rendering. */
type Entry = Omit<ConnectionView, 'since' | 'ageSeconds'> & {
  at: number;
  /** Fast path: inode of the server's end of the socket pair. */
  inode?: string;
};

export const MAX_TRACKED = 50_000;
const EARLY_MAX = 4096;
const EARLY_TTL_MS = 5_000;

/** "ip:port" with the canonical ip (no brackets for IPv6), as the handler keys its clients. */
const key = (e: Endpoint): string => `${e.ip}:${e.port}`;

export class ConnectionTracker {
  private readonly entries = new Map<string, Entry>();
  /** Accepts reported (markAccepted) before their connection: two generators' batches arrive in either order. */
  private readonly early = new Map<string, { serverApp: string; node: string; at: number }>();
  evicted = 0;
  /** Outside clients' connections the generators accepted by themselves (outsideAccepted). */
  readonly outside = new OutsideConnections();
  /** Told of every connection set up to a known service (the event bus and edges, src/events). */
  observer?: Pick<ConnectObserver, 'allowed'>;

  constructor(
    /** The service behind a real server endpoint "ip:port", if the table knows it. */
    private readonly serviceAt: (endpoint: string) => ServiceInfo | undefined,
  ) {}

  /** A client of this node connected (AS_CONNECTED): local = its real local endpoint, remote = the server's. */
  connected(client: { identity: string; appId: string }, local: Endpoint, remote: Endpoint | undefined, path: 'tcp' | 'fastpath', inode?: string): void {
    const k = key(local);
    const endpoint = remote ? key(remote) : '-';
    const svc = remote ? this.serviceAt(endpoint) : undefined;
    const e: Entry = {
      direction: 'out',
      path,
      client: client.identity,
      clientApp: client.appId,
      clientEndpoint: k,
      service: svc?.service ?? null,
      endpoint,
      serverApp: svc?.app ?? null,
      serverNode: svc?.node ?? null,
      accepted: false,
      at: Date.now(),
    };
    if (inode !== undefined) e.inode = inode;
    if (this.observer && svc?.vip !== undefined && svc.port !== undefined) this.observer.allowed(client.appId, client.identity, svc.vip, svc.port, path, endpoint);
    const early = this.early.get(k);
    if (early) {
      this.early.delete(k);
      if (Date.now() - early.at < EARLY_TTL_MS) {
        e.accepted = true;
        e.serverApp = early.serverApp;
        e.serverNode = early.node;
      }
    }
    this.put(k, e);
  }

  /** A server of this node accepted a connection from `peer` (AS_ACCEPT, identified as `client`). */
  accepted(server: { appId: string }, node: string, peer: Endpoint, local: Endpoint | undefined, client: { identity: string; appId: string }): void {
    const k = key(peer);
    const known = this.entries.get(k);
    if (known) {
      known.accepted = true;
      known.serverApp = server.appId;
      known.serverNode = node;
      return;
    }
    const endpoint = local ? key(local) : '-';
    this.put(k, {
      direction: 'in',
      path: 'tcp',
      client: client.identity,
      clientApp: client.appId,
      clientEndpoint: k,
      service: this.serviceAt(endpoint)?.service ?? null,
      endpoint,
      serverApp: server.appId,
      serverNode: node,
      accepted: true,
      at: Date.now(),
    });
  }

  /** Outside clients' connections a server app of this node accepted, its generator answering by itself (AS_CLAIMED). */
  outsideAccepted(appId: string, node: string, claims: OutsideClaims): void {
    this.outside.add(appId, node, claims);
  }

  /** A server of this node took a fast-path connection from `peer` (the placeholder's endpoint) straight from the
   * client's generator (AS_CLAIMED): the connection, if tracked, is accepted. */
  markAccepted(peer: Endpoint, serverApp: string, node: string): void {
    const k = key(peer);
    const e = this.entries.get(k);
    if (!e) { /* the server's batch came before the client's: kept a moment for connected() */
      if (this.early.size >= EARLY_MAX) this.early.clear();
      this.early.set(k, { serverApp, node, at: Date.now() });
      return;
    }
    e.accepted = true;
    e.serverApp = serverApp;
    e.serverNode = node;
  }

  /** A fast-path offer was given up (no server accepted it in time): its connection is gone. */
  offerExpired(local: string): void {
    const e = this.entries.get(local);
    if (e?.path === 'fastpath') this.entries.delete(local);
  }

  private put(k: string, e: Entry): void {
    this.entries.delete(k); /* re-insert: oldest first */
    this.entries.set(k, e);
    while (this.entries.size > MAX_TRACKED) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
      this.evicted++;
    }
  }

  /** Whether the next sweep needs the Unix socket inodes. */
  get hasFastpath(): boolean {
    for (const e of this.entries.values()) if (e.path === 'fastpath') return true;
    return false;
  }

  /** Drops entries whose connection is gone; entries reported after the snapshot was taken stay. */
  sweep(s: ConnectionSnapshot): void {
    this.outside.sweep(s);
    for (const [k, e] of this.entries) {
      if (e.at >= s.takenAt) continue;
      let alive: boolean;
      if (e.path === 'fastpath') alive = s.unixInodes === undefined || e.inode === undefined || s.unixInodes.has(e.inode);
      else alive = e.direction === 'out' ? s.tcpLocal.has(k) : s.tcpRemote.has(k);
      if (!alive) this.entries.delete(k);
    }
  }

  get size(): number {
    return this.entries.size + this.outside.size;
  }

  /** Calls `visit` for every open connection of a client of this node to a known service ("vip:port"). */
  forEachOut(visit: (clientApp: string, service: string) => void): void {
    for (const e of this.entries.values()) if (e.direction === 'out' && e.service !== null) visit(e.clientApp, e.service);
  }

  /** Counts by path. */
  counts(): { tcp: number; fastpath: number } {
    let fastpath = 0;
    for (const e of this.entries.values()) if (e.path === 'fastpath') fastpath++;
    return { tcp: this.entries.size - fastpath + this.outside.size, fastpath };
  }

  list(now = Date.now()): ConnectionView[] {
    const tracked = [...this.entries.values()].map((e) => ({
      direction: e.direction,
      path: e.path,
      client: e.client,
      clientApp: e.clientApp,
      clientEndpoint: e.clientEndpoint,
      service: e.service,
      endpoint: e.endpoint,
      serverApp: e.serverApp,
      serverNode: e.serverNode,
      accepted: e.accepted,
      since: new Date(e.at).toISOString(),
      ageSeconds: Math.max(0, Math.round((now - e.at) / 1000)),
    }));
    return [...tracked, ...this.outside.list(now)];
  }
}
