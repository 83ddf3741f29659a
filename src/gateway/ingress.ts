/** The daemon's ingress: the exposures of the cluster (gateway/exposures.ts, from the app directory's `--expose` and
 * the 'exposure' cluster objects), the routes this node's forwarder listens on when it is a gateway (`appswitch daemon
 * --gateway`), the external client of each forwarded connection recorded for the instance's accept, and the verdict on
 * an external client identity at accept: only for a service that is exposed now, and only when the node that answers
 * for the client is a live gateway (this node's own forwarder, or another gateway member through the peer API).
 * Performs no I/O of its own: the forwarder listens and connects. */
import type { Logger } from 'pino';
import type { AppDirectory } from '../table/directory.js';
import type { Endpoint } from '../table/endpoint.js';
import type { ServiceTable } from '../table/service-table.js';
import { RateLimitedLog } from '../trap/limits.js';
import { type Exposure, type ExposureClaim, type ExposeSpec, effectiveExposures, exposureName, hostPortProblem, type ReservedPorts } from './exposures.js';
import type { ForwarderStats, IngressForwarder, IngressRoute } from './forwarder.js';

/** A gateway node of the cluster, as the membership says. */
export interface GatewayNode {
  node: string;
  /** Its node address (canonical). */
  address: string;
  alive: boolean;
  /** Its pool and daemon ports, once its record is known. */
  reserved?: ReservedPorts;
}

/** One row of `appswitch get exposures`. */
export interface ExposureView {
  vip: string;
  port: number;
  hostPort: number;
  /** 'app' (run --expose), 'api' (appswitch expose), or both ('api,app'). */
  source: string;
  /** Live gateway nodes (where outside clients reach it). */
  gateways: string[];
  /** active | conflict | no-gateway | listen-error | refused (the host port is a pool or daemon port of this gateway). */
  state: string;
  /** Why it is not active, when it is not. */
  detail?: string;
}

export interface IngressStatus extends ForwarderStats {
  /** This node is a gateway (`appswitch daemon --gateway`). */
  gateway: boolean;
  /** Exposures active in the cluster; in conflict (host port held by another service). */
  exposures: number;
  conflicts: number;
  /** Accepts of relayed outside clients on this node that the generator answered from the relay's preamble. */
  preambleAnswered?: number;
}

export interface IngressDeps {
  nodeName: string;
  /** This node is a gateway; then `forwarder` listens on `listenAddress` (--gateway-address). */
  gateway: boolean;
  listenAddress: string;
  forwarder?: IngressForwarder;
  directory: AppDirectory;
  table: Pick<ServiceTable, 'all'>;
  /** The gateway members (this node included when it is one), alive or not, left members excluded. */
  gateways: () => GatewayNode[];
  /** This node's pool and daemon ports. */
  reserved: () => ReservedPorts;
  log: Logger;
  /** The exposures changed (the daemon recloses its doors). */
  onChange?: () => void;
  /** On a gateway: steers each route's host port to the exposed service's instances on this node, if any (BPF
   * sk_lookup, no proxy: gateway/local-ingress.ts); the forwarder serves what is not steered. */
  local?: { steerExposure(hostPort: number, vip: string, port: number): boolean; unsteerExposure(hostPort: number): void };
  /** The lowest host port this gateway may open: a private daemon's (an ordinary user's) unprivileged port start,
   * so an exposure below it is refused when asked for, not left failing in the forwarder. Absent: any. */
  minHostPort?: number;
}

interface Route {
  route: IngressRoute;
  error?: string;
}

const NO_FORWARDER: ForwarderStats = { accepted: 0, forwarded: 0, refused: 0, active: 0, bytes: 0 };

export class Ingress {
  private objectClaims: ExposureClaim[] = [];
  private exposures: Exposure[] = [];
  /** This gateway's routes by host port. */
  private readonly routes = new Map<number, Route>();
  /** Host ports this gateway refuses to listen on (its own pool or daemon ports), with why. */
  private readonly refusedPorts = new Map<number, string>();
  private nextId = 1;
  private readonly limitLog: RateLimitedLog;

  constructor(private readonly deps: IngressDeps) {
    this.limitLog = new RateLimitedLog(deps.log);
    const f = deps.forwarder;
    if (f) {
      f.onRefusal = (r): void => {
        const rt = this.routeById(r.route);
        this.limitLog.warn(
          `ingress-refused/${r.route}/${r.reason}`,
          { client: `${r.client.ip}:${r.client.port}`, exposure: rt ? exposureName(rt.route.vip, rt.route.port) : undefined, hostPort: rt?.route.hostPort, reason: r.reason },
          'external connection refused',
        );
      };
      f.onListenError = (id, code): void => {
        const rt = this.routeById(id);
        if (!rt) return;
        rt.error = code;
        this.limitLog.warn(`ingress-listen/${id}/${code}`, { address: rt.route.address, hostPort: rt.route.hostPort, exposure: exposureName(rt.route.vip, rt.route.port), code }, 'gateway cannot listen for an exposure (retried every 5 s)');
      };
    }
    deps.directory.on('added', (a) => {
      if (a.expose?.length) this.refresh();
    });
    deps.directory.on('removed', (a) => {
      if (a.expose?.length) this.refresh();
    });
    this.refresh();
  }

  private routeById(id: number): Route | undefined {
    for (const r of this.routes.values()) if (r.route.id === id) return r;
    return undefined;
  }

  /** The 'exposure' cluster objects changed: their claims replace the previous ones. */
  setObjectClaims(claims: ExposureClaim[]): void {
    this.objectClaims = claims;
    this.refresh();
  }

  /** The claims of the apps in the directory (`run --expose`). */
  private appClaims(): ExposureClaim[] {
    const out: ExposureClaim[] = [];
    for (const a of this.deps.directory.all()) {
      for (const x of a.expose ?? []) out.push({ vip: a.identity, port: x.port, hostPort: x.hostPort, source: 'app', origin: a.id, since: a.exposedAt ?? 0 });
    }
    return out;
  }

  /** Recomputes the exposures and, on a gateway, the routes its forwarder listens on. */
  refresh(): void {
    const before = new Map(this.exposures.map((e) => [`${e.hostPort}/${exposureName(e.vip, e.port)}`, e.state]));
    this.exposures = effectiveExposures([...this.appClaims(), ...this.objectClaims]);
    for (const e of this.exposures) {
      if (e.state === 'conflict' && before.get(`${e.hostPort}/${exposureName(e.vip, e.port)}`) !== 'conflict') {
        this.limitLog.warn(`ingress-conflict/${e.hostPort}`, { exposure: exposureName(e.vip, e.port), hostPort: e.hostPort, holder: e.holder }, 'exposure not served: its host port belongs to an older exposure');
      }
    }
    if (this.deps.gateway && this.deps.forwarder) this.syncRoutes(this.deps.forwarder);
    this.deps.onChange?.();
  }

  private syncRoutes(f: IngressForwarder): void {
    const want = new Map<number, Exposure>();
    this.refusedPorts.clear();
    const reserved = this.deps.reserved();
    for (const e of this.exposures) {
      if (e.state !== 'active') continue;
      const why = hostPortProblem(e.hostPort, reserved);
      if (why) {
        this.refusedPorts.set(e.hostPort, why);
        this.limitLog.warn(`ingress-reserved/${e.hostPort}`, { exposure: exposureName(e.vip, e.port), hostPort: e.hostPort, why }, 'gateway does not listen for an exposure');
        continue;
      }
      want.set(e.hostPort, e);
    }
    for (const [hp, r] of this.routes) {
      const e = want.get(hp);
      if (!e || e.vip !== r.route.vip || e.port !== r.route.port) {
        f.remove(r.route.id);
        this.routes.delete(hp);
        this.deps.local?.unsteerExposure(hp);
        this.deps.log.info({ hostPort: hp, exposure: exposureName(r.route.vip, r.route.port) }, 'gateway stopped listening for an exposure');
      }
    }
    for (const [hp, e] of want) {
      if (this.routes.has(hp)) continue;
      const route: IngressRoute = { id: this.nextId++, address: this.deps.listenAddress, hostPort: hp, vip: e.vip, port: e.port };
      this.routes.set(hp, { route });
      f.add(route);
      this.deps.local?.steerExposure(hp, e.vip, e.port);
      this.deps.log.info({ address: route.address, hostPort: hp, exposure: exposureName(e.vip, e.port) }, 'gateway listening for an exposure');
    }
  }

  /** The active exposure at `hostPort`, if any. */
  holderOf(hostPort: number): Exposure | undefined {
    return this.exposures.find((e) => e.hostPort === hostPort && e.state === 'active');
  }

  /** Whether vip:port is exposed now (an active exposure at some host port). */
  isExposed(vip: string, port: number): boolean {
    return this.exposures.some((e) => e.state === 'active' && e.vip === vip && e.port === port);
  }

  /** Host ports of the active exposures (closed to trapped programs at every gateway's address: see the doors). */
  activeHostPorts(): number[] {
    return [...new Set(this.exposures.filter((e) => e.state === 'active').map((e) => e.hostPort))];
  }

  /** Why an external client may not reach the app's listener (undefined: it may). See ClientIdentities.accept. */
  checkExternal(listener: Endpoint | undefined, via: string | 'local'): string | undefined {
    if (via === 'local') {
      if (!this.deps.gateway) return 'this node is not a gateway';
    } else {
      const g = this.deps.gateways().find((x) => x.address === via);
      if (!g) return `node ${via} is not a gateway`;
      if (!g.alive) return `gateway ${g.node} is not alive`;
    }
    if (!listener) return 'listener unknown';
    const services = this.deps.table.all().filter((e) => e.node === this.deps.nodeName && e.proto === 'tcp' && e.endpoint.port === listener.port);
    if (!services.some((e) => this.isExposed(e.vip, e.port))) return 'service not exposed';
    return undefined;
  }


  /** Rows of `appswitch get exposures`. */
  list(): ExposureView[] {
    const gws = this.deps.gateways();
    const live = gws.filter((g) => g.alive).map((g) => g.node).sort();
    return this.exposures.map((e): ExposureView => {
      const v: ExposureView = { vip: e.vip, port: e.port, hostPort: e.hostPort, source: e.sources.join(','), gateways: e.state === 'active' ? live : [], state: e.state };
      if (e.state === 'conflict') v.detail = `host port ${e.hostPort} is held by ${e.holder ?? 'an older exposure'}`;
      else if (!live.length) {
        v.state = 'no-gateway';
        v.detail = 'no live gateway node: reachable once a node runs with --gateway';
      } else {
        const refused = this.refusedPorts.get(e.hostPort);
        const err = this.routes.get(e.hostPort)?.error;
        if (refused) {
          v.state = 'refused';
          v.detail = `on ${this.deps.nodeName}: ${refused}`;
        } else if (err) {
          v.state = 'listen-error';
          v.detail = `on ${this.deps.nodeName}: ${err}`;
        }
      }
      return v;
    });
  }

  /** Names of the live gateway nodes. */
  liveGateways(): string[] {
    return this.deps.gateways().filter((g) => g.alive).map((g) => g.node);
  }

  /** Why `hostPort` cannot be a host port here or at a known gateway (a pool or daemon port), else undefined. */
  hostPortProblem(hostPort: number): string | undefined {
    const min = this.deps.minHostPort;
    if (min !== undefined && hostPort < min) return `host port ${hostPort} is below ${min}, which a private daemon (an ordinary user) cannot open`;
    const own = hostPortProblem(hostPort, this.deps.reserved());
    if (own) return own;
    for (const g of this.deps.gateways()) {
      const why = g.reserved ? hostPortProblem(hostPort, g.reserved) : undefined;
      if (why) return `${why} on gateway ${g.node}`;
    }
    return undefined;
  }

  /** Why these `run --expose` specs cannot be (see AppRegistryDeps.exposeProblem). */
  exposeProblem(specs: ExposeSpec[]): string | undefined {
    for (const s of specs) {
      const why = this.hostPortProblem(s.hostPort);
      if (why) return why;
    }
    return undefined;
  }

  status(): IngressStatus {
    return {
      gateway: this.deps.gateway,
      ...(this.deps.forwarder?.stats() ?? NO_FORWARDER),
      exposures: this.exposures.filter((e) => e.state === 'active').length,
      conflicts: this.exposures.filter((e) => e.state === 'conflict').length,
    };
  }

  async close(): Promise<void> {
    await this.deps.forwarder?.close();
  }
}
