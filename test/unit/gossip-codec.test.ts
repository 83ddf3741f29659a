// Codec, envelope, keyring and replay guard: round trips, and no input ever makes the decoder throw anything but
// DecodeError (or the envelope anything at all).

import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  DecodeError,
  decodeMessages,
  encodeMessage,
  type DecodeLimits,
  type Message,
} from '../../src/gossip/codec.js';
import { Keyring } from '../../src/gossip/crypto.js';
import {
  openEnvelope,
  PROTOCOL_VERSION,
  REPLAY_HEADER_BYTES,
  sealEnvelope,
  writeReplayHeader,
} from '../../src/gossip/envelope.js';
import { GossipError } from '../../src/gossip/errors.js';
import { seededRandom } from '../../src/gossip/random.js';
import { ReplayGuard } from '../../src/gossip/replay.js';
import { formatAddress, tryParseAddress } from '../../src/gossip/transport.js';

const LIM: DecodeLimits = { maxValueBytes: 1024, maxMembers: 100, maxKeysPerNode: 100 };

const SAMPLES: Message[] = [
  { kind: 'ping', seq: 1, target: 'node-a' },
  { kind: 'ping', seq: 0xffffffff, target: '' },
  { kind: 'indirectPing', seq: 7, target: 'b', targetAddr: '[::1]:7946', wantNack: true },
  { kind: 'ack', seq: 9 },
  { kind: 'ack', seq: 9, digest: { count: 3, hash: 0xdeadbeef, store: 12345 } },
  { kind: 'nack', seq: 10 },
  { kind: 'alive', node: 'ñodé-ü', addr: '10.1.2.3:7946', incarnation: 2 ** 40, epoch: 1_700_000_000_123 },
  { kind: 'suspect', node: 'x', incarnation: 0, from: 'y' },
  { kind: 'dead', node: 'x', incarnation: 5, from: 'x' },
  { kind: 'kv', node: 'n', epoch: 1, version: 300, key: 'svc/web', value: new Uint8Array([1, 2, 3]) },
  { kind: 'kv', node: 'n', epoch: 1, version: 301, key: 'svc/web', value: null },
  {
    kind: 'pushPull',
    join: true,
    members: [
      { name: 'a', addr: 'a:1', incarnation: 1, state: 'alive', epoch: 5 },
      { name: 'b', addr: 'b:2', incarnation: 2, state: 'left', epoch: 6 },
    ],
    stores: [{ node: 'a', epoch: 5, entries: [{ key: 'k', version: 1, value: new Uint8Array([9]) }, { key: 'd', version: 2, value: null }] }],
  },
];

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe('codec', () => {
  it('round-trips every message type, alone and concatenated', () => {
    for (const m of SAMPLES) {
      const d = decodeMessages(encodeMessage(m), LIM);
      expect(d.messages).toEqual([m]);
      expect(d.unknown).toBe(0);
    }
    const all = concat(SAMPLES.map(encodeMessage));
    const d = decodeMessages(all, LIM);
    expect(d.messages).toEqual(SAMPLES);
    expect(concat(d.raws)).toEqual(all);
  });

  it('reports truncation at every cut point and never throws anything but DecodeError', () => {
    for (const m of SAMPLES) {
      const buf = encodeMessage(m);
      for (let cut = 1; cut < buf.length; cut++) {
        let err: unknown;
        try {
          decodeMessages(buf.subarray(0, cut), LIM);
        } catch (e) {
          err = e;
        }
        expect(err, `${m.kind} cut at ${cut}`).toBeInstanceOf(DecodeError);
      }
    }
  });

  it('rejects malformed fields', () => {
    const bad = (bytes: number[]): string => {
      try {
        decodeMessages(Uint8Array.from(bytes), LIM);
        return 'ok';
      } catch (e) {
        return (e as DecodeError).reason;
      }
    };
    expect(bad([0, 0])).toBe('malformed'); // type 0
    expect(bad([5, 3, 0, 0, 0])).toBe('malformed'); // alive with empty node name
    expect(bad([3, 5, 0, 0, 0, 1, 99])).toBe('truncated'); // ack with a partial digest
    expect(bad([7, 4, 1, 0xff, 0, 0])).toBe('malformed'); // node name not UTF-8 (0xff)
    expect(bad([4, 5, 0, 0, 0, 1, 0])).toBe('malformed'); // trailing byte after nack
    expect(bad([3, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])).toBe('malformed'); // varint too long
    // kv value longer than the cap
    const big = encodeMessage({ kind: 'kv', node: 'n', epoch: 1, version: 1, key: 'k', value: new Uint8Array(2000) });
    expect(bad([...big])).toBe('malformed');
  });

  it('skips unknown message types for forward compatibility', () => {
    const buf = concat([Uint8Array.from([200, 2, 7, 7]), encodeMessage({ kind: 'ack', seq: 4 })]);
    const d = decodeMessages(buf, LIM);
    expect(d.unknown).toBe(1);
    expect(d.messages).toEqual([{ kind: 'ack', seq: 4 }]);
  });

  it('survives 20000 random mutations without a non-DecodeError exception', () => {
    const rnd = seededRandom(7);
    const base = concat(SAMPLES.map(encodeMessage));
    let decoded = 0;
    for (let i = 0; i < 20000; i++) {
      const b = base.slice(0, 1 + Math.floor(rnd() * base.length));
      const flips = 1 + Math.floor(rnd() * 4);
      for (let f = 0; f < flips; f++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      try {
        decodeMessages(b, LIM);
        decoded++;
      } catch (e) {
        expect(e).toBeInstanceOf(DecodeError);
      }
    }
    expect(decoded).toBeGreaterThan(0);
  });
});

describe('envelope', () => {
  const body = (): Uint8Array => {
    const b = new Uint8Array(REPLAY_HEADER_BYTES + 600).fill(0x41);
    writeReplayHeader(b, { session: 2 ** 47 + 5, timestamp: 1_700_000_000_000, seq: 42 });
    return b;
  };

  it('round-trips plain, compressed and encrypted bodies', () => {
    const k = new Keyring([randomBytes(32)]);
    for (const [keyring, threshold] of [
      [undefined, 0],
      [undefined, 100],
      [k, 0],
      [k, 100],
    ] as const) {
      const b = body();
      const sealed = sealEnvelope(b, { keyring, compressThreshold: threshold });
      expect(sealed[0]).toBe(PROTOCOL_VERSION);
      if (threshold > 0) expect(sealed.length).toBeLessThan(b.length);
      const o = openEnvelope(sealed, keyring, 65536);
      expect(o.ok).toBe(true);
      if (!o.ok) return;
      expect(o.header).toEqual({ session: 2 ** 47 + 5, timestamp: 1_700_000_000_000, seq: 42 });
      expect([...o.body]).toEqual([...b.subarray(REPLAY_HEADER_BYTES)]);
    }
  });

  it('classifies bad input', () => {
    const k1 = new Keyring([randomBytes(32)]);
    const k2 = new Keyring([randomBytes(32)]);
    const plain = sealEnvelope(body(), { keyring: undefined, compressThreshold: 0 });
    const enc = sealEnvelope(body(), { keyring: k1, compressThreshold: 0 });
    const reason = (buf: Uint8Array, ring: Keyring | undefined, max = 65536): string => {
      const o = openEnvelope(buf, ring, max);
      return o.ok ? 'ok' : o.reason;
    };
    expect(reason(new Uint8Array([1]), undefined)).toBe('truncated');
    expect(reason(Uint8Array.from([9, 0, ...body()]), undefined)).toBe('unknown-version');
    expect(reason(Uint8Array.from([1, 0x80, ...body()]), undefined)).toBe('malformed');
    expect(reason(plain, k1)).toBe('unencrypted');
    expect(reason(enc, undefined)).toBe('encrypted-no-keyring');
    expect(reason(enc, k2)).toBe('decrypt-failed');
    const tampered = enc.slice();
    tampered[20] ^= 1;
    expect(reason(tampered, k1)).toBe('decrypt-failed');
    // The header byte is authenticated (AAD): claiming "compressed" breaks the tag.
    const flagged = enc.slice();
    flagged[1] |= 0x02;
    expect(reason(flagged, k1)).toBe('decrypt-failed');
    expect(reason(enc.subarray(0, 20), k1)).toBe('truncated');
    expect(reason(Uint8Array.from([1, 2, 0xff, 0xff, 0xff]), undefined)).toBe('decompress-failed');
    const bomb = sealEnvelope(new Uint8Array(100_000), { keyring: undefined, compressThreshold: 1 });
    expect(reason(bomb, undefined, 65536)).toBe('oversized');
    expect(reason(plain.subarray(0, 10), undefined)).toBe('truncated');
  });

  it('keyring: primary encrypts, every key decrypts, bad keys are refused', () => {
    const a = randomBytes(32);
    const b = randomBytes(32);
    const ring = new Keyring([b, a]);
    const onlyA = new Keyring([a]);
    const fromOld = sealEnvelope(body(), { keyring: onlyA, compressThreshold: 0 });
    const o = openEnvelope(fromOld, ring, 65536);
    expect(o.ok && o.keyIndex).toBe(1);
    const fromNew = sealEnvelope(body(), { keyring: ring, compressThreshold: 0 });
    expect(openEnvelope(fromNew, onlyA, 65536)).toEqual({ ok: false, reason: 'decrypt-failed' });
    const viaSecondary = sealEnvelope(body(), { keyring: ring, keyIndex: 1, compressThreshold: 0 });
    expect(openEnvelope(viaSecondary, onlyA, 65536).ok).toBe(true);
    for (const bad of [[], [new Uint8Array(16)], Array.from({ length: 9 }, () => randomBytes(32))]) {
      expect(() => new Keyring(bad)).toThrowError(GossipError);
      try {
        new Keyring(bad);
      } catch (e) {
        expect((e as GossipError).code).toBe('ERR_GOSSIP_BAD_KEY');
      }
    }
  });
});

describe('replay guard', () => {
  it('accepts each (session, seq) once, tolerates reordering inside the window, refuses stale timestamps', () => {
    const g = new ReplayGuard({ maxAgeMs: 1000, maxSessions: 10 });
    const now = 5_000_000;
    const h = (seq: number, session = 1, timestamp = now): { session: number; timestamp: number; seq: number } => ({
      session,
      timestamp,
      seq,
    });
    expect(g.check(h(10), now)).toBe('ok');
    expect(g.check(h(10), now)).toBe('replayed');
    expect(g.check(h(12), now)).toBe('ok');
    expect(g.check(h(11), now)).toBe('ok'); // reordered
    expect(g.check(h(11), now)).toBe('replayed');
    expect(g.check(h(100), now)).toBe('ok');
    expect(g.check(h(37), now)).toBe('ok'); // 63 behind is still inside the window
    expect(g.check(h(36), now)).toBe('replayed'); // 64 behind: too old to tell, refused
    expect(g.check(h(10, 2), now)).toBe('ok'); // other session
    expect(g.check(h(200, 1, now - 1001), now)).toBe('stale');
    expect(g.check(h(201, 1, now + 1001), now)).toBe('stale');
  });

  it('bounds the number of sessions', () => {
    const g = new ReplayGuard({ maxAgeMs: 1000, maxSessions: 5 });
    for (let s = 0; s < 50; s++) expect(g.check({ session: s, timestamp: 0, seq: 1 }, 0)).toBe('ok');
    expect(g.size).toBeLessThanOrEqual(5);
    expect(g.evictedFresh).toBe(45);
  });
});

describe('addresses', () => {
  it('parses and formats host:port and [v6]:port', () => {
    expect(tryParseAddress('127.0.0.1:7946')).toEqual({ host: '127.0.0.1', port: 7946, family: 4 });
    expect(tryParseAddress('[::1]:0')).toEqual({ host: '::1', port: 0, family: 6 });
    expect(tryParseAddress('node-1.example:80')).toEqual({ host: 'node-1.example', port: 80, family: 0 });
    for (const bad of ['', '::1:80', '1.2.3.4', '1.2.3.4:65536', 'a b:1', '[::1]80', '1.2.3.4:-1', '[zz]:1']) {
      expect(tryParseAddress(bad), bad).toBeUndefined();
    }
    expect(formatAddress('::1', 5)).toBe('[::1]:5');
    expect(formatAddress('10.0.0.1', 5)).toBe('10.0.0.1:5');
  });
});
