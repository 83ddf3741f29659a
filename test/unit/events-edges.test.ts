/** This node's edges (src/events/edges.ts): counts per (client app -> service), the 10 s rate, the cap with one
 * `other` edge per client, idle expiry, open connections, the bounded Prometheus series — and the hot path rule:
 * recording connections on existing edges allocates nothing. */
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_EDGES, EdgeStore, OTHER_SERVICE } from '../../src/events/edges.js';
import { SeriesTable } from '../../src/events/edge-series.js';
import type { AppRef } from '../../src/events/types.js';

const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);
const apps: Record<string, AppRef> = {
  a1: { app: 'a1', name: 'web', identity: '10.0.0.7', node: 'n1' },
  a2: { app: 'a2', name: null, identity: '169.254.0.9', node: 'n1' },
};
const names: Record<string, string> = { '10.0.0.5:8080': 'api.shop' };

function store(opts: { maxEdges?: number; idleMs?: number; series?: SeriesTable } = {}): EdgeStore {
  return new EdgeStore({ client: (id) => apps[id], serviceName: (vip, port) => names[`${vip}:${port}`] ?? null, now: () => T0, ...opts });
}

describe('EdgeStore', () => {
  it('counts connections by path, refusals and denials per (client app -> service), with names', () => {
    const s = store();
    s.connected('a1', '10.0.0.5', 8080, true);
    s.connected('a1', '10.0.0.5', 8080, false);
    s.connected('a1', '10.0.0.5', 8080, false);
    s.refused('a1', '10.0.0.5', 8080);
    s.denied('a2', '10.0.0.5', 8080);
    s.refused('a2', '10.0.0.6', 9);
    s.connected('nobody', '10.0.0.5', 8080, true); /* an app this node does not know: not counted */
    expect(s.unknownClient).toBe(1);
    const { edges, truncated } = s.views();
    expect(truncated).toBe(false);
    const byKey = new Map(edges.map((e) => [`${e.client.app}>${e.service.vip}:${e.service.port}`, e]));
    expect(byKey.get('a1>10.0.0.5:8080')).toEqual({
      client: apps.a1,
      service: { vip: '10.0.0.5', port: 8080, name: 'api.shop' },
      connections: 3,
      active: 0,
      ratePerSecond: 0.3,
      refused: 1,
      denied: 0,
      fastpath: 1,
      tcp: 2,
      lastSeen: new Date(T0).toISOString(),
    });
    expect(byKey.get('a2>10.0.0.5:8080')).toMatchObject({ connections: 0, denied: 1, refused: 0 });
    expect(byKey.get('a2>10.0.0.6:9')).toMatchObject({ service: { vip: '10.0.0.6', port: 9, name: null }, refused: 1 });
    expect(s.size).toBe(3);
  });

  it('rate: new connections per second over the last 10 s, older seconds falling out', () => {
    const s = store();
    for (let sec = 0; sec < 10; sec++) {
      s.tick(T0 + sec * 1000);
      for (let i = 0; i < 5; i++) s.connected('a1', '10.0.0.5', 8080, false);
    }
    const rate = (): number => s.views().edges[0]?.ratePerSecond ?? -1;
    expect(rate()).toBe(5);
    s.tick(T0 + 14_000); /* seconds 0..4 fall out */
    expect(rate()).toBe(2.5);
    s.tick(T0 + 30_000);
    expect(rate()).toBe(0);
    /* the same bucket slot, ten seconds on, starts again from zero */
    s.connected('a1', '10.0.0.5', 8080, false);
    expect(rate()).toBe(0.1);
    expect(s.views().edges[0]?.lastSeen).toBe(new Date(T0 + 30_000).toISOString());
  });

  it('the clock never goes back', () => {
    const s = store();
    s.tick(T0 + 5000);
    s.tick(T0 + 1000);
    expect(s.second).toBe(5);
  });

  it('past maxEdges, new pairs of a client go to its one `other` edge; existing edges keep counting', () => {
    const s = store({ maxEdges: 3 });
    for (let p = 1; p <= 3; p++) s.connected('a1', '10.0.0.5', p, false);
    for (let p = 4; p <= 50; p++) s.connected('a1', '10.0.0.5', p, true);
    s.denied('a1', '10.0.0.5', 99);
    s.connected('a2', '10.0.0.5', 1, false);
    s.connected('a1', '10.0.0.5', 1, false);
    expect(s.size).toBe(5); /* 3 + one other per client */
    const edges = s.views().edges;
    const other = edges.find((e) => e.client.app === 'a1' && e.service.vip === OTHER_SERVICE.vip);
    expect(other).toMatchObject({ service: { vip: 'other', port: 0, name: 'other' }, connections: 47, fastpath: 47, denied: 1 });
    expect(edges.find((e) => e.client.app === 'a2')?.service.vip).toBe('other');
    expect(edges.find((e) => e.client.app === 'a1' && e.service.port === 1)?.connections).toBe(2);
    expect(s.overflowed).toBe(47 + 1 + 1);
    expect(DEFAULT_MAX_EDGES).toBe(10_000);
  });

  it('forgets edges idle for idleMs, unless a connection is still open', () => {
    const s = store({ idleMs: 600_000 });
    s.connected('a1', '10.0.0.5', 8080, false);
    s.connected('a1', '10.0.0.6', 80, false);
    s.connected('a2', '10.0.0.6', 80, false);
    s.tick(T0 + 300_000);
    s.connected('a2', '10.0.0.6', 80, false);
    s.tick(T0 + 601_000);
    s.setActive((visit) => visit('a1', '10.0.0.6:80')); /* one connection of a1 to 10.0.0.6:80 still open */
    expect(s.prune()).toBe(1); /* a1 -> 10.0.0.5:8080 */
    expect(s.views().edges.map((e) => `${e.client.app}>${e.service.vip}:${e.service.port}:${e.active}`).sort()).toEqual(['a1>10.0.0.6:80:1', 'a2>10.0.0.6:80:0']);
    s.tick(T0 + 1_000_000);
    s.setActive(() => undefined);
    expect(s.prune()).toBe(2);
    expect(s.size).toBe(0);
    /* a pair seen again is a new edge */
    s.connected('a1', '10.0.0.5', 8080, false);
    expect(s.views().edges[0]?.connections).toBe(1);
  });

  it('active: open connections per edge, from the tracker (IPv6 vips too)', () => {
    const s = store();
    s.connected('a1', '10.0.0.5', 8080, false);
    s.connected('a1', 'fd00::5', 443, false);
    s.setActive((visit) => {
      visit('a1', '10.0.0.5:8080');
      visit('a1', '10.0.0.5:8080');
      visit('a1', 'fd00::5:443');
      visit('a2', '10.0.0.5:8080'); /* no such edge: ignored */
    });
    const by = new Map(s.views().edges.map((e) => [e.service.vip, e.active]));
    expect(by.get('10.0.0.5')).toBe(2);
    expect(by.get('fd00::5')).toBe(1);
    s.setActive(() => undefined);
    expect(s.views().edges.every((e) => e.active === 0)).toBe(true);
  });

  it('views: most recently seen first, cut at a limit (truncated)', () => {
    const s = store();
    for (let p = 1; p <= 5; p++) {
      s.tick(T0 + p * 1000);
      s.connected('a1', '10.0.0.5', p, false);
    }
    const v = s.views(2);
    expect(v.truncated).toBe(true);
    expect(v.edges.map((e) => e.service.port)).toEqual([5, 4]);
  });

  it('Prometheus series: at most max label pairs, the rest under other/other, monotonic after edges are forgotten', () => {
    const series = new SeriesTable(2);
    const s = store({ series, idleMs: 1000 });
    s.connected('a1', '10.0.0.5', 8080, false); /* web -> api.shop */
    s.connected('a2', '10.0.0.5', 8080, false); /* 169.254.0.9 -> api.shop */
    s.connected('a1', '10.0.0.6', 80, false); /* past the cap: other */
    s.denied('a2', '10.0.0.6', 81);
    s.refused('a1', '10.0.0.6', 80);
    s.setActive((visit) => visit('a1', '10.0.0.6:80'));
    const rows = (): string[] => s.series().map((x) => `${x.clientApp}|${x.service}|${x.connections}|${x.refused}|${x.denied}|${x.active}`);
    expect(rows()).toEqual(['web|api.shop|1|0|0|0', '169.254.0.9|api.shop|1|0|0|0', 'other|other|1|1|1|1']);
    s.tick(T0 + 10_000);
    s.setActive(() => undefined);
    expect(s.prune()).toBe(4);
    expect(rows()).toEqual(['web|api.shop|1|0|0|0', '169.254.0.9|api.shop|1|0|0|0', 'other|other|1|1|1|0']);
    s.connected('a1', '10.0.0.5', 8080, false); /* a new edge on an existing pair: the same series goes on */
    expect(rows()[0]).toBe('web|api.shop|2|0|0|0');
    expect(series.size).toBe(2);
  });
});

describe('EdgeStore hot path', () => {
  /** gc(), exposed at run time (vitest's fork has no --expose-gc). */
  function gcFn(): () => void {
    v8.setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  }

  /** What the heap grew by while `f` ran, taken only from runs no garbage collection interrupted (one would free what
   * the run allocated and hide it): the least of up to `tries` such runs, or undefined when none was clean. */
  async function heapGrowth(f: () => void, tries = 12): Promise<number | undefined> {
    const gc = gcFn();
    const gcs: Array<[number, number]> = [];
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) gcs.push([e.startTime, e.startTime + e.duration]);
    });
    obs.observe({ entryTypes: ['gc'] });
    let best: number | undefined;
    try {
      for (let i = 0; i < tries; i++) {
        gc();
        gc();
        await new Promise((r) => setTimeout(r, 5));
        const t0 = performance.now();
        const before = process.memoryUsage().heapUsed;
        f();
        const grew = process.memoryUsage().heapUsed - before;
        const t1 = performance.now();
        await new Promise((r) => setTimeout(r, 20)); /* gc entries arrive asynchronously */
        if (gcs.some(([a, b]) => b >= t0 && a <= t1)) continue;
        best = best === undefined ? grew : Math.min(best, grew);
      }
    } finally {
      obs.disconnect();
    }
    return best;
  }

  it('recording connections on existing edges allocates nothing measurable', async () => {
    const s = store();
    const appIds = ['a1', 'a2'];
    const vips = ['10.0.0.5', '10.0.0.6', '10.0.0.7', '10.0.0.8', '10.0.0.9'];
    const N = 30_000;
    const run = (n: number): void => {
      for (let i = 0; i < n; i++) {
        const a = appIds[i & 1] as string;
        const v = vips[i % 5] as string;
        s.connected(a, v, 8080, (i & 2) === 0);
        if ((i & 1023) === 0) {
          s.refused(a, v, 8080);
          s.denied(a, v, 8080);
        }
      }
    };
    run(200_000); /* every edge exists now, and the code is warm */
    s.tick(T0 + 3000);
    run(1000);
    /* the control: 16 bytes a call (an object kept one at a time) shows as N * 16 */
    const kept: unknown[] = [];
    const control = await heapGrowth(() => {
      for (let i = 0; i < N; i++) if (kept.push({ i }) > 1) kept.pop();
    });
    const grew = await heapGrowth(() => run(N));
    expect(control, 'no run without a garbage collection in it').toBeDefined();
    expect(grew, 'no run without a garbage collection in it').toBeDefined();
    expect(control).toBeGreaterThan(N * 10);
    /* the smallest object V8 makes (a HeapNumber) takes 12 bytes: one per call would be N * 12 here */
    expect(grew).toBeLessThan(N * 3);
  });
});
