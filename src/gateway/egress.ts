/** The egress proxy of an egress gateway (`appswitch daemon --egress-gateway`): listens on node address:--egress-port
 * for connections that apps of other nodes sent through this gateway (trap/egress-route.ts), learns from the client's
 * own daemon (the peer API) who the client is and which outside destination it asked for, applies this gateway's
 * egress policy to the client's tags again (defence in depth), connects there and pipes both ways (backpressure by
 * stream piping, half close kept, connections bounded). Never an open proxy: a connection from an address that is not
 * a current member, or one the client's daemon does not vouch for (a plain process, an app that did not ask to go
 * through this gateway, a report already claimed), is reset before a byte is read from it. Node `net`: there is no
 * throughput target for egress (docs/egress.md). */
import net from 'node:net';
import type { Logger } from 'pino';
import ipaddr from 'ipaddr.js';
import type { EgressPolicy } from '../policy/egress.js';
import type { ClientIdentity } from '../trap/client-reports.js';
import { RateLimitedLog } from '../trap/limits.js';

/** Why a connection to the egress proxy was closed without being forwarded (the keys of EgressProxyStats.refusals). */
export type EgressRefusal = 'not-a-member' | 'unidentified' | 'forbidden' | 'denied' | 'too-many-connections' | 'connect-failed';

export interface EgressProxyStats {
  /** Connections forwarded to their outside destination. */
  forwarded: number;
  /** Connections closed without being forwarded, all reasons. */
  refused: number;
  refusals: Record<EgressRefusal, number>;
  /** Connections open now (being identified, or forwarded). */
  active: number;
}

export interface EgressProxyDeps {
  /** Node address and egress port to listen on. */
  address: string;
  port: number;
  /** Whether ip is the address of another current cluster member (only members' connections are looked at). */
  isMember: (ip: string) => boolean;
  /** Asks the daemon at peerIp who its client endpoint `endpoint`, connected to our `dst`, is (the peer API); its
   * answer carries `egress` only for a connection its app sent through this gateway. */
  whoIs: (peerIp: string, endpoint: string, dst: string) => Promise<ClientIdentity | undefined>;
  /** This gateway's own egress policy. */
  policy: EgressPolicy;
  /** Why a destination may not be reached through the gateway (a virtual or loopback address, a daemon's door); undefined:
   * it may. */
  forbidden: (ip: string, port: number) => string | undefined;
  log: Logger;
  /** Connections open at once (default 4096); past it new ones are reset. */
  maxConnections?: number;
  /** How long the connect to the outside may take (ms, default 10000). */
  connectTimeoutMs?: number;
}

/** "ip:port" (IPv6 unbracketed or bracketed; the port after the last colon), canonical, or undefined. */
export function parseEgressTarget(s: string): { ip: string; port: number } | undefined {
  const i = s.lastIndexOf(':');
  if (i <= 0) return undefined;
  const host = s.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = Number(s.slice(i + 1));
  if (!/^\d{1,5}$/.test(s.slice(i + 1)) || port < 1 || port > 65535 || !ipaddr.isValid(host)) return undefined;
  if (!host.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(host)) return undefined;
  return { ip: ipaddr.process(host).toString(), port };
}

/** A node as discloseEgress needs it (cluster.ts NodeDaemon satisfies it). */
export interface EgressNode {
  address: string;
  state: string;
  record?: { egressGateway?: boolean; egressPort?: number };
}

/** What the peer API tells `asker` about a client connection `c` it asked about with `dst` (the endpoint the
 * connection went to, which the report matched): the destination the app asked for (`egress`) only when the asker is
 * a live egress gateway and `dst` is that gateway's egress endpoint; to anyone else the identity alone (an attacker
 * that is a member, or a gateway asking about a connection to another one, learns no destination and so forwards
 * nothing). Pure. */
export function discloseEgress(c: ClientIdentity, dst: string | undefined, asker: string | undefined, nodes: readonly EgressNode[]): ClientIdentity {
  if (c.egress === undefined) return c;
  const { egress, ...rest } = c;
  const gw = asker === undefined ? undefined : nodes.find((d) => d.address === asker && d.state === 'alive');
  const r = gw?.record;
  if (gw && r?.egressGateway && r.egressPort !== undefined && dst === `${gw.address}:${r.egressPort}`) return { ...rest, egress };
  return rest;
}

export class EgressProxy {
  readonly stats: EgressProxyStats = {
    forwarded: 0,
    refused: 0,
    refusals: { 'not-a-member': 0, unidentified: 0, forbidden: 0, denied: 0, 'too-many-connections': 0, 'connect-failed': 0 },
    active: 0,
  };
  private server?: net.Server;
  private readonly open = new Set<net.Socket>();
  private readonly limitLog: RateLimitedLog;

  constructor(private readonly deps: EgressProxyDeps) {
    this.limitLog = new RateLimitedLog(deps.log);
  }

  listen(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
      this.serve(sock).catch((e: unknown) => {
        this.deps.log.error({ err: e }, 'egress proxy: serving a connection failed');
        sock.destroy();
      });
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.deps.port, this.deps.address, () => {
        server.off('error', reject);
        server.on('error', (e) => this.deps.log.warn({ err: e }, 'egress proxy socket error'));
        resolve();
      });
    });
  }

  private refuse(sock: net.Socket, why: EgressRefusal, fields: Record<string, unknown>, msg: string): void {
    this.stats.refused++;
    this.stats.refusals[why]++;
    this.limitLog.warn(`egress-proxy/${why}/${String(fields.peer)}`, { ...fields, reason: why }, msg);
    sock.resetAndDestroy();
  }

  private async serve(sock: net.Socket): Promise<void> {
    sock.on('error', () => sock.destroy());
    const peer = (sock.remoteAddress ?? '').replace(/^::ffff:/i, '');
    const peerPort = sock.remotePort ?? 0;
    const max = this.deps.maxConnections ?? 4096;
    if (this.open.size >= max) return this.refuse(sock, 'too-many-connections', { peer, limit: max }, 'egress proxy: connection reset: too many connections');
    if (!peer || !this.deps.isMember(peer)) return this.refuse(sock, 'not-a-member', { peer }, 'egress proxy: connection reset: not from a cluster member');
    this.track(sock);
    const client = `${peer}:${peerPort}`;
    const here = `${this.deps.address}:${this.deps.port}`;
    const who = await this.deps.whoIs(peer, client, here);
    if (sock.destroyed) return;
    const target = who?.egress === undefined ? undefined : parseEgressTarget(who.egress);
    if (!who || !target) {
      return this.refuse(sock, 'unidentified', { peer: client }, 'egress proxy: connection reset: its node does not vouch for it (not an app sent through this gateway)');
    }
    const where = target.ip.includes(':') ? `[${target.ip}]:${target.port}` : `${target.ip}:${target.port}`;
    const fields = { peer: client, app: who.appId, client: who.identity, tags: who.tags, destination: where };
    const bad = this.deps.forbidden(target.ip, target.port);
    if (bad !== undefined) return this.refuse(sock, 'forbidden', { ...fields, why: bad }, 'egress proxy: connection reset: destination may not be reached through a gateway');
    const d = this.deps.policy.decide(who.tags, target.ip);
    if (!d.allow) return this.refuse(sock, 'denied', fields, 'connect denied by egress policy (at the egress gateway)');
    this.forward(sock, target, fields);
  }

  private track(sock: net.Socket): void {
    this.open.add(sock);
    this.stats.active = this.open.size;
    sock.once('close', () => {
      this.open.delete(sock);
      this.stats.active = this.open.size;
    });
  }

  /** Connects to the destination and pipes both ways: each direction ends (FIN) when its source ends, so a half close
   * passes through; an error or reset on either side destroys both. */
  private forward(sock: net.Socket, target: { ip: string; port: number }, fields: Record<string, unknown>): void {
    const out = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true });
    this.track(out);
    const timer = setTimeout(() => out.destroy(new Error('connect timed out')), this.deps.connectTimeoutMs ?? 10_000);
    let connected = false;
    out.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      out.setNoDelay(true);
      sock.setNoDelay(true);
      this.stats.forwarded++;
      this.deps.log.debug(fields, 'egress proxy: forwarding');
      sock.pipe(out);
      out.pipe(sock);
      sock.resume();
    });
    out.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected) this.refuse(sock, 'connect-failed', { ...fields, code: e.code ?? e.message }, 'egress proxy: the destination could not be reached');
      else sock.resetAndDestroy();
    });
    sock.on('error', () => out.resetAndDestroy());
    /* a side that closed completely (both directions done, or destroyed) takes the other with it once that one has
     * flushed what it was given */
    out.on('close', () => {
      clearTimeout(timer);
      if (!sock.destroyed && sock.writableFinished) sock.destroy();
    });
    sock.on('close', () => {
      if (!out.destroyed && (!connected || out.writableFinished)) out.destroy();
    });
  }

  close(): Promise<void> {
    for (const s of this.open) s.destroy();
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
