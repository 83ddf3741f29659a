// Fuzz of the gossip envelope (envelope.ts + crypto.ts) and of a real member's receive path (UDP datagrams and TCP
// stream frames on 127.0.0.1): valid packets mutated bit- and byte-wise, truncated, extended, and random bytes, from a
// seeded PRNG. Nothing may throw out; no mutated sealed packet may open; the member keeps serving and a member with
// the key still joins it afterwards.

import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeMessage, type Message } from '../../src/gossip/codec.js';
import { Keyring } from '../../src/gossip/crypto.js';
import { openEnvelope, REPLAY_HEADER_BYTES, sealEnvelope, writeReplayHeader } from '../../src/gossip/envelope.js';
import { Memberlist, seededRandom, UdpTransport, type RandomSource } from '../../src/gossip/index.js';

const running: Memberlist[] = [];
const transports: UdpTransport[] = [];
afterEach(() => {
  for (const m of running.splice(0)) m.shutdown();
  for (const t of transports.splice(0)) t.close();
});

const int = (r: RandomSource, n: number): number => Math.floor(r() * n);
function bytes(r: RandomSource, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

/** A plausible body: replay header and a few real messages. */
function body(r: RandomSource): Uint8Array {
  const msgs: Message[] = [
    { kind: 'ping', seq: int(r, 1e6), target: 'n1' },
    { kind: 'alive', node: `n${int(r, 9)}`, addr: '127.0.0.1:7946', incarnation: int(r, 100), epoch: Date.now() },
    { kind: 'kv', node: 'n2', epoch: Date.now(), version: int(r, 1e6), key: `n2/app/${int(r, 1e6)}`, value: bytes(r, int(r, 200)) },
    { kind: 'suspect', node: 'n3', incarnation: 1, from: 'n1' },
  ];
  const parts = msgs.slice(0, 1 + int(r, msgs.length)).map(encodeMessage);
  const out = new Uint8Array(REPLAY_HEADER_BYTES + parts.reduce((a, p) => a + p.length, 0));
  writeReplayHeader(out, { session: int(r, 2 ** 40), timestamp: Date.now(), seq: int(r, 2 ** 31) });
  let off = REPLAY_HEADER_BYTES;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** One mutation of a valid packet; `changed` says whether the bytes differ from the original. */
function mutate(r: RandomSource, p: Uint8Array): Uint8Array {
  const b = new Uint8Array(p);
  switch (int(r, 6)) {
    case 0: { /* flip 1-8 bits */
      for (let i = 1 + int(r, 8); i > 0; i--) b[int(r, b.length)]! ^= 1 << int(r, 8);
      return b;
    }
    case 1: { /* set 1-4 bytes */
      for (let i = 1 + int(r, 4); i > 0; i--) b[int(r, b.length)] = int(r, 256);
      return b;
    }
    case 2: /* truncate */
      return b.subarray(0, int(r, b.length));
    case 3: { /* extend */
      const x = new Uint8Array(b.length + 1 + int(r, 64));
      x.set(b);
      x.set(bytes(r, x.length - b.length), b.length);
      return x;
    }
    case 4: /* random bytes behind a valid header */
      return new Uint8Array([b[0]!, b[1]!, ...bytes(r, int(r, 300))]);
    default: /* random bytes */
      return bytes(r, int(r, 300));
  }
}

const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

describe('gossip envelope fuzz', () => {
  it('4000 mutated, truncated, extended and random packets: openEnvelope never throws, no forged sealed packet opens', () => {
    const r = seededRandom(20261202);
    const ring = new Keyring([randomBytes(32), randomBytes(32)]);
    let opened = 0;
    for (let i = 0; i < 4000; i++) {
      const keyed = i % 2 === 0;
      const valid = sealEnvelope(body(r), { keyring: keyed ? ring : undefined, compressThreshold: int(r, 2) ? 64 : 0 });
      const bad = mutate(r, valid);
      const res = openEnvelope(bad, keyed ? ring : undefined, 64 * 1024);
      if (keyed && res.ok) expect(same(bad, valid), `case ${i}: a mutated sealed packet opened`).toBe(true);
      if (res.ok) opened++;
      // a mutated plaintext packet never opens at a receiver with a key
      if (!keyed) expect(openEnvelope(bad, ring, 64 * 1024).ok).toBe(false);
    }
    expect(opened).toBeLessThan(4000);
    const ok = openEnvelope(sealEnvelope(body(r), { keyring: ring, compressThreshold: 64 }), ring, 64 * 1024);
    expect(ok.ok).toBe(true);
  });

  it('a real member on 127.0.0.1 takes 3000 bad datagrams and 300 bad stream frames, keeps serving, and a member with the key joins it', async () => {
    const key = randomBytes(32);
    const ring = new Keyring([key]);
    const mk = async (name: string): Promise<Memberlist> => {
      const t = await UdpTransport.create({ bindAddress: '127.0.0.1', port: 0 });
      transports.push(t);
      const m = new Memberlist({ name, transport: t, profile: 'local', keyring: [key] });
      running.push(m);
      return m;
    };
    const victim = await mk('victim');
    const port = Number(victim.address.split(':')[1]);
    const r = seededRandom(7);
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < 3000; i++) {
      const valid = sealEnvelope(body(r), { keyring: i % 3 === 0 ? undefined : ring, compressThreshold: 64 });
      const bad = mutate(r, valid);
      if (same(bad, valid)) continue; /* a byte rewritten to itself: a valid packet, not a fuzz case */
      await new Promise<void>((res) => sock.send(bad.length ? bad : new Uint8Array([0]), port, '127.0.0.1', () => res()));
      if (i % 10 === 0) await new Promise((res) => setImmediate(res)); /* let the member drain its socket */
    }
    sock.close();
    for (let i = 0; i < 300; i++) {
      const valid = sealEnvelope(body(r), { keyring: ring, compressThreshold: 0 });
      const bad = mutate(r, valid);
      if (same(bad, valid)) continue;
      const frame = Buffer.alloc(4 + bad.length);
      frame.writeUInt32BE(int(r, 10) === 0 ? int(r, 2 ** 32) : bad.length, 0); /* sometimes a lying length */
      frame.set(bad, 4);
      await new Promise<void>((res) => {
        const s = net.createConnection({ host: '127.0.0.1', port }, () => s.end(frame));
        s.on('error', () => res());
        s.on('close', () => res());
        s.resume();
        s.setTimeout(2000, () => s.destroy());
      });
    }
    const st = victim.stats();
    const dropped = Object.values(st.dropped).reduce((a, b) => a + b, 0);
    expect(st.packets.received).toBeGreaterThan(2500);
    expect(dropped).toBeGreaterThanOrEqual(st.packets.received); /* every datagram dropped (stream frames add theirs) */
    const friend = await mk('friend');
    expect(await friend.join([victim.address])).toBe(1);
    const deadline = Date.now() + 5000;
    while (victim.numAlive() < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    expect(victim.numAlive()).toBe(2);
    expect(victim.members().map((m) => m.name).sort()).toEqual(['friend', 'victim']);
  }, 20_000);
});
