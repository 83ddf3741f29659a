/** The per-host daemon: the single place where the pieces are wired together (trap server + handler, service
 * table, port pool, control API, sweeper). */
import { fstatSync, mkdirSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { DnsServer, renderResolvConf } from '../dns/index.js';
import { ProjectResolvFiles } from './project-resolv.js';
import type { Logger } from 'pino';
import { AppswitchError } from '../errors.js';
import { defaultPolicy } from '../policy/policy.js';
import { type ClosedPorts, DaemonPortGuard, type DaemonPorts, nodeDoors } from '../policy/daemon-ports.js';
import { VIRTUAL_DNS_ADDRESS, VIRTUAL_DNS_PORT, VirtualRanges } from '../table/addresses.js';
import { AppDirectory } from '../table/directory.js';
import { PortPool } from '../table/port-pool.js';
import { ServiceTable } from '../table/service-table.js';
import { ClusterObjects } from '../table/cluster-objects.js';
import { native } from '../native/binding.js';
import { TrapHandler } from '../trap/handler.js';
import { TrapServer } from '../trap/server.js';
import { VirtualDns } from '../trap/virtual-dns.js';
import { errCode, FdBudget, isFdExhaustion } from '../trap/fdbudget.js';
import { ConnectionTracker, type ServiceInfo } from '../trap/connections.js';
import { applyDecided } from '../trap/decided.js';
import { DecisionTable } from '../trap/decision-table.js';
import { AccessControl, type PeerCredentials } from './access.js';
import type { DaemonConfig } from './config.js';
import type { AppView, ControlRequest, InfoResult, MemberView, NameConflictView, ServiceView, StatusResult } from './control-protocol.js';
import { Cluster } from './cluster.js';
import type { NodeRecord } from './gossip-records.js';
import { Gateways } from './gateways.js';
import { preambleKeys } from '../gateway/preamble-key.js';
import { type GossipKey, resolveGossipKey } from './gossip-key.js';
import { ControlServer } from './control.js';
import { PeerApi } from './peers.js';
import { socketOrigin } from './sockguard.js';
import { listenerGone, openListenerDiag, socketHeld } from './listener-diag.js';
import { snapshotNow, SnapshotError, tcpSnapshot, unixInodes } from './listeners.js';
import { sweepPause } from './sweep-pace.js';
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
import type { EventBus } from '../events/bus.js';
import type { EdgeStore } from '../events/edges.js';
import type { ClusterEdges } from '../events/edge-cluster.js';
import { MAX_EDGES_PER_ANSWER } from '../events/edge-wire.js';
import type { DecisionRecorder } from '../events/recorder.js';
import { type EventWiring, setUpEvents } from './events-setup.js';
import { pipeEvents, subscribeOptions } from '../events/stream.js';
import { ControlStream } from './control.js';
import { ControlCallError } from './control-protocol.js';
import { preparePrivateStateDir, privateHandlerDeps } from './private-mode.js';
import { type ApiSources, createApiHandler } from '../api/handler.js';
import { ApiServer } from '../api/server.js';
import { resolveApiToken } from '../api/token.js';
import { isLoopbackHost } from '../net-listen.js';
import { checkUiAddress, startLiveView, type LiveView } from '../ui/mount.js';

/** Every address of this host's interfaces (for a metrics endpoint bound to the wildcard address). */
function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(a.address.replace(/%.*$/, ''));
  return out;
}

/** The nameserver in programs' resolv.conf. On port 53 the DNS server is named by its real address, so every resolver
 * sees answers come from the nameserver it asked. On any other port (resolv.conf cannot carry one), and when the node
 * address is a loopback address (a host with no other address: a laptop offline; in a program's own network
 * namespace, loopback is the program's, where nothing answers), it is the virtual DNS address, 169.254.0.53, whose
 * port 53 the trap sends to --node-address:--dns-port (trap/virtual-dns.ts); then a resolver that checks the source
 * address of a UDP answer against its nameserver (c-ares, musl) sees the real one, until datagram receives are
 * translated. glibc (getaddrinfo, getent, Python, curl), Go and Java do not check. */
export function programsNameserver(cfg: Pick<DaemonConfig, 'nodeAddress' | 'dnsPort'>): string {
  return cfg.dnsPort === VIRTUAL_DNS_PORT && !isLoopbackHost(cfg.nodeAddress) ? cfg.nodeAddress : VIRTUAL_DNS_ADDRESS;
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
  /** Each `appswitch up` project's resolv.conf (info {project}). */
  private projectResolv?: ProjectResolvFiles;
  readonly handler: TrapHandler;
  private readonly trap: TrapServer;
  /** The daemon's own file descriptors: what ran out, and when they are back (see FdBudget). */
  readonly fds: FdBudget;
  private readonly control: ControlServer;
  private sweepTimer?: NodeJS.Timeout;
  private sweepStopped = false;
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
  /** Ingress and egress (see gateways.ts). */
  readonly gateways: Gateways;
  /** What the HTTP API serves (src/api): the control calls, the event bus and the cluster's edges. */
  readonly apiSources: ApiSources;
  /** HTTP on the control socket (handed over by the control server). */
  private readonly api: ApiServer;
  /** The TCP API listener (`--api-address`), once started. */
  private apiTcp?: ApiServer;
  /** Where the TCP API listens ("host:port"), once started. */
  apiAddress?: string;
  /** Every decision as an event (src/events/bus.ts): the EventSource of the HTTP API and the control socket. */
  readonly events: EventBus;
  /** This node's edges (src/events/edges.ts), and the EdgeSource over the cluster (edge-cluster.ts). */
  readonly edgeStore: EdgeStore;
  readonly edges: ClusterEdges;
  /** Turns decisions into events and edge counts (the trap side's ConnectObserver). */
  private readonly recorder: DecisionRecorder;
  private readonly eventWiring: EventWiring;
  private edgeTimer?: NodeJS.Timeout;
  /** Control connections that carry an event stream: ended when the daemon stops (the control server waits for its
   * connections to close). */
  private readonly streams = new Set<Socket>();
  /** The live view (`--ui-address`, src/ui), once started; uiAddress: where it listens ("host:port"). */
  private liveView?: LiveView;
  uiAddress?: string;

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
    this.access = new AccessControl(cfg.group, this.log, cfg.private);
    this.fds = new FdBudget(this.log);
    let byEndpoint: Map<string, ServiceInfo> | undefined; /* rebuilt on the first look-up after a table change */
    const stale = (): void => (byEndpoint = undefined);
    this.table.on('added', stale);
    this.table.on('removed', stale);
    const serviceAt = (ep: string): ServiceInfo | undefined => {
      byEndpoint ??= new Map(this.table.all().map((e) => [`${e.endpoint.ip}:${e.endpoint.port}`, { service: `${e.vip}:${e.port}`, app: e.appId, node: e.node, vip: e.vip, port: e.port }]));
      return byEndpoint.get(ep);
    };
    this.connections = new ConnectionTracker(serviceAt);
    this.eventWiring = setUpEvents({
      nodeName: cfg.nodeName,
      maxSeries: cfg.metricsMaxSeries,
      table: this.table,
      directory: this.directory,
      vserviceName: (ip) => this.vservices.nameOf(ip),
      localApp: (id) => this.handler?.apps.get(id),
      serviceAt,
      openConnections: (visit) => this.connections.forEachOut(visit),
      cluster: () => this.cluster,
      peers: () => this.peers,
    });
    ({ events: this.events, edgeStore: this.edgeStore, edges: this.edges, recorder: this.recorder } = this.eventWiring);
    this.connections.observer = this.recorder;
    const policy = defaultPolicy();
    /** A node is alive: this one, the virtual services' (their backends are judged by refusals), or a member gossip says
     * is alive (the handler, the decision table, the forwarder). */
    const nodeAlive = (node: string): boolean => node === cfg.nodeName || node === VSERVICE_NODE || this.cluster?.ml.member(node)?.state === 'alive';
    this.gateways = new Gateways({
      cfg,
      log: this.log,
      table: this.table,
      directory: this.directory,
      objects: this.objects,
      doors: this.doors,
      connections: this.connections,
      nodeAlive,
      handler: () => this.handler,
      decisions: () => this.decisions,
      cluster: () => this.cluster,
      peers: () => this.peers,
      onDoorsChanged: () => this.refreshDoors(),
      localAddresses,
    });
    this.handler = new TrapHandler({
      ...this.gateways.handlerDeps(),
      nodeName: cfg.nodeName,
      nodeAddress: cfg.nodeAddress,
      ranges: new VirtualRanges(cfg.vipCidrs),
      table: this.table,
      ...(cfg.private ? privateHandlerDeps() : {}),
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
      listenerGone: listenerGone(this.log),
      stillHeld: socketHeld(this.log),
      observer: this.recorder,
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
        ingress: () => this.gateways.dtabIngress(),
      },
      this.internalErrors.reporter('trap'),
    );
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
        ingress: () => ({ ...this.gateways.ingress.status(), externalRefused: this.handler.stats.externalRefused }),
        egress: () => this.gateways.egressMetrics(),
        edges: () => {
          this.refreshActive();
          return this.edgeStore.series();
        },
      });
      this.metricsServer = new MetricsServer(this.metrics, this.log.child({ module: 'metrics' }));
    }
    this.state = new StateWriter(cfg.stateDir, cfg.nodeName, () => this.handler.snapshot(), this.log);
    this.state.onNoDescriptor = (code) => this.fds.fail('saving the state file', code);
    const metrics = this.metrics;
    this.trap = new TrapServer(this.handler, this.log, metrics ? (_app, d) => metrics.foldTrapStats(d) : undefined, (peer) => this.access.admitGenerator(peer), this.fds);
    this.trap.onInternalError = this.internalErrors.reporter('trap');
    this.trap.helloFds = () => this.decisions.fdsForHello();
    this.trap.onAppsChanged = () => this.decisions.invalidate();
    this.trap.onServiceUp = () => this.decisions.flush();
    const decidedDeps = { stats: this.handler.stats, report: this.handler.reportDecided.bind(this.handler), connections: this.connections, log: this.log, limitLog: this.handler.limitLog, table: this.table, observer: this.recorder };
    this.trap.onDecided = (app, records) => applyDecided(decidedDeps, app, records);
    this.trap.onClaimed = (app, claims) => this.gateways.claimed(app.id, claims);
    this.control = new ControlServer((req) => this.onControl(req), this.log, (peer) => this.access.admit(peer, 'control'), cfg.private ? process.getuid?.() : undefined);
    this.control.onInternalError = this.internalErrors.reporter('control');
    this.apiSources = {
      control: (method, params, peer) => this.onControl({ id: 0, method, params }, peer),
      events: this.events,
      edges: this.edges,
    };
    this.api = this.apiServer('peer');
    this.control.http = this.api;
    if (this.metricsServer) this.metricsServer.onInternalError = this.internalErrors.reporter('metrics');
  }

  /** Brings the edges' clock to now and sets their open connections from the connection tracker. */
  private refreshActive(): void {
    this.eventWiring.refreshActive();
  }

  async start(): Promise<void> {
    if (this.cfg.uiAddress) checkUiAddress(this.cfg.uiAddress, this.cfg.uiAllowRemote ?? false); /* before anything starts */
    if (this.cfg.private) preparePrivateStateDir(this.cfg.stateDir); /* 0700, the user's own, or refused */
    else mkdirSync(this.cfg.stateDir, { recursive: true, mode: 0o755 });
    this.lock = lockStateDir(this.cfg.stateDir); /* before any socket, key or state file in the directory is touched */
    const key = this.gossipKey();
    this.gateways.setPreambleKeys(preambleKeys(key.mode === 'key' ? key.keys : undefined)); /* before the relay's first route */
    this.gateways.beginRelay();
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
        ...this.gateways.nodeRecord(),
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
    cluster.on('member', (m) => this.recorder.memberState(m));
    this.refreshDoors();
    this.peers = new PeerApi(
      this.cfg.peerPort,
      key.mode === 'key' ? key.keys : [],
      (ep, dst, proto, asker) =>
        proto === 'udp' ? this.handler.identifyUdpLocal(ep) : this.handler.identifyLocal(ep, dst).then((c) => this.gateways.egressAnswer(c, dst, asker)),
      this.log.child({ module: 'peers' }),
      (ip) => cluster.isPeerAddress(ip),
    );
    this.peers.onInternalError = this.internalErrors.reporter('peers');
    this.peers.onEdges = () => {
      this.refreshActive();
      return this.edgeStore.views(MAX_EDGES_PER_ANSWER);
    };
    await this.peers.listen(this.cfg.nodeAddress);
    await this.gateways.start();
    await this.startDns();
    openListenerDiag(this.log);
    this.trap.listen(this.cfg.trapSocket);
    this.access.secure(this.cfg.trapSocket);
    await this.control.listen(this.cfg.controlSocket, (p) => this.access.secure(p));
    this.control.onError = (e) => this.serverError('control', e);
    await this.startApiListener();
    this.peers.onError = (e) => this.serverError('peer API', e);
    this.scheduleSweep(this.cfg.sweepIntervalMs);
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
    if (this.cfg.uiAddress) await this.startLiveView(this.cfg.uiAddress);
    this.rateTimer = setInterval(
      guarded(this.internalErrors.reporter('daemon'), 'sampling the trap rate', () => {
        this.sampleTraps();
        this.edgeStore.tick(Date.now()); /* the edges' clock: their hot path reads no clock of its own */
      }),
      1000,
    );
    this.rateTimer.unref();
    this.edgeTimer = setInterval(
      guarded(this.internalErrors.reporter('daemon'), 'forgetting idle edges', () => {
        this.refreshActive();
        this.edgeStore.prune();
      }),
      60_000,
    );
    this.edgeTimer.unref();
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
          ui: this.uiAddress ?? 'off',
          gateway: c.gateway ? c.gatewayAddress : 'off',
          egress: { mode: c.egressMode, gateway: c.egressGateway ? `${c.nodeAddress}:${c.egressPort}` : false, rules: this.gateways.egressPolicy.size },
          group: this.access.gid === undefined ? null : c.group,
          logLevel: c.logLevel,
          ...(c.private ? { private: true } : {}),
        },
      },
      'daemon started',
    );
    if (c.private) {
      this.log.info(
        { owner: process.getuid?.(), stateDir: c.stateDir },
        'private daemon: only this user (and root) may use it; no socket guard (it needs root; the programs run as this user anyway), no cluster (gossip on loopback only), programs in user namespaces of their launchers (docs/private-daemon.md)',
      );
    }
  }

  /** An HTTP API server for the control socket ('peer': SO_PEERCRED decides) or the TCP listener ('token'). */
  private apiServer(auth: 'peer' | 'token', token?: string): ApiServer {
    const log = this.log.child({ module: 'api' });
    let open = 0;
    const handler = createApiHandler(this.apiSources, {
      readOnly: false,
      auth,
      ...(token === undefined ? {} : { token }),
      ...(this.cfg.private ? { adminUid: process.getuid?.() ?? 0 } : {}), /* as the newline protocol's ControlServer adminUid */
      onInternalError: this.internalErrors.reporter('control'),
      streams: {
        opened: () => log.debug({ streams: ++open, listener: auth === 'peer' ? 'socket' : 'tcp' }, 'event stream opened'),
        closed: (why) => log.debug({ streams: --open, listener: auth === 'peer' ? 'socket' : 'tcp', why }, 'event stream closed'),
      },
    });
    return new ApiServer(handler, log);
  }

  /** `--api-address`: the HTTP API over TCP, with the bearer token (logged by file, never by value). */
  private async startApiListener(): Promise<void> {
    const at = this.cfg.apiAddress;
    if (!at) return;
    const t = resolveApiToken(this.cfg);
    const how = { flag: 'from --api-token-file', 'state-dir': 'from the state directory', generated: 'generated on this first start' }[t.source];
    this.log.info({ apiTokenFile: t.file, source: t.source }, `API token ${how}`);
    if (t.looseMode) this.log.warn({ apiTokenFile: t.file, mode: t.looseMode }, 'the API token file is readable by other users: chmod 600 it');
    this.apiTcp = this.apiServer('token', t.token);
    this.apiTcp.onError = (e) => this.serverError('API', e);
    const shown = at.host.includes(':') ? `[${at.host}]:${at.port}` : `${at.host}:${at.port}`;
    try {
      this.apiAddress = await this.apiTcp.listenTcp(at.host, at.port);
    } catch (e) {
      throw new AppswitchError('ERR_CONFIG', `--api-address ${shown}: ${(e as Error).message}`);
    }
    const loopback = at.host === '::1' || at.host.startsWith('127.');
    this.log.info({ apiAddress: this.apiAddress }, 'HTTP API listening over TCP (bearer token; root\'s privilege)');
    if (!loopback) this.log.warn({ apiAddress: this.apiAddress }, 'the TCP API is plain HTTP: the token crosses the network readable; reach it through an SSH tunnel or a TLS proxy');
  }

  /** The live view (src/ui): the HTTP API read-only (the same sources: control calls, events, edges) behind a page. */
  private async startLiveView(address: { host: string; port: number }): Promise<void> {
    this.liveView = await startLiveView({
      address,
      allowRemote: this.cfg.uiAllowRemote ?? false,
      sources: this.apiSources,
      log: this.log.child({ module: 'ui' }),
      onInternalError: this.internalErrors.reporter('ui'),
      onError: (e) => this.serverError('ui', e),
    });
    this.uiAddress = this.liveView.address;
    if (!isLoopbackHost(address.host)) { /* reachable from other nodes: their programs must find it closed too */
      const served = Number(/:(\d+)$/.exec(this.uiAddress)?.[1]);
      if (served > 0) this.cluster?.updateNode({ uiPort: served });
    }
    this.refreshDoors();
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
    this.sweepStopped = true;
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    if (this.rateTimer) clearInterval(this.rateTimer);
    if (this.expireTimer) clearInterval(this.expireTimer);
    if (this.edgeTimer) clearInterval(this.edgeTimer);
    this.events.closeAll();
    for (const s of this.streams) s.destroy();
    let err: unknown;
    try {
      this.gateways.localIngress.close(); /* detaches the sk_lookup program: host ports go back to the normal lookup */
      this.state.freeze();
      this.objectsWriter.flushPending();
      this.trap.close(true);
      this.fds.close();
      await this.cluster?.stop();
      await this.peers?.close();
      await this.gateways.stop();
      await this.dns?.close();
      const controlClosed = this.control.close(); /* stops accepting; resolves when its connections are gone */
      await this.api.close(); /* ends the HTTP ones (event streams never end by themselves) */
      await this.apiTcp?.close();
      await controlClosed;
      await this.metricsServer?.close();
      await this.liveView?.close();
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
    this.projectResolv = new ProjectResolvFiles(path.join(this.cfg.stateDir, 'resolv.d'), programsNameserver(this.cfg), this.cfg.dnsDomain);
    this.projectResolv.reset();
  }

  /** The daemon ports of a node: its `@node` record from gossip (validated, see gossip-records.ts), else — this node,
   * or another before its record arrives — this daemon's own ports and pool, the best guess for a node of the cluster. */
  private portsOf(r: NodeRecord | undefined): DaemonPorts {
    const c = this.cfg;
    if (r) {
      const p: DaemonPorts = { gossip: r.gossipPort, peer: r.peerPort, dns: r.dnsPort, pool: r.ports };
      if (r.metricsPort !== undefined) p.metrics = r.metricsPort;
      if (r.uiPort !== undefined) p.ui = r.uiPort;
      if (r.egressGateway && r.egressPort !== undefined) p.egress = r.egressPort;
      return p;
    }
    const own: DaemonPorts = { gossip: c.gossipPort, peer: c.peerPort, dns: c.dnsPort, pool: c.ports };
    if (c.metricsAddress) own.metrics = c.metricsAddress.port;
    if (c.egressGateway) own.egress = c.egressPort;
    return own;
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
    const api = c.apiAddress; /* the TCP API (token or not, programs have no business there) */
    if (api) {
      const hosts = api.host === '0.0.0.0' || api.host === '::' ? localAddresses() : [api.host];
      for (const address of hosts) doors.push({ address, proto: 'tcp', low: api.port, high: api.port, kind: 'api' });
    }
    const ui = c.uiAddress; /* the live view shows every app's command line: closed to programs like the metrics */
    if (ui) for (const address of ui.host === '0.0.0.0' || ui.host === '::' ? localAddresses() : [ui.host]) doors.push({ address, proto: 'tcp', low: ui.port, high: ui.port, kind: 'ui' });
    doors.push(...(this.gateways?.exposureDoors() ?? [])); /* undefined while the constructor runs */
    this.doors.set(doors);
    if (this.gateways) this.recorder.exposures(this.gateways.ingress.list()); /* exposure.changed events */
    this.vservices.refresh(); /* a backend may have become a member's door */
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

  /** The next sweep in `ms`; after it, the one after that (sweep-pace.ts: longer when a sweep is costly). */
  private scheduleSweep(ms: number): void {
    if (this.sweepStopped) return;
    this.sweepTimer = setTimeout(() => {
      const t0 = performance.now();
      void this.sweep()
        .catch((e: unknown) => this.internalErrors.report('daemon', 'the sweep', e))
        .finally(() => this.scheduleSweep(sweepPause(this.cfg.sweepIntervalMs, performance.now() - t0)));
    }, ms);
    this.sweepTimer.unref();
  }

  private async sweep(): Promise<void> {
    try {
      this.handler.expireDetached();
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

  info(project?: string): InfoResult {
    return {
      version: VERSION,
      node: this.cfg.nodeName,
      nodeAddress: this.cfg.nodeAddress,
      trapSocket: this.cfg.trapSocket,
      vipCidrs: this.cfg.vipCidrs,
      ports: `${this.cfg.ports.low}-${this.cfg.ports.high}`,
      resolvConf: project === undefined || !this.projectResolv ? this.cfg.resolvConf : this.projectResolv.pathFor(project),
      dnsDomain: this.cfg.dnsDomain,
      sockguard: this.cfg.sockguard,
      ...(this.cfg.private ? { private: true, owner: process.getuid?.() ?? 0 } : {}),
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

  private onControl(req: ControlRequest, _peer?: PeerCredentials): unknown {
    switch (req.method) {
      case 'info':
        return this.info(req.params?.project as string | undefined);
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
          egress: this.gateways.egressStatus(),
          limitsReached: { services: this.handler.stats.limitServices, offers: this.handler.stats.limitOffers, pending: this.handler.stats.limitPending },
          internalErrors: this.internalErrors.snapshot(),
          externalRefused: this.handler.stats.externalRefused,
          ingress: this.gateways.ingressStatus(),
          members: this.cluster?.members().filter((m) => m.state === 'alive').length ?? 1,
          steering: this.gateways.steering.status(),
        };
        return s;
      }
      case 'connections':
        return this.connections.list().map((c) => ({ ...c, clientName: this.directory.get(c.clientApp)?.name ?? null, serverName: c.serverApp ? (this.directory.get(c.serverApp)?.name ?? null) : null }));
      case 'edges': {
        const scope = req.params?.scope ?? 'cluster';
        if (scope !== 'node' && scope !== 'cluster') throw new ControlCallError('ERR_BAD_PARAMS', 'edges: "scope" must be node or cluster');
        return this.edges.edges(scope);
      }
      case 'events': {
        const opts = subscribeOptions(req.params ?? {});
        if (typeof opts === 'string') throw new ControlCallError('ERR_BAD_PARAMS', `events: ${opts}`);
        return new ControlStream('events', (sock) => {
          this.streams.add(sock);
          sock.once('close', () => this.streams.delete(sock));
          pipeEvents(this.events.subscribe(opts), sock);
        });
      }
      case 'exposures':
      case 'expose':
      case 'unexpose':
        return this.gateways.control(req.method, req.params ?? {});
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
            owner: a.owner ?? a.uid,
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
