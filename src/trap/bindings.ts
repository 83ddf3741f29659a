/** Bindings: the sockets apps bind (bind, bound, unbound), their pool ports (planned in a BIND reply, confirmed by
 * BOUND), the services their listen() or UDP bind puts in the table, and their withdrawal when the socket is gone
 * (sweep, reclaim, a port bound again, the app's end). Performs no I/O: the kernel's socket tables are read through
 * the injected socketsNow / listenerGone / stillHeld. */
import type { Logger } from 'pino';
import { Errno } from '../errors.js';
import { isLoopback, isUnspecified } from '../table/addresses.js';
import type { Endpoint } from '../table/endpoint.js';
import type { PortPool } from '../table/port-pool.js';
import type { Proto, ServiceEntry, ServiceTable } from '../table/service-table.js';
import type { AppRecord } from './apps.js';
import type { ClientReports } from './client-reports.js';
import { CountedMap, type RateLimitedLog } from './limits.js';
import { collides, type Family, type PortHolder } from './port-space.js';
import { AF_INET6, encodeSockaddr, type Reply, type RequestOf } from './protocol.js';

/** How often an app at its bound-socket limit may make the daemon read the kernel's socket tables (see reclaimClosed). */
const RECLAIM_MS = 100;

export interface Binding {
  appId: string;
  proto: Proto;
  virt: Endpoint;
  real: Endpoint;
  serviceId?: string;
  /** When the service was registered (ms): a sweep only judges listeners older than its snapshot. */
  listenedAt?: number;
  /** When the socket was bound (ms), for the same reason. */
  boundAt: number;
  /** The program's socket: AF_INET (4) or AF_INET6 (6), and whether an AF_INET6 one has IPV6_V6ONLY (see
   * port-space.ts). Missing on bindings saved by an older daemon. */
  family?: Family;
  v6only?: boolean;
}

interface PlannedBind {
  appId: string;
  port: number;
  virt: Endpoint;
  proto: Proto;
  family: Family;
  v6only: boolean;
}

export interface BindingStats {
  binds: number;
  listens: number;
  /** Binds refused because the app holds --max-services-per-app bound sockets (ENOBUFS). */
  limitServices: number;
}

export interface BindingsDeps {
  nodeName: string;
  nodeAddress: string;
  table: ServiceTable;
  pool: PortPool;
  log: Logger;
  limitLog: RateLimitedLog;
  stats: BindingStats;
  /** AppLimits.servicesPerApp. */
  servicesPerApp: number;
  /** Whether an app of this node is registered (restore() takes back only bindings of restored apps). */
  apps: { has(appId: string): boolean };
  /** At the limit, client reports of connections the app closed go too (see reclaimClosed). */
  reports: Pick<ClientReports, 'forgetGone'>;
  /** See HandlerConfig.onChange. */
  onChange?: (now?: boolean) => void;
  /** See HandlerConfig.socketsNow, listenerGone and stillHeld. */
  socketsNow?: () => { sockets: Set<string>; liveLocal: Set<string> } | undefined;
  listenerGone?: (real: Endpoint) => boolean;
  stillHeld?: (ino: string, proto: 'tcp' | 'udp', real: Endpoint) => boolean;
}

/** What restore() runs each saved record through: a record that throws is skipped (counted, logged) alone. */
export type RestoreAttempt = (what: string, id: string, fn: () => void) => void;

export class Bindings {
  /** Socket inode -> what it is bound to. */
  private readonly bindings = new CountedMap<string, Binding>((b) => [b.appId]);
  /** Pool ports handed out in a BIND reply and not yet confirmed, by app and request. */
  private readonly planned = new CountedMap<string, PlannedBind>((p) => [p.appId]);
  /** When each app at its bound-socket limit last made the daemon read the socket tables (see reclaimClosed). */
  private readonly reclaimedAt = new Map<string, number>();
  /** restore(): the service id each restored binding had, until its service is restored. */
  private readonly savedService = new Map<string, string>();

  constructor(private readonly deps: BindingsDeps) {}

  private changed(now = false): void {
    this.deps.onChange?.(now);
  }

  bind(app: AppRecord, req: RequestOf<'bind'>): Reply {
    const { requested, proto } = req;
    const key = `${app.id}/${req.seq}`;
    const prev = this.planned.get(key);
    if (prev) {
      this.planned.delete(key);
      if (req.retry) this.deps.pool.markBusy(prev.port);
      else this.deps.pool.release(prev.port);
    }
    if (!(isLoopback(requested.ip) || isUnspecified(requested.ip) || requested.ip === app.identity)) {
      return { result: -Errno.EADDRNOTAVAIL }; /* the program's namespace has lo and its own vip, nothing else */
    }
    const sock: PortHolder = { proto, port: requested.port, family: req.family, v6only: req.v6only };
    if (requested.port !== 0 && this.portTaken(app, sock)) return { result: -Errno.EADDRINUSE };
    let held = this.bindings.count(app.id) + this.planned.count(app.id);
    if (held >= this.deps.servicesPerApp && this.reclaimClosed(app)) held = this.bindings.count(app.id) + this.planned.count(app.id);
    if (held >= this.deps.servicesPerApp) {
      /* a program holding this many bound sockets would fill the pool and the node's gossip keys for everyone */
      this.deps.stats.limitServices++;
      this.deps.limitLog.warn(
        `services/${app.id}`,
        { app: app.id, appName: app.name, identity: app.identity, bound: held, limit: this.deps.servicesPerApp },
        'bind refused (ENOBUFS): the app holds --max-services-per-app bound sockets',
      );
      return { result: -Errno.ENOBUFS };
    }
    const port = this.deps.pool.allocate();
    if (port === undefined) {
      this.deps.log.warn({ app: app.id }, 'port pool exhausted');
      return { result: -Errno.EADDRINUSE };
    }
    const virt: Endpoint = { ip: requested.ip, port: requested.port === 0 ? port : requested.port };
    this.planned.set(key, { appId: app.id, port, virt, proto, family: req.family, v6only: req.v6only });
    const family = req.family === 6 ? AF_INET6 : undefined;
    let real: Buffer;
    try {
      real = encodeSockaddr({ ip: this.deps.nodeAddress, port }, family);
    } catch {
      return { result: -Errno.EAFNOSUPPORT };
    }
    return { result: 0, addr: real, addr2: encodeSockaddr(virt, family) };
  }

  /** The generator bound the socket as planned: remember the binding under its inode. */
  bound(app: AppRecord, req: RequestOf<'bound'>): void {
    const { real } = req;
    for (const [k, p] of this.planned) {
      if (k.startsWith(`${app.id}/`) && p.port === real.port) {
        this.planned.delete(k);
        this.deps.stats.binds++;
        const b: Binding = { appId: app.id, proto: p.proto, virt: p.virt, real, boundAt: Date.now(), family: p.family };
        if (p.v6only) b.v6only = true;
        this.bindings.set(req.socket, b);
        if (p.proto === 'udp') this.register(app, req.socket, b); /* a datagram socket serves once bound: no listen() */
        this.changed(true);
        return;
      }
    }
  }

  unbound(app: AppRecord, req: RequestOf<'unbound'>): void {
    for (const [k, p] of this.planned) {
      if (k.startsWith(`${app.id}/`) && p.port === req.real.port) {
        this.planned.delete(k);
        this.deps.pool.release(p.port);
      }
    }
  }

  listen(app: AppRecord, req: RequestOf<'listen'>): Reply {
    const b = this.bindings.get(req.socket);
    if (!b || b.appId !== app.id) return { result: -Errno.EINVAL };
    if (b.serviceId) return { result: 0 }; /* listen() again, e.g. to change the backlog */
    this.register(app, req.socket, b);
    this.changed(true);
    return { result: 0 };
  }

  /** Puts a bound socket's service (vip:port of its protocol -> real endpoint) in the table. */
  private register(app: AppRecord, ino: string, b: Binding): void {
    const { table, nodeName } = this.deps;
    const e: ServiceEntry = {
      id: `${nodeName}/${app.id}/${ino}`,
      vip: app.identity,
      port: b.virt.port,
      proto: b.proto,
      node: nodeName,
      endpoint: b.real,
      appId: app.id,
      tags: app.tags,
      version: table.nextVersion(),
      socket: ino,
    };
    if (app.name !== undefined) e.name = app.name;
    if (app.lb !== undefined) e.lb = app.lb;
    if (b.family !== undefined) e.family = b.family;
    b.serviceId = e.id;
    b.listenedAt = Date.now();
    table.upsert(e);
    this.deps.stats.listens++;
    this.deps.log.info({ app: app.id, service: `${e.vip}:${e.port}/${e.proto}`, endpoint: `${b.real.ip}:${b.real.port}` }, 'service up');
  }

  /** Drops services whose listening socket is gone (the program closed it) and, with `liveSockets`, bindings whose
   * socket is gone (bound, never listened, or UDP: their pool port would leak until the app exits). `snapshotAt` is
   * when the sets were read: what was registered after that is not in them yet and is kept. */
  sweep(liveListeners: Set<string>, snapshotAt: number, liveSockets?: Set<string>): void {
    for (const [ino, b] of this.bindings) {
      if (b.proto === 'tcp' && b.serviceId) {
        if (liveListeners.has(ino) || (b.listenedAt ?? 0) >= snapshotAt) continue;
      } else if (!liveSockets || liveSockets.has(ino) || b.boundAt >= snapshotAt) {
        continue;
      }
      if (this.deps.stillHeld?.(ino, b.proto, b.real)) continue;
      this.unbind(ino);
    }
  }

  private unbind(ino: string): void {
    const b = this.bindings.get(ino);
    if (!b) return;
    this.bindings.delete(ino);
    this.deps.pool.release(b.real.port);
    if (b.serviceId) {
      const e = this.deps.table.remove(b.serviceId);
      if (e) this.deps.log.info({ app: b.appId, service: `${e.vip}:${e.port}` }, 'service down');
    }
    this.changed();
  }

  /** At a per-app limit: forgets what the app no longer holds although the last sweep has not seen it go — bindings of
   * sockets it closed (a program that binds and closes in a loop holds one at a time), client reports of connections
   * it closed before any accept. A look that found nothing to forget is not repeated for RECLAIM_MS, so a program
   * really at its limit costs the daemon little. True when anything went. */
  reclaimClosed(app: AppRecord): boolean {
    const now = Date.now();
    if (!this.deps.socketsNow || now - (this.reclaimedAt.get(app.id) ?? 0) < RECLAIM_MS) return false;
    const snap = this.deps.socketsNow();
    if (!snap) return false;
    let gone = 0;
    for (const [ino, b] of this.bindings) {
      /* a TCP socket that is bound but neither listening nor connected is in no table: only UDP sockets and listeners */
      if (b.appId === app.id && (b.proto === 'udp' || b.serviceId) && !snap.sockets.has(ino) && !this.deps.stillHeld?.(ino, b.proto, b.real)) {
        this.unbind(ino);
        gone++;
      }
    }
    gone += this.deps.reports.forgetGone(app.id, snap.liveLocal);
    if (gone === 0) this.reclaimedAt.set(app.id, now);
    else this.reclaimedAt.delete(app.id);
    return gone > 0;
  }

  /** Whether the app's sockets hold this port against a new bind (the kernel's conflict rules: port-space.ts). A
   * colliding listener whose real socket the kernel no longer has (the program closed it and the sweep has not seen
   * it yet) lets go of the port now: a server may close its listener and bind the same port again at once. */
  private portTaken(app: AppRecord, want: PortHolder): boolean {
    let taken = false;
    for (const [ino, b] of this.bindings) {
      if (b.appId !== app.id || !(b.serviceId || b.proto === 'udp')) continue;
      if (!collides({ proto: b.proto, port: b.virt.port, family: b.family, v6only: b.v6only }, want)) continue;
      if (b.proto === 'tcp' && this.deps.listenerGone?.(b.real) === true) {
        this.deps.log.info({ app: app.id, port: b.virt.port, endpoint: `${b.real.ip}:${b.real.port}` }, 'listener closed: port bound again');
        this.unbind(ino);
        continue;
      }
      taken = true;
    }
    return taken;
  }

  /** The app ended: its bindings, planned ports and services go. */
  endApp(appId: string): void {
    this.reclaimedAt.delete(appId);
    for (const [ino, b] of this.bindings) if (b.appId === appId) this.unbind(ino);
    for (const [k, p] of this.planned) {
      if (k.startsWith(`${appId}/`)) {
        this.deps.pool.release(p.port);
        this.planned.delete(k);
      }
    }
    this.deps.table.removeWhere((e) => e.node === this.deps.nodeName && e.appId === appId);
  }

  /** The UDP binding of this node at real endpoint "ip:port" (scanned: asked once per new sender, not per datagram). */
  udpBoundAt(key: string): { appId: string; port: number } | undefined {
    for (const b of this.bindings.values()) {
      if (b.proto === 'udp' && `${b.real.ip}:${b.real.port}` === key) return { appId: b.appId, port: b.virt.port };
    }
    return undefined;
  }

  get size(): number {
    return this.bindings.size;
  }

  /** The bindings by inode, and this node's services of registered apps: what a snapshot keeps. */
  saved(): { bindings: Array<[string, Binding]>; services: ServiceEntry[] } {
    return {
      bindings: [...this.bindings],
      services: this.deps.table.all().filter((e) => e.node === this.deps.nodeName && this.deps.apps.has(e.appId)),
    };
  }

  /** Takes back saved bindings of restored apps and their services (new versions, so the cluster takes them); every
   * binding comes back, services only up to servicesPerApp per app. Returns how many services were left out for that
   * limit (logged). */
  restore(bindings: Array<[string, Binding]>, services: ServiceEntry[], attempt: RestoreAttempt): number {
    const { table, nodeName, servicesPerApp } = this.deps;
    for (const [ino, b] of bindings) {
      /* every binding comes back, past the limit too: its socket still holds its port in the kernel, so the pool must
       * not hand that port out again (the sweep releases it once the socket is closed) */
      attempt('binding', ino, () => {
        if (!this.deps.apps.has(b.appId) || this.bindings.has(ino)) return;
        this.deps.pool.take(b.real.port);
        const { serviceId: _s, ...plain } = b;
        this.bindings.set(ino, plain); /* its service, if restored below, is attached again there */
        if (b.serviceId !== undefined) this.savedService.set(ino, b.serviceId);
      });
    }
    let overLimit = 0;
    const perApp = new Map<string, number>();
    for (const e of services) {
      attempt('service', e.id, () => {
        const b = e.socket !== undefined ? this.bindings.get(e.socket) : undefined;
        if (!b || e.socket === undefined || this.savedService.get(e.socket) !== e.id || !this.deps.apps.has(e.appId) || b.appId !== e.appId) return;
        const n = perApp.get(e.appId) ?? 0;
        if (n >= servicesPerApp) {
          overLimit++;
          return;
        }
        perApp.set(e.appId, n + 1);
        b.serviceId = e.id;
        table.upsert({ ...e, node: nodeName, version: table.nextVersion() });
      });
    }
    this.savedService.clear();
    if (overLimit) {
      this.deps.log.warn({ dropped: overLimit, limit: servicesPerApp }, 'saved state: services past --max-services-per-app not restored (their sockets stay bound)');
    }
    return overLimit;
  }
}
