/** The event bus (src/events/bus.ts): each subscriber's queue is a bounded ring that drops the oldest and starts its
 * next read with an events.lost saying how many; filters by type and by app (either side); emitting with nobody
 * subscribed builds nothing; a subscriber that never reads holds at most its ring. */
import { describe, expect, it } from 'vitest';
import { EventBus, type EventBody } from '../../src/events/bus.js';
import type { AppswitchEvent } from '../../src/events/types.js';

const web = { app: 'a1', name: 'web', identity: '10.0.0.7', node: 'n1' };
const api = { vip: '10.0.0.5', port: 8080, name: 'api.shop' };

function allowed(i: number): EventBody {
  return { type: 'connect.allowed', client: web, service: api, path: 'tcp', endpoint: `192.0.2.1:${40000 + i}` };
}

describe('EventBus', () => {
  it('stamps seq (from 1), time and node, and delivers to a waiting reader at once', async () => {
    const bus = new EventBus('n1', () => Date.UTC(2026, 0, 2, 3, 4, 5, 678));
    const sub = bus.subscribe();
    const read = sub.next();
    bus.emit(allowed(1));
    const [e] = await read;
    expect(e).toEqual({ seq: 1, time: '2026-01-02T03:04:05.678Z', node: 'n1', ...allowed(1) });
    bus.emit(allowed(2));
    bus.emit(allowed(3));
    expect((await sub.next()).map((x) => x.seq)).toEqual([2, 3]);
    sub.close();
  });

  it('with nobody subscribed, emit builds nothing and counts nothing', () => {
    const bus = new EventBus('n1');
    expect(bus.hasSubscribers).toBe(false);
    for (let i = 0; i < 1000; i++) bus.emit(allowed(i));
    expect(bus.emitted).toBe(0);
    const sub = bus.subscribe();
    expect(bus.hasSubscribers).toBe(true);
    bus.emit(allowed(0));
    expect(bus.emitted).toBe(1);
    sub.close();
    expect(bus.hasSubscribers).toBe(false);
  });

  it('a full ring drops the oldest; the next read starts with events.lost (the count, the last missed seq)', async () => {
    const bus = new EventBus('n1');
    const sub = bus.subscribe({ maxBuffered: 10 });
    for (let i = 1; i <= 25; i++) bus.emit(allowed(i));
    const got = await sub.next();
    expect(got).toHaveLength(11);
    expect(got[0]).toMatchObject({ type: 'events.lost', lost: 15, seq: 15, node: 'n1' });
    expect(got.slice(1).map((e) => e.seq)).toEqual([16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
    /* counted again from zero after the read */
    bus.emit(allowed(26));
    expect(await sub.next()).toEqual([expect.objectContaining({ seq: 26, type: 'connect.allowed' })]);
    sub.close();
  });

  it('a subscriber that never reads holds at most its ring while 20k events flow', () => {
    const bus = new EventBus('n1');
    const stalled = bus.subscribe({ maxBuffered: 1000 }) as unknown as { buffered: number; next(): Promise<AppswitchEvent[]> };
    for (let i = 0; i < 20_000; i++) {
      bus.emit(allowed(i));
      expect(stalled.buffered).toBeLessThanOrEqual(1000);
    }
    expect(stalled.buffered).toBe(1000);
    return stalled.next().then((got) => {
      expect(got[0]).toMatchObject({ type: 'events.lost', lost: 19_000 });
      expect(got).toHaveLength(1001);
    });
  });

  it('filters by type, and by app on either side (name, app id, vip or identity); events.lost always passes', async () => {
    const bus = new EventBus('n1');
    const byType = bus.subscribe({ types: ['connect.denied', 'app.started'] });
    const byClient = bus.subscribe({ app: 'web' });
    const byService = bus.subscribe({ app: 'api.shop' });
    const byVip = bus.subscribe({ app: '10.0.0.5' });
    const other = bus.subscribe({ app: 'db', maxBuffered: 1 });
    bus.emit(allowed(1));
    bus.emit({ type: 'connect.denied', client: web, service: api, detail: 'policy' });
    bus.emit({ type: 'app.started', client: { app: 'a9', name: 'db', identity: '10.0.0.9', node: 'n1' } });
    bus.emit({ type: 'app.started', client: { app: 'a10', name: 'db', identity: '10.0.0.9', node: 'n1' } });
    bus.emit({ type: 'member.state', member: { name: 'n2', address: '192.0.2.2:7946', state: 'alive' } });
    expect((await byType.next()).map((e) => e.type)).toEqual(['connect.denied', 'app.started', 'app.started']);
    expect((await byClient.next()).map((e) => e.type)).toEqual(['connect.allowed', 'connect.denied']);
    expect((await byService.next()).map((e) => e.type)).toEqual(['connect.allowed', 'connect.denied']);
    expect((await byVip.next()).map((e) => e.type)).toEqual(['connect.allowed', 'connect.denied']);
    /* two db events into a ring of one: the lost one is reported even through the app filter */
    expect((await other.next()).map((e) => [e.type, e.lost])).toEqual([
      ['events.lost', 1],
      ['app.started', undefined],
    ]);
    for (const s of [byType, byClient, byService, byVip, other]) s.close();
  });

  it('an unknown type in the filter is ignored; maxBuffered is clamped', async () => {
    const bus = new EventBus('n1');
    const sub = bus.subscribe({ types: ['nonsense' as never, 'service.up'], maxBuffered: 0 });
    bus.emit({ type: 'service.up', service: api });
    bus.emit({ type: 'service.up', service: api });
    const got = await sub.next();
    expect(got.map((e) => e.type)).toEqual(['events.lost', 'service.up']);
    sub.close();
  });

  it('close() rejects a pending read and later ones, and stops delivery', async () => {
    const bus = new EventBus('n1');
    const sub = bus.subscribe();
    const pending = sub.next();
    sub.close();
    await expect(pending).rejects.toThrow(/closed/);
    await expect(sub.next()).rejects.toThrow(/closed/);
    bus.emit(allowed(1));
    expect(bus.subscribers).toBe(0);
  });

  it('closeAll ends every subscription', async () => {
    const bus = new EventBus('n1');
    const a = bus.subscribe();
    const b = bus.subscribe();
    const reads = [a.next(), b.next()];
    bus.closeAll();
    for (const r of reads) await expect(r).rejects.toThrow(/closed/);
    expect(bus.hasSubscribers).toBe(false);
  });
});

describe('src/events dependencies', () => {
  it('imports node built-ins, itself, and types of the trap and table only (never the daemon, the CLI, the API or the UI)', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const dir = join(import.meta.dirname, '../../src/events');
    const ALLOWED = /^(node:[a-z_/]+|\.\/[a-z-]+\.js|\.\.\/trap\/(apps|observer)\.js|\.\.\/table\/endpoint\.js)$/;
    const bad: string[] = [];
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('bus.ts');
    for (const f of files) {
      for (const m of readFileSync(join(dir, f), 'utf8').matchAll(/^\s*(?:import|export)\b([^;]*?)from\s+'([^']+)'/gm)) {
        const spec = m[2] ?? '';
        if (!ALLOWED.test(spec)) bad.push(`${f}: ${spec}`);
        else if (spec.startsWith('../') && !/^\s*(import|export) type\b/.test(m[0].trimStart())) bad.push(`${f}: ${spec} (types only)`);
      }
    }
    expect(bad).toEqual([]);
  });
});
