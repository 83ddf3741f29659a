/** Fuzz of the peer API: a real PeerApi on 127.0.0.1 takes 3000 bad inputs (valid signed requests mutated byte- and
 * bit-wise, truncated, extended, unsigned, signed with another key, stale, random bytes, over-long lines), each on
 * its own connection, from a seeded PRNG. Nothing may throw out, no bad input may reach the look-up (which would
 * claim a client's record), every one is counted as dropped, and afterwards a valid request gets its answer. */
import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { PeerApi } from '../../src/daemon/peers.js';
import { seededRandom, type RandomSource } from '../../src/gossip/index.js';

const int = (r: RandomSource, n: number): number => Math.floor(r() * n);
const log = pino({ level: 'silent' });
const apis: PeerApi[] = [];
afterAll(async () => {
  for (const a of apis) await a.close();
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function signed(key: Buffer, m: Record<string, unknown>): string {
  const body = JSON.stringify(m);
  return JSON.stringify({ ...m, mac: createHmac('sha256', key).update(body).digest('hex') });
}

function mutate(r: RandomSource, line: string, key: Buffer, other: Buffer): Buffer {
  const b = Buffer.from(line);
  switch (int(r, 9)) {
    case 0:
      for (let i = 1 + int(r, 6); i > 0; i--) b[int(r, b.length)]! ^= 1 << int(r, 8);
      return b;
    case 1:
      for (let i = 1 + int(r, 4); i > 0; i--) b[int(r, b.length)] = int(r, 256);
      return b;
    case 2:
      return b.subarray(0, int(r, b.length));
    case 3:
      return Buffer.concat([b, randomBytesFrom(r, 1 + int(r, 40))]);
    case 4: /* unsigned */
      return Buffer.from(JSON.stringify({ id: int(r, 1e6), t: Date.now(), who: `127.0.0.1:${int(r, 65536)}` }));
    case 5: /* signed with another key */
      return Buffer.from(signed(other, { id: int(r, 1e6), t: Date.now(), who: `127.0.0.1:${int(r, 65536)}` }));
    case 6: /* stale: signed with the key, but two minutes old */
      return Buffer.from(signed(key, { id: int(r, 1e6), t: Date.now() - 120_000, who: '127.0.0.1:1' }));
    case 7: /* over-long line */
      return Buffer.alloc(5000 + int(r, 20000), 0x61);
    default:
      return randomBytesFrom(r, int(r, 300));
  }
}

function randomBytesFrom(r: RandomSource, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

/** Sends one input on a fresh connection and waits until the server closes it (or a short while passes). */
function send(port: number, data: Buffer): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = net.createConnection({ host: '127.0.0.1', port }, () => s.write(Buffer.concat([data, Buffer.from('\n')])));
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    s.setTimeout(200, () => s.destroy());
  });
}

describe('peer API fuzz', () => {
  it('3000 bad inputs: none reaches the look-up, all are dropped, the server keeps serving and answers a valid request', async () => {
    const key = randomBytes(32);
    const other = randomBytes(32);
    const port = await freePort();
    const asked: string[] = [];
    const server = new PeerApi(port, [key], (ep) => {
      asked.push(ep);
      return Promise.resolve(ep === '127.0.0.1:40123' ? { identity: '10.0.0.9', appId: 'a1', tags: { team: 'a' } } : undefined);
    }, log, (ip) => ip === '127.0.0.1');
    apis.push(server);
    await server.listen('127.0.0.1');
    const r = seededRandom(1202);
    const valid = (): string => signed(key, { id: int(r, 1e6), t: Date.now(), who: '127.0.0.1:40123' });
    const answers: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const bad = mutate(r, valid(), key, other);
      // a mutation that leaves a request that still authenticates is a valid request, not a fuzz case
      const text = bad.toString('utf8');
      let stillValid = false;
      try {
        const m = JSON.parse(text) as Record<string, unknown>;
        const { mac, ...rest } = m;
        stillValid = mac === createHmac('sha256', key).update(JSON.stringify(rest)).digest('hex') && typeof rest.who === 'string';
      } catch {
        /* not JSON: a fuzz case */
      }
      if (stillValid) continue;
      const got = await send(port, bad);
      if (got) answers.push(got);
    }
    expect(asked).toEqual([]);
    expect(answers).toEqual([]);
    expect(server.dropped).toBeGreaterThan(2500);
    // a real client with the key still gets its answer
    const client = new PeerApi(port, [key], () => Promise.resolve(undefined), log, () => true);
    apis.push(client);
    await expect(client.whoIs('127.0.0.1', '127.0.0.1:40123')).resolves.toEqual({ identity: '10.0.0.9', appId: 'a1', tags: { team: 'a' } });
    expect(asked).toEqual(['127.0.0.1:40123']);
  }, 30_000);

  it('a connection from an address that is not a member is closed before it is read', async () => {
    const key = randomBytes(32);
    const port = await freePort();
    const asked: string[] = [];
    const server = new PeerApi(port, [key], (ep) => {
      asked.push(ep);
      return Promise.resolve(undefined);
    }, log, () => false);
    apis.push(server);
    await server.listen('127.0.0.1');
    const got = await send(port, Buffer.from(signed(key, { id: 1, t: Date.now(), who: '127.0.0.1:40123' })));
    expect(got).toBe('');
    expect(asked).toEqual([]);
    expect(server.drops['not-a-member']).toBe(1);
  });
});
