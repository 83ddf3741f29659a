/** The per-host daemon: the single place where the pieces are wired together (trap server + handler, service
 * table, port pool, control API, sweeper). */
import { fstatSync, mkdirSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { DnsServer, renderResolvConf } from '../dns/index.js';
import type { Logger } from 'pino';
import { AppswitchError } from '../errors.js';
import { defaultPolicy } from '../policy/policy.js';
import { EgressPolicy } from '../policy/egress.js';
import { discloseEgress, EgressProxy } from '../gateway/egress.js';
import type { Endpoint } from '../table/endpoint.js';
import { type ClosedPorts, DaemonPortGuard, type DaemonPorts, nodeDoors } from '../policy/daemon-ports.js';
import { VIRTUAL_DNS_ADDRESS, VIRTUAL_DNS_PORT, VirtualRanges } from '../table/addresses.js';
import { AppDirectory } from '../table/directory.js';
import { PortPool } from '../table/port-pool.js';
import { ServiceTable } from '../table/service-table.js';
import { ClusterObjects } from '../table/cluster-objects.js';
import { native } from '../native/binding.js';
import { LocalIngress } from '../gateway/local-ingress.js';
import { Steering } from '../gateway/steering.js';
import { TrapHandler } from '../trap/handler.js';
import { TrapServer } from '../trap/server.js';
import { VirtualDns } from '../trap/virtual-dns.js';
import { errCode, FdBudget, isFdExhaustion } from '../trap/fdbudget.js';
import { ConnectionTracker, type ServiceInfo } from '../trap/connections.js';
import { applyDecided } from '../trap/decided.js';
import { DecisionTable } from '../trap/decision-table.js';
import { AccessControl } from './access.js';
import type { DaemonConfig } from './config.js';
import type { AppView, ControlRequest, EgressStatus, InfoResult, MemberView, NameConflictView, ServiceView, StatusResult } from './control-protocol.js';
import type { ClientIdentity } from '../trap/client-reports.js';
import { Cluster } from './cluster.js';
import { forbiddenEndpoint, type NodeRecord } from './gossip-records.js';
import { type GossipKey, resolveGossipKey } from './gossip-key.js';
import { ControlServer } from './control.js';
import { PeerApi } from './peers.js';
import { socketOrigin } from './sockguard.js';
import { listenerGone, openListenerDiag, socketHeld } from './listener-diag.js';
import { snapshotNow, SnapshotError, tcpSnapshot, unixInodes } from './listeners.js';
import { createLogger } from './log.js';
import { DaemonMetrics, MetricsServer } from './metrics.js';
import { guarded, InternalErrors } from './internal-errors.js';
import { VERSION } from './version.js';
import { clearState, loadState, StateWriter } from './state.js';
import { loadObjects, ObjectsWriter } from './objects-file.js';
import { VSERVICE_NODE } from '../vservice/body.js';
import type { VserviceSync } from '../vservice/table-sync.js';
import { setUpVservices, type VserviceControl } from './vservice-control.js';
import { lockStateDir, type StateDirLock } from './state-lock.js';
import { Ingress, type GatewayNode } from '../gateway/ingress.js';
import type { IngressForwarder } from '../gateway/forwarder.js';
import { NodeForwarder } from '../gateway/node-forwarder.js';
import { RelayForwarder } from '../gateway/relay-process.js';
import { IngressPicker } from '../gateway/pick.js';
import { IngressPusher, PushedClients } from '../gateway/ingress-push.js';
import { ip16 } from '../trap/decision-table.js';
import type { ReservedPorts } from '../gateway/exposures.js';
import { decodeExposureBody, EXPOSURE_KIND, ExposureControl, exposureStore, objectClaims } from '../gateway/expose-control.js';

/** Every address of this host's interfaces (for a metrics endpoint bound to the wildcard address). */
function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(a.address.replace(/%.*$/, ''));
  return out;
}

/** The nameserver in programs' resolv.conf. On port 53 the DNS server is named by its real address, so every resolver
 * sees answers come from the nameserver it asked. On any other port (resolv.conf cannot carry one) it is the virtual
 * DNS address, 169.254.0.53, whose port 53 the trap sends to --node-address:--dns-port (trap/virtual-dns.ts); then a
 * resolver that checks the source address of a UDP answer against its nameserver (c-ares, musl) sees the real one,
 * until datagram receives are translated. glibc (getaddrinfo, getent, Python, curl), Go and Java do not check. */
export function programsNameserver(cfg: Pick<DaemonConfig, 'nodeAddress' | 'dnsPort'>): string {
  return cfg.dnsPort === VIRTUAL_DNS_PORT ? cfg.nodeAddress : VIRTUAL_DNS_ADDRESS;
}

export class Daemon {
  readonly log: Logger;
  readonly table = new ServiceTable();
  readonly directory = new AppDirectory();
  /** Cluster-scoped objects (virtual services, exposures): replicated by every node, saved in objects.json. */
  readonly objects: ClusterObjects;
  private readonly objectsWriter: ObjectsWriter;
  /** Virtual services: kept in the service table (one entry per backend) and answered by name. */
  readonly vservices: VserviceSync;
  private readonly vserviceControl: VserviceControl;
  private expireTimer?: NodeJS.Timeout;
  dns?: DnsServer;
  readonly handler: TrapHandler;
  private readonly trap: TrapServer;
  /** The daemon's own file descriptors: what ran out, and when they are back (see FdBudget). */
  readonly fds: FdBudget;
  private readonly control: ControlServer;
  private sweepTimer?: NodeJS.Timeout;
  cluster?: Cluster;
  peers?: PeerApi;
  private readonly started = Date.now();
  private readonly state: StateWriter;
  /** The Prometheus registry and endpoint, when `--metrics-address` is set. */
  readonly metrics?: DaemonMetrics;
  private readonly metricsServer?: MetricsServer;
  /** Where the metrics endpoint listens ("host:port"), once started. */
  metricsAddress?: string;
  /** Who may use the control and trap sockets (root, the daemon's user, --group). */
  readonly access: AccessControl;
  readonly connections: ConnectionTracker;
  /** What the generators decide connects from (native/dtab.h). */
  readonly decisions: DecisionTable;
  /** A gateway's C relay (undefined: not a gateway, or the Node forwarder serves instead). */
  private relay?: RelayForwarder;
  /** Trap counts sampled every second over the last 10 s, for the trap rate in `status`. */
  private readonly trapSamples: Array<{ at: number; traps: number }> = [];
  private rateTimer?: NodeJS.Timeout;
  /** The daemons' own ports on every member, closed to trapped programs (see policy/daemon-ports.ts). */
  readonly doors = new DaemonPortGuard();
  private sweepFailLogged = 0;
  /** Unexpected exceptions caught in handlers, by module (see internal-errors.ts). */
  readonly internalErrors: InternalErrors;
  /** This daemon's claim on its state directory (see state-lock.ts), from the first step of start() to stop(). */
  private lock?: StateDirLock;
  /** sk_lookup steering of exposures' host ports to this node's own instances (gateway/steering.ts), and what it
   * steers (gateway/local-ingress.ts): the ingress calls localIngress.steerExposure / unsteerExposure and sets
   * steering.view. */
  readonly steering: Steering;
  readonly localIngress: LocalIngress;
  /** Exposures, and on a gateway node the forwarder that serves them (see gateway/ingress.ts). */
  readonly ingress: Ingress;
  /** Outside clients pushed across hosts: a gateway's pusher, every node's receiver (gateway/ingress-push.ts). */
  private readonly pusher?: IngressPusher;
  readonly pushed: PushedClients;
  private readonly exposeControl: ExposureControl;
  /** The egress policy (`--egress-allow`, `--egress-rules`; see docs/egress.md). */
  readonly egressPolicy: EgressPolicy;
  /** The egress proxy, on an egress gateway (`--egress-gateway`). */
  egressProxy?: EgressProxy;

  constructor(
    readonly cfg: DaemonConfig,
    log?: Logger,
  ) {
    this.log = log ?? createLogger(cfg.logLevel, cfg.nodeName);
    this.internalErrors = new InternalErrors(this.log);
    this.objects = new ClusterObjects(cfg.nodeName);
    this.objectsWriter = new ObjectsWriter(cfg.stateDir, this.objects, this.log);
    ({ sync: this.vservices, control: this.vserviceControl } = setUpVservices({
      objects: this.objects,
      table: this.table,
      directory: this.directory,
      doors: this.doors,
      ranges: new VirtualRanges(cfg.vipCidrs),
      log: this.log.child({ module: 'vservice' }),
    }));
    this.access = new AccessControl(cfg.group, this.log);
    this.fds = new FdBudget(this.log);
    let byEndpoint: Map<string, ServiceInfo> | undefined; /* rebuilt on the first look-up after a table change */
    const stale = (): void => (byEndpoint = undefined);
    this.table.on('added', stale);
    this.table.on('removed', stale);
    this.connections = new ConnectionTracker((ep) => {
      byEndpoint ??= new Map(this.table.all().map((e) => [`${e.endpoint.ip}:${e.endpoint.port}`, { service: `${e.vip}:${e.port}`, app: e.appId, node: e.node }]));
      return byEndpoint.get(ep);
    });
    const policy = defaultPolicy();
    const steering = new Steering(native, this.log.child({ module: 'steering' }), {
      off: cfg.ingressSteering ? undefined : 'turned off (--no-ingress-steering)',
      origin: cfg.sockguard ? socketOrigin(this.log.child({ module: 'sockguard' })) : undefined,
    });
    this.steering = steering;
    this.egressPolicy = new EgressPolicy(cfg.egressRules);
    const egress =
      this.egressPolicy.restricts || cfg.egressMode === 'via-gateway'
        ? {
            policy: this.egressPolicy,
            mode: cfg.egressMode,
            isGateway: cfg.egressGateway,
            gateways: () => this.egressGateways(),
            /* this node's DNS server: the resolver path programs use (resolv.conf), never judged nor carried */
            exempt: (ip: string, port: number) => ip === cfg.nodeAddress && port === cfg.dnsPort,
          }
        : undefined;
    /** A node is alive: this one, the virtual services' (their backends are judged by refusals), or a member gossip says
     * is alive (the handler, the decision table, the forwarder). */
    const nodeAlive = (node: string): boolean => node === cfg.nodeName || node === VSERVICE_NODE || this.cluster?.ml.member(node)?.state === 'alive';
    const identEp = (e: Endpoint): [Buffer, number] => [ip16(e.ip), e.port];
    this.pushed = new PushedClients({
      liveGateway: (ip) => ip !== cfg.nodeAddress && this.gatewayNodes().some((g) => g.address === ip && g.alive),
      exposedHere: (to) => this.ingress.exposedHere(to),
      putEntry: (r) => native.identPutOutside(this.decisions.shmFd, ...identEp(r.from), ...identEp(r.to), ...identEp(r.client)) === 0,
      takeEntry: (from, to) => void native.identGet(this.decisions.shmFd, ...identEp(from), ...identEp(to), true),
      log: this.log.child({ module: 'ingress' }),
    });
    if (cfg.gateway) {
      this.pusher = new IngressPusher({
        isRemoteMember: (ip) => ip !== cfg.nodeAddress && this.isMemberAddress(ip),
        send: (ip, records) => this.peers?.push(ip, records),
      });
    }
    this.handler = new TrapHandler({
      egress,
      nodeName: cfg.nodeName,
      nodeAddress: cfg.nodeAddress,
      ranges: new VirtualRanges(cfg.vipCidrs),
      table: this.table,
      pool: new PortPool(cfg.ports.low, cfg.ports.high),
      log: this.log,
      policy,
      lb: cfg.lb,
      nodeAlive,
      directory: this.directory,
      unclaimed: (dst) => this.vservices.isBackend(dst),
      fastpath: cfg.fastpath,
      fdsExhausted: () => this.fds.exhausted,
      closeFds: (fds) => {
        for (const fd of fds) native.close(fd);
      },
      onChange: (now) => (now ? this.state.flush() : this.state.schedule()),
      connections: this.connections,
      inodeOf: (fd) => {
        try {
          return String(fstatSync(fd).ino);
        } catch {
          return undefined;
        }
      },
      forbidden: (ip, port, proto) => this.doors.check(ip, port, proto),
      limits: { servicesPerApp: cfg.maxServicesPerApp, pendingPerApp: cfg.maxPendingPerApp },
      virtualDns: new VirtualDns({ ip: cfg.nodeAddress, port: cfg.dnsPort }),
      socketsNow: () => {
        try {
          return snapshotNow();
        } catch (e) {
          if (e instanceof SnapshotError && isFdExhaustion(e.code)) this.fds.fail('reading /proc/net at a per-app limit', e.code);
          return undefined;
        }
      },
      resolvePeer: (ip, endpoint, dst, proto) =>
        this.isMemberAddress(ip) ? (this.peers?.whoIs(ip, endpoint, dst, undefined, proto) ?? Promise.resolve(undefined)) : Promise.resolve(undefined),
      clientSocketOrigin: cfg.sockguard ? socketOrigin(this.log.child({ module: 'sockguard' })) : undefined,
      externalWaitMs: cfg.gateway ? 200 : 0,
      listenerGone: listenerGone(this.log),
      stillHeld: socketHeld(this.log),
      steeredClient: (app, peer, local) => steering.steeredClient(app, peer, local),
      externalCheck: (_app, listener, via) => this.ingress.checkExternal(listener, via),
      pushedClient: (peer, listener) => this.pushed.claim(peer, listener),
      exposeProblem: (specs) => this.ingress.exposeProblem(specs),
    });
    this.localIngress = new LocalIngress({
      nodeName: cfg.nodeName,
      table: this.table,
      pidOf: (id) => this.handler.apps.get(id)?.pid,
      steering,
      log: this.log.child({ module: 'steering' }),
    });
    this.decisions = new DecisionTable(
      native,
      {
        nodeName: cfg.nodeName,
        nodeAddress: cfg.nodeAddress,
        vipCidrs: cfg.vipCidrs,
        table: this.table,
        apps: () => this.handler.apps.values(),
        policy,
        nodeAlive,
        fastpath: cfg.fastpath,
        lb: cfg.lb,
      },
      this.internalErrors.reporter('trap'),
    );
    const forwarder = cfg.gateway ? this.ingressForwarder(nodeAlive) : undefined;
    this.ingress = new Ingress({
      nodeName: cfg.nodeName,
      gateway: cfg.gateway,
      listenAddress: cfg.gatewayAddress,
      forwarder,
      directory: this.directory,
      table: this.table,
      gateways: () => this.gatewayNodes(),
      reserved: () => this.reservedPorts(),
      recordExternal: (from, client, to) => {
        this.handler.recordExternal(from, client, to); /* for the whoIs path (and an instance on this node) */
        this.pusher?.add(from, client, to); /* an instance on another node: told now, not asked later */
      },
      log: this.log.child({ module: 'ingress' }),
      onChange: () => this.refreshDoors(),
      local: this.localIngress,
    });
    /* a steered connection is accepted only on a gateway, for the exposure that holds its host port now */
    steering.view = {
      isGateway: () => cfg.gateway,
      serviceAt: (hostPort) => {
        const e = this.ingress.holderOf(hostPort);
        return e ? `${e.vip}:${e.port}` : undefined;
      },
    };
    this.objects.register(EXPOSURE_KIND, (body) => decodeExposureBody(body));
    const syncExposures = (): void => this.ingress.setObjectClaims(objectClaims(this.objects.list(EXPOSURE_KIND)));
    this.objects.on('changed', (o) => {
      if (o.kind === EXPOSURE_KIND) syncExposures();
    });
    syncExposures();
    this.exposeControl = new ExposureControl({
      ingress: this.ingress,
      ranges: new VirtualRanges(cfg.vipCidrs),
      log: this.log.child({ module: 'ingress' }),
      store: exposureStore(this.objects),
    });
    if (cfg.metricsAddress) {
      this.metrics = new DaemonMetrics({
        handler: () => this.handler.stats,
        services: () => {
          let local = 0;
          for (const e of this.table.all()) if (e.node === cfg.nodeName) local++;
          return { local, remote: this.table.size - local };
        },
        apps: () => this.handler.apps.size,
        gossip: () => this.cluster?.ml.stats(),
        internalErrors: () => this.internalErrors.snapshot(),
        ingress: () => ({ ...this.ingress.status(), externalRefused: this.handler.stats.externalRefused }),
        egress: () => {
          const st = this.handler.stats;
          const p = this.egressProxy?.stats;
          return {
            denied: st.egressDenied,
            noGateway: st.egressNoGateway,
            viaGateway: st.egressViaGateway,
            udpRefused: st.egressUdpRefused,
            ...(p ? { proxy: { forwarded: p.forwarded, refusals: p.refusals } } : {}),
          };
        },
      });
      this.metricsServer = new MetricsServer(this.metrics, this.log.child({ module: 'metrics' }));
    }
    this.state = new StateWriter(cfg.stateDir, cfg.nodeName, () => this.handler.snapshot(), this.log);
    this.state.onNoDescriptor = (code) => this.fds.fail('saving the state file', code);
    const metrics = this.metrics;
    this.trap = new TrapServer(this.handler, this.log, metrics ? (_app, d) => metrics.foldTrapStats(d) : undefined, (peer) => this.access.admit(peer, 'trap'), this.fds);
    this.trap.onInternalError = this.internalErrors.reporter('trap');
    this.trap.helloFds = () => this.decisions.fdsForHello();
    this.trap.onAppsChanged = () => this.decisions.invalidate();
    this.trap.onServiceUp = () => this.decisions.flush();
    const decidedDeps = { stats: this.handler.stats, report: this.handler.reportDecided.bind(this.handler), connections: this.connections, log: this.log, table: this.table };
    this.trap.onDecided = (app, records) => applyDecided(decidedDeps, app, records);
    this.trap.onClaimed = (app, peers) => {
      for (const p of peers) {
        /* an outside client a gateway pushed, answered by the server's generator from the identity table */
        const x = p.ip !== cfg.nodeAddress ? this.pushed.claimed(p) : undefined;
        if (x) this.connections.accepted({ appId: app.id }, cfg.nodeName, p, x.to, x.who);
        else this.connections.markAccepted(p, app.id, cfg.nodeName);
      }
    };
    this.control = new ControlServer((req) => this.onControl(req), this.log, (peer) => this.access.admit(peer, 'control'));
    this.control.onInternalError = this.internalErrors.reporter('control');
    if (this.metricsServer) this.metricsServer.onInternalError = this.internalErrors.reporter('metrics');
  }

  async start(): Promise<void> {
    mkdirSync(this.cfg.stateDir, { recursive: true, mode: 0o755 });
    this.lock = lockStateDir(this.cfg.stateDir); /* before any socket, key or state file in the directory is touched */
    this.relay?.begin();
    const key = this.gossipKey();
    this.restoreState();
    this.restoreObjects();
    const opts: Parameters<typeof Cluster.start>[0] = {
      nodeName: this.cfg.nodeName,
      nodeAddress: this.cfg.nodeAddress,
      gossipPort: this.cfg.gossipPort,
      joins: this.cfg.joins,
      profile: this.cfg.gossipProfile,
      table: this.table,
      directory: this.directory,
      ranges: new VirtualRanges(this.cfg.vipCidrs),
      node: {
        ports: { ...this.cfg.ports },
        gossipPort: this.cfg.gossipPort,
        peerPort: this.cfg.peerPort,
        dnsPort: this.cfg.dnsPort,
        ...(this.cfg.egressGateway ? { egressGateway: true, egressPort: this.cfg.egressPort } : {}),
        ...(this.cfg.gateway ? { gateway: true } : {}),
      },
      log: this.log.child({ module: 'gossip' }),
      errors: this.internalErrors,
      objects: this.objects,
    };
    if (key.mode === 'key') opts.keys = key.keys;
    this.refreshDoors();
    this.cluster = await Cluster.start(opts);
    const cluster = this.cluster;
    cluster.on('nodes', () => this.decisions.invalidate()); /* a node dead or back: its instances' health */
    cluster.ml.on('change', () => this.decisions.invalidate());
    cluster.on('nodes', guarded(this.internalErrors.reporter('daemon'), 'refreshing the closed doors', () => this.refreshDoors()));
    this.refreshDoors();
    this.peers = new PeerApi(
      this.cfg.peerPort,
      key.mode === 'key' ? key.keys : [],
      (ep, dst, proto, asker) =>
        proto === 'udp' ? this.handler.identifyUdpLocal(ep) : this.handler.identifyLocal(ep, dst).then((c) => this.egressAnswer(c, dst, asker)),
      this.log.child({ module: 'peers' }),
      (ip) => cluster.isPeerAddress(ip),
    );
    this.peers.onInternalError = this.internalErrors.reporter('peers');
    this.peers.onPush = (peer, records) => this.pushed.receive(peer, records);
    await this.peers.listen(this.cfg.nodeAddress);
    if (this.cfg.egressGateway) await this.startEgressProxy();
    await this.startDns();
    openListenerDiag(this.log);
    this.trap.listen(this.cfg.trapSocket);
    this.access.secure(this.cfg.trapSocket);
    await this.control.listen(this.cfg.controlSocket, (p) => this.access.secure(p));
    this.control.onError = (e) => this.serverError('control', e);
    this.peers.onError = (e) => this.serverError('peer API', e);
    this.sweepTimer = setInterval(() => void this.sweep().catch((e: unknown) => this.internalErrors.report('daemon', 'the sweep', e)), this.cfg.sweepIntervalMs);
    this.sweepTimer.unref();
    if (this.metricsServer && this.cfg.metricsAddress) {
      const { host, port } = this.cfg.metricsAddress;
      this.metricsServer.onError = (e) => this.serverError('metrics', e);
      try {
        this.metricsAddress = await this.metricsServer.listen(host, port);
        const served = Number(/:(\d+)$/.exec(this.metricsAddress)?.[1]);
        if (served > 0) this.cluster?.updateNode({ metricsPort: served });
      } catch (e) {
        throw new AppswitchError('ERR_CONFIG', `--metrics-address ${host.includes(':') ? `[${host}]` : host}:${port}: ${(e as Error).message}`);
      }
    }
    this.rateTimer = setInterval(guarded(this.internalErrors.reporter('daemon'), 'sampling the trap rate', () => this.sampleTraps()), 1000);
    this.rateTimer.unref();
    const c = this.cfg;
    this.log.info(
      {
        version: VERSION,
        nodeVersion: process.version,
        pid: process.pid,
        nodeAddress: c.nodeAddress,
        config: {
          stateDir: c.stateDir,
          ports: `${c.ports.low}-${c.ports.high}`,
          vipCidrs: c.vipCidrs,
          gossip: this.cluster?.address,
          gossipProfile: c.gossipProfile,
          gossipKey: key.mode === 'key' ? key.file : null,
          joins: c.joins,
          peerPort: c.peerPort,
          lb: c.lb,
          fastpath: c.fastpath,
          dns: `${c.nodeAddress}:${c.dnsPort}`,
          dnsDomain: c.dnsDomain,
          dnsServers: c.dnsServers,
          metrics: this.metricsAddress ?? 'off',
          gateway: c.gateway ? c.gatewayAddress : 'off',
          egress: { mode: c.egressMode, gateway: c.egressGateway ? `${c.nodeAddress}:${c.egressPort}` : false, rules: this.egressPolicy.size },
          group: this.access.gid === undefined ? null : c.group,
          logLevel: c.logLevel,
        },
      },
      'daemon started',
    );
  }

  /** The cluster key (see resolveGossipKey), logged by file name and origin, never by value. */
  private gossipKey(): GossipKey {
    const key = resolveGossipKey(this.cfg);
    if (key.mode === 'plaintext') {
      this.log.warn(
        { gossipPort: this.cfg.gossipPort, peerPort: this.cfg.peerPort },
        'gossip and the peer API are NOT authenticated (--gossip-plaintext): anyone who can send to these ports can add members, publish services and learn identities',
      );
      return key;
    }
    const how = { flag: 'from --gossip-key', 'state-dir': 'from the state directory', generated: 'generated on this first start (copy it to every node that joins)' }[key.source];
    this.log.info({ gossipKey: key.file, keys: key.keys.length, source: key.source }, `cluster key ${how}`);
    if (key.looseMode) this.log.warn({ gossipKey: key.file, mode: key.looseMode }, 'the cluster key file is readable by other users: chmod 600 it');
    return key;
  }

  /** Takes over the programs a previous daemon left running (their generators reconnect with their tickets), unless
   * --clean. Runs before the cluster starts, so the restored services are announced with the first gossip. */
  private restoreState(): void {
    if (this.cfg.clean) {
      clearState(this.cfg.stateDir);
      return;
    }
    const snap = loadState(this.cfg.stateDir, this.cfg.nodeName, this.log, this.cfg.formerNodeNames);
    if (!snap) return;
    const apps = this.handler.restore(snap, this.cfg.restoreGraceMs);
    this.log.info({ apps, services: this.table.size, graceMs: this.cfg.restoreGraceMs }, 'state restored: waiting for the running programs to reconnect');
  }

  /** Loads the saved cluster objects (never deleted by --clean: they are configuration), then saves on every change
   * and drops old tombstones hourly. */
  private restoreObjects(): void {
    const n = loadObjects(this.cfg.stateDir, this.objects, this.log);
    if (n) this.log.info({ objects: this.objects.size, records: n }, 'cluster objects restored');
    const save = (): void => this.objectsWriter.schedule();
    this.objects.on('changed', save);
    this.objects.on('dropped', save);
    this.expireTimer = setInterval(guarded(this.internalErrors.reporter('daemon'), 'expiring tombstones', () => this.objects.expire()), 3_600_000);
    this.expireTimer.unref();
  }

  /** Stops serving; logs one line with why. The running programs keep running (and keep their connections): the
   * state is saved first and their apps are not ended, so the next daemon takes them over. */
  async stop(why: { reason: string; signal?: NodeJS.Signals } = { reason: 'requested' }): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.rateTimer) clearInterval(this.rateTimer);
    if (this.expireTimer) clearInterval(this.expireTimer);
    let err: unknown;
    try {
      this.localIngress.close(); /* detaches the sk_lookup program: host ports go back to the normal lookup */
      this.state.freeze();
      this.objectsWriter.flushPending();
      this.trap.close(true);
      this.fds.close();
      await this.ingress.close();
      await this.cluster?.stop();
      await this.peers?.close();
      await this.egressProxy?.close();
      await this.dns?.close();
      await this.control.close();
      await this.metricsServer?.close();
    } catch (e) {
      err = e;
      throw e;
    } finally {
      this.lock?.release();
      const line = { ...why, uptimeSeconds: Math.round((Date.now() - this.started) / 1000), ...(err ? { err } : {}) };
      this.log.info(line, 'daemon stopped');
    }
  }

  /** The built-in DNS server on the node address, and the resolv.conf that programs see (mounted over theirs; see
   * programsNameserver for the address it names). */
  private async startDns(): Promise<void> {
    const dir = this.directory;
    const self = `${this.cfg.nodeAddress}:${this.cfg.dnsPort}`;
    const forwarders = this.cfg.dnsServers.filter((f) => f !== this.cfg.nodeAddress && f !== self);
    this.dns = new DnsServer({
      source: {
        lookup: (name) => {
          const apps = dir.vipsOf(name); /* an app's name wins over a virtual service's */
          const a = apps.length ? apps : this.vservices.vipsOf(name);
          return a.length ? { a, aaaa: [] } : undefined;
        },
        reverse: (ip) => dir.nameOf(ip) ?? this.vservices.nameOf(ip),
      },
      forwarders,
      domain: this.cfg.dnsDomain,
      bindAddress: this.cfg.nodeAddress,
      port: this.cfg.dnsPort,
      logger: this.log.child({ module: 'dns' }),
      onInternalError: this.internalErrors.reporter('dns'),
    });
    await this.dns.start();
    writeFileSync(this.cfg.resolvConf, renderResolvConf(programsNameserver(this.cfg), this.cfg.dnsDomain), { mode: 0o644 });
  }

  /** The daemon ports of a node: its `@node` record from gossip (validated, see gossip-records.ts), else — this node,
   * or another before its record arrives — this daemon's own ports and pool, the best guess for a node of the cluster. */
  private portsOf(r: NodeRecord | undefined): DaemonPorts {
    const c = this.cfg;
    if (r) {
      const p: DaemonPorts = { gossip: r.gossipPort, peer: r.peerPort, dns: r.dnsPort, pool: r.ports };
      if (r.metricsPort !== undefined) p.metrics = r.metricsPort;
      if (r.egressGateway && r.egressPort !== undefined) p.egress = r.egressPort;
      return p;
    }
    const own: DaemonPorts = { gossip: c.gossipPort, peer: c.peerPort, dns: c.dnsPort, pool: c.ports };
    if (c.metricsAddress) own.metrics = c.metricsAddress.port;
    if (c.egressGateway) own.egress = c.egressPort;
    return own;
  }

  /** The egress endpoints of the live egress gateways other than this node, in node-name order (see
   * trap/egress-route.ts: round robin over them). */
  private egressGateways(): Endpoint[] {
    const out: Array<{ node: string; ep: Endpoint }> = [];
    for (const d of this.cluster?.daemons() ?? []) {
      const r = d.record;
      if (d.node === this.cfg.nodeName || d.state !== 'alive' || !r?.egressGateway || r.egressPort === undefined) continue;
      out.push({ node: d.node, ep: { ip: d.address, port: r.egressPort } });
    }
    return out.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0)).map((x) => x.ep);
  }

  /** What the peer API tells `asker` about a client connection: the destination its app asked for (`egress`) only
   * when the asker is a live egress gateway and the connection went to that gateway's egress endpoint (`dst`, which
   * the report matched); to anyone else the identity alone. */
  private egressAnswer(c: ClientIdentity | undefined, dst: string | undefined, asker: string | undefined): ClientIdentity | undefined {
    if (!c || c.egress === undefined) return c;
    const r = discloseEgress(c, dst, asker, this.cluster?.daemons() ?? []);
    if (r?.egress === undefined) this.log.warn({ asker, dst, app: c.appId }, 'peer API: an egress destination was asked for by a node that is not its gateway; not told');
    return r;
  }

  /** Starts the egress proxy of this egress gateway (see gateway/egress.ts). */
  /** A gateway's forwarder: the C relay (docs/relay.md), started by start(); the Node forwarder when the relay cannot
   * run here (its executable missing), said once in the log. */
  private ingressForwarder(nodeAlive: (node: string) => boolean): IngressForwarder {
    const log = this.log.child({ module: 'relay' });
    try {
      this.relay = new RelayForwarder({
        tables: { fdsForHello: () => this.decisions.fdsForHello() },
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
        start: false,
      });
      return this.relay;
    } catch (e) {
      log.warn({ err: e }, 'the C relay cannot run: ingress goes through the Node forwarder (slower)');
      return new NodeForwarder(new IngressPicker({ table: this.table, lb: this.cfg.lb, nodeAlive, balancer: this.handler.balancer }));
    }
  }

  private async startEgressProxy(): Promise<void> {
    const ranges = new VirtualRanges(this.cfg.vipCidrs);
    const proxy = new EgressProxy({
      address: this.cfg.nodeAddress,
      port: this.cfg.egressPort,
      isMember: (ip) => this.isMemberAddress(ip),
      whoIs: (ip, endpoint, dst) => this.peers?.whoIs(ip, endpoint, dst) ?? Promise.resolve(undefined),
      policy: this.egressPolicy,
      forbidden: (ip, port) => forbiddenEndpoint(ip, ranges) ?? (this.doors.check(ip, port, 'tcp') !== undefined ? 'an appswitch daemon port or pool port' : undefined),
      log: this.log.child({ module: 'egress' }),
    });
    try {
      await proxy.listen();
    } catch (e) {
      throw new AppswitchError('ERR_CONFIG', `--egress-port ${this.cfg.egressPort}: ${(e as Error).message}`);
    }
    this.egressProxy = proxy;
  }

  /** Closes the daemon ports of every member (any state but left) and of this node to trapped programs. The cluster's
   * view of each node gives its canonical address and its record in one pass. */
  private refreshDoors(): void {
    const c = this.cfg;
    const doors: ClosedPorts[] = nodeDoors(c.nodeAddress, this.portsOf(undefined), true);
    for (const d of this.cluster?.daemons() ?? []) {
      if (d.state === 'left' || d.node === c.nodeName) continue;
      doors.push(...nodeDoors(d.address, this.portsOf(d.record), false));
    }
    const metrics = c.metricsAddress;
    if (metrics && metrics.host !== c.nodeAddress) { /* the metrics endpoint may listen on another address of this host */
      const hosts = metrics.host === '0.0.0.0' || metrics.host === '::' ? localAddresses() : [metrics.host];
      for (const address of hosts) doors.push({ address, proto: 'tcp', low: metrics.port, high: metrics.port, kind: 'metrics' });
    }
    doors.push(...this.exposureDoors());
    this.doors.set(doors);
    this.vservices.refresh(); /* a backend may have become a member's door */
  }

  /** The gateway nodes of the cluster (this one when it is one), left members excluded. */
  private gatewayNodes(): GatewayNode[] {
    const c = this.cfg;
    const out: GatewayNode[] = [];
    if (!this.cluster) return c.gateway ? [{ node: c.nodeName, address: c.nodeAddress, alive: true, reserved: this.reservedPorts() }] : [];
    for (const d of this.cluster.daemons()) {
      if (d.state === 'left') continue;
      if (d.node === c.nodeName) {
        if (c.gateway) out.push({ node: d.node, address: c.nodeAddress, alive: true, reserved: this.reservedPorts() });
        continue;
      }
      if (!d.record?.gateway) continue;
      const r = d.record;
      const daemon = [r.gossipPort, r.peerPort, r.dnsPort, ...(r.metricsPort !== undefined ? [r.metricsPort] : []), ...(r.egressPort !== undefined ? [r.egressPort] : [])];
      out.push({ node: d.node, address: d.address, alive: d.state === 'alive', reserved: { pool: r.ports, daemon } });
    }
    return out;
  }

  /** This node's pool and daemon ports: no exposure host port may be one of them. */
  private reservedPorts(): ReservedPorts {
    const c = this.cfg;
    const daemon = [c.gossipPort, c.peerPort, c.dnsPort, ...(c.metricsAddress ? [c.metricsAddress.port] : []), ...(c.egressGateway ? [c.egressPort] : [])];
    return { pool: c.ports, daemon };
  }

  /** The exposure host ports at every gateway's address, closed to trapped programs: a program reaching one would pass
   * itself off as an outside client (see docs/ingress.md). This node's own gateway listens on --gateway-address (every
   * address of the host by default). */
  private exposureDoors(): ClosedPorts[] {
    const ports = this.ingress?.activeHostPorts() ?? [];
    if (!ports.length) return [];
    const c = this.cfg;
    const addresses = new Set<string>();
    for (const g of this.gatewayNodes()) {
      if (g.node !== c.nodeName) addresses.add(g.address);
      else if (c.gatewayAddress === '0.0.0.0' || c.gatewayAddress === '::') for (const a of localAddresses()) addresses.add(a);
      else addresses.add(c.gatewayAddress);
    }
    const out: ClosedPorts[] = [];
    for (const address of addresses) for (const p of ports) out.push({ address, proto: 'tcp', low: p, high: p, kind: 'exposure' });
    return out;
  }

  /** Whether ip is the address of another cluster member (only members are asked who their clients are). */
  /** Counts of the outside clients pushed across hosts (see IngressStatus). */
  private pushStats(): { pushSent: number; pushAccepted: number; pushRefused: number; pushAnswered: { generator: number; daemon: number; late: number } } {
    return {
      pushSent: this.pusher?.pushed ?? 0,
      pushAccepted: this.pushed.accepted,
      pushRefused: Object.values(this.pushed.refused).reduce((a, b) => a + b, 0),
      pushAnswered: { ...this.pushed.answered },
    };
  }

  private isMemberAddress(ip: string): boolean {
    return this.cluster?.isPeerAddress(ip) ?? false;
  }

  private sampleTraps(): void {
    this.trapSamples.push({ at: Date.now(), traps: this.trap.traps });
    if (this.trapSamples.length > 11) this.trapSamples.shift();
  }

  /** Trapped calls per second over the last (up to) 10 s. */
  private trapRate(): number {
    const first = this.trapSamples[0];
    if (!first) return 0;
    const dt = (Date.now() - first.at) / 1000;
    return dt > 0 ? Math.round(((this.trap.traps - first.traps) / dt) * 10) / 10 : 0;
  }

  private async sweep(): Promise<void> {
    try {
      this.handler.expireDetached();
      this.pushed.expire();
      const takenAt = Date.now();
      let snap;
      try {
        snap = await tcpSnapshot();
      } catch (e) {
        /* the kernel's tables could not be read whole: judge nothing this round (a socket missing from a failed read
         * is not a closed one), only offers past their age go */
        this.handler.expireOffers();
        throw e;
      }
      this.handler.sweep(snap.listening, takenAt, snap.sockets, snap.liveLocal);
      this.handler.balancer.setInflight(snap.outbound);
      this.decisions.setInflight(snap.outbound);
      const unix = this.connections.hasFastpath ? await unixInodes().catch(() => undefined) : undefined;
      const tcp = { tcpLocal: snap.liveLocal, tcpRemote: snap.liveRemote, takenAt };
      this.connections.sweep(unix ? { ...tcp, unixInodes: unix } : tcp);
    } catch (e) {
      const code = e instanceof SnapshotError ? e.code : errCode(e);
      if (isFdExhaustion(code)) this.fds.fail('reading /proc/net for the sweep', code as string);
      else if (Date.now() - this.sweepFailLogged >= 10_000) {
        this.sweepFailLogged = Date.now();
        this.log.warn({ err: e, code }, 'sweep skipped: the socket tables could not be read; no service withdrawn');
      }
    }
  }

  /** A listening socket's error (once listening): running out of descriptors goes to FdBudget (one rate-limited
   * line), anything else is logged. The socket keeps listening either way. */
  private serverError(which: string, e: NodeJS.ErrnoException): void {
    const code = errCode(e);
    if (isFdExhaustion(code)) this.fds.fail(`accepting on the ${which} socket`, code as string);
    else this.log.warn({ err: e }, `${which} socket error`);
  }

  /** The egress part of `status` (see docs/egress.md). */
  private egressStatus(): EgressStatus {
    const st = this.handler.stats;
    const s: EgressStatus = {
      mode: this.cfg.egressMode,
      gateway: this.cfg.egressGateway,
      rules: this.egressPolicy.size,
      denied: st.egressDenied,
      noGateway: st.egressNoGateway,
      viaGateway: st.egressViaGateway,
      udpRefused: st.egressUdpRefused,
      liveGateways: this.egressGateways().length,
    };
    const p = this.egressProxy?.stats;
    if (p) s.proxy = { forwarded: p.forwarded, refused: p.refused, active: p.active, refusals: { ...p.refusals } };
    return s;
  }

  info(): InfoResult {
    return {
      version: VERSION,
      node: this.cfg.nodeName,
      nodeAddress: this.cfg.nodeAddress,
      trapSocket: this.cfg.trapSocket,
      vipCidrs: this.cfg.vipCidrs,
      ports: `${this.cfg.ports.low}-${this.cfg.ports.high}`,
      resolvConf: this.cfg.resolvConf,
      dnsDomain: this.cfg.dnsDomain,
      sockguard: this.cfg.sockguard,
    };
  }

  /** The members as this node sees them, then one `conflict` row per live node that uses this node's name. */
  private memberViews(): MemberView[] {
    const rows: MemberView[] = this.cluster?.members() ?? [];
    for (const c of this.cluster?.conflicts() ?? []) rows.push({ name: c.name, address: c.otherAddress, state: 'conflict', incarnation: null });
    return rows;
  }

  private nameConflicts(): NameConflictView[] {
    return (this.cluster?.conflicts() ?? []).map((c) => ({ address: c.otherAddress, since: new Date(c.since).toISOString() }));
  }

  private onControl(req: ControlRequest): unknown {
    switch (req.method) {
      case 'info':
        return this.info();
      case 'status': {
        const members = this.memberViews();
        const memberStates: Record<string, number> = {};
        for (const m of members) memberStates[m.state] = (memberStates[m.state] ?? 0) + 1;
        const s: StatusResult = {
          ...this.info(),
          uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
          apps: this.handler.apps.size,
          services: this.table.size,
          trapMessages: this.trap.messages,
          traps: this.trap.traps,
          trapsPerSecond: this.trapRate(),
          memberStates,
          nameConflicts: this.nameConflicts(),
          openConnections: this.connections.counts(),
          group: this.access.gid === undefined ? null : this.cfg.group,
          refused: this.handler.stats.refused,
          denied: this.handler.stats.denied,
          retried: this.handler.stats.retried,
          unidentified: this.handler.stats.unidentified,
          udpUnidentified: this.handler.stats.udpUnidentified,
          pendingOffers: this.handler.pendingOffers,
          awaitingReconnect: this.handler.detachedApps,
          connections: { tcp: this.handler.stats.tcpConnections, fastpath: this.handler.stats.fastpathConnections },
          fastpath: this.cfg.fastpath,
          daemonPortRefused: this.handler.stats.daemonPortRefused,
          egressDenied: this.handler.stats.egressDenied,
          egress: this.egressStatus(),
          limitsReached: { services: this.handler.stats.limitServices, offers: this.handler.stats.limitOffers, pending: this.handler.stats.limitPending },
          internalErrors: this.internalErrors.snapshot(),
          externalRefused: this.handler.stats.externalRefused,
          ingress: { ...this.ingress.status(), ...this.pushStats() },
          members: this.cluster?.members().filter((m) => m.state === 'alive').length ?? 1,
          steering: this.steering.status(),
        };
        return s;
      }
      case 'connections':
        return this.connections.list();
      case 'exposures':
        return this.ingress.list();
      case 'expose':
      case 'unexpose':
        return this.exposeControl.handle(req.method, req.params ?? {});
      case 'apps':
        return [...this.handler.apps.values()].map((a): AppView => {
          const v: AppView = {
            id: a.id,
            identity: a.identity,
            tags: a.tags,
            cmd: a.cmd,
            startedAt: new Date(a.startedAt).toISOString(),
            services: this.table
              .all()
              .filter((e) => e.appId === a.id)
              .map((e) => `${e.vip}:${e.port}/${e.proto}`),
          };
          if (a.pid !== undefined) v.pid = a.pid;
          if (a.ip !== undefined) v.ip = a.ip;
          if (a.name !== undefined) v.name = a.name;
          return v;
        });
      case 'members':
        return this.memberViews();
      case 'vservices':
      case 'createVservice':
      case 'deleteVservice':
        return this.vserviceControl.call(req.method, req.params ?? {});
      case 'services':
        return this.table.all().map((e): ServiceView => {
          const v: ServiceView = {
            vip: e.vip,
            port: e.port,
            proto: e.proto,
            endpoint: `${e.endpoint.ip}:${e.endpoint.port}`,
            node: e.node,
            app: e.appId,
            tags: e.tags,
          };
          if (e.name !== undefined) v.name = e.name;
          return v;
        });
      default:
        return undefined;
    }
  }
}
