// SWIM + Lifeguard behaviour on the in-memory network with a virtual clock: join, failure detection, suspicion and
// refutation, stalls, partitions, loss, leave, reaping.

import { describe, expect, it } from 'vitest';
import { GossipError, Memberlist, MemoryNetwork } from '../../src/gossip/index.js';
import { TestCluster } from '../helpers/gossip-cluster.js';

describe('join', () => {
  it('joins a 6-node cluster through one seed', async () => {
    const c = new TestCluster({ seed: 11 });
    const nodes = [1, 2, 3, 4, 5, 6].map((i) => c.add(`n${i}`));
    const results = nodes.slice(1).map((n) => n.ml.join([nodes[0]!.addr]));
    expect(c.runUntil(() => c.converged(), 10_000)).toBe(true);
    expect(c.clock.now() - 1_700_000_000_000).toBeLessThan(2_000);
    expect(await Promise.all(results)).toEqual([1, 1, 1, 1, 1]);
    for (const n of nodes) expect(n.ml.numAlive()).toBe(6);
  });

  it('retries with backoff until a seed answers, and reports how many answered', async () => {
    const c = new TestCluster({ seed: 12 });
    const a = c.add('a');
    let resolved: number | undefined;
    const p = a.ml.join([TestCluster.addr('s1'), TestCluster.addr('s2'), a.addr]).then((n) => (resolved = n));
    c.run(3_000);
    expect(resolved).toBeUndefined();
    c.add('s1');
    c.add('s2');
    c.run(10_000);
    await p;
    expect(resolved).toBe(2);
    expect(c.converged()).toBe(true);
  });

  it('rejects after maxAttempts, on shutdown, and on bad seeds', async () => {
    const c = new TestCluster({ seed: 13 });
    const a = c.add('a');
    const failed = a.ml.join([TestCluster.addr('nobody')], { maxAttempts: 3 }).catch((e: GossipError) => e.code);
    c.run(60_000);
    expect(await failed).toBe('ERR_GOSSIP_JOIN_FAILED');
    const pending = a.ml.join([TestCluster.addr('nobody')]).catch((e: GossipError) => e.code);
    c.run(1_000);
    a.ml.shutdown();
    expect(await pending).toBe('ERR_GOSSIP_SHUTDOWN');
    const b = c.add('b');
    expect(await b.ml.join(['not an address']).catch((e: GossipError) => e.code)).toBe('ERR_GOSSIP_BAD_ADDRESS');
    expect(await b.ml.join([])).toBe(0);
  });

  it('refuses bad construction parameters with stable codes', () => {
    const net = new MemoryNetwork();
    const t = net.createTransport('x.test:1');
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as GossipError).code;
      }
      return undefined;
    };
    expect(code(() => new Memberlist({ name: '', transport: t }))).toBe('ERR_GOSSIP_BAD_CONFIG');
    expect(code(() => new Memberlist({ name: 'x', transport: t, advertiseAddress: 'nope' }))).toBe('ERR_GOSSIP_BAD_ADDRESS');
    expect(code(() => new Memberlist({ name: 'x', transport: t, keyring: [new Uint8Array(5)] }))).toBe('ERR_GOSSIP_BAD_KEY');
    expect(code(() => new Memberlist({ name: 'x', transport: t, config: { probeInterval: -1 } }))).toBe('ERR_GOSSIP_BAD_CONFIG');
  });
});

describe('failure detection', () => {
  it('a crashed host is declared dead by every member within 5 s (LAN profile, 3 hosts)', async () => {
    const times: number[] = [];
    for (let seed = 1; seed <= 8; seed++) {
      const c = new TestCluster({ seed, jitterMs: 1 });
      await c.start(3);
      c.run(1_000 + seed * 137);
      c.kill('n3');
      const t0 = c.clock.now();
      expect(c.runUntil(() => c.stateOf('n1', 'n3') === 'dead' && c.stateOf('n2', 'n3') === 'dead', 20_000)).toBe(true);
      times.push(c.clock.now() - t0);
      expect(c.deathsOf('n1')).toEqual([]);
      expect(c.deathsOf('n2')).toEqual([]);
    }
    expect(Math.max(...times)).toBeLessThan(5_000);
  });

  it('detects a crash in a 20-node cluster, and only that one', async () => {
    const c = new TestCluster({ seed: 21 });
    await c.start(20);
    c.kill('n7');
    expect(c.runUntil(() => c.running().every((n) => c.stateOf(n.name, 'n7') === 'dead'), 30_000)).toBe(true);
    for (const n of c.running()) expect(c.deathsOf(n.name)).toEqual([]);
    const st = c.node('n1').ml.stats();
    expect(st.members.dead).toBe(1);
    expect(st.members.alive).toBe(19);
  });

  it('probes indirectly when only the direct path is cut: no suspicion', async () => {
    const c = new TestCluster({ seed: 22 });
    await c.start(4);
    c.net.partition([c.node('n1').addr], [c.node('n4').addr]);
    c.run(30_000);
    expect(c.node('n1').ml.stats().messages.sent.indirectPing).toBeGreaterThan(0);
    expect(c.node('n2').ml.stats().messages.received.indirectPing + c.node('n3').ml.stats().messages.received.indirectPing).toBeGreaterThan(0);
    for (const n of c.nodes.values()) {
      expect(n.memberEvents.filter((e) => e.state !== 'alive')).toEqual([]);
    }
  });

  it('a briefly unreachable member is suspected, refutes with a higher incarnation, and stays alive', async () => {
    const c = new TestCluster({ seed: 23 });
    await c.start(5);
    const others = ['n1', 'n2', 'n3', 'n4'].map((n) => c.node(n).addr);
    c.net.partition([c.node('n5').addr], others);
    expect(c.runUntil(() => c.stateOf('n1', 'n5') === 'suspect' || c.stateOf('n2', 'n5') === 'suspect', 10_000)).toBe(true);
    c.net.heal();
    expect(c.runUntil(() => c.converged(), 10_000)).toBe(true);
    expect(c.deathsOf('n5')).toEqual([]);
    expect(c.node('n5').ml.stats().protocol.refutations).toBeGreaterThan(0);
    expect(c.node('n1').ml.member('n5')!.incarnation).toBeGreaterThan(0);
  });

  it('Lifeguard: a member whose event loop stalls for 1.5 s is never declared dead', async () => {
    for (const seed of [31, 32, 33]) {
      const c = new TestCluster({ seed });
      await c.start(6);
      let suspected = 0;
      for (const n of c.nodes.values()) {
        n.ml.on('member', (e) => {
          if (e.name === 'n4' && e.state === 'suspect') suspected++;
        });
      }
      for (let round = 0; round < 5; round++) {
        c.net.stall(c.node('n4').addr, 1_500);
        c.run(8_000);
      }
      c.run(30_000);
      for (const n of c.nodes.values()) expect(c.deathsOf(n.name), `seed ${seed} ${n.name}`).toEqual([]);
      expect(c.converged()).toBe(true);
      // The stall did bite (suspicions were raised) and refutation saved the member.
      expect(suspected).toBeGreaterThan(0);
      expect(c.node('n4').ml.stats().protocol.refutations).toBeGreaterThan(0);
    }
  });

  it('a 1.5 s stall of several members at once causes no false death either', async () => {
    const c = new TestCluster({ seed: 34 });
    await c.start(8);
    for (let round = 0; round < 4; round++) {
      c.net.stall(c.node('n2').addr, 1_500);
      c.net.stall(c.node('n5').addr, 1_500);
      c.run(7_000);
    }
    c.run(20_000);
    for (const n of c.nodes.values()) expect(c.deathsOf(n.name)).toEqual([]);
    expect(c.converged()).toBe(true);
  });
});

describe('partitions and loss', () => {
  for (const ms of [20_000, 50_000]) {
    it(`partition of ${ms / 1000} s: each side declares the other dead, and tables agree again after heal`, async () => {
      const c = new TestCluster({ seed: 40 + ms / 1000 });
      await c.start(6);
      const left = ['n1', 'n2', 'n3'].map((n) => c.node(n).addr);
      const right = ['n4', 'n5', 'n6'].map((n) => c.node(n).addr);
      c.net.partition(left, right);
      c.run(ms);
      expect(c.stateOf('n1', 'n5')).toBe('dead');
      expect(c.stateOf('n6', 'n2')).toBe('dead');
      expect(c.stateOf('n1', 'n2')).toBe('alive');
      c.net.heal();
      expect(c.runUntil(() => c.converged(), 60_000)).toBe(true);
      for (const n of c.nodes.values()) expect(n.ml.numAlive()).toBe(6);
    });
  }

  for (const loss of [0.01, 0.05, 0.1]) {
    it(`${loss * 100}% packet loss: converges, no false deaths, keys spread, a crash is still detected`, async () => {
      const c = new TestCluster({ seed: 50 + loss * 100, lossRate: loss });
      await c.start(8, 60_000);
      c.run(30_000);
      for (const n of c.nodes.values()) expect(c.deathsOf(n.name)).toEqual([]);
      c.node('n3').ml.setLocal('k', 'v');
      expect(c.runUntil(() => c.running().every((n) => c.valueAt(n.name, 'n3', 'k') === 'v'), 10_000)).toBe(true);
      c.kill('n8');
      expect(c.runUntil(() => c.running().every((n) => c.stateOf(n.name, 'n8') === 'dead'), 30_000)).toBe(true);
      for (let i = 1; i <= 7; i++) expect(c.deathsOf(`n${i}`)).toEqual([]);
    });
  }
});

describe('leave and reap', () => {
  it('leave: others see "left" promptly, keys withdrawn, no refutation afterwards', async () => {
    const c = new TestCluster({ seed: 60 });
    await c.start(4);
    c.node('n4').ml.setLocal('svc', 'x');
    c.run(1_000);
    expect(c.valueAt('n1', 'n4', 'svc')).toBe('x');
    let left = false;
    const p = c.node('n4').ml.leave().then(() => (left = true));
    const t0 = c.clock.now();
    expect(c.runUntil(() => ['n1', 'n2', 'n3'].every((n) => c.stateOf(n, 'n4') === 'left'), 5_000)).toBe(true);
    expect(c.clock.now() - t0).toBeLessThan(1_000);
    c.run(2_000);
    await p;
    expect(left).toBe(true);
    expect(c.valueAt('n1', 'n4', 'svc')).toBeUndefined();
    expect(c.node('n1').changes.at(-1)).toMatchObject({ node: 'n4', key: 'svc', value: undefined });
    c.kill('n4');
    c.run(10_000);
    expect(c.stateOf('n2', 'n4')).toBe('left');
    expect(c.deathsOf('n4')).toEqual([]);
  });

  it('leave resolves at once when alone', async () => {
    const c = new TestCluster({ seed: 61 });
    const a = c.add('a');
    await a.ml.leave();
    expect(a.ml.member('a')!.state).toBe('left');
  });

  it('reaps dead members after reapAfter', async () => {
    const c = new TestCluster({ seed: 62, config: { reapAfter: 20_000, tombstoneTtl: 20_000 } });
    await c.start(3);
    c.kill('n3');
    expect(c.runUntil(() => c.stateOf('n1', 'n3') === 'dead', 20_000)).toBe(true);
    c.run(10_000);
    expect(c.stateOf('n1', 'n3')).toBe('dead');
    c.run(30_000);
    expect(c.stateOf('n1', 'n3')).toBeUndefined();
    expect(c.node('n1').ml.members().map((m) => m.name).sort()).toEqual(['n1', 'n2']);
  });
});
