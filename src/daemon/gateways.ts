/** The daemon's gateway side, wired in one place: ingress (exposures, the forwarder on a gateway node, sk_lookup
 * steering to local instances) and egress (the policy, the route through egress
 * gateways, the egress proxy on one). The daemon builds it before the trap handler and hands it lazy hooks for what is
 * built later (the handler, the decision table, the cluster, the peer API); nothing here runs before start(). See
 * docs/ingress.md, docs/relay.md, docs/ingress-local.md and docs/egress.md. */
import { unprivilegedPortStart } from './private-mode.js';
import type { Logger } from 'pino';
import { AppswitchError } from '../errors.js';
import { discloseEgress, EgressProxy } from '../gateway/egress.js';
import { decodeExposureBody, EXPOSURE_KIND, ExposureControl, exposureStore, objectClaims } from '../gateway/expose-control.js';
import type { ReservedPorts } from '../gateway/exposures.js';
import type { IngressForwarder } from '../gateway/forwarder.js';
import { type GatewayNode, Ingress, type IngressStatus } from '../gateway/ingress.js';
import { LocalIngress } from '../gateway/local-ingress.js';
import { NodeForwarder } from '../gateway/node-forwarder.js';
import { IngressPicker } from '../gateway/pick.js';
import { RelayForwarder } from '../gateway/relay-process.js';
import { Steering } from '../gateway/steering.js';
import { native } from '../native/binding.js';
import { EgressPolicy } from '../policy/egress.js';
import type { ClosedPorts, DaemonPortGuard } from '../policy/daemon-ports.js';
import { VirtualRanges } from '../table/addresses.js';
import type { ClusterObjects } from '../table/cluster-objects.js';
import type { AppDirectory } from '../table/directory.js';
import type { Endpoint } from '../table/endpoint.js';
import type { ServiceTable } from '../table/service-table.js';
import type { ClientIdentity } from '../trap/client-reports.js';
import type { ConnectionTracker } from '../trap/connections.js';
import type { OutsideClaims } from '../trap/protocol.js';
import type { DecisionTable, IngressPublish } from '../trap/decision-table.js';
import type { HandlerConfig, TrapHandler } from '../trap/handler.js';
import type { Cluster } from './cluster.js';
import type { DaemonConfig } from './config.js';
import type { EgressStatus } from './control-protocol.js';
import { forbiddenEndpoint } from './gossip-records.js';
import type { EgressCounters } from './metrics.js';
import type { PeerApi } from './peers.js';
import { socketOrigin } from './sockguard.js';

export interface GatewayParts {
  cfg: DaemonConfig;
  log: Logger;
  table: ServiceTable;
  directory: AppDirectory;
  objects: ClusterObjects;
  doors: DaemonPortGuard;
  connections: ConnectionTracker;
  /** Whether a node is alive (this one, the virtual services', or a live member). */
  nodeAlive: (node: string) => boolean;
  /** Built after this object; called only once the daemon runs. */
  handler: () => TrapHandler;
  decisions: () => DecisionTable;
  cluster: () => Cluster | undefined;
  peers: () => PeerApi | undefined;
  /** The exposures changed: the daemon recomputes its closed doors (which include exposureDoors()). */
  onDoorsChanged: () => void;
  /** Every address of this host's interfaces (a gateway listening on the wildcard address). */
  localAddresses: () => string[];
}

/** What the trap handler asks of the gateway side (see HandlerConfig). */
export type GatewayHandlerDeps = Pick<HandlerConfig, 'egress' | 'relayHere' | 'steeredClient' | 'externalCheck' | 'exposeProblem'>;

export class Gateways {
  /** sk_lookup steering of exposures' host ports to this node's own instances (gateway/steering.ts), and what it
   * steers (gateway/local-ingress.ts). */
  readonly steering: Steering;
  readonly localIngress: LocalIngress;
  /** Exposures, and on a gateway node the forwarder that serves them (gateway/ingress.ts). */
  readonly ingress: Ingress;
  /** Accepts of relayed outside clients on this node that the generator answered from the relay's preamble. */
  private preambleAnswered = 0;
  private readonly exposeControl: ExposureControl;
  /** A gateway's C relay (undefined: not a gateway, or the Node forwarder serves instead). */
  private relay?: RelayForwarder;
  /** A gateway's forwarder (the relay, or the Node forwarder). */
  private forwarder?: IngressForwarder;
  /** The ingress preamble's keys (gateway/preamble-key.ts): the forwarder signs with the first; this node's generators
   * accept any (published in the decision table). */
  private keys: Buffer[] = [];
  /** The egress policy (`--egress-allow`, `--egress-rules`). */
  readonly egressPolicy: EgressPolicy;
  /** The egress proxy, on an egress gateway (`--egress-gateway`). */
  egressProxy?: EgressProxy;

  constructor(private readonly p: GatewayParts) {
    const { cfg, log } = p;
    this.steering = new Steering(native, log.child({ module: 'steering' }), {
      off: cfg.ingressSteering ? undefined : 'turned off (--no-ingress-steering)',
      origin: cfg.sockguard ? socketOrigin(log.child({ module: 'sockguard' })) : undefined,
      onChange: () => this.republish(),
    });
    this.egressPolicy = new EgressPolicy(cfg.egressRules);
    this.localIngress = new LocalIngress({
      nodeName: cfg.nodeName,
      table: p.table,
      pidOf: (id) => p.handler().apps.get(id)?.pid,
      steering: this.steering,
      log: log.child({ module: 'steering' }),
    });
    this.ingress = new Ingress({
      nodeName: cfg.nodeName,
      gateway: cfg.gateway,
      listenAddress: cfg.gatewayAddress,
      forwarder: (this.forwarder = cfg.gateway ? this.ingressForwarder() : undefined),
      directory: p.directory,
      table: p.table,
      gateways: () => this.gatewayNodes(),
      reserved: () => this.reservedPorts(),
      ...(cfg.private ? { minHostPort: unprivilegedPortStart() } : {}),
      /* for an accept that asks its daemon after all (the preamble not readable yet), which asks this gateway (whoIs) */
      log: log.child({ module: 'ingress' }),
      onChange: () => {
        p.onDoorsChanged();
        this.republish(); /* which exposure holds a host port: the steered ports the generators answer */
      },
      local: this.localIngress,
    });
    /* a steered connection is accepted only on a gateway, for the exposure that holds its host port now */
    this.steering.view = {
      isGateway: () => cfg.gateway,
      serviceAt: (hostPort) => {
        const e = this.ingress.holderOf(hostPort);
        return e ? `${e.vip}:${e.port}` : undefined;
      },
    };
    p.objects.register(EXPOSURE_KIND, (body) => decodeExposureBody(body));
    const syncExposures = (): void => this.ingress.setObjectClaims(objectClaims(p.objects.list(EXPOSURE_KIND)));
    p.objects.on('changed', (o) => {
      if (o.kind === EXPOSURE_KIND) syncExposures();
    });
    syncExposures();
    this.exposeControl = new ExposureControl({
      ingress: this.ingress,
      ranges: new VirtualRanges(cfg.vipCidrs),
      log: log.child({ module: 'ingress' }),
      store: exposureStore(p.objects),
    });
  }

  /** The trap handler's view of the gateway side: the egress route (absent when egress is neither restricted nor
   * carried, as before egress policy) and the checks of outside clients at accept. */
  handlerDeps(): GatewayHandlerDeps {
    const cfg = this.p.cfg;
    const routed = this.egressPolicy.restricts || cfg.egressMode === 'via-gateway';
    return {
      egress: routed
        ? {
            policy: this.egressPolicy,
            mode: cfg.egressMode,
            isGateway: cfg.egressGateway,
            gateways: () => this.egressGateways(),
            /* this node's DNS server: the resolver path programs use (resolv.conf), never judged nor carried */
            exempt: (ip: string, port: number) => ip === cfg.nodeAddress && port === cfg.dnsPort,
          }
        : undefined,
      relayHere: cfg.gateway,
      steeredClient: (app, peer, local) => this.steering.steeredClient(app, peer, local),
      externalCheck: (_app, listener, via) => this.ingress.checkExternal(listener, via),
      exposeProblem: (specs) => this.ingress.exposeProblem(specs),
    };
  }

  /** What this node says of itself in its gossip record. */
  nodeRecord(): { egressGateway?: true; egressPort?: number; gateway?: true } {
    const cfg = this.p.cfg;
    return { ...(cfg.egressGateway ? { egressGateway: true as const, egressPort: cfg.egressPort } : {}), ...(cfg.gateway ? { gateway: true as const } : {}) };
  }

  /** The preamble keys, from the cluster key: set before the relay starts (its first record). */
  setPreambleKeys(keys: Buffer[]): void {
    this.keys = keys;
    const first = keys[0];
    if (first) this.forwarder?.setPreambleKey(first);
    this.p.decisions().invalidate();
  }

  /** Starts the C relay's process (first step of the daemon's start, after the state directory's lock). */
  beginRelay(): void {
    this.relay?.begin();
  }

  /** Starts the egress proxy on an egress gateway. */
  async start(): Promise<void> {
    if (this.p.cfg.egressGateway) await this.startEgressProxy();
  }

  async stop(): Promise<void> {
    await this.ingress.close();
    await this.egressProxy?.close();
  }

  /** The control API's exposure calls. */
  control(method: 'exposures' | 'expose' | 'unexpose', params: Record<string, unknown>): unknown {
    return method === 'exposures' ? this.ingress.list() : this.exposeControl.handle(method, params);
  }

  /** Accepts a server's generator answered by itself (AS_CLAIMED). A peer from the identity table is an app's; an
   * outside claim (steered, or relayed with a preamble) is recorded as the outside client's connection and counted. */
  claimed(appId: string, claims: { peers: Endpoint[]; outside: OutsideClaims }): void {
    const cfg = this.p.cfg;
    for (const peer of claims.peers) {
      this.p.connections.markAccepted(peer, appId, cfg.nodeName);
    }
    const o = claims.outside;
    if (!o.count) return;
    this.steering.stats.accepted += o.steered;
    this.steering.stats.decidedByGenerator += o.steered;
    this.preambleAnswered += o.relayed;
    this.p.connections.outsideAccepted(appId, cfg.nodeName, o);
  }

  /** The decision table's ingress section (native/dtab.h struct as_dt_ingress): what a server's generator needs to
   * answer an outside client's accept by itself. Steered ports only on a gateway, and only those whose exposure holds
   * the port for the steered service now (Steering.accepting: the conditions of Steering.steeredClient); the generator
   * still leaves a peer of this host to the daemon. Republished when steering, the exposures or the members change. */
  dtabIngress(): IngressPublish {
    return {
      keys: this.keys,
      gateways: this.gatewayNodes()
        .filter((g) => g.alive)
        .map((g) => g.address),
      steered: this.steering.accepting(), /* through steering.view: cfg.gateway, and ingress.holderOf(port) */
      local: this.p.localAddresses(),
    };
  }

  /** What the peer API tells `asker` about a client connection: the destination its app asked for (`egress`) only
   * when the asker is a live egress gateway and the connection went to that gateway's egress endpoint (`dst`, which
   * the report matched); to anyone else the identity alone. */
  egressAnswer(c: ClientIdentity | undefined, dst: string | undefined, asker: string | undefined): ClientIdentity | undefined {
    if (!c || c.egress === undefined) return c;
    const r = discloseEgress(c, dst, asker, this.p.cluster()?.daemons() ?? []);
    if (r?.egress === undefined) this.p.log.warn({ asker, dst, app: c.appId }, 'peer API: an egress destination was asked for by a node that is not its gateway; not told');
    return r;
  }

  /** The exposure host ports at every gateway's address, closed to trapped programs: a program reaching one would pass
   * itself off as an outside client (see docs/ingress.md). This node's own gateway listens on --gateway-address (every
   * address of the host by default). */
  exposureDoors(): ClosedPorts[] {
    const ports = this.ingress?.activeHostPorts() ?? []; /* undefined while the constructor runs */
    if (!ports.length) return [];
    const c = this.p.cfg;
    const addresses = new Set<string>();
    for (const g of this.gatewayNodes()) {
      if (g.node !== c.nodeName) addresses.add(g.address);
      else if (c.gatewayAddress === '0.0.0.0' || c.gatewayAddress === '::') for (const a of this.p.localAddresses()) addresses.add(a);
      else addresses.add(c.gatewayAddress);
    }
    const out: ClosedPorts[] = [];
    for (const address of addresses) for (const port of ports) out.push({ address, proto: 'tcp', low: port, high: port, kind: 'exposure' });
    return out;
  }

  /** Ingress for `status`: the forwarder's counts, the exposures, the accepts answered from a preamble. */
  ingressStatus(): IngressStatus {
    return { ...this.ingress.status(), preambleAnswered: this.preambleAnswered };
  }

  /** The egress part of `status` (see docs/egress.md). */
  egressStatus(): EgressStatus {
    const cfg = this.p.cfg;
    const s: EgressStatus = { mode: cfg.egressMode, gateway: cfg.egressGateway, rules: this.egressPolicy.size, ...this.egressCounts(), liveGateways: this.egressGateways().length };
    const px = this.egressProxy?.stats;
    if (px) s.proxy = { forwarded: px.forwarded, refused: px.refused, active: px.active, refusals: { ...px.refusals } };
    return s;
  }

  /** The egress counters for metrics. */
  egressMetrics(): EgressCounters {
    const px = this.egressProxy?.stats;
    return { ...this.egressCounts(), ...(px ? { proxy: { forwarded: px.forwarded, refusals: px.refusals } } : {}) };
  }

  private egressCounts(): Omit<EgressCounters, 'proxy'> {
    const st = this.p.handler().stats;
    return { denied: st.egressDenied, noGateway: st.egressNoGateway, viaGateway: st.egressViaGateway, udpRefused: st.egressUdpRefused };
  }

  /** The gateway nodes of the cluster (this one when it is one), left members excluded. */
  private gatewayNodes(): GatewayNode[] {
    const c = this.p.cfg;
    const cluster = this.p.cluster();
    const out: GatewayNode[] = [];
    if (!cluster) return c.gateway ? [{ node: c.nodeName, address: c.nodeAddress, alive: true, reserved: this.reservedPorts() }] : [];
    for (const d of cluster.daemons()) {
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
    const c = this.p.cfg;
    const daemon = [c.gossipPort, c.peerPort, c.dnsPort, ...(c.metricsAddress ? [c.metricsAddress.port] : []), ...(c.egressGateway ? [c.egressPort] : [])];
    return { pool: c.ports, daemon };
  }

  /** The egress endpoints of the live egress gateways other than this node, in node-name order (see
   * trap/egress-route.ts: round robin over them). */
  private egressGateways(): Endpoint[] {
    const out: Array<{ node: string; ep: Endpoint }> = [];
    for (const d of this.p.cluster()?.daemons() ?? []) {
      const r = d.record;
      if (d.node === this.p.cfg.nodeName || d.state !== 'alive' || !r?.egressGateway || r.egressPort === undefined) continue;
      out.push({ node: d.node, ep: { ip: d.address, port: r.egressPort } });
    }
    return out.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0)).map((x) => x.ep);
  }

  /** A gateway's forwarder: the C relay (docs/relay.md), started by beginRelay(); the Node forwarder when the relay
   * cannot run here (its executable missing), said once in the log. */
  private ingressForwarder(): IngressForwarder {
    const log = this.p.log.child({ module: 'relay' });
    try {
      this.relay = new RelayForwarder({
        tables: { fdsForHello: () => this.p.decisions().fdsForHello() },
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
        start: false,
        ...(this.p.cfg.relayWorkers !== undefined ? { args: ['--workers', String(this.p.cfg.relayWorkers)] } : {}),
      });
      return this.relay;
    } catch (e) {
      log.warn({ err: e }, 'the C relay cannot run: ingress goes through the Node forwarder (slower)');
      return new NodeForwarder(new IngressPicker({ table: this.p.table, lb: this.p.cfg.lb, nodeAlive: this.p.nodeAlive }));
    }
  }

  /** The egress proxy of this egress gateway (see gateway/egress.ts). */
  private async startEgressProxy(): Promise<void> {
    const { cfg } = this.p;
    const ranges = new VirtualRanges(cfg.vipCidrs);
    const proxy = new EgressProxy({
      address: cfg.nodeAddress,
      port: cfg.egressPort,
      isMember: (ip) => this.isMemberAddress(ip),
      whoIs: (ip, endpoint, dst) => this.p.peers()?.whoIs(ip, endpoint, dst) ?? Promise.resolve(undefined),
      policy: this.egressPolicy,
      forbidden: (ip, port) => forbiddenEndpoint(ip, ranges) ?? (this.p.doors.check(ip, port, 'tcp') !== undefined ? 'an appswitch daemon port or pool port' : undefined),
      log: this.p.log.child({ module: 'egress' }),
    });
    try {
      await proxy.listen();
    } catch (e) {
      throw new AppswitchError('ERR_CONFIG', `--egress-port ${cfg.egressPort}: ${(e as Error).message}`);
    }
    this.egressProxy = proxy;
  }

  private isMemberAddress(ip: string): boolean {
    return this.p.cluster()?.isPeerAddress(ip) ?? false;
  }

  /** Something the decision table's ingress section depends on changed: it is published again (not before the
   * daemon built the table: the constructors run first). */
  private republish(): void {
    (this.p.decisions() as DecisionTable | undefined)?.invalidate();
  }
}
