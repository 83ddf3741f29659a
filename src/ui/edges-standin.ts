/** STAND-INS for H14's EventSource and EdgeSource (src/events/), so that the live view shows real edges before
 * events and edges are merged: the lead replaces them with H14's and deletes this file.
 *
 * `ConnectionSampledEdges` samples the daemon's open connections (ConnectionTracker.list(), src/trap/connections.ts)
 * every SAMPLE_MS and counts, per (client app -> service), the connections it has seen appear: a connection that
 * opens and closes between two samples (or two sweeps) is missed, and policy denials and refusals are never seen
 * (they make no connection) — H14's counters, fed by the trap path, have both. Both scopes answer this node's edges.
 * `silentEvents` is an EventSource that never yields an event (the stream still opens and keeps alive). */
import type { ConnectionView } from '../trap/connections.js';
import type { AppRef, AppswitchEvent, EdgesView, EdgeSource, EdgeView, EventSource, Subscription } from '../events/types.js';

const SAMPLE_MS = 200;
const RATE_WINDOW_MS = 10_000;
/** Edges kept at most (the least recently seen go first). */
const MAX_EDGES = 4096;
/** Connection keys remembered between samples at most. */
const MAX_SEEN = 50_000;

/** What the sampler reads from the daemon. */
export interface SampledEdgeDeps {
  node: string;
  connections: () => ConnectionView[];
  /** An app of this node by id (name and identity), when known. */
  app: (id: string) => { name: string | null; identity: string } | undefined;
  /** A service's name by "vip:port", when the table knows it. */
  serviceName: (service: string) => string | null;
}

interface EdgeCount {
  client: AppRef;
  service: { vip: string; port: number; name: string | null };
  connections: number;
  fastpath: number;
  tcp: number;
  active: number;
  lastSeen: number;
  /** When each recent connection was seen (for the rate), oldest first. */
  recent: number[];
}

export class ConnectionSampledEdges implements EdgeSource {
  private readonly edgesByKey = new Map<string, EdgeCount>();
  private seen = new Set<string>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly deps: SampledEdgeDeps) {}

  start(): void {
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One look at the open connections (public for tests). */
  sample(now = Date.now()): void {
    const next = new Set<string>();
    const active = new Map<string, number>();
    for (const c of this.deps.connections()) {
      if (c.service === null) continue;
      const edgeKey = `${c.clientApp}>${c.service}`;
      const connKey = `${c.clientEndpoint}@${c.since}`;
      next.add(connKey);
      active.set(edgeKey, (active.get(edgeKey) ?? 0) + 1);
      if (this.seen.has(connKey)) continue;
      const e = this.edgeFor(edgeKey, c);
      e.connections++;
      if (c.path === 'fastpath') e.fastpath++;
      else e.tcp++;
      e.lastSeen = now;
      e.recent.push(now);
    }
    this.seen = next.size <= MAX_SEEN ? next : new Set([...next].slice(-MAX_SEEN));
    for (const [k, e] of this.edgesByKey) {
      e.active = active.get(k) ?? 0;
      if (e.active > 0) e.lastSeen = now;
      while (e.recent.length && (e.recent[0] as number) <= now - RATE_WINDOW_MS) e.recent.shift();
    }
  }

  private edgeFor(key: string, c: ConnectionView): EdgeCount {
    let e = this.edgesByKey.get(key);
    if (e) return e;
    const app = this.deps.app(c.clientApp);
    const service = c.service as string;
    const i = service.lastIndexOf(':');
    e = {
      client: { app: c.clientApp, name: app?.name ?? null, identity: app?.identity ?? c.client, node: c.direction === 'out' ? this.deps.node : '' },
      service: { vip: service.slice(0, i), port: Number(service.slice(i + 1)), name: this.deps.serviceName(service) },
      connections: 0,
      fastpath: 0,
      tcp: 0,
      active: 0,
      lastSeen: 0,
      recent: [],
    };
    this.edgesByKey.set(key, e);
    if (this.edgesByKey.size > MAX_EDGES) {
      let oldest: string | undefined;
      let at = Infinity;
      for (const [k, x] of this.edgesByKey) if (x.lastSeen < at) ((at = x.lastSeen), (oldest = k));
      if (oldest !== undefined) this.edgesByKey.delete(oldest);
    }
    return e;
  }

  edges(scope: 'node' | 'cluster'): Promise<EdgesView> {
    const now = Date.now();
    const edges: EdgeView[] = [...this.edgesByKey.values()].map((e) => ({
      client: { ...e.client },
      service: { ...e.service },
      connections: e.connections,
      active: e.active,
      ratePerSecond: Math.round((e.recent.filter((t) => t > now - RATE_WINDOW_MS).length / (RATE_WINDOW_MS / 1000)) * 10) / 10,
      refused: 0,
      denied: 0,
      fastpath: e.fastpath,
      tcp: e.tcp,
      lastSeen: new Date(e.lastSeen).toISOString(),
    }));
    return Promise.resolve({ scope, node: this.deps.node, edges, missing: [], truncated: [] });
  }
}

/** An EventSource that never yields (the stand-in until H14's): next() waits until close(), then rejects. */
export const silentEvents: EventSource = {
  subscribe(): Subscription {
    let reject: ((e: Error) => void) | undefined;
    let closed = false;
    return {
      next: (): Promise<AppswitchEvent[]> =>
        closed ? Promise.reject(new Error('subscription closed')) : new Promise<AppswitchEvent[]>((_resolve, rej) => (reject = rej)),
      close: (): void => {
        closed = true;
        reject?.(new Error('subscription closed'));
      },
    };
  },
};
