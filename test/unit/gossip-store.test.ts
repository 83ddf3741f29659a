// Replicated key/value store over the cluster: propagation, deletes, withdrawal of dead members' keys, restarts,
// late joiners, large values over the stream channel.

import { describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/gossip-cluster.js';

const text = (v: Uint8Array | undefined): string | undefined => (v === undefined ? undefined : new TextDecoder().decode(v));

describe('replicated store', () => {
  it('a new entry set on one host is visible on all 3 hosts within 1 s (LAN profile)', async () => {
    const worst: number[] = [];
    for (const [seed, loss] of [
      [1, 0],
      [2, 0],
      [3, 0.01],
      [4, 0.01],
    ] as const) {
      const c = new TestCluster({ seed, lossRate: loss });
      await c.start(3);
      for (let i = 0; i < 10; i++) {
        c.run(300 + i * 71);
        const owner = `n${1 + (i % 3)}`;
        c.node(owner).ml.setLocal(`k${i}`, `v${i}`);
        const t0 = c.clock.now();
        expect(c.runUntil(() => ['n1', 'n2', 'n3'].every((n) => c.valueAt(n, owner, `k${i}`) === `v${i}`), 5_000)).toBe(true);
        worst.push(c.clock.now() - t0);
      }
    }
    expect(Math.max(...worst)).toBeLessThan(1_000);
  });

  it('emits change events, propagates overwrites and deletes, view() reflects them', async () => {
    const c = new TestCluster({ seed: 5 });
    await c.start(5);
    const a = c.node('n1').ml;
    a.setLocal('svc/web', 'v1');
    a.setLocal('svc/db', new Uint8Array([0, 255]));
    c.run(2_000);
    for (const n of c.nodes.values()) {
      expect(text(n.ml.view().get('n1')?.get('svc/web'))).toBe('v1');
      expect([...(n.ml.view().get('n1')?.get('svc/db') ?? [])]).toEqual([0, 255]);
    }
    a.setLocal('svc/web', 'v2');
    expect(a.deleteLocal('svc/db')).toBe(true);
    expect(a.deleteLocal('svc/db')).toBe(false);
    c.run(2_000);
    for (const n of c.nodes.values()) {
      expect(c.valueAt(n.name, 'n1', 'svc/web')).toBe('v2');
      expect(n.ml.view().get('n1')?.has('svc/db')).toBe(false);
    }
    // Order across keys is not guaranteed (the queue sends newest first); per key it is.
    const events = c.node('n4').changes.filter((e) => e.node === 'n1').map((e) => [e.key, e.value && [...e.value]]);
    const byKey = (k: string): unknown[] => events.filter((e) => e[0] === k);
    expect(byKey('svc/web')).toEqual([
      ['svc/web', [...new TextEncoder().encode('v1')]],
      ['svc/web', [...new TextEncoder().encode('v2')]],
    ]);
    expect(byKey('svc/db')).toEqual([
      ['svc/db', [0, 255]],
      ['svc/db', undefined],
    ]);
    expect(events.slice().sort()).toEqual([
      ['svc/web', [...new TextEncoder().encode('v1')]],
      ['svc/db', [0, 255]],
      ['svc/web', [...new TextEncoder().encode('v2')]],
      ['svc/db', undefined],
    ].sort());
    expect(text(a.getLocal('svc/web'))).toBe('v2');
  });

  it('the last write wins everywhere after a burst of overwrites under 5% loss', async () => {
    const c = new TestCluster({ seed: 6, lossRate: 0.05 });
    await c.start(6, 30_000);
    for (let i = 0; i < 50; i++) {
      c.node('n2').ml.setLocal('counter', String(i));
      c.run(13);
    }
    expect(c.runUntil(() => c.running().every((n) => c.valueAt(n.name, 'n2', 'counter') === '49'), 10_000)).toBe(true);
  });

  it("a dead member's keys are withdrawn everywhere (delete events)", async () => {
    const c = new TestCluster({ seed: 7 });
    await c.start(4);
    c.node('n4').ml.setLocal('a', '1');
    c.node('n4').ml.setLocal('b', '2');
    c.run(1_000);
    expect(c.valueAt('n1', 'n4', 'a')).toBe('1');
    c.kill('n4');
    expect(c.runUntil(() => ['n1', 'n2', 'n3'].every((n) => c.stateOf(n, 'n4') === 'dead'), 15_000)).toBe(true);
    for (const n of ['n1', 'n2', 'n3']) {
      expect(c.node(n).ml.view().has('n4')).toBe(false);
      const withdrawn = c.node(n).changes.filter((e) => e.node === 'n4' && e.value === undefined).map((e) => e.key).sort();
      expect(withdrawn).toEqual(['a', 'b']);
    }
  });

  for (const waitForDeath of [false, true]) {
    it(`a restarted process (same name, fresh state) takes over: its keys win, stale keys vanish (${waitForDeath ? 'after' : 'before'} being declared dead)`, async () => {
      const c = new TestCluster({ seed: 8 + Number(waitForDeath) });
      await c.start(4);
      c.node('n3').ml.setLocal('role', 'old');
      c.node('n3').ml.setLocal('stale', 'x');
      c.run(2_000);
      expect(c.valueAt('n1', 'n3', 'stale')).toBe('x');
      c.kill('n3');
      if (waitForDeath) {
        expect(c.runUntil(() => c.stateOf('n1', 'n3') === 'dead', 15_000)).toBe(true);
      } else {
        c.run(300);
      }
      const fresh = c.add('n3');
      c.revive('n3');
      fresh.ml.setLocal('role', 'new');
      const joined = fresh.ml.join([c.node('n1').addr]);
      const ok = c.runUntil(
        () =>
          ['n1', 'n2', 'n4'].every((n) => c.valueAt(n, 'n3', 'role') === 'new' && c.valueAt(n, 'n3', 'stale') === undefined) &&
          c.converged(),
        20_000,
      );
      expect(ok).toBe(true);
      await joined;
      c.run(20_000);
      for (const n of ['n1', 'n2', 'n4']) {
        expect(c.stateOf(n, 'n3')).toBe('alive');
        expect([...c.node(n).ml.view().get('n3')!.keys()]).toEqual(['role']);
      }
      expect(c.node('n1').ml.member('n3')!.incarnation).toBeGreaterThan(0);
    });
  }

  it('a late joiner gets every key through the join push-pull, before any gossip', async () => {
    const c = new TestCluster({ seed: 10 });
    await c.start(4);
    for (let i = 1; i <= 4; i++) for (let k = 0; k < 20; k++) c.node(`n${i}`).ml.setLocal(`key-${k}`, `n${i}-${k}`);
    c.node('n2').ml.deleteLocal('key-3');
    c.run(3_000);
    const late = c.add('late', { config: { gossipInterval: 60_000, pushPullInterval: 0 } });
    const joined = late.ml.join([c.node('n1').addr]);
    // The join resolves inside the push-pull callback; stop the clock as soon as the table is there.
    expect(c.runUntil(() => late.ml.numAlive() === 5, 5_000)).toBe(true);
    expect(await joined).toBe(1);
    const v = late.ml.view();
    expect(v.get('n1')?.size).toBe(20);
    expect(v.get('n2')?.size).toBe(19);
    expect(text(v.get('n4')?.get('key-7'))).toBe('n4-7');
    expect(late.ml.stats().messages.received.kv).toBe(0); // all of it came in the push-pull response
  });

  it('values too large for a datagram travel over the stream channel', async () => {
    const c = new TestCluster({ seed: 11 });
    await c.start(5);
    const big = new Uint8Array(8_000).map((_, i) => (i * 7) & 0xff);
    c.node('n2').ml.setLocal('blob', big);
    expect(c.runUntil(() => c.running().every((n) => n.ml.view().get('n2')?.get('blob')?.length === 8_000), 10_000)).toBe(true);
    expect([...c.node('n5').ml.view().get('n2')!.get('blob')!]).toEqual([...big]);
    expect(c.node('n2').ml.stats().streams.sent).toBeGreaterThan(0);
  });

  it('keys survive a partition: both sides see each other again after heal, and updates made meanwhile win', async () => {
    const c = new TestCluster({ seed: 12 });
    await c.start(6);
    c.node('n1').ml.setLocal('x', 'before');
    c.run(1_000);
    c.net.partition(['n1', 'n2', 'n3'].map(TestCluster.addr), ['n4', 'n5', 'n6'].map(TestCluster.addr));
    c.run(5_000);
    c.node('n1').ml.setLocal('x', 'during');
    c.node('n5').ml.setLocal('y', 'during');
    c.run(20_000);
    expect(c.valueAt('n4', 'n1', 'x')).toBeUndefined(); // n1 is dead to n4's side: its keys withdrawn
    c.net.heal();
    expect(
      c.runUntil(
        () => c.converged() && c.running().every((n) => c.valueAt(n.name, 'n1', 'x') === 'during' && c.valueAt(n.name, 'n5', 'y') === 'during'),
        60_000,
      ),
    ).toBe(true);
  });
});
