/** The Prometheus endpoint (`appswitch daemon --metrics-address`): a prom-client registry of the daemon's metrics
 * and a plain node:http server for GET /metrics. Values that other modules already count (handler stats, the
 * service table, gossip counters) are read through injected sources at scrape time; trap counts and latencies
 * arrive as AS_STATS deltas from the generators and are folded in here. */
import { readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import os from 'node:os';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { guard, type InternalErrorReporter } from './internal-errors.js';
import type { EdgeSeries } from '../events/edge-series.js';
import { STATS_BOUNDS_NS, STATS_BUCKETS, STATS_OTHER, TRAPPED_SYSCALLS, type TrapStatsDelta } from '../trap/protocol.js';
import { listenAddress } from '../net-listen.js';

/** What the gossip layer counts, as the metrics read it (`Memberlist.stats()` satisfies it). */
export interface GossipCounters {
  packets: { bytesSent: number; bytesReceived: number };
  streams: { bytesSent: number; bytesReceived: number };
  messages: { sent: Readonly<Record<string, number>>; received: Readonly<Record<string, number>> };
  members: Readonly<Record<string, number>>;
}

/** Cumulative counters of the trap handler that the metrics expose. */
export interface HandlerCounters {
  denied: number;
  refused: number;
  tcpConnections: number;
  fastpathConnections: number;
  daemonPortRefused: number;
  limitServices: number;
  limitOffers: number;
  limitPending: number;
  /** Optional for callers that predate it (tests build counters by hand). */
  udpUnidentified?: number;
}

/** Where the scrape-time values come from; each is called once per scrape. */
export interface MetricsSources {
  handler: () => HandlerCounters;
  /** Services in the table, this node's and other nodes'. */
  services: () => { local: number; remote: number };
  apps: () => number;
  /** Gossip counters; undefined while the cluster is not up. */
  gossip: () => GossipCounters | undefined;
  /** Open descriptors of the daemon (default: entries of /proc/self/fd). */
  openFds?: () => number;
  /** Unexpected exceptions caught, by module (see internal-errors.ts). */
  internalErrors?: () => Readonly<Record<string, number>>;
  /** Ingress: the gateway forwarder's counts (zero on a node that is not a gateway) and external clients refused at
   * accept (see gateway/ingress.ts). */
  ingress?: () => { accepted: number; forwarded: number; refused: number; active: number; bytes: number; externalRefused: number };
  /** Egress counters (docs/egress.md); `proxy` only on an egress gateway. */
  egress?: () => EgressCounters;
  /** Per-edge series with bounded labels (src/events/edge-series.ts): at most --metrics-max-series pairs and "other". */
  edges?: () => EdgeSeries[];
}

/** What egress counts: the router's decisions and, on an egress gateway, its proxy. */
export interface EgressCounters {
  denied: number;
  noGateway: number;
  viaGateway: number;
  udpRefused: number;
  proxy?: { forwarded: number; refusals: Readonly<Record<string, number>> };
}

const MEMBER_STATES = ['alive', 'suspect', 'dead', 'left'] as const;

/** errno number -> name (ECONNREFUSED, ...), from the errno constants Node was built with. */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(os.constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

/** The `result` label of a trap: ok, an errno name, or other. */
export function resultLabel(errno: number): string {
  if (errno === 0) return 'ok';
  if (errno === STATS_OTHER) return 'other';
  return ERRNO_NAMES.get(errno) ?? `errno_${errno}`;
}

/** The `syscall` label of a trap. */
export function syscallLabel(nr: number): string {
  return TRAPPED_SYSCALLS[nr] ?? 'other';
}

/** Number of open descriptors of this process (the directory's own fd, open while it is read, is not counted). */
export function countOpenFds(): number {
  return readdirSync('/proc/self/fd').length - 1;
}

type HistogramData = Awaited<ReturnType<Histogram<'syscall'>['get']>>;

/** A histogram whose observations come already bucketed (the generators' fixed buckets, see native/proto.h):
 * prom-client's Histogram only takes single observations, so this one keeps its own per-label bucket counts and
 * renders them in the usual form (cumulative `le` buckets, `_sum`, `_count`). */
class BucketedHistogram extends Histogram<'syscall'> {
  private readonly data = new Map<string, { buckets: number[]; sum: number; count: number }>();

  constructor(
    private readonly metricName: string,
    private readonly helpText: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    super({ name: metricName, help: helpText, labelNames: ['syscall'], buckets: [...bounds], registers: [registry] });
  }

  /** Adds per-bucket counts (not cumulative; one more than there are bounds: the last is +Inf) and their sum. */
  add(syscall: string, buckets: readonly number[], sum: number): void {
    let d = this.data.get(syscall);
    if (!d) this.data.set(syscall, (d = { buckets: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 }));
    for (let i = 0; i <= this.bounds.length; i++) {
      const n = buckets[i] ?? 0;
      d.buckets[i] = (d.buckets[i] ?? 0) + n;
      d.count += n;
    }
    d.sum += sum;
  }

  override get(): Promise<HistogramData> {
    return this.getForPromString();
  }

  /** What the registry renders (prom-client calls this in preference to get()). */
  getForPromString(): Promise<HistogramData> {
    const values: HistogramData['values'] = [];
    for (const [syscall, d] of [...this.data].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += d.buckets[i] ?? 0;
        values.push({ metricName: `${this.metricName}_bucket`, labels: { syscall, le }, value: acc } as HistogramData['values'][number]);
      });
      values.push({ metricName: `${this.metricName}_bucket`, labels: { syscall, le: '+Inf' }, value: d.count } as HistogramData['values'][number]);
      values.push({ metricName: `${this.metricName}_sum`, labels: { syscall }, value: d.sum } as HistogramData['values'][number]);
      values.push({ metricName: `${this.metricName}_count`, labels: { syscall }, value: d.count } as HistogramData['values'][number]);
    }
    // the same fields prom-client's own Histogram returns (its typings also list `collect`, which it never sets)
    const out = { name: this.metricName, help: this.helpText, type: 'histogram', values, aggregator: 'sum' };
    return Promise.resolve(out as unknown as HistogramData);
  }

  override reset(): void {
    this.data?.clear();
  }
}

/** Sets a counter to a cumulative value kept elsewhere (read at scrape time). */
function setCounter<T extends string>(c: Counter<T>, values: Array<[Partial<Record<T, string>>, number]>): void {
  c.reset();
  for (const [labels, v] of values) c.inc(labels, Math.max(0, v));
}

/** The daemon's metrics registry. */
export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly traps: Counter<'syscall' | 'result'>;
  private readonly latency: BucketedHistogram;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.traps = new Counter({
      name: 'appswitch_traps_total',
      help: 'Trapped socket calls answered, by syscall and result (ok, or the errno name the program got)',
      labelNames: ['syscall', 'result'],
      registers,
    });
    this.latency = new BucketedHistogram(
      'appswitch_trap_duration_seconds',
      'Time from receiving a trapped call to answering it, in the generator (a blocking accept or connect includes its wait)',
      STATS_BOUNDS_NS.map((ns) => ns / 1e9),
      this.registry,
    );
    const handler = (): HandlerCounters => src.handler();
    new Counter({
      name: 'appswitch_policy_denials_total',
      help: 'Connects refused (ECONNREFUSED) because the policy did not allow client and service to talk',
      registers,
      collect(): void {
        setCounter(this, [[{}, handler().denied]]);
      },
    });
    new Counter({
      name: 'appswitch_connects_refused_total',
      help: 'Connects to a virtual address refused because no (allowed, answering) instance serves it',
      registers,
      collect(): void {
        setCounter(this, [[{}, handler().refused]]);
      },
    });
    new Counter({
      name: 'appswitch_udp_unidentified_total',
      help: 'Datagram senders no appswitch daemon vouched for (their datagrams are dropped before a program sees them)',
      registers,
      collect(): void {
        setCounter(this, [[{}, handler().udpUnidentified ?? 0]]);
      },
    });
    new Counter({
      name: 'appswitch_daemon_port_refused_total',
      help: "Connects and datagram sends refused because they named an appswitch daemon's port or a pool port directly",
      registers,
      collect(): void {
        setCounter(this, [[{}, handler().daemonPortRefused]]);
      },
    });
    const egress = src.egress;
    if (egress) {
      new Counter({
        name: 'appswitch_egress_total',
        help: 'Connects and datagram sends to outside addresses, by result: denied (egress policy), no_gateway (ENETUNREACH), via_gateway, udp_refused (via-gateway mode)',
        labelNames: ['result'],
        registers,
        collect(): void {
          const e = egress();
          setCounter(this, [
            [{ result: 'denied' }, e.denied],
            [{ result: 'no_gateway' }, e.noGateway],
            [{ result: 'via_gateway' }, e.viaGateway],
            [{ result: 'udp_refused' }, e.udpRefused],
          ]);
        },
      });
      new Counter({
        name: 'appswitch_egress_proxy_connections_total',
        help: "Connections to this egress gateway's egress proxy, by result: forwarded, or the reason it was reset",
        labelNames: ['result'],
        registers,
        collect(): void {
          const p = egress().proxy;
          if (!p) return;
          setCounter(this, [[{ result: 'forwarded' }, p.forwarded], ...Object.entries(p.refusals).map(([result, n]): [{ result: string }, number] => [{ result }, n])]);
        },
      });
    }
    new Counter({
      name: 'appswitch_internal_errors_total',
      help: 'Unexpected exceptions caught in a handler, by module; each dropped one request or event and the daemon kept serving',
      labelNames: ['module'],
      registers,
      collect(): void {
        setCounter(this, Object.entries(src.internalErrors?.() ?? {}).map(([module, n]) => [{ module }, n]));
      },
    });
    new Counter({
      name: 'appswitch_app_limit_reached_total',
      help: 'Per-app limits reached: services (bind got ENOBUFS), offers (a connect went over TCP), pending (a connect got ECONNREFUSED)',
      labelNames: ['limit'],
      registers,
      collect(): void {
        const h = handler();
        setCounter(this, [
          [{ limit: 'services' }, h.limitServices],
          [{ limit: 'offers' }, h.limitOffers],
          [{ limit: 'pending' }, h.limitPending],
        ]);
      },
    });
    new Counter({
      name: 'appswitch_connections_total',
      help: 'Connections to virtual endpoints set up by programs on this node, by kind (fastpath: Unix socket pair; tcp)',
      labelNames: ['kind'],
      registers,
      collect(): void {
        const h = handler();
        setCounter(this, [
          [{ kind: 'fastpath' }, h.fastpathConnections],
          [{ kind: 'tcp' }, h.tcpConnections],
        ]);
      },
    });
    new Gauge({
      name: 'appswitch_services',
      help: 'Service instances in the service table, this node\'s (local) and other nodes\' (remote)',
      labelNames: ['scope'],
      registers,
      collect(): void {
        const s = src.services();
        this.set({ scope: 'local' }, s.local);
        this.set({ scope: 'remote' }, s.remote);
      },
    });
    new Counter({
      name: 'appswitch_ingress_connections_total',
      help: 'External connections to exposures at this gateway, by outcome: accepted (taken), forwarded (connected to an instance), refused (no instance answered, or over the limit)',
      labelNames: ['outcome'],
      registers,
      collect(): void {
        const i = src.ingress?.();
        setCounter(this, [
          [{ outcome: 'accepted' }, i?.accepted ?? 0],
          [{ outcome: 'forwarded' }, i?.forwarded ?? 0],
          [{ outcome: 'refused' }, i?.refused ?? 0],
        ]);
      },
    });
    new Gauge({
      name: 'appswitch_ingress_active_connections',
      help: 'External connections this gateway is forwarding now',
      registers,
      collect(): void {
        this.set(src.ingress?.().active ?? 0);
      },
    });
    new Counter({
      name: 'appswitch_ingress_bytes_total',
      help: 'Bytes forwarded by this gateway, both directions, counted when a connection ends',
      registers,
      collect(): void {
        setCounter(this, [[{}, src.ingress?.().bytes ?? 0]]);
      },
    });
    new Counter({
      name: 'appswitch_external_refused_total',
      help: 'Connections refused at accept whose client was said to be external while the service was not exposed or the answering node was not a live gateway',
      registers,
      collect(): void {
        setCounter(this, [[{}, src.ingress?.().externalRefused ?? 0]]);
      },
    });
    new Gauge({
      name: 'appswitch_apps',
      help: 'Programs running under appswitch on this node',
      registers,
      collect(): void {
        this.set(src.apps());
      },
    });
    new Gauge({
      name: 'appswitch_members',
      help: 'Cluster members known to this node (itself included), by state',
      labelNames: ['state'],
      registers,
      collect(): void {
        const g = src.gossip();
        for (const st of MEMBER_STATES) this.set({ state: st }, g ? (g.members[st] ?? 0) : st === 'alive' ? 1 : 0);
      },
    });
    new Counter({
      name: 'appswitch_gossip_messages_total',
      help: 'Gossip messages sent and received, by direction and message type',
      labelNames: ['direction', 'type'],
      registers,
      collect(): void {
        const g = src.gossip();
        if (!g) return;
        const v: Array<[{ direction: string; type: string }, number]> = [];
        for (const [type, n] of Object.entries(g.messages.sent)) v.push([{ direction: 'sent', type }, n]);
        for (const [type, n] of Object.entries(g.messages.received)) v.push([{ direction: 'received', type }, n]);
        setCounter(this, v);
      },
    });
    new Counter({
      name: 'appswitch_gossip_bytes_total',
      help: 'Gossip bytes on the wire, by direction and transport (udp packets, tcp streams)',
      labelNames: ['direction', 'transport'],
      registers,
      collect(): void {
        const g = src.gossip();
        if (!g) return;
        setCounter(this, [
          [{ direction: 'sent', transport: 'udp' }, g.packets.bytesSent],
          [{ direction: 'received', transport: 'udp' }, g.packets.bytesReceived],
          [{ direction: 'sent', transport: 'tcp' }, g.streams.bytesSent],
          [{ direction: 'received', transport: 'tcp' }, g.streams.bytesReceived],
        ]);
      },
    });
    const edges = src.edges;
    if (edges) {
      /* one read of the edges per scrape, shared by the four metrics (prom-client collects them one after another) */
      let cached: { at: number; list: EdgeSeries[] } | undefined;
      const series = (): EdgeSeries[] => {
        const now = Date.now();
        if (!cached || now - cached.at > 100) cached = { at: now, list: edges() };
        return cached.list;
      };
      const labels = (s: EdgeSeries): { client_app: string; service: string } => ({ client_app: s.clientApp, service: s.service });
      const edgeCounter = (name: string, help: string, pick: (s: EdgeSeries) => number): void => {
        new Counter({
          name,
          help,
          labelNames: ['client_app', 'service'],
          registers,
          collect(): void {
            setCounter(this, series().map((s) => [labels(s), pick(s)]));
          },
        });
      };
      edgeCounter('appswitch_edge_connections_total', 'Connections set up from a client app of this node to a service (label pairs past --metrics-max-series count as other)', (s) => s.connections);
      edgeCounter('appswitch_edge_refused_total', 'Connects from a client app of this node to a service refused because no instance served or answered', (s) => s.refused);
      edgeCounter('appswitch_edge_denied_total', 'Connects from a client app of this node to a service denied by policy', (s) => s.denied);
      new Gauge({
        name: 'appswitch_edge_active',
        help: 'Connections open now from a client app of this node to a service',
        labelNames: ['client_app', 'service'],
        registers,
        collect(): void {
          this.reset();
          for (const s of series()) this.set(labels(s), s.active);
        },
      });
    }
    const fds = src.openFds ?? countOpenFds;
    new Gauge({
      name: 'appswitch_daemon_open_fds',
      help: 'File descriptors the daemon holds open (read from /proc/self/fd at scrape time)',
      registers,
      collect(): void {
        this.set(fds());
      },
    });
  }

  /** Folds one generator's AS_STATS deltas into the trap counter and latency histogram. */
  foldTrapStats(d: TrapStatsDelta): void {
    for (const c of d.counts) {
      if (c.count > 0) this.traps.inc({ syscall: syscallLabel(c.syscall), result: resultLabel(c.errno) }, c.count);
    }
    for (const h of d.latency) {
      if (h.buckets.length !== STATS_BUCKETS) continue;
      this.latency.add(syscallLabel(h.syscall), h.buckets, h.sumNs / 1e9);
    }
  }

  /** The exposition text (what GET /metrics returns). */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** GET /metrics over plain HTTP. */
export class MetricsServer {
  private server?: Server;
  /** Errors of the listening socket once it listens (a failed accept, e.g. EMFILE). Default: logged. */
  onError: (e: NodeJS.ErrnoException) => void = (e) => this.log.warn({ err: e }, 'metrics socket error');
  /** An unexpected exception serving a request (it costs that request: 500). Default: logged. */
  onInternalError: InternalErrorReporter = (what, e) => this.log.error({ err: e }, `metrics: ${what} failed`);

  constructor(
    private readonly metrics: DaemonMetrics,
    private readonly log: Logger,
  ) {}

  /** Listens on host:port; resolves with the address actually bound ("host:port"). */
  listen(host: string, port: number): Promise<string> {
    const server = createServer((req, res) =>
      guard(this.onInternalError, 'serving a request', () => this.serve(req, res), () => {
        if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end();
      }),
    );
    this.server = server;
    return listenAddress(server, host, port, (e) => this.onError(e));
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('appswitch: metrics are at /metrics\n');
      return;
    }
    this.metrics.text().then(
      (body) => {
        res.writeHead(200, { 'Content-Type': this.metrics.registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (e: unknown) => {
        this.log.warn({ err: e }, 'metrics scrape failed');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
      },
    );
  }

  close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return Promise.resolve();
    return new Promise((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
