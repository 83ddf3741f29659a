// Two live nodes with one name (cloned hosts, one hostname) on the in-memory network: each finds the other, logs it
// as an error and lists it; a node restarted at a new address is not a conflict; a conflict ends when the other
// node goes.

import { describe, expect, it } from 'vitest';
import { CONFLICT_MISSES, Memberlist, seededRandom, type GossipLogger } from '../../src/gossip/index.js';
import { TestCluster } from '../helpers/gossip-cluster.js';

interface Line {
  level: 'error' | 'warn' | 'info';
  obj: object;
  msg: string;
}

function capture(): { logger: GossipLogger; lines: Line[] } {
  const lines: Line[] = [];
  return {
    lines,
    logger: {
      error: (obj, msg) => lines.push({ level: 'error', obj, msg }),
      warn: (obj, msg) => lines.push({ level: 'warn', obj, msg }),
      info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
      debug: () => {},
    },
  };
}

/** A node named `name` at the address of `host` (TestCluster keys its nodes by name, so twins are made here). */
function twin(c: TestCluster, name: string, host: string, seed: number): { ml: Memberlist; addr: string; lines: Line[] } {
  const addr = TestCluster.addr(host);
  const { logger, lines } = capture();
  const ml = new Memberlist({ name, transport: c.net.createTransport(addr), clock: c.net.clockFor(addr), random: seededRandom(seed), logger });
  return { ml, addr, lines };
}

const conflictLines = (lines: Line[]): Line[] => lines.filter((l) => l.level === 'error' && /conflicting address/.test(l.msg));

describe('name conflicts', () => {
  it('two live nodes with one name: both log "conflicting address" with both addresses and list the other', async () => {
    const c = new TestCluster({ seed: 31 });
    const a = twin(c, 'same', 'host-a', 1);
    const b = twin(c, 'same', 'host-b', 2);
    b.ml.join([a.addr]).catch(() => undefined);
    expect(c.runUntil(() => a.ml.conflicts().length > 0 && b.ml.conflicts().length > 0, 10_000)).toBe(true);
    expect(a.ml.conflicts()).toEqual([{ name: 'same', address: a.addr, otherAddress: b.addr, since: expect.any(Number) as number }]);
    expect(b.ml.conflicts()).toEqual([{ name: 'same', address: b.addr, otherAddress: a.addr, since: expect.any(Number) as number }]);
    for (const [self, other] of [
      [a, b],
      [b, a],
    ] as const) {
      const l = conflictLines(self.lines);
      expect(l).toHaveLength(1);
      expect(l[0]?.obj).toEqual({ node: 'same', mine: self.addr, theirs: other.addr });
      expect(l[0]?.msg).toContain(other.addr);
    }
    // still there a while later, and logged once, not per gossip round
    c.run(30_000);
    expect(a.ml.conflicts()).toHaveLength(1);
    expect(conflictLines(a.lines)).toHaveLength(1);
    // the conflict ends when the other node is gone
    b.ml.shutdown();
    expect(c.runUntil(() => a.ml.conflicts().length === 0, 5_000 * CONFLICT_MISSES)).toBe(true);
    expect(a.lines.some((l) => l.level === 'info' && /no longer answers/.test(l.msg))).toBe(true);
    a.ml.shutdown();
  });

  it('with a third node: both twins report the conflict, and stop fighting over the name (no refutation or key war)', async () => {
    const c = new TestCluster({ seed: 32 });
    const third = c.add('third');
    const a = twin(c, 'same', 'host-a', 3);
    const b = twin(c, 'same', 'host-b', 4);
    a.ml.setLocal('svc', 'from-a');
    b.ml.setLocal('svc', 'from-b');
    a.ml.join([third.addr]).catch(() => undefined);
    c.run(2_000);
    b.ml.join([third.addr]).catch(() => undefined);
    expect(c.runUntil(() => a.ml.conflicts().length > 0 && b.ml.conflicts().length > 0, 20_000)).toBe(true);
    expect(a.ml.conflicts()[0]?.otherAddress).toBe(b.addr);
    expect(b.ml.conflicts()[0]?.otherAddress).toBe(a.addr);
    expect(third.ml.member('same')?.state).toBe('alive');
    // each answering the other's alives and keys (refute, reissue) would go on for ever through the third node
    // (about 10 key messages a second each, before): once the conflict is known, neither answers
    c.run(5_000);
    const sent = (m: Memberlist): number => m.stats().messages.sent.kv + m.stats().messages.sent.alive;
    const before = [sent(a.ml), sent(b.ml), a.ml.stats().protocol.refutations, b.ml.stats().protocol.refutations];
    c.run(30_000);
    expect(sent(a.ml) - (before[0] as number)).toBeLessThanOrEqual(2);
    expect(sent(b.ml) - (before[1] as number)).toBeLessThanOrEqual(2);
    expect([a.ml.stats().protocol.refutations, b.ml.stats().protocol.refutations]).toEqual(before.slice(2));
    expect(third.ml.member('same')?.state).toBe('alive');
    a.ml.shutdown();
    b.ml.shutdown();
  });

  it('a node restarted at a new address is no conflict: the old address does not answer to its name', async () => {
    const c = new TestCluster({ seed: 33 });
    const other = c.add('other');
    const old = twin(c, 'mover', 'old-host', 5);
    old.ml.join([other.addr]).catch(() => undefined);
    expect(c.runUntil(() => other.ml.member('mover')?.state === 'alive', 10_000)).toBe(true);
    old.ml.shutdown(); /* a crash: no leave; its alive rumours are still about */
    const moved = twin(c, 'mover', 'new-host', 6);
    moved.ml.join([other.addr]).catch(() => undefined);
    expect(c.runUntil(() => other.ml.member('mover')?.address === moved.addr && other.ml.member('mover')?.state === 'alive', 20_000)).toBe(true);
    c.run(10_000);
    expect(moved.ml.conflicts()).toEqual([]);
    expect(conflictLines(moved.lines)).toEqual([]);
    expect(other.ml.member('mover')?.address).toBe(moved.addr);
    moved.ml.shutdown();
  });
});
