/** The trap handler: the decisions behind trapped bind/listen/connect and datagram sends, made against the
 * service table. It performs no I/O (the generator acts on the program's socket); the trap server feeds it
 * decoded messages and sends back what it returns. */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { Errno } from '../errors.js';
import { IdentityPool, isLoopback, isUnspecified, rangeEdge, type VirtualRanges } from '../table/addresses.js';
import { Balancer, type LbStrategy } from '../table/balancer.js';
import type { AppDirectory, AppEntry } from '../table/directory.js';
import type { PortPool } from '../table/port-pool.js';
import type { Policy } from '../policy/policy.js';
import type { Proto, ServiceEntry, ServiceTable } from '../table/service-table.js';
import { familyOf, preferFamily } from '../table/family.js';
import { collides, type Family, type PortHolder } from './port-space.js';
import { type AppMeta, type AppRecord, TICKET_RE } from './apps.js';
import type { ConnectionTracker } from './connections.js';
import type { VirtualDns } from './virtual-dns.js';
import { type ClientIdentity, ClientReports, type ClientSocketOrigin } from './client-reports.js';

export type { ClientIdentity, ClientSocketOrigin } from './client-reports.js';
import { type AppLimits, CountedMap, DEFAULT_LIMITS, RateLimitedLog } from './limits.js';
import { UdpIdentity } from './udp-identity.js';
import {
  AF_INET6,
  canonicalIp,
  decodeSockaddr,
  encodeSockaddr,
  type Endpoint,
  MsgFlag,
  SOCK_DGRAM,
  type TrapMsg,
} from './protocol.js';


/** Asks the daemon of another node who a client endpoint of that node is (see daemon/peers.ts); `dst`, the server's
 * real endpoint, lets that daemon find the client's socket in its kernel. */
export type PeerResolver = (peerIp: string, endpoint: string, dst?: string, proto?: 'udp') => Promise<ClientIdentity | undefined>;


export interface HandlerConfig {
  nodeName: string;
  nodeAddress: string;
  ranges: VirtualRanges;
  table: ServiceTable;
  pool: PortPool;
  log: Logger;
  policy: Policy;
  /** Default load-balancing strategy (a service may carry its own). */
  lb: LbStrategy;
  /** Whether a node is alive (instances on suspect or dead nodes are skipped while others exist). */
  nodeAlive?: (node: string) => boolean;
  /** Resolves clients of other nodes; without it, only this node's clients are identified. */
  resolvePeer?: PeerResolver;
  /** How long to wait for a client's CONNECTED report that may still be on its way (ms). */
  identityWaitMs?: number;
  /** Whether a client socket of this node was created by a trap generator (the socket guard, daemon/sockguard.ts);
   * undefined when unknown. Without it, every unidentified connection waits identityWaitMs. */
  clientSocketOrigin?: (client: Endpoint, server: Endpoint) => ClientSocketOrigin | undefined;
  /** Every app in the cluster: names, vips and identities stay unique through it. */
  directory?: AppDirectory;
  /** Same-host connections may become Unix socket pairs (default true; `appswitch daemon --no-fastpath`). */
  fastpath?: boolean;
  /** Whether the daemon is out of file descriptors now (see FdBudget): then connects get no fast path (it needs two
   * descriptors in the daemon until the server accepts) and go over TCP, which needs none. */
  fdsExhausted?: () => boolean;
  /** Closes descriptors the handler holds (fast-path offers); the trap server passes native close. */
  closeFds?: (fds: number[]) => void;
  /** Called after every change of what a snapshot holds (apps, bindings, services): the daemon saves its state —
   * at once when `now` (a new binding or service: a daemon killed a moment later must still take it over), else
   * soon after (coalesced). */
  onChange?: (now?: boolean) => void;
  /** Records the connections set up (`appswitch get connections`); inodeOf names a fast-path socket by inode. */
  connections?: ConnectionTracker;
  inodeOf?: (fd: number) => string | undefined;
  /** Whether a direct (non-virtual) destination is an appswitch daemon's own door on some node (its gossip, peer
   * API, metrics or DNS port, or a port of its pool): returns which, and the program is refused. See
   * policy/daemon-ports.ts. */
  forbidden?: (ip: string, port: number, proto: Proto) => string | undefined;
  /** Per-app limits (see trap/limits.ts); default DEFAULT_LIMITS. */
  limits?: AppLimits;
  /** The virtual DNS address (see trap/virtual-dns.ts): connects and sends there reach this node's DNS server. */
  virtualDns?: VirtualDns;
  /** What the kernel's socket tables say now (synchronous; undefined when they cannot be read): asked only when an app
   * reaches a per-app limit, so that sockets it closed since the last sweep do not count against it. */
  socketsNow?: () => { sockets: Set<string>; liveLocal: Set<string> } | undefined;
  /** Whether the kernel positively has no listening socket at this real endpoint any more (sock_diag, one exact
   * lookup): asked only when a bind collides with one of the app's listeners, so that a server that closed its
   * listener and binds the port again (iperf3 after each test) gets it at once instead of after the next sweep.
   * False (or missing) whenever it cannot tell. */
  listenerGone?: (real: Endpoint) => boolean;
  /** Whether the kernel still has this binding's very socket (by inode): asked before a sweep or a reclaim withdraws a
   * binding whose inode it did not find in /proc, which can skip a socket while others come and go (listener-diag.ts). */
  stillHeld?: (ino: string, proto: 'tcp' | 'udp', real: Endpoint) => boolean;
}

/** What the daemon saves under its state directory and restores after a restart (see Daemon): the apps (with their
 * resume secrets), their bound sockets and their services. Connections in flight (fast-path offers, client
 * identities not yet claimed by an accept) are not kept. */
export interface HandlerSnapshot {
  apps: AppRecord[];
  bindings: Array<[string, Binding]>;
  services: ServiceEntry[];
}

/** A fast-path connection the server has not accepted within this time is given up (its fds closed). */
const OFFER_TTL_MS = 60_000;
/** How often an app at its bound-socket limit may make the daemon read the kernel's socket tables (see reclaimClosed). */
const RECLAIM_MS = 100;

/** What the handler answers: a result (>= 0 or -errno) and up to two addresses. */
export interface Reply {
  result: number;
  addr?: Buffer;
  addr2?: Buffer;
  payload?: Buffer;
  arg?: number;
  flags?: number;
  /** Descriptors sent with the reply (SCM_RIGHTS); the trap server closes its copies afterwards. */
  fds?: number[];
  /** Sent first, to another app's generator (AS_OFFER): see TrapHandler.connect. `sent` says whether it went out (the
   * trap server then owns `fd`). */
  push?: { appId: string; addr: Buffer; addr2: Buffer; fd: number; sent: (ok: boolean) => void };
}

/** Reply flag to CONNECT: other instances exist; on ECONNREFUSED ask again (MsgFlag.RETRY) for another. */
export const ALTERNATIVES = 4;

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

/** Counters the daemon exposes. */
export interface HandlerStats {
  binds: number;
  listens: number;
  connects: number;
  refused: number;
  denied: number;
  retried: number;
  unidentified: number;
  egress: number;
  /** Client connections reported by generators, by path. */
  tcpConnections: number;
  fastpathConnections: number;
  /** Fast-path offers the server never accepted. */
  offersExpired: number;
  /** Fast-path connections whose descriptors the daemon had no room for (reset; see connectedLost). */
  fastpathLost: number;
  /** Connects that went over TCP instead of the fast path because the daemon was out of descriptors. */
  fastpathDeferred: number;
  /** Connects and datagram sends refused because they named an appswitch daemon's port or a pool port directly. */
  daemonPortRefused: number;
  /** Binds refused because the app holds --max-services-per-app bound sockets (ENOBUFS). */
  limitServices: number;
  /** Connects that went over TCP instead of the fast path because the client or the server app had
   * --max-pending-per-app offers waiting for an accept. */
  limitOffers: number;
  /** Connects refused because the client app had --max-pending-per-app connections not yet accepted. */
  limitPending: number;
  /** Datagram senders nobody vouched for (their datagrams are dropped, see udp-identity.ts). */
  udpUnidentified: number;
}

/** A fast-path connection waiting for the server's accept: [server's end of the socket pair, placeholder] until the
 * end is pushed to the server's generator (then [placeholder]; [] once that is gone too). */
interface Offer {
  fds: number[];
  at: number;
  /** The client app (whose connect made it). */
  client: string;
  pushed?: boolean;
  who?: ClientIdentity;
  dst?: Endpoint;
  /** The server app, when known (speculative offers). */
  server?: string;
}

/** Per-app counters of offers that still hold descriptors in the daemon (see AppLimits.pendingPerApp). */
function offerOwners(o: Offer): string[] {
  if (!o.fds.length) return [];
  return o.server !== undefined ? [`c/${o.client}`, `s/${o.server}`] : [`c/${o.client}`];
}

function protoOf(sockType: number): Proto {
  return sockType === SOCK_DGRAM ? 'udp' : 'tcp';
}

/** "ip:port" of a sockaddr (v4-mapped IPv6 shown as IPv4), or undefined. */

function endpointKey(b: Buffer): string | undefined {
  const e = b.length ? decodeSockaddr(b) : undefined;
  return e ? `${e.ip.replace(/^::ffff:/i, '')}:${e.port}` : undefined;
}

export class TrapHandler {
  readonly apps = new Map<string, AppRecord>();
  readonly stats: HandlerStats = {
    binds: 0,
    listens: 0,
    connects: 0,
    refused: 0,
    denied: 0,
    retried: 0,
    unidentified: 0,
    egress: 0,
    tcpConnections: 0,
    fastpathConnections: 0,
    offersExpired: 0,
    fastpathLost: 0,
    fastpathDeferred: 0,
    daemonPortRefused: 0,
    limitServices: 0,
    limitOffers: 0,
    limitPending: 0,
    udpUnidentified: 0,
  };
  readonly balancer = new Balancer();
  /** Endpoints a connect already found refusing, by app/request, so a retry picks another instance. */
  private readonly tried = new Map<string, { at: number; endpoints: Set<string> }>();
  /** Who connected from which client endpoint, for the servers' accepts (see ClientReports). */
  private readonly reports: ClientReports;
  /** Fast-path connections waiting for the server's accept, by the placeholder's real client endpoint:
   * [server's end of the Unix socket pair, placeholder TCP socket]. */
  private readonly offers = new CountedMap<string, Offer>(offerOwners);
  private readonly identities: IdentityPool;
  /** Socket inode -> what it is bound to. */
  private readonly bindings = new CountedMap<string, Binding>((b) => [b.appId]);
  /** Pool ports handed out in a BIND reply and not yet confirmed, by app and request. */
  private readonly planned = new CountedMap<string, PlannedBind>((p) => [p.appId]);
  /** Apps restored from a saved state whose generator has not come back yet: id -> deadline (ms). */
  private readonly detached = new Map<string, number>();
  /** When each app at its bound-socket limit last made the daemon read the socket tables (see reclaimClosed). */
  private readonly reclaimedAt = new Map<string, number>();
  private readonly limits: AppLimits;
  /** UDP service entries by real endpoint "ip:port" (see directDatagramAllowed); rebuilt after the table changes. */
  private udpEndpoints: Map<string, ServiceEntry[]> | undefined;
  /** restore(): the service id each restored binding had, until its service is restored. */
  private readonly savedService = new Map<string, string>();
  private readonly limitLog: RateLimitedLog;
  /** Who sends datagrams from where, and the return paths to them (see udp-identity.ts). */
  readonly udp: UdpIdentity;

  constructor(private readonly cfg: HandlerConfig) {
    let seed = 0;
    for (const ch of cfg.nodeName) seed = (seed * 31 + ch.charCodeAt(0)) >>> 0;
    this.identities = new IdentityPool(seed, (ip) => cfg.directory?.takenByOther(ip) ?? false);
    this.limits = cfg.limits ?? DEFAULT_LIMITS;
    this.limitLog = new RateLimitedLog(cfg.log);
    this.reports = new ClientReports(cfg.identityWaitMs ?? 500, cfg.clientSocketOrigin);
    this.udp = new UdpIdentity({ app: (id) => this.apps.get(id), boundAt: (key) => this.udpBoundAt(key) });
    const stale = (): void => (this.udpEndpoints = undefined);
    cfg.table.on('added', stale);
    cfg.table.on('removed', stale);
  }

  /** Registers an app from its HELLO. Returns the record, or an error text for the user. */
  hello(meta: AppMeta, launcherPid: number, uid: number): AppRecord | string {
    if (meta.resume !== undefined) {
      const back = this.resume(meta.resume, launcherPid, uid);
      if (back) return back;
    }
    let identity: string;
    if (meta.ip !== undefined) {
      let ip: string;
      try {
        ip = canonicalIp(meta.ip);
      } catch {
        return `--ip ${meta.ip} is not an IP address`;
      }
      if (!this.cfg.ranges.isVip(ip)) {
        return `--ip ${ip} is outside the virtual ranges (${this.cfg.ranges.cidrs.join(', ')}); see appswitch daemon --vip-cidr`;
      }
      const edge = rangeEdge(this.cfg.ranges.cidrs, ip);
      if (edge) return `--ip ${ip} is the ${edge.kind} address of the virtual range ${edge.cidr}: not an app's address`;
      meta.ip = ip;
      identity = ip;
    } else if (meta.name !== undefined) {
      try {
        identity = this.cfg.directory?.vipForName(meta.name, this.cfg.ranges.cidrs[0] as string) ?? this.identities.allocate();
      } catch (e) {
        return `no vip for --name ${meta.name}: ${(e as Error).message}`;
      }
      meta.ip = identity; /* a named app gets a vip, stable for its lifetime and unique in the cluster */
    } else if (meta.resume !== undefined && meta.identity !== undefined && this.identities.reserve(meta.identity)) {
      identity = meta.identity; /* a program that outlived the daemon's state keeps the identity it has been using */
    } else {
      identity = this.identities.allocate();
    }
    const { resume: _resume, identity: _hint, owner: claimed, ...plain } = meta;
    const owner = uid === 0 && claimed !== undefined ? claimed : uid;
    const held = this.heldByOther(owner, meta.ip, meta.name);
    if (held) return held;
    const app: AppRecord = {
      ...plain,
      id: randomBytes(4).toString('hex'),
      identity,
      launcherPid,
      uid,
      owner,
      startedAt: Date.now(),
      secret: randomBytes(16).toString('hex'),
    };
    this.apps.set(app.id, app);
    const entry: AppEntry = { id: app.id, node: this.cfg.nodeName, identity, vip: meta.ip !== undefined, tags: app.tags };
    if (app.name !== undefined) entry.name = app.name;
    try {
      this.cfg.directory?.put(entry);
    } catch (e) { /* not registered after all: nothing of it stays behind (the trap server refuses the program) */
      this.apps.delete(app.id);
      if (!app.ip) this.identities.release(identity);
      throw e;
    }
    this.cfg.log.info({ app: app.id, ip: app.ip, identity, name: app.name, tags: app.tags, cmd: app.cmd }, 'app started');
    this.changed();
    return app;
  }

  /** An EADDRINUSE text when a running app of this node owned by another user holds this vip or name (instances of
   * one distributed app run by one user share them), else undefined. */
  private heldByOther(owner: number, ip: string | undefined, name: string | undefined): string | undefined {
    for (const a of this.apps.values()) {
      const o = a.owner ?? a.uid;
      if (o === owner) continue;
      if (ip !== undefined && a.ip === ip) return `EADDRINUSE: --ip ${ip} is held by app ${a.id} of another user (uid ${o}); only that user may run more instances of it`;
      if (name !== undefined && a.name === name) return `EADDRINUSE: --name ${name} is held by app ${a.id} of another user (uid ${o}); only that user may run more instances of it`;
    }
    return undefined;
  }

  /** The ticket a generator presents after a daemon restart gives it its app back (same id, identity, services),
   * if that app was restored and is waiting, the secret matches and the same user asks. */
  private resume(ticket: string, launcherPid: number, uid: number): AppRecord | undefined {
    const m = TICKET_RE.exec(ticket);
    const app = m ? this.apps.get(m[1] as string) : undefined;
    if (!m || !app || !this.detached.has(app.id)) return undefined;
    const a = Buffer.from(app.secret, 'hex');
    const b = Buffer.from(m[2] as string, 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b) || app.uid !== uid) {
      this.cfg.log.warn({ app: app.id, pid: launcherPid, uid }, 'resume refused: wrong ticket or user');
      return undefined;
    }
    this.detached.delete(app.id);
    app.launcherPid = launcherPid;
    this.cfg.log.info({ app: app.id, identity: app.identity, name: app.name, pid: launcherPid }, 'app resumed after a daemon restart');
    this.changed();
    return app;
  }

  /** The ticket the generator keeps for a resumed session. */
  static ticketOf(app: AppRecord): string {
    return `${app.id}.${app.secret}`;
  }

  /** What a restarted daemon needs to take over the running apps (see HandlerSnapshot). */
  snapshot(): HandlerSnapshot {
    return {
      apps: [...this.apps.values()],
      bindings: [...this.bindings],
      services: this.cfg.table.all().filter((e) => e.node === this.cfg.nodeName && this.apps.has(e.appId)),
    };
  }

  /** Takes over the apps of a saved snapshot. They stay until `graceMs` passes without their generator coming back
   * (expireDetached); their services are in the table at once (new versions, so the cluster takes them). Returns
   * how many apps were restored. Restores what it can: a record that fails (its identity taken, an app past
   * --max-services-per-app, a listener that throws) is skipped with a warning, never the whole state. */
  restore(snap: HandlerSnapshot, graceMs: number): number {
    const deadline = Date.now() + graceMs;
    let skipped = 0;
    const attempt = (what: string, id: string, fn: () => void): void => {
      try {
        fn();
      } catch (e) {
        skipped++;
        this.cfg.log.warn({ err: e, what, id }, 'saved state: a record could not be restored; skipped');
      }
    };
    for (const app of snap.apps) {
      attempt('app', app.id, () => {
        if (this.apps.has(app.id)) return;
        if (!app.ip && !this.identities.reserve(app.identity)) {
          this.cfg.log.warn({ app: app.id, identity: app.identity }, 'restored app lost its identity (taken): dropped');
          return;
        }
        this.apps.set(app.id, app);
        this.detached.set(app.id, deadline);
        const entry: AppEntry = { id: app.id, node: this.cfg.nodeName, identity: app.identity, vip: app.ip !== undefined, tags: app.tags };
        if (app.name !== undefined) entry.name = app.name;
        this.cfg.directory?.put(entry);
      });
    }
    for (const [ino, b] of snap.bindings) {
      /* every binding comes back, past the limit too: its socket still holds its port in the kernel, so the pool must
       * not hand that port out again (the sweep releases it once the socket is closed) */
      attempt('binding', ino, () => {
        if (!this.apps.has(b.appId) || this.bindings.has(ino)) return;
        this.cfg.pool.take(b.real.port);
        const { serviceId: _s, ...plain } = b;
        this.bindings.set(ino, plain); /* its service, if restored below, is attached again there */
        if (b.serviceId !== undefined) this.savedService.set(ino, b.serviceId);
      });
    }
    let overLimit = 0;
    const perApp = new Map<string, number>();
    for (const e of snap.services) {
      attempt('service', e.id, () => {
        const b = e.socket !== undefined ? this.bindings.get(e.socket) : undefined;
        if (!b || e.socket === undefined || this.savedService.get(e.socket) !== e.id || !this.apps.has(e.appId) || b.appId !== e.appId) return;
        const n = perApp.get(e.appId) ?? 0;
        if (n >= this.limits.servicesPerApp) {
          overLimit++;
          return;
        }
        perApp.set(e.appId, n + 1);
        b.serviceId = e.id;
        this.cfg.table.upsert({ ...e, node: this.cfg.nodeName, version: this.cfg.table.nextVersion() });
      });
    }
    this.savedService.clear();
    if (overLimit) {
      skipped += overLimit;
      this.cfg.log.warn({ dropped: overLimit, limit: this.limits.servicesPerApp }, 'saved state: services past --max-services-per-app not restored (their sockets stay bound)');
    }
    if (skipped) this.cfg.log.warn({ skipped }, 'saved state restored in part');
    return this.detached.size;
  }

  /** Restored apps whose generator did not come back in time are gone (their program ended meanwhile). */
  expireDetached(now = Date.now()): void {
    for (const [id, deadline] of this.detached) {
      if (now < deadline) continue;
      const app = this.apps.get(id);
      this.detached.delete(id);
      if (app) {
        this.cfg.log.info({ app: id, identity: app.identity }, 'restored app did not come back: removed');
        this.goodbye(app);
      }
    }
  }

  /** Restored apps still waiting for their generator. */
  get detachedApps(): number {
    return this.detached.size;
  }

  private changed(now = false): void {
    this.cfg.onChange?.(now);
  }

  /** The app's connection closed: its services and ports go away. */
  goodbye(app: AppRecord): void {
    if (this.apps.get(app.id) !== app) return; /* already gone (or replaced) */
    for (const [k, o] of this.offers) { /* offers pushed to it: nobody will claim them now */
      if (o.pushed && o.server === app.id) {
        this.offers.delete(k);
        this.closeFds(o.fds);
      }
    }
    this.apps.delete(app.id);
    this.udp.forgetApp(app.id);
    this.reclaimedAt.delete(app.id);
    this.detached.delete(app.id);
    for (const [ino, b] of this.bindings) if (b.appId === app.id) this.unbind(ino);
    for (const [k, p] of this.planned) {
      if (k.startsWith(`${app.id}/`)) {
        this.cfg.pool.release(p.port);
        this.planned.delete(k);
      }
    }
    this.cfg.table.removeWhere((e) => e.node === this.cfg.nodeName && e.appId === app.id);
    if (!app.ip) this.identities.release(app.identity);
    this.cfg.directory?.remove(app.id);
    this.cfg.log.info({ app: app.id, pid: app.pid }, 'app ended');
    this.changed();
  }

  bind(app: AppRecord, m: TrapMsg): Reply {
    const req = decodeSockaddr(m.addr);
    if (!req) return { result: -Errno.EAFNOSUPPORT };
    const family = m.addr.readUInt16LE(0);
    const proto = protoOf(m.arg);
    const key = `${app.id}/${m.seq}`;
    const prev = this.planned.get(key);
    if (prev) {
      this.planned.delete(key);
      if (m.flags & MsgFlag.RETRY) this.cfg.pool.markBusy(prev.port);
      else this.cfg.pool.release(prev.port);
    }
    if (!(isLoopback(req.ip) || isUnspecified(req.ip) || req.ip === app.identity)) {
      return { result: -Errno.EADDRNOTAVAIL }; /* the program's namespace has lo and its own vip, nothing else */
    }
    const sock: PortHolder = { proto, port: req.port, family: family === AF_INET6 ? 6 : 4, v6only: family === AF_INET6 && (m.flags & MsgFlag.V6ONLY) !== 0 };
    if (req.port !== 0 && this.portTaken(app, sock)) return { result: -Errno.EADDRINUSE };
    let held = this.bindings.count(app.id) + this.planned.count(app.id);
    if (held >= this.limits.servicesPerApp && this.reclaimClosed(app)) held = this.bindings.count(app.id) + this.planned.count(app.id);
    if (held >= this.limits.servicesPerApp) {
      /* a program holding this many bound sockets would fill the pool and the node's gossip keys for everyone */
      this.stats.limitServices++;
      this.limitLog.warn(
        `services/${app.id}`,
        { app: app.id, appName: app.name, identity: app.identity, bound: held, limit: this.limits.servicesPerApp },
        'bind refused (ENOBUFS): the app holds --max-services-per-app bound sockets',
      );
      return { result: -Errno.ENOBUFS };
    }
    const port = this.cfg.pool.allocate();
    if (port === undefined) {
      this.cfg.log.warn({ app: app.id }, 'port pool exhausted');
      return { result: -Errno.EADDRINUSE };
    }
    const virt: Endpoint = { ip: req.ip, port: req.port === 0 ? port : req.port };
    this.planned.set(key, { appId: app.id, port, virt, proto, family: sock.family as Family, v6only: sock.v6only === true });
    let real: Buffer;
    try {
      real = encodeSockaddr({ ip: this.cfg.nodeAddress, port }, family === AF_INET6 ? AF_INET6 : undefined);
    } catch {
      return { result: -Errno.EAFNOSUPPORT };
    }
    return { result: 0, addr: real, addr2: encodeSockaddr(virt, family === AF_INET6 ? AF_INET6 : undefined) };
  }

  /** The generator bound the socket as planned: remember the binding under its inode. */
  bound(app: AppRecord, m: TrapMsg): void {
    const real = decodeSockaddr(m.addr);
    if (!real) return;
    for (const [k, p] of this.planned) {
      if (k.startsWith(`${app.id}/`) && p.port === real.port) {
        this.planned.delete(k);
        this.stats.binds++;
        const ino = m.cookie.toString();
        const b: Binding = { appId: app.id, proto: p.proto, virt: p.virt, real, boundAt: Date.now(), family: p.family };
        if (p.v6only) b.v6only = true;
        this.bindings.set(ino, b);
        if (p.proto === 'udp') this.register(app, ino, b); /* a datagram socket serves once bound: no listen() */
        this.changed(true);
        return;
      }
    }
  }

  unbound(app: AppRecord, m: TrapMsg): void {
    const real = decodeSockaddr(m.addr);
    if (!real) return;
    for (const [k, p] of this.planned) {
      if (k.startsWith(`${app.id}/`) && p.port === real.port) {
        this.planned.delete(k);
        this.cfg.pool.release(p.port);
      }
    }
  }

  listen(app: AppRecord, m: TrapMsg): Reply {
    const ino = m.cookie.toString();
    const b = this.bindings.get(ino);
    if (!b || b.appId !== app.id) return { result: -Errno.EINVAL };
    if (b.serviceId) return { result: 0 }; /* listen() again, e.g. to change the backlog */
    this.register(app, ino, b);
    this.changed(true);
    return { result: 0 };
  }

  /** Puts a bound socket's service (vip:port of its protocol -> real endpoint) in the table. */
  private register(app: AppRecord, ino: string, b: Binding): void {
    const e: ServiceEntry = {
      id: `${this.cfg.nodeName}/${app.id}/${ino}`,
      vip: app.identity,
      port: b.virt.port,
      proto: b.proto,
      node: this.cfg.nodeName,
      endpoint: b.real,
      appId: app.id,
      tags: app.tags,
      version: this.cfg.table.nextVersion(),
      socket: ino,
    };
    if (app.name !== undefined) e.name = app.name;
    if (app.lb !== undefined) e.lb = app.lb;
    if (b.family !== undefined) e.family = b.family;
    b.serviceId = e.id;
    b.listenedAt = Date.now();
    this.cfg.table.upsert(e);
    this.stats.listens++;
    this.cfg.log.info({ app: app.id, service: `${e.vip}:${e.port}/${e.proto}`, endpoint: `${b.real.ip}:${b.real.port}` }, 'service up');
  }

  /** A connect to a virtual endpoint. With a speculative fast-path offer (MsgFlag.OFFER: the server's end of a Unix
   * socket pair and an unconnected placeholder bound to port m.addr2.port, in `fds`) and a same-host destination, the
   * offer is taken at once: the reply carries a push (AS_OFFER with the server's end) for the server's generator, which
   * the trap server sends before this reply, so the server's accept() finds the connection's real socket waiting and
   * needs no round trip of its own; the client connects its placeholder and reports nothing more. */
  connect(app: AppRecord, m: TrapMsg, fds: number[] = []): Reply {
    const offered = (m.flags & MsgFlag.OFFER) !== 0 && fds.length === 2;
    const { reply, pick } = this.decide(app, m);
    const port = offered ? decodeSockaddr(m.addr2)?.port : undefined;
    if (!offered || !pick || port === undefined || reply.result < 0 || !((reply.flags ?? 0) & MsgFlag.FASTPATH)) {
      this.closeFds(fds);
      return reply;
    }
    const placeholder: Endpoint = { ip: pick.endpoint.ip, port }; /* as the server's accept() will see it */
    const key = `${placeholder.ip}:${placeholder.port}`;
    const who = this.record(app, placeholder, pick.endpoint, true, fds, pick.appId);
    const offer = this.offers.get(key);
    if (!offer) return reply;
    offer.who = who;
    offer.dst = pick.endpoint;
    reply.flags = (reply.flags ?? 0) | MsgFlag.OFFER;
    reply.push = {
      appId: pick.appId,
      addr: encodeSockaddr({ ip: pick.endpoint.ip, port }),
      addr2: encodeSockaddr({ ip: who.identity, port }),
      fd: fds[0] as number,
      sent: (ok) => {
        if (!ok || this.offers.get(key) !== offer) return; /* not sent: the server's ACCEPT claims it as before */
        offer.pushed = true;
        offer.fds = offer.fds.slice(1); /* the trap server owns the server's end now; the placeholder stays here */
      },
    };
    return reply;
  }

  /** The server's generator took pushed offers at accept() (a batch, see AS_CLAIMED in native/proto.h): their
   * placeholders (they woke the server) can go. */
  claimed(app: AppRecord, m: TrapMsg): void {
    for (let i = 0; i + 18 <= m.payload.length; i += 18) {
      const sa = Buffer.alloc(28);
      sa.writeUInt16LE(AF_INET6, 0);
      m.payload.copy(sa, 2, i + 16, i + 18); /* port, network order */
      m.payload.copy(sa, 8, i, i + 16);
      const peer = decodeSockaddr(sa);
      if (!peer) continue;
      const key = `${peer.ip}:${peer.port}`;
      const offer = this.offers.get(key);
      if (!offer?.pushed) continue;
      this.offers.delete(key);
      this.closeFds(offer.fds);
      this.reports.forget(key);
      if (offer.who) this.cfg.connections?.accepted({ appId: app.id }, this.cfg.nodeName, peer, offer.dst, offer.who);
    }
  }

  /** The decision behind a connect: the reply, and the instance picked when there is one. */
  private decide(app: AppRecord, m: TrapMsg): { reply: Reply; pick?: ServiceEntry } {
    const dst = decodeSockaddr(m.addr);
    if (!dst) return { reply: { result: -Errno.EAFNOSUPPORT } };
    const dns = this.cfg.virtualDns?.reply(dst);
    if (dns) return { reply: dns };
    const proto = protoOf(m.arg);
    const back = proto === 'udp' ? this.udp.returnPath(app.id, dst) : undefined;
    if (back) return { reply: { result: 0, addr: encodeSockaddr(back), addr2: encodeSockaddr(dst), flags: MsgFlag.UDP_PEER } };
    let vip: string | undefined;
    if (isLoopback(dst.ip)) vip = app.identity; /* the app's own port space, wherever its members run */
    else if (this.cfg.ranges.contains(dst.ip)) vip = dst.ip;
    if (vip === undefined) {
      const door = this.cfg.forbidden?.(dst.ip, dst.port, proto);
      if (door !== undefined && !(door === 'pool' && proto === 'udp' && this.directDatagramAllowed(app, dst))) {
        return { reply: this.refuseDoor(app, dst, proto, door) };
      }
      this.stats.egress++;
      return { reply: { result: 0, addr: encodeSockaddr(dst) } };
    }
    const reqKey = `${app.id}/${m.seq}`;
    let tried = this.tried.get(reqKey);
    const where = dst.ip.includes(':') ? `[${dst.ip}]:${dst.port}` : `${dst.ip}:${dst.port}`;
    if (m.flags & MsgFlag.RETRY) {
      const failed = decodeSockaddr(m.addr2);
      if (!tried) this.tried.set(reqKey, (tried = { at: Date.now(), endpoints: new Set() }));
      if (failed) tried.endpoints.add(`${failed.ip}:${failed.port}`);
      this.stats.retried++;
      this.cfg.log.info(
        { app: app.id, appName: app.name, client: app.identity, service: where, proto, instance: failed ? `${failed.ip}:${failed.port}` : undefined },
        'service instance refused the connection; trying another',
      );
    } else {
      this.stats.connects++;
      this.tried.delete(reqKey);
      tried = undefined;
    }
    if (proto === 'tcp' && !(m.flags & MsgFlag.RETRY) && this.pendingLimited(app, where)) return { reply: { result: -Errno.ECONNREFUSED } };
    let instances = this.cfg.table.lookup({ vip, port: dst.port, proto });
    if (instances.length === 0 && proto === 'udp' && isLoopback(dst.ip)) {
      /* the local host (the unspecified address means it too, as in the kernel) with no such UDP service: a datagram
       * connect succeeds there in the kernel (it sends nothing), so it is no refusal (glibc's getaddrinfo connects UDP
       * sockets to each candidate address to sort them: every `python3 -m http.server` logged one). The generator
       * leaves the socket unconnected; a send there gets ECONNREFUSED from it, unlogged */
      this.cfg.log.debug({ app: app.id, client: app.identity, service: where, proto }, 'datagram to the local host: no such service, nothing sent');
      return { reply: { result: 0, flags: MsgFlag.NOWHERE } };
    }
    if (instances.length === 0) {
      this.stats.refused++;
      this.cfg.log.info({ app: app.id, appName: app.name, client: app.identity, service: where, proto }, 'connect refused: no such service');
      return { reply: { result: -Errno.ECONNREFUSED } };
    }
    const client = { appId: app.id, identity: app.identity, tags: app.tags };
    const allowed = instances.filter((e) => this.cfg.policy.decide(client, { appId: e.appId, identity: e.vip, tags: e.tags }).allow);
    if (allowed.length === 0) {
      this.stats.denied++;
      const sample = instances[0] as ServiceEntry;
      this.cfg.log.warn(
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
      return { reply: { result: -Errno.ECONNREFUSED } };
    }
    instances = allowed.filter((e) => !tried?.endpoints.has(`${e.endpoint.ip}:${e.endpoint.port}`));
    instances = preferFamily(instances, familyOf(dst.ip)); /* a dual-stack server: each family to its own socket */
    const healthy = this.cfg.nodeAlive ? instances.filter((e) => this.cfg.nodeAlive?.(e.node) ?? true) : instances;
    if (healthy.length) instances = healthy;
    const pick = this.balancer.pick(instances, instances[0]?.lb ?? this.cfg.lb, `${proto}/${vip}/${dst.port}`);
    if (!pick) {
      this.stats.refused++;
      this.tried.delete(reqKey);
      this.cfg.log.info({ app: app.id, appName: app.name, client: app.identity, service: where, proto }, 'connect refused: every instance refused');
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
    this.stats.daemonPortRefused++;
    const where = dst.ip.includes(':') ? `[${dst.ip}]:${dst.port}` : `${dst.ip}:${dst.port}`;
    this.limitLog.warn(
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
      for (const e of this.cfg.table.all()) {
        if (e.proto !== 'udp') continue;
        const k = `${e.endpoint.ip}:${e.endpoint.port}`;
        const l = this.udpEndpoints.get(k);
        if (l) l.push(e);
        else this.udpEndpoints.set(k, [e]);
      }
    }
    const entries = this.udpEndpoints.get(`${dst.ip}:${dst.port}`);
    if (!entries) return true; /* no service there: a client's ephemeral port */
    const client = { appId: app.id, identity: app.identity, tags: app.tags };
    return entries.some((e) => this.cfg.policy.decide(client, { appId: e.appId, identity: e.vip, tags: e.tags }).allow);
  }

  /** Both ends on this node, TCP, and neither the daemon nor either app turned the fast path off. */
  private fastpathAllowed(app: AppRecord, proto: Proto, pick: ServiceEntry): boolean {
    if (this.cfg.fastpath === false || proto !== 'tcp' || pick.node !== this.cfg.nodeName || app.fastpath === false) return false;
    if (this.apps.get(pick.appId)?.fastpath === false) return false;
    if (this.cfg.fdsExhausted?.()) {
      this.stats.fastpathDeferred++;
      return false;
    }
    const max = this.limits.pendingPerApp;
    const asClient = this.offers.count(`c/${app.id}`);
    const asServer = this.offers.count(`s/${pick.appId}`);
    if (asClient >= max || asServer >= max) {
      this.stats.limitOffers++;
      const who = asClient >= max ? app.id : pick.appId;
      this.limitLog.warn(
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
    if (this.reports.count(app.id) >= this.limits.pendingPerApp) this.reports.expire();
    if (this.reports.count(app.id) >= this.limits.pendingPerApp) this.reclaimClosed(app);
    const n = this.reports.count(app.id);
    if (n < this.limits.pendingPerApp) return false;
    this.stats.limitPending++;
    this.limitLog.warn(
      `pending/${app.id}`,
      { app: app.id, appName: app.name, client: app.identity, service: where, pending: n, limit: this.limits.pendingPerApp },
      'connect refused: the app has --max-pending-per-app connections not accepted yet',
    );
    return true;
  }

  private pruneTried(): void {
    if (this.tried.size < 1024) return;
    const old = Date.now() - 30_000;
    for (const [k, v] of this.tried) if (v.at < old) this.tried.delete(k);
  }

  /** A client's connect left from m.addr: remember who it is, for the server's accept. A fast-path report carries
   * fds (the server's end of the socket pair, the placeholder), held until the server's accept claims them. */
  connected(app: AppRecord, m: TrapMsg, fds: number[] = []): void {
    const local = decodeSockaddr(m.addr);
    const fast = (m.flags & MsgFlag.FASTPATH) !== 0;
    if (!local || (fast && fds.length !== 2)) {
      this.closeFds(fds);
      return;
    }
    const dst = decodeSockaddr(m.addr2);
    if (!fast && this.cfg.virtualDns?.isServer(dst)) return; /* a TCP query to the virtual DNS address: no server claims it */
    this.record(app, local, dst, fast, fds);
  }

  /** Remembers a client connection leaving from `local` (who it is, for the server's accept) and, for the fast path,
   * its offer [server's end, placeholder]. */
  private record(app: AppRecord, local: Endpoint, dst: Endpoint | undefined, fast: boolean, fds: number[], server?: string): ClientIdentity {
    const key = `${local.ip}:${local.port}`;
    if (fast) {
      this.stats.fastpathConnections++;
      const old = this.offers.get(key);
      if (old) this.closeFds(old.fds);
      const offer: Offer = { fds, at: Date.now(), client: app.id };
      if (server !== undefined) offer.server = server;
      this.offers.set(key, offer);
    } else {
      this.closeFds(fds);
      this.stats.tcpConnections++;
    }
    const c = { identity: app.identity, appId: app.id, tags: app.tags };
    this.cfg.connections?.connected(c, local, dst, fast ? 'fastpath' : 'tcp', fast ? this.cfg.inodeOf?.(fds[0] as number) : undefined);
    this.reports.report(key, c, dst);
    if (this.reports.count(app.id) > this.limits.pendingPerApp) this.reports.dropOldest(app.id); /* reports of connects under way can overshoot */
    return c;
  }

  /** A same-host TCP connect its generator decided (AS_DECIDED): who it is, for an accept whose generator did not
   * find it in the host's identity table and asks the daemon after all. */
  reportDecided(app: AppRecord, local: Endpoint, dst: Endpoint): void {
    this.reports.report(`${local.ip}:${local.port}`, { identity: app.identity, appId: app.id, tags: app.tags }, dst);
    if (this.reports.count(app.id) > this.limits.pendingPerApp) this.reports.dropOldest(app.id);
  }

  /** A fast-path report whose descriptors the daemon had no room for (MSG_CTRUNC): the kernel closed them, so the
   * placeholder is reset and the client's end of the pair sees ECONNRESET (the sentinel byte, see proto.h). The
   * server's accept of that placeholder is refused at once, not after waiting identityWaitMs for a report that will
   * never come: a server accepting one connection at a time would otherwise fall behind by that much per lost
   * connection, and everything queued behind them would wait too. */
  connectedLost(app: AppRecord, m: TrapMsg): void {
    const local = decodeSockaddr(m.addr);
    if (!local) return;
    const key = `${local.ip}:${local.port}`;
    this.stats.fastpathLost++;
    this.reports.markLost(key);
    this.cfg.log.debug({ app: app.id, client: app.identity, local: key }, 'fast-path connection lost: its descriptors did not fit');
  }

  /** Who connected from this node's endpoint `key` (see ClientReports.claim); the answer is claimed. */
  whoIsLocal(key: string, waitMs = this.cfg.identityWaitMs ?? 500, dst?: string): Promise<ClientIdentity | undefined> {
    return this.reports.claim(key, waitMs, dst);
  }

  /** Who a client of this node connected from `key` to `dst` is, asking the kernel first (see ClientReports.identify):
   * the peer API's look-up. */
  identifyLocal(key: string, dst: string | undefined): Promise<ClientIdentity | undefined> {
    return this.reports.identify(key, dst);
  }

  /** The UDP binding of this node at real endpoint "ip:port" (scanned: asked once per new sender, not per datagram). */
  private udpBoundAt(key: string): { appId: string; port: number } | undefined {
    for (const b of this.bindings.values()) {
      if (b.proto === 'udp' && `${b.real.ip}:${b.real.port}` === key) return { appId: b.appId, port: b.virt.port };
    }
    return undefined;
  }

  /** A UDP socket of the app sends from m.addr (reported before its first datagram, see UdpIdentity). */
  udpFrom(app: AppRecord, m: TrapMsg): void {
    const local = decodeSockaddr(m.addr);
    if (!local) return;
    const ip = isUnspecified(local.ip) ? this.cfg.nodeAddress : local.ip; /* it sends from the node address */
    this.udp.report(app.id, `${ip}:${local.port}`, m.cookie.toString());
  }

  /** Who a UDP sender of this node is, for another node's question (the peer API). */
  identifyUdpLocal(key: string): Promise<ClientIdentity | undefined> {
    return this.udp.localWait(key);
  }

  /** A datagram from real endpoint m.addr reached this app's socket at m.addr2: answer the sender's identity (and
   * remember the way back to it), or refuse an unidentified sender (its datagrams are dropped). */
  async udpWho(app: AppRecord, m: TrapMsg): Promise<Reply> {
    const src = decodeSockaddr(m.addr);
    if (!src) return { result: -Errno.EINVAL };
    const key = `${src.ip}:${src.port}`;
    const local = src.ip === this.cfg.nodeAddress || isLoopback(src.ip);
    let who: ClientIdentity | undefined;
    if (local) who = await this.udp.localWait(key);
    else if (this.cfg.resolvePeer) who = await this.cfg.resolvePeer(src.ip, key, endpointKey(m.addr2), 'udp');
    if (!who) {
      this.stats.udpUnidentified++;
      this.limitLog.warn(`udp-unidentified/${app.id}`, { app: app.id, server: app.identity, peer: key }, 'datagrams from an unidentified sender dropped');
      return { result: -Errno.ENOENT };
    }
    const seen: Endpoint = { ip: who.identity, port: who.port ?? src.port };
    this.udp.learn(app.id, seen, src);
    return { result: 0, addr: encodeSockaddr(seen) };
  }

  /** A connection reached a server of this app: answer its peer's identity, or refuse an unidentified peer. */
  async accept(app: AppRecord, m: TrapMsg): Promise<Reply> {
    const peer = decodeSockaddr(m.addr);
    if (!peer) return { result: -Errno.ECONNREFUSED };
    const key = `${peer.ip}:${peer.port}`;
    const local = peer.ip === this.cfg.nodeAddress || isLoopback(peer.ip);
    if (local && this.reports.takeLost(key)) return { result: -Errno.ECONNREFUSED }; /* reset already: see connectedLost */
    let who: ClientIdentity | undefined;
    const dst = endpointKey(m.addr2);
    if (local) who = await this.reports.identify(key, dst);
    else if (this.cfg.resolvePeer) who = await this.cfg.resolvePeer(peer.ip, key, dst);
    if (!who && local && this.reports.takeLost(key)) return { result: -Errno.ECONNREFUSED };
    if (!who) {
      this.stats.unidentified++;
      this.cfg.log.warn({ app: app.id, server: app.identity, peer: key }, 'unidentified connection dropped at accept');
      return { result: -Errno.ECONNREFUSED };
    }
    this.cfg.connections?.accepted({ appId: app.id }, this.cfg.nodeName, peer, decodeSockaddr(m.addr2), who);
    const reply: Reply = { result: 0, addr: encodeSockaddr({ ip: who.identity, port: peer.port }) };
    const offer = this.offers.get(key);
    if (offer?.pushed) {
      /* its socket is in the generator's hands already (AS_OFFER came before this reply) */
      this.offers.delete(key);
      this.closeFds(offer.fds);
      reply.flags = MsgFlag.OFFERED;
    } else if (offer) {
      /* the program gets the server's end of the socket pair; the placeholder has done its job (woken the server) */
      this.offers.delete(key);
      const [serverEnd, placeholder] = offer.fds as [number, number];
      this.closeFds([placeholder]);
      reply.flags = MsgFlag.FASTPATH;
      reply.fds = [serverEnd];
    }
    return reply;
  }

  private closeFds(fds: number[]): void {
    if (fds.length) this.cfg.closeFds?.(fds);
  }

  /** Gives up fast-path connections no server accepted in time (the client then sees the connection close), and
   * client reports too old to be claimed. */
  expireOffers(now = Date.now(), liveLocal?: Set<string>, snapshotAt = Infinity): void {
    this.reports.expire(now, liveLocal, snapshotAt);
    for (const [k, o] of this.offers) {
      /* Gone: the placeholder is no longer an open socket: the server's listener closed and reset the connections in
       * its accept queue, the program ended, its client was killed before connecting it, or (pushed offers) the
       * server's generator took it and reset it. */
      const gone = liveLocal !== undefined && o.at < snapshotAt && !liveLocal.has(k);
      if (o.pushed) {
        /* the server's generator has the socket (and expires it itself): only our copy of the placeholder goes; the
         * record stays for the claim (connection tracking) until the TTL */
        if (gone && o.fds.length) {
          this.closeFds(o.fds);
          this.offers.delete(k); /* re-inserted without descriptors: it no longer counts against the apps' limits */
          o.fds = [];
          this.offers.set(k, o);
        }
        if (now - o.at >= OFFER_TTL_MS) {
          this.offers.delete(k);
          if (o.fds.length) { /* the placeholder was never claimed nor seen gone: ours to close (it leaked before) */
            this.closeFds(o.fds);
            o.fds = [];
            this.stats.offersExpired++;
          }
        }
        continue;
      }
      if (!gone && now - o.at < OFFER_TTL_MS) continue;
      this.offers.delete(k);
      this.closeFds(o.fds);
      this.stats.offersExpired++;
      this.cfg.connections?.offerExpired(k);
    }
  }


  /** Fast-path connections waiting for an accept. */
  get pendingOffers(): number {
    let n = 0;
    for (const o of this.offers.values()) if (o.fds.length) n++;
    return n;
  }


  /** Drops services whose listening socket is gone (the program closed it) and, with `liveSockets`, bindings whose
   * socket is gone (bound, never listened, or UDP: their pool port would leak until the app exits). `snapshotAt` is
   * when the sets were read: what was registered after that is not in them yet and is kept. */
  sweep(liveListeners: Set<string>, snapshotAt = Infinity, liveSockets?: Set<string>, liveLocal?: Set<string>): void {
    this.expireOffers(Date.now(), liveLocal, snapshotAt);
    if (liveSockets) this.udp.sweep(liveSockets, snapshotAt);
    for (const [ino, b] of this.bindings) {
      if (b.proto === 'tcp' && b.serviceId) {
        if (liveListeners.has(ino) || (b.listenedAt ?? 0) >= snapshotAt) continue;
      } else if (!liveSockets || liveSockets.has(ino) || b.boundAt >= snapshotAt) {
        continue;
      }
      if (this.cfg.stillHeld?.(ino, b.proto, b.real)) continue;
      this.unbind(ino);
    }
  }

  private unbind(ino: string): void {
    const b = this.bindings.get(ino);
    if (!b) return;
    this.bindings.delete(ino);
    this.cfg.pool.release(b.real.port);
    if (b.serviceId) {
      const e = this.cfg.table.remove(b.serviceId);
      if (e) this.cfg.log.info({ app: b.appId, service: `${e.vip}:${e.port}` }, 'service down');
    }
    this.changed();
  }

  /** At a per-app limit: forgets what the app no longer holds although the last sweep has not seen it go — bindings of
   * sockets it closed (a program that binds and closes in a loop holds one at a time), client reports of connections
   * it closed before any accept. A look that found nothing to forget is not repeated for RECLAIM_MS, so a program
   * really at its limit costs the daemon little. True when anything went. */
  private reclaimClosed(app: AppRecord): boolean {
    const now = Date.now();
    if (!this.cfg.socketsNow || now - (this.reclaimedAt.get(app.id) ?? 0) < RECLAIM_MS) return false;
    const snap = this.cfg.socketsNow();
    if (!snap) return false;
    let gone = 0;
    for (const [ino, b] of this.bindings) {
      /* a TCP socket that is bound but neither listening nor connected is in no table: only UDP sockets and listeners */
      if (b.appId === app.id && (b.proto === 'udp' || b.serviceId) && !snap.sockets.has(ino) && !this.cfg.stillHeld?.(ino, b.proto, b.real)) {
        this.unbind(ino);
        gone++;
      }
    }
    gone += this.reports.forgetGone(app.id, snap.liveLocal);
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
      if (b.proto === 'tcp' && this.cfg.listenerGone?.(b.real) === true) {
        this.cfg.log.info({ app: app.id, port: b.virt.port, endpoint: `${b.real.ip}:${b.real.port}` }, 'listener closed: port bound again');
        this.unbind(ino);
        continue;
      }
      taken = true;
    }
    return taken;
  }

  bindingCount(): number {
    return this.bindings.size;
  }
}
