/** The router: the decision behind a trapped connect or datagram send — the virtual DNS address, UDP return paths,
 * direct destinations (egress — its policy and gateways in egress-route.ts — or a daemon's door refused), and for a virtual endpoint the service look-up, policy,
 * node health, load balancing, retries of refusing instances and whether the fast path may carry it. Performs no
 * I/O. */
import type { Logger } from 'pino';
import { Errno } from '../errors.js';
import { isLoopback, type VirtualRanges } from '../table/addresses.js';
import { Balancer, type LbStrategy } from '../table/balancer.js';
import { type Endpoint, endpointKey } from '../table/endpoint.js';
import { familyOf, preferFamily } from '../table/family.js';
import type { Proto, ServiceEntry, ServiceTable } from '../table/service-table.js';
import type { Policy } from '../policy/policy.js';
import type { AppRecord } from './apps.js';
import type { ClientReports } from './client-reports.js';
import type { EgressRoute } from './egress-route.js';
import type { ConnectObserver } from './observer.js';
import type { RateLimitedLog } from './limits.js';
import { MsgFlag, encodeSockaddr, type Reply, type RequestOf } from './protocol.js';
import type { UdpIdentity } from './udp-identity.js';
import type { VirtualDns } from './virtual-dns.js';

/** Reply flag to CONNECT: other instances exist; on ECONNREFUSED ask again (MsgFlag.RETRY) for another. */
export const ALTERNATIVES = 4;

export interface RouterStats {
  connects: number;
  refused: number;
  denied: number;
  retried: number;
  egress: number;
  /** Connects and datagram sends refused because they named an appswitch daemon's port or a pool port directly. */
  daemonPortRefused: number;
  /** Connects that went over TCP instead of the fast path because the daemon was out of descriptors. */
  fastpathDeferred: number;
  /** Connects that went over TCP instead of the fast path because the client or the server app had
   * --max-pending-per-app offers waiting for an accept. */
  limitOffers: number;
  /** Connects refused because the client app had --max-pending-per-app connections not yet accepted. */
  limitPending: number;
}

export interface RouterDeps {
  nodeName: string;
  ranges: Pick<VirtualRanges, 'contains'>;
  table: ServiceTable;
  policy: Policy;
  /** Default load-balancing strategy (a service may carry its own). */
  lb: LbStrategy;
  log: Logger;
  limitLog: RateLimitedLog;
  stats: RouterStats;
  /** AppLimits.pendingPerApp. */
  pendingPerApp: number;
  /** This node's apps by id (whether a server app turned the fast path off). */
  apps: { get(appId: string): AppRecord | undefined };
  /** Fast-path offers holding descriptors, by `c/APP` (as client) and `s/APP` (as server). */
  offers: { count(owner: string): number };
  /** Client reports not yet claimed by an accept, per app. */
  reports: Pick<ClientReports, 'count' | 'expire'>;
  /** At the pending limit: forgets what the app no longer holds (Bindings.reclaimClosed). */
  reclaim: { reclaimClosed(app: AppRecord): boolean };
  udp: Pick<UdpIdentity, 'returnPath'>;
  /** See HandlerConfig: nodeAlive, forbidden, virtualDns, fastpath, fdsExhausted. */
  nodeAlive?: (node: string) => boolean;
  forbidden?: (ip: string, port: number, proto: Proto) => string | undefined;
  virtualDns?: Pick<VirtualDns, 'reply'>;
  fastpath?: boolean;
  fdsExhausted?: () => boolean;
  /** Egress policy and gateways for outside destinations (see egress-route.ts); absent: reached directly. */
  egress?: Pick<EgressRoute, 'route'>;
  /** Told of refusals and policy denials (the event bus and edges, src/events). */
  observer?: Pick<ConnectObserver, 'refused' | 'denied'>;
}

export class Router {
  readonly balancer = new Balancer();
  /** Endpoints a connect already found refusing, by app/request, so a retry picks another instance. */
  private readonly tried = new Map<string, { at: number; endpoints: Set<string> }>();
  /** UDP service entries by real endpoint "ip:port" (see directDatagramAllowed); rebuilt after the table changes. */
  private udpEndpoints: Map<string, ServiceEntry[]> | undefined;

  constructor(private readonly deps: RouterDeps) {
    const stale = (): void => (this.udpEndpoints = undefined);
    deps.table.on('added', stale);
    deps.table.on('removed', stale);
  }

  /** The decision behind a connect: the reply, and the instance picked when there is one. */
  decide(app: AppRecord, req: RequestOf<'connect'>): { reply: Reply; pick?: ServiceEntry } {
    const { deps } = this;
    const { dst, proto } = req;
    const dns = deps.virtualDns?.reply(dst);
    if (dns) return { reply: dns };
    const back = proto === 'udp' ? deps.udp.returnPath(app.id, dst) : undefined;
    if (back) return { reply: { result: 0, addr: encodeSockaddr(back), addr2: encodeSockaddr(dst), flags: MsgFlag.UDP_PEER } };
    let vip: string | undefined;
    if (isLoopback(dst.ip)) vip = app.identity; /* the app's own port space, wherever its members run */
    else if (deps.ranges.contains(dst.ip)) vip = dst.ip;
    if (vip === undefined) {
      const door = deps.forbidden?.(dst.ip, dst.port, proto);
      if (door !== undefined && !(door === 'pool' && proto === 'udp' && this.directDatagramAllowed(app, dst))) {
        return { reply: this.refuseDoor(app, dst, proto, door) };
      }
      const out = deps.egress?.route(app, req); /* egress policy, and the gateway in via-gateway mode */
      if (out && out.result < 0) return { reply: out };
      deps.stats.egress++;
      return { reply: out ?? { result: 0, addr: encodeSockaddr(dst) } };
    }
    const reqKey = `${app.id}/${req.seq}`;
    let tried = this.tried.get(reqKey);
    const where = dst.ip.includes(':') ? `[${dst.ip}]:${dst.port}` : `${dst.ip}:${dst.port}`;
    if (req.retry) {
      const failed = req.retryFailed;
      if (!tried) this.tried.set(reqKey, (tried = { at: Date.now(), endpoints: new Set() }));
      if (failed) tried.endpoints.add(endpointKey(failed));
      deps.stats.retried++;
      deps.limitLog.info(
        `retried/${app.id}/${proto}/${where}`,
        { app: app.id, appName: app.name, client: app.identity, service: where, proto, instance: failed ? endpointKey(failed) : undefined },
        'service instance refused the connection; trying another',
      );
    } else {
      deps.stats.connects++;
      this.tried.delete(reqKey);
      tried = undefined;
    }
    if (proto === 'tcp' && !req.retry && this.pendingLimited(app, where)) {
      deps.observer?.refused(app, vip, dst.port, 'pending-limit');
      return { reply: { result: -Errno.ECONNREFUSED } };
    }
    let instances = deps.table.lookup({ vip, port: dst.port, proto });
    if (instances.length === 0 && proto === 'udp' && isLoopback(dst.ip)) {
      /* the local host (the unspecified address means it too, as in the kernel) with no such UDP service: a datagram
       * connect succeeds there in the kernel (it sends nothing), so it is no refusal (glibc's getaddrinfo connects UDP
       * sockets to each candidate address to sort them: every `python3 -m http.server` logged one). The generator
       * leaves the socket unconnected; a send there gets ECONNREFUSED from it, unlogged */
      deps.log.debug({ app: app.id, client: app.identity, service: where, proto }, 'datagram to the local host: no such service, nothing sent');
      return { reply: { result: 0, flags: MsgFlag.NOWHERE } };
    }
    if (instances.length === 0) {
      deps.stats.refused++;
      deps.limitLog.info(`no-service/${app.id}/${proto}/${where}`, { app: app.id, appName: app.name, client: app.identity, service: where, proto }, 'connect refused: no such service');
      deps.observer?.refused(app, vip, dst.port, 'no-service');
      return { reply: { result: -Errno.ECONNREFUSED } };
    }
    const client = { appId: app.id, identity: app.identity, tags: app.tags };
    const allowed = instances.filter((e) => deps.policy.decide(client, { appId: e.appId, identity: e.vip, tags: e.tags }).allow);
    if (allowed.length === 0) {
      deps.stats.denied++;
      const sample = instances[0] as ServiceEntry;
      deps.limitLog.warn(
        `denied/${app.id}/${proto}/${where}`,
        {
          app: app.id,
          appName: app.name,
          client: app.identity,
          clientTags: app.tags,
          service: where,
          proto,
          serviceApp: sample.appId,
          serviceName: sample.name,
          serviceTags: sample.tags,
        },
        'connect denied by policy',
      );
      deps.observer?.denied(app, vip, dst.port);
      return { reply: { result: -Errno.ECONNREFUSED } };
    }
    instances = allowed.filter((e) => !tried?.endpoints.has(endpointKey(e.endpoint)));
    instances = preferFamily(instances, familyOf(dst.ip)); /* a dual-stack server: each family to its own socket */
    const healthy = deps.nodeAlive ? instances.filter((e) => deps.nodeAlive?.(e.node) ?? true) : instances;
    if (healthy.length) instances = healthy;
    const pick = this.balancer.pick(instances, instances[0]?.lb ?? deps.lb, `${proto}/${vip}/${dst.port}`);
    if (!pick) {
      deps.stats.refused++;
      this.tried.delete(reqKey);
      deps.limitLog.info(`all-refused/${app.id}/${proto}/${where}`, { app: app.id, appName: app.name, client: app.identity, service: where, proto }, 'connect refused: every instance refused');
      deps.observer?.refused(app, vip, dst.port, 'all-refused');
      return { reply: { result: -Errno.ECONNREFUSED } };
    }
    this.balancer.noteConnect(pick);
    this.pruneTried();
    const reply: Reply = { result: 0, addr: encodeSockaddr(pick.endpoint), addr2: encodeSockaddr(dst), flags: 0 };
    if (instances.length > 1) {
      reply.flags = ALTERNATIVES;
      if (!tried) this.tried.set(reqKey, { at: Date.now(), endpoints: new Set() });
    }
    if (this.fastpathAllowed(app, proto, pick)) reply.flags = (reply.flags ?? 0) | MsgFlag.FASTPATH;
    return { reply, pick };
  }

  /** A direct destination that is a daemon's door (see HandlerConfig.forbidden): a TCP connect is refused as by a
   * closed port (ECONNREFUSED); a datagram (a UDP connect or send) as by a firewall's OUTPUT rule (EPERM), which is
   * what the kernel gives a program whose packet netfilter rejects. Nothing is sent. Logged (rate-limited), counted. */
  private refuseDoor(app: AppRecord, dst: Endpoint, proto: Proto, door: string): Reply {
    this.deps.stats.daemonPortRefused++;
    const where = dst.ip.includes(':') ? `[${dst.ip}]:${dst.port}` : `${dst.ip}:${dst.port}`;
    this.deps.limitLog.warn(
      `door/${app.id}/${door}`,
      { app: app.id, appName: app.name, client: app.identity, destination: where, proto, door },
      'refused: a program may not reach an appswitch daemon port or a real service endpoint directly',
    );
    return { result: proto === 'udp' ? -Errno.EPERM : -Errno.ECONNREFUSED };
  }

  /** A datagram to a real address inside a node's pool: a UDP server answers its clients at their real addresses
   * (recvfrom is not trapped), which are ephemeral ports — inside the pool's range too — or, for a client that bound
   * its socket, that client's own service endpoint. So only a service endpoint is judged, by the policy as if it were
   * reached by its vip (the default policy is symmetric: a server may answer whoever could reach it). */
  private directDatagramAllowed(app: AppRecord, dst: Endpoint): boolean {
    if (!this.udpEndpoints) {
      this.udpEndpoints = new Map();
      for (const e of this.deps.table.all()) {
        if (e.proto !== 'udp') continue;
        const k = endpointKey(e.endpoint);
        const l = this.udpEndpoints.get(k);
        if (l) l.push(e);
        else this.udpEndpoints.set(k, [e]);
      }
    }
    const entries = this.udpEndpoints.get(endpointKey(dst));
    if (!entries) return true; /* no service there: a client's ephemeral port */
    const client = { appId: app.id, identity: app.identity, tags: app.tags };
    return entries.some((e) => this.deps.policy.decide(client, { appId: e.appId, identity: e.vip, tags: e.tags }).allow);
  }

  /** Both ends on this node, TCP, and neither the daemon nor either app turned the fast path off. */
  private fastpathAllowed(app: AppRecord, proto: Proto, pick: ServiceEntry): boolean {
    const { deps } = this;
    if (deps.fastpath === false || proto !== 'tcp' || pick.node !== deps.nodeName || app.fastpath === false) return false;
    if (deps.apps.get(pick.appId)?.fastpath === false) return false;
    if (deps.fdsExhausted?.()) {
      deps.stats.fastpathDeferred++;
      return false;
    }
    const max = deps.pendingPerApp;
    const asClient = deps.offers.count(`c/${app.id}`);
    const asServer = deps.offers.count(`s/${pick.appId}`);
    if (asClient >= max || asServer >= max) {
      deps.stats.limitOffers++;
      const who = asClient >= max ? app.id : pick.appId;
      deps.limitLog.warn(
        `offers/${who}`,
        { app: who, client: app.id, server: pick.appId, offers: Math.max(asClient, asServer), limit: max },
        'fast-path offers of an app at --max-pending-per-app (none accepted yet): its connects go over TCP',
      );
      return false;
    }
    return true;
  }

  /** Whether the client app has --max-pending-per-app connections set up and not yet accepted by their servers
   * (client records): then its next connect is refused (logged, counted), so that a program connecting without its
   * server ever accepting cannot grow the daemon's tables without bound (nor push other apps' records out). */
  private pendingLimited(app: AppRecord, where: string): boolean {
    const { deps } = this;
    if (deps.reports.count(app.id) >= deps.pendingPerApp) deps.reports.expire();
    if (deps.reports.count(app.id) >= deps.pendingPerApp) deps.reclaim.reclaimClosed(app);
    const n = deps.reports.count(app.id);
    if (n < deps.pendingPerApp) return false;
    deps.stats.limitPending++;
    deps.limitLog.warn(
      `pending/${app.id}`,
      { app: app.id, appName: app.name, client: app.identity, service: where, pending: n, limit: deps.pendingPerApp },
      'connect refused: the app has --max-pending-per-app connections not accepted yet',
    );
    return true;
  }

  private pruneTried(): void {
    if (this.tried.size < 1024) return;
    const old = Date.now() - 30_000;
    for (const [k, v] of this.tried) if (v.at < old) this.tried.delete(k);
  }
}
