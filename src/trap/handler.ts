/** The trap handler: the daemon's one entry to the decisions behind trapped calls, composed of one module per
 * concern — the app registry (app-registry.ts), bindings and services (bindings.ts), the router behind connects and
 * datagram sends (router.ts), client identities for accepts (client-identities.ts) and fast-path offers (offers.ts).
 * It takes requests the trap server decoded (protocol.ts: TrapRequest) and returns replies; it performs no I/O (the
 * generator acts on the program's socket). */
import type { Logger } from 'pino';
import type { VirtualRanges } from '../table/addresses.js';
import type { Balancer, LbStrategy } from '../table/balancer.js';
import type { AppDirectory } from '../table/directory.js';
import type { Endpoint } from '../table/endpoint.js';
import type { PortPool } from '../table/port-pool.js';
import type { Policy } from '../policy/policy.js';
import type { Proto, ServiceEntry, ServiceTable } from '../table/service-table.js';
import type { AppMeta, AppRecord } from './apps.js';
import { AppRegistry } from './app-registry.js';
import { type Binding, type BindingStats, Bindings } from './bindings.js';
import { ClientIdentities, type ClientStats, type ExternalCheck, type PeerResolver, type SteeredCheck } from './client-identities.js';
import { type ClientIdentity, ClientReports, type ClientSocketOrigin } from './client-reports.js';
import type { ConnectionTracker } from './connections.js';
import { type AppLimits, DEFAULT_LIMITS, RateLimitedLog } from './limits.js';
import { type OfferStats, Offers } from './offers.js';
import { MsgFlag, type Reply, type RequestOf } from './protocol.js';
import { Router, type RouterStats } from './router.js';
import { EgressAsked, EgressRoute, type EgressRouteDeps, type EgressStats } from './egress-route.js';
import { UdpIdentity } from './udp-identity.js';
import type { VirtualDns } from './virtual-dns.js';
import type { ConnectObserver } from './observer.js';

export type { ClientIdentity, ClientSocketOrigin } from './client-reports.js';
export type { Binding } from './bindings.js';
export type { PeerResolver } from './client-identities.js';
export type { Reply } from './protocol.js';
export { ALTERNATIVES } from './router.js';

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
  /** Whether this node is a gateway: a socket of this host that no generator made may be its relay's, whose
   * connections name their outside client in a preamble (ClientIdentity.relayed). Default false. */
  relayHere?: boolean;
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
  /** Judges connections steered by sk_lookup to a local instance of an exposure (gateway/steering.ts). */
  steeredClient?: SteeredCheck;
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
  /** Judges external client identities at accept (gateway/ingress.ts); without it they are refused. */
  externalCheck?: ExternalCheck;
  /** Why an app's `--expose` host ports cannot be (see AppRegistryDeps.exposeProblem). */
  exposeProblem?: (specs: Array<{ port: number; hostPort: number }>) => string | undefined;
  /** See AppRegistryDeps.adminUid. */
  adminUid?: number;
  /** Egress policy and gateways for destinations outside the application network (see egress-route.ts); absent:
   * they are reached directly, as before egress policy. */
  egress?: Omit<EgressRouteDeps, 'log' | 'limitLog' | 'stats' | 'asked'>;
  /** Whether a real destination is a server outside appswitch (a virtual service's backend): its connections are
   * accepted by no appswitch server, so no client report is kept for them (it would wait unclaimed and count against
   * the client's --max-pending-per-app). */
  unclaimed?: (dst: Endpoint) => boolean;
  /** Told of refusals, policy denials and unidentified accepts as they are decided (the daemon's event bus and edges;
   * connections set up reach them through the ConnectionTracker). */
  observer?: ConnectObserver;
}

/** What the daemon saves under its state directory and restores after a restart (see Daemon): the apps (with their
 * resume secrets), their bound sockets and their services. Connections in flight (fast-path offers, client
 * identities not yet claimed by an accept) are not kept. */
export interface HandlerSnapshot {
  apps: AppRecord[];
  bindings: Array<[string, Binding]>;
  services: ServiceEntry[];
}

/** Counters the daemon exposes (each module counts its own). */
export interface HandlerStats extends BindingStats, RouterStats, ClientStats, OfferStats, EgressStats {}

export class TrapHandler {
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
    externalRefused: 0,
    egressDenied: 0,
    egressNoGateway: 0,
    egressViaGateway: 0,
    egressUdpRefused: 0,
  };
  readonly apps: Map<string, AppRecord>;
  readonly balancer: Balancer;
  /** Who sends datagrams from where, and the return paths to them (see udp-identity.ts). */
  readonly udp: UdpIdentity;
  /** The rate-limited lines of this node's trap decisions (router.ts), also those of the generators' own (decided.ts):
   * one line per app, service and cause per interval, whoever decided. */
  readonly limitLog: RateLimitedLog;
  private readonly registry: AppRegistry;
  private readonly bindings: Bindings;
  private readonly router: Router;
  private readonly clients: ClientIdentities;
  private readonly offers: Offers;
  /** Who connected from which client endpoint, for the servers' accepts (see ClientReports). */
  private readonly reports: ClientReports;

  constructor(private readonly cfg: HandlerConfig) {
    const { nodeName, nodeAddress, table, log } = cfg;
    const limits = cfg.limits ?? DEFAULT_LIMITS;
    const limitLog = (this.limitLog = new RateLimitedLog(log));
    const closeFds = (fds: number[]): void => {
      if (fds.length) cfg.closeFds?.(fds);
    };
    this.registry = new AppRegistry({ nodeName, ranges: cfg.ranges, log, directory: cfg.directory, onChange: cfg.onChange, exposeProblem: cfg.exposeProblem, adminUid: cfg.adminUid });
    this.apps = this.registry.apps;
    this.reports = new ClientReports(cfg.identityWaitMs ?? 500, cfg.clientSocketOrigin, cfg.relayHere ?? false);
    this.bindings = new Bindings({
      nodeName,
      nodeAddress,
      table,
      pool: cfg.pool,
      log,
      limitLog,
      stats: this.stats,
      servicesPerApp: limits.servicesPerApp,
      apps: this.apps,
      reports: this.reports,
      onChange: cfg.onChange,
      socketsNow: cfg.socketsNow,
      listenerGone: cfg.listenerGone,
      stillHeld: cfg.stillHeld,
    });
    this.udp = new UdpIdentity({ app: (id) => this.apps.get(id), boundAt: (key) => this.bindings.udpBoundAt(key) });
    this.offers = new Offers({ nodeName, stats: this.stats, closeFds, reports: this.reports, connections: cfg.connections });
    const asked = new EgressAsked();
    this.clients = new ClientIdentities({
      egressAsked: asked,
      nodeName,
      nodeAddress,
      log,
      limitLog,
      stats: this.stats,
      pendingPerApp: limits.pendingPerApp,
      identityWaitMs: cfg.identityWaitMs ?? 500,
      reports: this.reports,
      udp: this.udp,
      offers: this.offers,
      closeFds,
      resolvePeer: cfg.resolvePeer,
      connections: cfg.connections,
      inodeOf: cfg.inodeOf,
      virtualDns: cfg.virtualDns,
      steeredClient: cfg.steeredClient,
      externalCheck: cfg.externalCheck,
      unclaimed: cfg.unclaimed,
      observer: cfg.observer,
    });
    this.router = new Router({
      nodeName,
      ranges: cfg.ranges,
      table,
      policy: cfg.policy,
      lb: cfg.lb,
      log,
      limitLog,
      stats: this.stats,
      pendingPerApp: limits.pendingPerApp,
      apps: this.apps,
      offers: this.offers,
      reports: this.reports,
      reclaim: this.bindings,
      udp: this.udp,
      nodeAlive: cfg.nodeAlive,
      forbidden: cfg.forbidden,
      virtualDns: cfg.virtualDns,
      fastpath: cfg.fastpath,
      fdsExhausted: cfg.fdsExhausted,
      egress: cfg.egress ? new EgressRoute({ ...cfg.egress, log, limitLog, stats: this.stats, asked }) : undefined,
      observer: cfg.observer,
    });
    this.balancer = this.router.balancer;
  }

  /** Registers an app from its HELLO. Returns the record, or an error text for the user. */
  hello(meta: AppMeta, launcherPid: number, uid: number): AppRecord | string {
    return this.registry.hello(meta, launcherPid, uid);
  }

  /** The ticket the generator keeps for a resumed session. */
  static ticketOf(app: AppRecord): string {
    return AppRegistry.ticketOf(app);
  }

  /** What a restarted daemon needs to take over the running apps (see HandlerSnapshot). */
  snapshot(): HandlerSnapshot {
    const { bindings, services } = this.bindings.saved();
    return { apps: [...this.apps.values()], bindings, services };
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
    this.registry.restore(snap.apps, deadline, attempt);
    skipped += this.bindings.restore(snap.bindings, snap.services, attempt);
    if (skipped) this.cfg.log.warn({ skipped }, 'saved state restored in part');
    return this.registry.detachedApps;
  }

  /** Restored apps whose generator did not come back in time are gone (their program ended meanwhile). */
  expireDetached(now = Date.now()): void {
    for (const app of this.registry.expired(now)) this.goodbye(app);
  }

  /** Restored apps still waiting for their generator. */
  get detachedApps(): number {
    return this.registry.detachedApps;
  }

  /** The app's connection closed: its services and ports go away. */
  goodbye(app: AppRecord): void {
    if (!this.registry.isCurrent(app)) return; /* already gone (or replaced) */
    this.offers.dropPushedTo(app.id);
    this.registry.remove(app);
    this.udp.forgetApp(app.id);
    this.bindings.endApp(app.id);
    this.registry.release(app);
  }

  bind(app: AppRecord, req: RequestOf<'bind'>): Reply {
    return this.bindings.bind(app, req);
  }

  /** The generator bound the socket as planned: remember the binding under its inode. */
  bound(app: AppRecord, req: RequestOf<'bound'>): void {
    this.bindings.bound(app, req);
  }

  unbound(app: AppRecord, req: RequestOf<'unbound'>): void {
    this.bindings.unbound(app, req);
  }

  listen(app: AppRecord, req: RequestOf<'listen'>): Reply {
    return this.bindings.listen(app, req);
  }

  /** A connect to a virtual endpoint. With a speculative fast-path offer (req.offer: the server's end of a Unix socket
   * pair and an unconnected placeholder bound to port req.offer.port, in `fds`) and a same-host destination, the offer
   * is taken at once: the reply carries a push (AS_OFFER with the server's end) for the server's generator, which the
   * trap server sends before this reply, so the server's accept() finds the connection's real socket waiting and needs
   * no round trip of its own; the client connects its placeholder and reports nothing more. */
  connect(app: AppRecord, req: RequestOf<'connect'>, fds: number[] = []): Reply {
    const { reply, pick } = this.router.decide(app, req);
    const port = fds.length === 2 ? req.offer?.port : undefined;
    if (!pick || port === undefined || reply.result < 0 || !((reply.flags ?? 0) & MsgFlag.FASTPATH)) {
      if (fds.length) this.cfg.closeFds?.(fds);
      return reply;
    }
    const placeholder: Endpoint = { ip: pick.endpoint.ip, port }; /* as the server's accept() will see it */
    const who = this.clients.record(app, placeholder, pick.endpoint, true, fds, pick.appId);
    return this.offers.push(reply, placeholder, who, pick, fds[0] as number);
  }

  /** The server's generator took pushed offers at accept() (AS_CLAIMED): their placeholders can go. */
  claimed(app: AppRecord, req: RequestOf<'claimed'>): void {
    this.offers.claimed(app, req.peers);
  }

  /** A client's connect left from req.local: remember who it is, for the server's accept (see ClientIdentities). */
  connected(app: AppRecord, req: RequestOf<'connected'>, fds: number[] = []): void {
    this.clients.connected(app, req, fds);
  }

  /** A same-host TCP connect its generator decided (AS_DECIDED): who it is, for an accept whose generator did not
   * find it in the host's identity table and asks the daemon after all. */
  reportDecided(app: AppRecord, local: Endpoint, dst: Endpoint): void {
    this.clients.reportDecided(app, local, dst);
  }

  /** A fast-path report whose descriptors the daemon had no room for (see ClientIdentities.connectedLost). */
  connectedLost(app: AppRecord, req: RequestOf<'connected'>): void {
    this.clients.connectedLost(app, req.local);
  }

  /** Who connected from this node's endpoint `key` (see ClientReports.claim); the answer is claimed. */
  whoIsLocal(key: string, waitMs = this.cfg.identityWaitMs ?? 500, dst?: string): Promise<ClientIdentity | undefined> {
    return this.clients.whoIsLocal(key, waitMs, dst);
  }

  /** Who a client of this node connected from `key` to `dst` is, asking the kernel first (see ClientReports.identify):
   * the peer API's look-up. */
  identifyLocal(key: string, dst: string | undefined): Promise<ClientIdentity | undefined> {
    return this.clients.identifyLocal(key, dst);
  }

  /** A UDP socket of the app sends from req.local (reported before its first datagram, see UdpIdentity). */
  udpFrom(app: AppRecord, req: RequestOf<'udpFrom'>): void {
    this.clients.udpFrom(app, req);
  }

  /** Who a UDP sender of this node is, for another node's question (the peer API). */
  identifyUdpLocal(key: string): Promise<ClientIdentity | undefined> {
    return this.clients.identifyUdpLocal(key);
  }

  /** A datagram reached this app's socket: answer the sender's identity, or refuse an unidentified sender. */
  udpWho(app: AppRecord, req: RequestOf<'udpWho'>): Promise<Reply> {
    return this.clients.udpWho(app, req);
  }

  /** A connection reached a server of this app: answer its peer's identity, or refuse an unidentified peer. */
  accept(app: AppRecord, req: RequestOf<'accept'>): Promise<Reply> {
    return this.clients.accept(app, req);
  }

  /** Gives up fast-path connections no server accepted in time (the client then sees the connection close), and
   * client reports too old to be claimed. */
  expireOffers(now = Date.now(), liveLocal?: Set<string>, snapshotAt = Infinity): void {
    this.reports.expire(now, liveLocal, snapshotAt);
    this.offers.expire(now, liveLocal, snapshotAt);
  }

  /** Fast-path connections waiting for an accept. */
  get pendingOffers(): number {
    return this.offers.pending;
  }

  /** Drops services whose listening socket is gone (the program closed it) and, with `liveSockets`, bindings whose
   * socket is gone (bound, never listened, or UDP: their pool port would leak until the app exits). `snapshotAt` is
   * when the sets were read: what was registered after that is not in them yet and is kept. */
  sweep(liveListeners: Set<string>, snapshotAt = Infinity, liveSockets?: Set<string>, liveLocal?: Set<string>): void {
    this.expireOffers(Date.now(), liveLocal, snapshotAt);
    if (liveSockets) this.udp.sweep(liveSockets, snapshotAt);
    this.bindings.sweep(liveListeners, snapshotAt, liveSockets);
  }

  bindingCount(): number {
    return this.bindings.size;
  }
}
