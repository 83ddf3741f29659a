/** This node's edges: per (client app -> service) counters of the connects its programs made (EdgeView in types.ts).
 * Each node owns the edges of its own clients (a connect is decided, and counted, on the client's node), so the
 * cluster's edges are the union of every node's, with nothing counted twice (see edge-cluster.ts).
 *
 * The hot path (connected, refused, denied) costs no system call and no allocation on an edge that exists: the edge is
 * found through nested Maps keyed by values the caller already holds (the app id, the service's vip string and port
 * number), its counters are small integers and its per-second rate buckets typed arrays, and it reads no clock: the
 * store keeps whole seconds since it was made, advanced by tick() (the daemon calls it every second), so no time value
 * (a double, which V8 would box) is made per connection. Objects are built only the first time an edge is seen, and
 * when a view is asked for.
 *
 * Bounds: at most `maxEdges` edges (default 10000); past it, a new (client, service) pair is counted in one `other`
 * edge per client app (service vip "other", port 0). An edge idle for `idleMs` (default 10 min) with no connection
 * open is forgotten. Pure: the time comes through tick(). */
import { type EdgeSeries, OTHER, SeriesTable } from './edge-series.js';
import type { AppRef, EdgeView, ServiceRef } from './types.js';

export const DEFAULT_MAX_EDGES = 10_000;
export const DEFAULT_IDLE_MS = 10 * 60_000;
/** The rate is over this many one-second buckets. */
export const RATE_SECONDS = 10;

/** The service of a client's `other` edge (pairs past the cap). */
export const OTHER_SERVICE: Readonly<ServiceRef> = Object.freeze({ vip: OTHER, port: 0, name: OTHER });

export interface EdgeStoreDeps {
  /** The client app of this node (or undefined when it is not known: nothing is recorded). */
  client: (appId: string) => AppRef | undefined;
  /** The service's name (its app's name, or the virtual service's), or null. */
  serviceName: (vip: string, port: number) => string | null;
  maxEdges?: number;
  idleMs?: number;
  /** Prometheus series (bounded: see edge-series.ts); default: a table of DEFAULT_MAX_SERIES. */
  series?: SeriesTable;
  /** The time now (ms since the epoch), read once: the store's seconds count from it. Default Date.now. */
  now?: () => number;
}

/** One edge. Counters only grow; `active` is recomputed from the open connections when a view is built. */
export class Edge {
  connections = 0;
  active = 0;
  refused = 0;
  denied = 0;
  fastpath = 0;
  tcp = 0;
  /** The store's second (see EdgeStore.tick) when it was last counted. */
  lastSeen: number;
  /** Allowed connections per second, in a ring of RATE_SECONDS buckets, each stamped with its second. */
  private readonly buckets = new Uint32Array(RATE_SECONDS);
  private readonly bucketSecond = new Int32Array(RATE_SECONDS).fill(-1);

  constructor(
    readonly client: AppRef,
    readonly service: ServiceRef,
    readonly series: EdgeSeries,
    sec: number,
  ) {
    this.lastSeen = sec;
  }

  connected(fast: boolean, sec: number): void {
    this.connections++;
    if (fast) this.fastpath++;
    else this.tcp++;
    this.series.connections++;
    this.lastSeen = sec;
    const i = sec % RATE_SECONDS;
    if (this.bucketSecond[i] !== sec) {
      this.bucketSecond[i] = sec;
      this.buckets[i] = 0;
    }
    this.buckets[i] = (this.buckets[i] as number) + 1;
  }

  refusedOne(sec: number): void {
    this.refused++;
    this.series.refused++;
    this.lastSeen = sec;
  }

  deniedOne(sec: number): void {
    this.denied++;
    this.series.denied++;
    this.lastSeen = sec;
  }

  /** New connections per second over the last RATE_SECONDS seconds (the current one included). */
  rate(sec: number): number {
    let n = 0;
    for (let i = 0; i < RATE_SECONDS; i++) {
      const s = this.bucketSecond[i] as number;
      if (s > sec - RATE_SECONDS && s <= sec) n += this.buckets[i] as number;
    }
    return Math.round((n / RATE_SECONDS) * 100) / 100;
  }

  /** The view at the store's second `sec`; `base` is the store's second 0 in ms since the epoch. */
  view(sec: number, base: number): EdgeView {
    return {
      client: { ...this.client },
      service: { ...this.service },
      connections: this.connections,
      active: this.active,
      ratePerSecond: this.rate(sec),
      refused: this.refused,
      denied: this.denied,
      fastpath: this.fastpath,
      tcp: this.tcp,
      lastSeen: new Date(base + this.lastSeen * 1000).toISOString(),
    };
  }
}

type ByPort = Map<number, Edge>;
type ByVip = Map<string, ByPort>;

export class EdgeStore {
  /** app id -> vip -> port -> edge. */
  private readonly byApp = new Map<string, ByVip>();
  /** Each client app's edge for pairs past the cap. */
  private readonly others = new Map<string, Edge>();
  private count = 0;
  readonly maxEdges: number;
  readonly idleMs: number;
  readonly seriesTable: SeriesTable;
  /** Records that found no client app (not this node's, or gone): not counted anywhere. */
  unknownClient = 0;
  /** New pairs counted in an `other` edge because the table was full. */
  overflowed = 0;

  /** Second 0 of the store, in ms since the epoch; and the current second since then (tick()). */
  private readonly base: number;
  private sec = 0;

  constructor(private readonly deps: EdgeStoreDeps) {
    this.maxEdges = Math.max(1, deps.maxEdges ?? DEFAULT_MAX_EDGES);
    this.idleMs = deps.idleMs ?? DEFAULT_IDLE_MS;
    this.seriesTable = deps.series ?? new SeriesTable();
    this.base = Math.floor((deps.now ?? Date.now)() / 1000) * 1000;
  }

  /** Advances the store's clock to `nowMs` (never back): the daemon calls it every second, views call it first. */
  tick(nowMs: number): void {
    const s = Math.floor((nowMs - this.base) / 1000);
    if (s > this.sec) this.sec = s;
  }

  /** The store's current second (since it was made). */
  get second(): number {
    return this.sec;
  }

  /** Edges held (the `other` edges included). */
  get size(): number {
    return this.count + this.others.size;
  }

  /** The edge of (appId -> vip:port), created the first time (or the client's `other` edge past the cap); undefined
   * when the client app is unknown. */
  private edge(appId: string, vip: string, port: number): Edge | undefined {
    const e = this.byApp.get(appId)?.get(vip)?.get(port);
    if (e) return e;
    return this.create(appId, vip, port);
  }

  private create(appId: string, vip: string, port: number): Edge | undefined {
    const now = this.sec;
    const full = this.count >= this.maxEdges;
    const other = full ? this.others.get(appId) : undefined;
    if (other) { /* the common case past the cap: no look-up, nothing built */
      this.overflowed++;
      return other;
    }
    const client = this.deps.client(appId);
    if (!client) {
      this.unknownClient++;
      return undefined;
    }
    const clientLabel = client.name ?? client.identity;
    if (full) {
      this.overflowed++;
      const o = new Edge(client, { ...OTHER_SERVICE }, this.seriesTable.seriesFor(clientLabel, OTHER), now);
      this.others.set(appId, o);
      return o;
    }
    const name = this.deps.serviceName(vip, port);
    const service: ServiceRef = { vip, port, name };
    const e = new Edge(client, service, this.seriesTable.seriesFor(clientLabel, name ?? `${vip}:${port}`), now);
    let byVip = this.byApp.get(appId);
    if (!byVip) this.byApp.set(appId, (byVip = new Map()));
    let byPort = byVip.get(vip);
    if (!byPort) byVip.set(vip, (byPort = new Map()));
    byPort.set(port, e);
    this.count++;
    return e;
  }

  /** A connection of client app `appId` to vip:port was set up (over the fast path or TCP). */
  connected(appId: string, vip: string, port: number, fast: boolean): void {
    this.edge(appId, vip, port)?.connected(fast, this.sec);
  }

  /** A connect of `appId` to vip:port was refused (no instance answered, or none serves it). */
  refused(appId: string, vip: string, port: number): void {
    this.edge(appId, vip, port)?.refusedOne(this.sec);
  }

  /** A connect of `appId` to vip:port was denied by policy. */
  denied(appId: string, vip: string, port: number): void {
    this.edge(appId, vip, port)?.deniedOne(this.sec);
  }

  /** Sets every edge's `active` from the open connections (`forEach` visits each: client app id, "vip:port"). */
  setActive(forEach: (visit: (appId: string, service: string) => void) => void): void {
    for (const e of this.edges()) e.active = 0;
    forEach((appId, service) => {
      const i = service.lastIndexOf(':');
      const port = Number(service.slice(i + 1));
      const e = this.byApp.get(appId)?.get(service.slice(0, i))?.get(port) ?? this.others.get(appId);
      if (e) e.active++;
    });
  }

  /** Forgets edges idle for idleMs with no connection open (call tick and setActive first). Returns how many went. */
  prune(): number {
    let n = 0;
    const old = this.sec - Math.ceil(this.idleMs / 1000);
    for (const [appId, byVip] of this.byApp) {
      for (const [vip, byPort] of byVip) {
        for (const [port, e] of byPort) {
          if (e.lastSeen >= old || e.active > 0) continue;
          byPort.delete(port);
          this.count--;
          n++;
        }
        if (!byPort.size) byVip.delete(vip);
      }
      if (!byVip.size) this.byApp.delete(appId);
    }
    for (const [appId, e] of this.others) {
      if (e.lastSeen < old && e.active === 0) {
        this.others.delete(appId);
        n++;
      }
    }
    return n;
  }

  /** Every edge (the `other` edges last). */
  *edges(): Generator<Edge> {
    for (const byVip of this.byApp.values()) for (const byPort of byVip.values()) yield* byPort.values();
    yield* this.others.values();
  }

  /** Views of the edges, most recently seen first, at most `limit`; `truncated` when some were left out. */
  views(limit = Infinity): { edges: EdgeView[]; truncated: boolean } {
    const all = [...this.edges()];
    all.sort((a, b) => b.lastSeen - a.lastSeen);
    const kept = all.length > limit ? all.slice(0, limit) : all;
    return { edges: kept.map((e) => e.view(this.sec, this.base)), truncated: kept.length < all.length };
  }

  /** The Prometheus series, with `active` summed from the edges (call setActive first). */
  series(): EdgeSeries[] {
    const list = this.seriesTable.all();
    for (const s of list) s.active = 0;
    for (const e of this.edges()) e.series.active += e.active;
    return list;
  }
}
