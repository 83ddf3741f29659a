// Hostile input: replayed, forged (wrong key), truncated, malformed, oversized, unknown-version packets are dropped
// and counted; fuzzed input never breaks a node; key rotation; rate-limited logging.

import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeMessage, utf8 } from '../../src/gossip/codec.js';
import { Keyring } from '../../src/gossip/crypto.js';
import { REPLAY_HEADER_BYTES, sealEnvelope, writeReplayHeader } from '../../src/gossip/envelope.js';
import type { GossipError, GossipLogger } from '../../src/gossip/index.js';
import { seededRandom } from '../../src/gossip/random.js';
import { TestCluster } from '../helpers/gossip-cluster.js';

const K1 = randomBytes(32);
const K2 = randomBytes(32);

/** A well-formed body (replay header + framed messages). */
function body(parts: Uint8Array[], now: number, seq = 1, session = 12345): Uint8Array {
  const len = parts.reduce((n, p) => n + p.length, REPLAY_HEADER_BYTES);
  const b = new Uint8Array(len);
  writeReplayHeader(b, { session, timestamp: now, seq });
  let o = REPLAY_HEADER_BYTES;
  for (const p of parts) {
    b.set(p, o);
    o += p.length;
  }
  return b;
}

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

describe('encrypted cluster', () => {
  it('works end to end and never puts plaintext on the wire', async () => {
    const c = new TestCluster({ seed: 1, keyring: [K1] });
    let leaked = 0;
    let packets = 0;
    const secret = utf8('top-secret-value');
    c.net.tap((_f, _t, buf) => {
      packets++;
      if (contains(buf, secret) || contains(buf, utf8('n2.test'))) leaked++;
    });
    await c.start(4);
    c.node('n2').ml.setLocal('k', 'top-secret-value');
    expect(c.runUntil(() => c.running().every((n) => c.valueAt(n.name, 'n2', 'k') === 'top-secret-value'), 5_000)).toBe(true);
    c.run(5_000);
    expect(packets).toBeGreaterThan(20);
    expect(leaked).toBe(0);
  });

  it('drops replayed packets (seen sequence) and stale ones (old timestamp), counting each reason', async () => {
    const c = new TestCluster({ seed: 2, keyring: [K1] });
    await c.start(3);
    const a = c.node('n1');
    const b = c.node('n2');
    let captured: Uint8Array | undefined;
    const untap = c.net.tap((from, to, buf) => {
      if (captured === undefined && from === a.addr && to === b.addr) captured = buf.slice();
    });
    c.runUntil(() => captured !== undefined, 10_000);
    untap();
    c.run(100);
    const before = b.ml.stats().dropped;
    c.net.inject(a.addr, b.addr, captured!);
    c.net.inject(a.addr, b.addr, captured!);
    c.run(10);
    const mid = b.ml.stats().dropped;
    expect(mid.replayed - before.replayed).toBe(2);
    c.run(61_000); // beyond replayMaxAge
    c.net.inject(a.addr, b.addr, captured!);
    c.run(10);
    expect(b.ml.stats().dropped.stale - mid.stale).toBe(1);
    expect(c.converged()).toBe(true);
  });

  it('drops packets sealed with a key not in the ring, and unencrypted packets', async () => {
    const c = new TestCluster({ seed: 3, keyring: [K1] });
    await c.start(3);
    const b = c.node('n2');
    const now = c.clock.now();
    const ping = encodeMessage({ kind: 'ping', seq: 77, target: 'n2' });
    const forged = sealEnvelope(body([ping], now), { keyring: new Keyring([K2]), compressThreshold: 0 });
    const plain = sealEnvelope(body([ping], now, 2), { keyring: undefined, compressThreshold: 0 });
    let answered = 0;
    c.net.tap((_f, to) => {
      if (to === 'evil.test:1') answered++;
    });
    for (let i = 0; i < 5; i++) c.net.inject('evil.test:1', b.addr, forged);
    c.net.inject('evil.test:1', b.addr, plain);
    c.run(10);
    const st = b.ml.stats();
    expect(st.dropped['decrypt-failed']).toBe(5);
    expect(st.dropped.unencrypted).toBe(1);
    // None of the forged pings was answered.
    expect(answered).toBe(0);
    // The same ping sealed with the right key is answered (the check above is not vacuous).
    c.net.inject('evil.test:1', b.addr, sealEnvelope(body([ping], c.clock.now(), 3), { keyring: new Keyring([K1]), compressThreshold: 0 }));
    c.run(10);
    expect(answered).toBe(1);
  });

  it('key rotation: a node with [k2, k1] talks to nodes with [k1]; then the whole cluster moves to k2', async () => {
    const c = new TestCluster({ seed: 4 });
    const n1 = c.add('n1', { keyring: [K2, K1] });
    const n2 = c.add('n2', { keyring: [K1] });
    const n3 = c.add('n3', { keyring: [K1] });
    const j1 = n1.ml.join([n2.addr]);
    const j3 = n3.ml.join([n2.addr]);
    expect(c.runUntil(() => c.converged(), 10_000)).toBe(true);
    expect(await j1).toBe(1);
    expect(await j3).toBe(1);
    n1.ml.setLocal('from-new', 'yes');
    n3.ml.setLocal('from-old', 'yes');
    expect(c.runUntil(() => c.valueAt('n3', 'n1', 'from-new') === 'yes' && c.valueAt('n1', 'n3', 'from-old') === 'yes', 5_000)).toBe(true);
    c.run(10_000);
    for (const n of [n1, n2, n3]) expect(c.deathsOf(n.name)).toEqual([]);
    // Step 2: everyone installs k2 as primary; step 3: k1 removed.
    for (const n of [n2, n3]) n.ml.setKeyring([K2, K1]);
    c.run(5_000);
    for (const n of [n1, n2, n3]) n.ml.setKeyring([K2]);
    n2.ml.setLocal('after', 'rotation');
    expect(c.runUntil(() => c.valueAt('n1', 'n2', 'after') === 'rotation' && c.valueAt('n3', 'n2', 'after') === 'rotation', 5_000)).toBe(true);
    c.run(20_000);
    expect(c.converged()).toBe(true);
    for (const n of [n1, n2, n3]) expect(c.deathsOf(n.name)).toEqual([]);
    // A node that only has the retired key cannot get in.
    const stale = c.add('n4', { keyring: [K1] });
    const err = stale.ml.join([n2.addr], { maxAttempts: 2 }).catch((e: GossipError) => e.code);
    c.run(20_000);
    expect(await err).toBe('ERR_GOSSIP_JOIN_FAILED');
    expect(n2.ml.stats().dropped['decrypt-failed']).toBeGreaterThan(0);
  });
});

describe('malformed input on a plaintext cluster', () => {
  it('drops and counts truncated, malformed, oversized, unknown-version and encrypted packets', async () => {
    const warnings: Array<{ obj: object; msg: string }> = [];
    const logger: GossipLogger = {
      warn: (obj, msg) => warnings.push({ obj, msg }),
      info: () => {},
      debug: () => {},
    };
    const c = new TestCluster({ seed: 5 });
    await c.start(3);
    const victim = c.add('v', { logger });
    const j = victim.ml.join([c.node('n1').addr]);
    c.runUntil(() => c.converged(), 5_000);
    await j;
    const now = c.clock.now();
    const ping = encodeMessage({ kind: 'ping', seq: 5, target: 'v' });
    const ok = sealEnvelope(body([ping], now), { keyring: undefined, compressThreshold: 0 });
    const cases: Array<[string, Uint8Array]> = [
      ['truncated', ok.subarray(0, ok.length - 2)],
      ['truncated', ok.subarray(0, 10)],
      ['malformed', sealEnvelope(body([Uint8Array.of(0, 0)], now), { keyring: undefined, compressThreshold: 0 })],
      ['malformed', sealEnvelope(body([Uint8Array.of(1, 6, 0, 0, 0, 1, 1, 0xff)], now), { keyring: undefined, compressThreshold: 0 })],
      ['malformed', Uint8Array.from([1, 0x40, ...ok.subarray(2)])],
      ['oversized', new Uint8Array(2000).fill(1)],
      ['unknown-version', Uint8Array.from([7, ...ok.subarray(1)])],
      ['encrypted-no-keyring', sealEnvelope(body([ping], now), { keyring: new Keyring([K1]), compressThreshold: 0 })],
      ['decompress-failed', Uint8Array.from([1, 2, 0xff, 0xfe, 0xfd, 0xfc])],
    ];
    const before = victim.ml.stats().dropped;
    const expected: Record<string, number> = {};
    for (const [reason, buf] of cases) {
      c.net.inject('evil.test:1', victim.addr, buf);
      expected[reason] = (expected[reason] ?? 0) + 1;
    }
    // A flood of the same kind is logged once (rate-limited), counted every time.
    for (let i = 0; i < 50; i++) c.net.inject('evil.test:1', victim.addr, new Uint8Array(2000));
    expected.oversized! += 50;
    c.run(10);
    const after = victim.ml.stats().dropped;
    for (const [reason, n] of Object.entries(expected)) {
      expect(after[reason as keyof typeof after] - before[reason as keyof typeof before], reason).toBe(n);
    }
    expect(after['handler-error']).toBe(0);
    const oversizedWarnings = warnings.filter((w) => (w.obj as { reason?: string }).reason === 'oversized');
    expect(oversizedWarnings).toHaveLength(1);
    // A good packet still works after all that (the ping is answered).
    const acks = victim.ml.stats().messages.sent.ack;
    c.net.inject(c.node('n1').addr, victim.addr, sealEnvelope(body([ping], c.clock.now(), 9, 777), { keyring: undefined, compressThreshold: 0 }));
    c.run(10);
    expect(victim.ml.stats().messages.sent.ack).toBe(acks + 1);
  });

  it('survives 3000 fuzzed packets (mutations of real traffic) and stays in the cluster', async () => {
    const c = new TestCluster({ seed: 6 });
    const samples: Uint8Array[] = [];
    c.net.tap((_f, _t, buf) => {
      if (samples.length < 200) samples.push(buf.slice());
    });
    await c.start(4);
    c.node('n1').ml.setLocal('a', 'b');
    c.run(3_000);
    const rnd = seededRandom(99);
    const target = c.node('n3');
    for (let i = 0; i < 3000; i++) {
      const base = samples[Math.floor(rnd() * samples.length)]!;
      const b = base.slice(0, Math.max(1, Math.floor(rnd() * (base.length + 1))));
      const flips = Math.floor(rnd() * 5);
      for (let f = 0; f < flips; f++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      c.net.inject('fuzz.test:1', target.addr, b);
      if (i % 100 === 0) c.run(50);
    }
    c.run(20_000);
    const st = target.ml.stats();
    const dropped = Object.values(st.dropped).reduce((x, y) => x + y, 0);
    expect(dropped).toBeGreaterThan(1000);
    expect(st.dropped['handler-error']).toBe(0);
    expect(c.converged()).toBe(true);
    expect(c.valueAt('n3', 'n1', 'a')).toBe('b');
  });
});
