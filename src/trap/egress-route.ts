/** Egress routing: the decision behind a connect or datagram send to a destination outside the application network
 * (not virtual, not loopback, not a daemon's door), once the router has found it is one — the egress policy
 * (policy/egress.ts), and with `--egress via-gateway` on a node that is not an egress gateway, the gateway that
 * carries it (round robin over the live ones). Also remembers, per client socket, the destination the app asked for,
 * so that the CONNECTED report of that socket carries it and the gateway can learn it through the peer API. Performs
 * no I/O. */
import type { Logger } from 'pino';
import { Errno } from '../errors.js';
import type { Endpoint } from '../table/endpoint.js';
import type { Proto } from '../table/service-table.js';
import type { EgressPolicy } from '../policy/egress.js';
import type { AppRecord } from './apps.js';
import type { RateLimitedLog } from './limits.js';
import { encodeSockaddr, MsgFlag, type Reply, type RequestOf } from './protocol.js';

export type EgressMode = 'direct' | 'via-gateway';

export interface EgressStats {
  /** Connects (ECONNREFUSED) and datagrams (EPERM) to outside addresses the egress policy denied. */
  egressDenied: number;
  /** Connects that found no live egress gateway (ENETUNREACH). */
  egressNoGateway: number;
  /** Connects sent through an egress gateway. */
  egressViaGateway: number;
  /** Datagrams to outside addresses refused in via-gateway mode (EPERM: gateways carry TCP only). */
  egressUdpRefused: number;
}

export interface EgressRouteDeps {
  policy: EgressPolicy;
  mode: EgressMode;
  /** This node is an egress gateway (it reaches the outside itself: via-gateway does not apply to it). */
  isGateway: boolean;
  /** The egress endpoints (node address, egress port) of the live egress gateways, in a stable order. */
  gateways: () => Endpoint[];
  /** Destinations that are neither judged nor carried: this node's own DNS server (the resolver path). */
  exempt?: (ip: string, port: number, proto: Proto) => boolean;
  log: Logger;
  limitLog: RateLimitedLog;
  stats: EgressStats;
  asked: EgressAsked;
}

const ASKED_TTL_MS = 30_000;
const ASKED_MAX = 65_536;

/** The destination each client socket sent through a gateway asked for, by `appId/socket inode`, until its CONNECTED
 * report takes it (or ASKED_TTL_MS passes). Bounded: the oldest go first. */
export class EgressAsked {
  private readonly m = new Map<string, { dst: Endpoint; at: number }>();

  put(appId: string, socket: string, dst: Endpoint, now = Date.now()): void {
    const k = `${appId}/${socket}`;
    this.m.delete(k);
    this.m.set(k, { dst, at: now });
    if (this.m.size <= ASKED_MAX) return;
    for (const [key, v] of this.m) {
      if (this.m.size <= ASKED_MAX && v.at >= now - ASKED_TTL_MS) break;
      this.m.delete(key);
    }
  }

  /** The destination socket `socket` of `appId` asked for, taken (once). */
  take(appId: string, socket: string, now = Date.now()): Endpoint | undefined {
    const k = `${appId}/${socket}`;
    const v = this.m.get(k);
    if (!v) return undefined;
    this.m.delete(k);
    return now - v.at < ASKED_TTL_MS ? v.dst : undefined;
  }

  get size(): number {
    return this.m.size;
  }
}

function show(e: Endpoint): string {
  return e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`;
}

export class EgressRoute {
  private next = 0;

  constructor(private readonly deps: EgressRouteDeps) {}

  /** The reply for a connect or send to the outside address `req.dst`; undefined: reach it directly (as before). */
  route(app: AppRecord, req: RequestOf<'connect'>): Reply | undefined {
    const { deps } = this;
    const { dst, proto } = req;
    if (deps.exempt?.(dst.ip, dst.port, proto)) return undefined;
    const d = deps.policy.decide(app.tags, dst.ip);
    if (!d.allow) {
      deps.stats.egressDenied++;
      deps.limitLog.warn(
        `egress-denied/${app.id}/${dst.ip}`,
        { app: app.id, appName: app.name, client: app.identity, tags: app.tags, destination: show(dst), proto, reason: d.reason },
        'connect denied by egress policy',
      );
      /* a datagram as by a firewall's OUTPUT rule, a connect as by a closed port (see docs/egress.md) */
      return { result: proto === 'udp' ? -Errno.EPERM : -Errno.ECONNREFUSED };
    }
    if (deps.mode !== 'via-gateway' || deps.isGateway) return undefined;
    if (proto === 'udp') {
      deps.stats.egressUdpRefused++;
      deps.limitLog.warn(
        `egress-udp/${app.id}`,
        { app: app.id, appName: app.name, client: app.identity, destination: show(dst), proto },
        'datagram to an outside address refused: egress gateways carry TCP only (--egress via-gateway)',
      );
      return { result: -Errno.EPERM };
    }
    const gws = deps.gateways();
    if (!gws.length) {
      deps.stats.egressNoGateway++;
      deps.limitLog.warn(
        `egress-nogw/${app.id}`,
        { app: app.id, appName: app.name, client: app.identity, destination: show(dst), proto },
        'connect failed: no live egress gateway (--egress via-gateway)',
      );
      return { result: -Errno.ENETUNREACH };
    }
    const gw = gws[this.next++ % gws.length] as Endpoint;
    if (this.next >= 1 << 30) this.next = 0;
    if (req.socket !== undefined) deps.asked.put(app.id, req.socket, dst);
    deps.stats.egressViaGateway++;
    deps.log.debug({ app: app.id, client: app.identity, destination: show(dst), gateway: show(gw) }, 'egress through a gateway');
    /* the gateway's egress endpoint is the real address; the program sees (getpeername) the address it asked for */
    return { result: 0, addr: encodeSockaddr(gw), addr2: encodeSockaddr(dst), flags: MsgFlag.EGRESS };
  }
}
