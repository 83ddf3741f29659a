// Pure components of the gossip layer: virtual clock, in-memory network, broadcast queue, suspicion timer,
// awareness, replicated store, configuration.

import { describe, expect, it } from 'vitest';
import { Awareness } from '../../src/gossip/awareness.js';
import { BroadcastQueue } from '../../src/gossip/broadcast.js';
import { VirtualClock } from '../../src/gossip/clock.js';
import { PROFILES, pushPullScale, resolveConfig, resolveLimits, retransmitLimit } from '../../src/gossip/config.js';
import { GossipError } from '../../src/gossip/errors.js';
import { MemoryNetwork } from '../../src/gossip/memory-transport.js';
import { ReplicatedStore } from '../../src/gossip/store.js';
import { suspicionDeadline, suspicionTimeout, Suspicion } from '../../src/gossip/suspicion.js';

const dec = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

describe('VirtualClock', () => {
  it('fires in (time, priority, insertion) order and supports cancel', () => {
    const c = new VirtualClock(0);
    const log: string[] = [];
    c.setTimeout(() => log.push('b'), 20);
    c.setTimeout(() => log.push('a'), 10);
    c.schedule(() => log.push('late-prio'), 10, 1);
    c.setTimeout(() => log.push('a2'), 10);
    const h = c.setTimeout(() => log.push('never'), 15);
    c.clearTimeout(h);
    c.advance(9);
    expect(log).toEqual([]);
    c.advance(100);
    expect(log).toEqual(['a', 'a2', 'late-prio', 'b']);
    expect(c.now()).toBe(109);
    expect(c.pending()).toBe(0);
  });

  it('runUntil stops at the event that satisfies the predicate, or at the limit', () => {
    const c = new VirtualClock(0);
    let x = 0;
    for (let i = 1; i <= 10; i++) c.setTimeout(() => (x = i), i * 100);
    expect(c.runUntil(() => x >= 3, 10_000)).toBe(true);
    expect(c.now()).toBe(300);
    expect(c.runUntil(() => x >= 99, 500)).toBe(false);
    expect(c.now()).toBe(800);
  });

  it('orders 10000 random timers correctly (heap)', () => {
    const c = new VirtualClock(0);
    const fired: number[] = [];
    let s = 1;
    for (let i = 0; i < 10000; i++) {
      s = (s * 48271) % 2147483647;
      const at = s % 5000;
      c.setTimeout(() => fired.push(at), at);
    }
    c.advance(5000);
    expect(fired).toHaveLength(10000);
    for (let i = 1; i < fired.length; i++) expect(fired[i]!).toBeGreaterThanOrEqual(fired[i - 1]!);
  });
});

describe('MemoryNetwork', () => {
  it('delivers with latency, is deterministic under loss for a seed, and cuts partitions', () => {
    const run = (seed: number): number[] => {
      const net = new MemoryNetwork({ seed, latencyMs: 5, lossRate: 0.3 });
      const a = net.createTransport('a:1');
      const b = net.createTransport('b:1');
      const got: number[] = [];
      b.onPacket((from, buf) => {
        expect(from).toBe('a:1');
        got.push(buf[0]!);
      });
      for (let i = 0; i < 100; i++) a.sendPacket('b:1', Uint8Array.of(i));
      net.clock.advance(4);
      expect(got).toEqual([]);
      net.clock.advance(1);
      return got;
    };
    const r1 = run(9);
    expect(r1.length).toBeGreaterThan(50);
    expect(r1.length).toBeLessThan(90);
    expect(run(9)).toEqual(r1);
    expect(run(10)).not.toEqual(r1);

    const net = new MemoryNetwork({ latencyMs: 1 });
    const a = net.createTransport('a:1');
    const b = net.createTransport('b:1');
    let n = 0;
    b.onPacket(() => n++);
    net.partition(['a:1'], ['b:1']);
    a.sendPacket('b:1', Uint8Array.of(1));
    net.clock.advance(10);
    expect(n).toBe(0);
    net.heal();
    a.sendPacket('b:1', Uint8Array.of(1));
    net.clock.advance(10);
    expect(n).toBe(1);
  });

  it('stall holds packets, streams and timers, then runs due timers before the backlog', () => {
    const net = new MemoryNetwork({ latencyMs: 1 });
    const a = net.createTransport('a:1');
    const b = net.createTransport('b:1');
    const bClock = net.clockFor('b:1');
    const log: string[] = [];
    b.onPacket(() => log.push(`packet@${net.clock.now() - 1_700_000_000_000}`));
    b.onStream((_from, req, reply) => reply(req));
    net.stall('b:1', 1500);
    bClock.setTimeout(() => log.push(`timer@${net.clock.now() - 1_700_000_000_000}`), 100);
    a.sendPacket('b:1', Uint8Array.of(1));
    let resp: string | undefined;
    a.request('b:1', Uint8Array.of(7), 5000, (err, r) => (resp = err ? err.code : String(r?.[0])));
    net.clock.advance(1499);
    expect(log).toEqual([]);
    expect(resp).toBeUndefined();
    net.clock.advance(10);
    expect(log).toEqual(['timer@1500', 'packet@1500']);
    expect(resp).toBe('7');
  });

  it('streams fail fast to closed peers and time out across partitions', () => {
    const net = new MemoryNetwork({ latencyMs: 1 });
    const a = net.createTransport('a:1');
    const b = net.createTransport('b:1');
    b.onStream((_f, _r, reply) => reply(undefined));
    const codes: string[] = [];
    a.request('b:1', Uint8Array.of(1), 1000, (err) => codes.push(err?.code ?? 'ok'));
    a.request('nobody:1', Uint8Array.of(1), 1000, (err) => codes.push(err?.code ?? 'ok'));
    net.clock.advance(10);
    expect(codes).toEqual(['ERR_GOSSIP_UNREACHABLE', 'ERR_GOSSIP_UNREACHABLE']);
    net.partition(['a:1'], ['b:1']);
    a.request('b:1', Uint8Array.of(1), 1000, (err) => codes.push(err?.code ?? 'ok'));
    net.clock.advance(999);
    expect(codes).toHaveLength(2);
    net.clock.advance(2);
    expect(codes[2]).toBe('ERR_GOSSIP_TIMEOUT');
  });
});

describe('BroadcastQueue', () => {
  const msg = (n: number, size = 10): Uint8Array => new Uint8Array(size).fill(n);

  it('sends least-transmitted newest first and retires at the limit', () => {
    const q = new BroadcastQueue(100, 1000);
    q.enqueue({ key: 'a', msg: msg(1) });
    q.enqueue({ key: 'b', msg: msg(2) });
    q.enqueue({ key: 'c', msg: msg(3) });
    expect(q.take(25, 3).map((m) => m[0])).toEqual([3, 2]);
    expect(q.take(25, 3).map((m) => m[0])).toEqual([1, 3]); // 'a' has 0 transmits, then newest of count 1
    let total = 0;
    for (let i = 0; i < 10; i++) total += q.take(1000, 3).length;
    expect(total).toBe(3 * 3 - 4);
    expect(q.size).toBe(0);
  });

  it('replaces by key, reports completion, evicts the most-sent oldest beyond the cap', () => {
    const q = new BroadcastQueue(3, 1000);
    const done: string[] = [];
    q.enqueue({ key: 'x', msg: msg(1), onDone: (t) => done.push(`x1:${t}`) });
    q.enqueue({ key: 'x', msg: msg(2), onDone: (t) => done.push(`x2:${t}`) });
    expect(done).toEqual(['x1:false']);
    expect(q.take(100, 1).map((m) => m[0])).toEqual([2]);
    expect(done).toEqual(['x1:false', 'x2:true']);
    q.enqueue({ key: 'a', msg: msg(1) });
    q.take(100, 5); // a: 1 transmit
    q.enqueue({ key: 'b', msg: msg(2) });
    q.enqueue({ key: 'c', msg: msg(3) });
    q.enqueue({ key: 'd', msg: msg(4) });
    expect(q.size).toBe(3);
    expect(q.has('a')).toBe(false);
    expect(q.evicted).toBe(1);
  });

  it('keeps oversized messages for the stream channel', () => {
    const q = new BroadcastQueue(10, 50);
    q.enqueue({ key: 'big', msg: msg(9, 200) });
    q.enqueue({ key: 'small', msg: msg(1) });
    expect(q.take(1000, 2).map((m) => m.length)).toEqual([10]);
    expect(q.takeLarge(2)?.length).toBe(200);
    expect(q.takeLarge(2)?.length).toBe(200);
    expect(q.takeLarge(2)).toBeUndefined();
  });

  it('credits identical duplicates as transmissions, at most half the limit minus two', () => {
    const q = new BroadcastQueue(10, 1000);
    q.enqueue({ key: 'k', msg: msg(5) });
    expect(q.sawDuplicate('k', msg(6), 8)).toBe(false); // different bytes: not the same rumour
    for (let i = 0; i < 10; i++) expect(q.sawDuplicate('k', msg(5), 8)).toBe(true);
    expect(q.has('k')).toBe(true); // only 8/2 - 2 = 2 credited
    let sent = 0;
    while (q.take(1000, 8).length > 0) sent++;
    expect(sent).toBe(6);
    q.enqueue({ key: 's', msg: msg(7) });
    expect(q.sawDuplicate('s', msg(7), 4)).toBe(true); // recognised, but small limits get no credit
    sent = 0;
    while (q.take(1000, 4).length > 0) sent++;
    expect(sent).toBe(4);
  });
});

describe('suspicion and awareness', () => {
  it('computes memberlist timeouts', () => {
    expect(suspicionTimeout(4, 3, 500)).toBe(2000);
    expect(suspicionTimeout(4, 100, 500)).toBe(4000);
    expect(suspicionTimeout(4, 1000, 1000)).toBe(12000);
    expect(suspicionDeadline(0, 3, 2000, 12000)).toBe(12000);
    expect(suspicionDeadline(3, 3, 2000, 12000)).toBe(2000);
    const mid = suspicionDeadline(1, 3, 2000, 12000);
    expect(mid).toBe(7000); // log(2)/log(4) = 0.5
    expect(retransmitLimit(4, 3)).toBe(4);
    expect(retransmitLimit(4, 1000)).toBe(16);
    expect(pushPullScale(30_000, 32)).toBe(30_000);
    expect(pushPullScale(30_000, 1000)).toBe(180_000);
  });

  it('starts at max and accelerates with independent confirmations only', () => {
    const c = new VirtualClock(0);
    let firedAt = -1;
    let confirmations = -1;
    const s = new Suspicion(c, 'a', 3, 2000, 12000, (n) => {
      firedAt = c.now();
      confirmations = n;
    });
    c.advance(1000);
    expect(s.confirm('a')).toBe(false); // the accuser itself
    expect(s.confirm('b')).toBe(true); // now 7000 total
    expect(s.confirm('b')).toBe(false);
    c.advance(5999);
    expect(firedAt).toBe(-1);
    c.advance(1);
    expect(firedAt).toBe(7000);
    expect(confirmations).toBe(1);
  });

  it('fires at min when no confirmations are expected, and cancel prevents firing', () => {
    const c = new VirtualClock(0);
    let fired = 0;
    new Suspicion(c, 'a', 0, 2000, 12000, () => fired++);
    const s2 = new Suspicion(c, 'a', 0, 2000, 12000, () => fired++);
    s2.cancel();
    c.advance(2000);
    expect(fired).toBe(1);
  });

  it('awareness saturates and scales', () => {
    const a = new Awareness(8);
    expect(a.scale(500)).toBe(500);
    a.apply(3);
    expect(a.scale(500)).toBe(2000);
    a.apply(100);
    expect(a.health).toBe(7);
    a.apply(-100);
    expect(a.health).toBe(0);
  });
});

describe('ReplicatedStore', () => {
  const limits = { maxKeysPerNode: 3, maxValueBytes: 8, maxNodes: 4 };
  let now = 1000;
  const mk = (self = 'me', epoch = 100): ReplicatedStore => new ReplicatedStore(self, epoch, limits, () => now);

  it('keeps newer versions only, hides and shows nodes, and drops older epochs', () => {
    const s = mk();
    expect(s.apply('x', 5, 2, 'k', Uint8Array.of(1)).result).toBe('applied'); // hidden: no changes
    expect(s.setVisible('x', true)).toEqual([{ node: 'x', key: 'k', value: Uint8Array.of(1) }]);
    expect(s.apply('x', 5, 1, 'k', Uint8Array.of(9)).result).toBe('stale');
    expect(s.apply('x', 5, 2, 'k', Uint8Array.of(9)).result).toBe('stale');
    expect(s.apply('x', 5, 3, 'k', null)).toEqual({ result: 'applied', changes: [{ node: 'x', key: 'k', value: undefined }] });
    expect(s.apply('x', 5, 4, 'j', Uint8Array.of(2)).result).toBe('applied');
    expect(s.apply('x', 4, 99, 'j', Uint8Array.of(3)).result).toBe('stale'); // older process
    const newer = s.apply('x', 6, 1, 'q', Uint8Array.of(4));
    expect(newer).toEqual({
      result: 'applied',
      changes: [
        { node: 'x', key: 'j', value: undefined },
        { node: 'x', key: 'q', value: Uint8Array.of(4) },
      ],
    });
    expect([...s.view().get('x')!.keys()]).toEqual(['q']);
    expect(s.setVisible('x', false)).toEqual([{ node: 'x', key: 'q', value: undefined }]);
    expect(s.view().has('x')).toBe(false);
  });

  it('enforces caps on keys, values and nodes', () => {
    const s = mk();
    s.setLocal('a', 'x');
    s.setLocal('b', 'x');
    s.setLocal('c', 'x');
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as GossipError).code;
      }
      return undefined;
    };
    expect(code(() => s.setLocal('d', 'x'))).toBe('ERR_GOSSIP_TOO_MANY_KEYS');
    expect(code(() => s.setLocal('a', '123456789'))).toBe('ERR_GOSSIP_VALUE_TOO_LARGE');
    expect(code(() => s.setLocal('', 'x'))).toBe('ERR_GOSSIP_KEY_INVALID');
    expect(code(() => s.setLocal('k'.repeat(256), 'x'))).toBe('ERR_GOSSIP_KEY_INVALID');
    expect(s.deleteLocal('a')).toBeDefined();
    expect(s.deleteLocal('a')).toBeUndefined();
    s.setLocal('d', 'x'); // a tombstone does not count as a live key
    for (const n of ['p', 'q', 'r']) expect(s.apply(n, 1, 1, 'k', Uint8Array.of(1)).result).toBe('applied');
    expect(s.apply('t', 1, 1, 'k', Uint8Array.of(1)).result).toBe('rejected-cap');
    expect(s.apply('p', 1, 2, 'k2', new Uint8Array(9)).result).toBe('rejected-cap');
  });

  it('expires tombstones after the TTL', () => {
    const s = mk();
    s.setLocal('a', 'x');
    s.deleteLocal('a');
    expect(s.counts().tombstones).toBe(1);
    now += 500;
    expect(s.expireTombstones(1000)).toBe(0);
    now += 600;
    expect(s.expireTombstones(1000)).toBe(1);
    expect(s.counts().tombstones).toBe(0);
  });

  it('owner wins: updates about our own keys from the network trigger a re-issue', () => {
    const s = mk('me', 100);
    s.setLocal('k', 'mine'); // version 1
    // Same epoch, a higher version with another value (impossible in normal operation): re-issue ours above it.
    const r = s.apply('me', 100, 7, 'k', Uint8Array.of(1));
    expect(r.result).toBe('self-conflict');
    if (r.result !== 'self-conflict') return;
    expect(r.reissue[0]).toMatchObject({ node: 'me', epoch: 100, version: 8, key: 'k' });
    expect(dec(r.reissue[0]!.value ?? undefined)).toBe('mine');
    // A key we do not have: publish a tombstone.
    const r2 = s.apply('me', 100, 3, 'ghost', Uint8Array.of(1));
    expect(r2.result === 'self-conflict' && r2.reissue[0]!.value).toBe(null);
    // Someone holds a newer epoch for our name: move past it and re-publish live keys.
    const r3 = s.apply('me', 500, 1, 'zz', Uint8Array.of(1));
    expect(r3.result).toBe('self-conflict');
    expect(s.epoch).toBe(501);
    if (r3.result === 'self-conflict') expect(r3.reissue.map((m) => [m.key, m.epoch])).toEqual([['k', 501]]);
    // Our own echo is not a conflict.
    expect(s.apply('me', 501, 1, 'k', s.getLocal('k')!).result).toBe('stale');
  });

  it('hash is equal for equal live content regardless of history', () => {
    const a = mk('a');
    const b = mk('b');
    a.apply('x', 1, 1, 'k', Uint8Array.of(1));
    a.apply('x', 1, 2, 'j', Uint8Array.of(1));
    b.apply('x', 1, 2, 'j', Uint8Array.of(1));
    b.apply('x', 1, 1, 'k', Uint8Array.of(1));
    expect(a.hash).toBe(b.hash);
    a.apply('x', 1, 3, 'k', null);
    expect(a.hash).not.toBe(b.hash);
    b.apply('x', 1, 3, 'k', null);
    expect(a.hash).toBe(b.hash);
  });
});

describe('config', () => {
  it('has memberlist-like profiles and validates overrides', () => {
    expect(PROFILES.wan.probeInterval).toBe(5000);
    expect(PROFILES.local.indirectChecks).toBe(1);
    expect(resolveConfig('lan', { gossipNodes: 5 }).gossipNodes).toBe(5);
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as GossipError).code;
      }
      return undefined;
    };
    expect(code(() => resolveConfig('lan', { probeTimeout: 5000 }))).toBe('ERR_GOSSIP_BAD_CONFIG');
    expect(code(() => resolveConfig('lan', { gossipInterval: 0 }))).toBe('ERR_GOSSIP_BAD_CONFIG');
    expect(code(() => resolveConfig('lan', { suspicionMult: Number.NaN }))).toBe('ERR_GOSSIP_BAD_CONFIG');
    expect(code(() => resolveConfig('nope' as 'lan'))).toBe('ERR_GOSSIP_BAD_CONFIG');
    expect(code(() => resolveLimits({ maxPacketSize: 100 }))).toBe('ERR_GOSSIP_BAD_CONFIG');
    expect(code(() => resolveLimits({ maxMembers: 0 }))).toBe('ERR_GOSSIP_BAD_CONFIG');
  });
});
