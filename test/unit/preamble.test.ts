/** The ingress preamble (native/preamble.h), made and checked by the C code the relay and the generators run (through
 * the addon), and its keys (gateway/preamble-key.ts). */
import { describe, expect, it } from 'vitest';
import { MAX_PREAMBLE_KEYS, preambleKeys } from '../../src/gateway/preamble-key.js';
import { native } from '../../src/native/binding.js';
import { encodeKey, RELAY_REC } from '../../src/gateway/relay-wire.js';
import { ip16 } from '../../src/trap/decision-table.js';

const EPERM = 1;
const EBADMSG = 74;
const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const OTHER = Buffer.alloc(16, 0xaa);
const client = { ip: '198.51.100.10', port: 51000 };
const from = { ip: '192.0.2.1', port: 40123 };
const to = { ip: '192.0.2.2', port: 40001 };
const NOW = 1_800_000_000_000;

const make = (key = KEY, at = NOW, c = client): Buffer => native.preambleMake(key, ip16(c.ip), c.port, ip16(from.ip), from.port, ip16(to.ip), to.port, at);
const check = (pre: Buffer, keys: Buffer[], f = from, t = to, now = NOW) => native.preambleCheck(pre, Buffer.concat(keys), ip16(f.ip), f.port, ip16(t.ip), t.port, now);

describe('the ingress preamble', () => {
  it('is 48 bytes, starts "ASP1", names the client; the reader gets the client back with the right key', () => {
    const pre = make();
    expect(pre.length).toBe(48);
    expect(pre.subarray(0, 4).toString()).toBe('ASP1');
    expect(pre.subarray(8, 24)).toEqual(ip16(client.ip));
    expect(pre.readUInt16BE(24)).toBe(client.port);
    expect(check(pre, [KEY])).toEqual({ ip16: ip16(client.ip), port: client.port });
    expect(check(pre, [OTHER, KEY])).toEqual({ ip16: ip16(client.ip), port: client.port }); /* any of the keys */
  });

  it('is refused with another key, on another connection, with a changed byte, or out of its time', () => {
    const pre = make();
    expect(check(pre, [OTHER])).toBe(EPERM);
    expect(check(pre, [])).toBe(EPERM);
    expect(check(pre, [KEY], { ...from, port: from.port + 1 })).toBe(EPERM); /* replayed onto another connection */
    expect(check(pre, [KEY], from, { ...to, ip: '192.0.2.3' })).toBe(EPERM);
    for (const at of [8, 20, 25, 32, 40, 47]) {
      const bad = Buffer.from(pre);
      bad[at] = (bad[at] as number) ^ 1;
      expect(check(bad, [KEY]), `byte ${at}`).toBe(EPERM);
    }
    expect(check(make(KEY, NOW - 61_000), [KEY])).toBe(EPERM);
    expect(check(make(KEY, NOW + 61_000), [KEY])).toBe(EPERM);
    expect(check(make(KEY, NOW - 30_000), [KEY])).toEqual({ ip16: ip16(client.ip), port: client.port });
  });

  it('tells bytes that are no preamble apart (an app\'s own first bytes): EBADMSG', () => {
    expect(check(Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\nxxxxxxxxxxxxxxx'), [KEY])).toBe(EBADMSG);
    const v2 = make();
    v2[4] = 2;
    expect(check(v2, [KEY])).toBe(EBADMSG);
  });

  it('names IPv6 clients too', () => {
    const c6 = { ip: '2001:db8::7', port: 443 };
    expect(check(make(KEY, NOW, c6), [KEY])).toEqual({ ip16: ip16(c6.ip), port: 443 });
  });
});

describe('preamble keys', () => {
  it('are derived per cluster key (16 bytes each, at most as many as a generator reads), never the cluster key itself', () => {
    const a = new Uint8Array(32).fill(1);
    const b = new Uint8Array(32).fill(2);
    const ks = preambleKeys([a, b]);
    expect(ks.map((k) => k.length)).toEqual([16, 16]);
    expect(ks[0]).not.toEqual(ks[1]);
    expect(Buffer.from(a).includes(ks[0] as Buffer)).toBe(false);
    expect(preambleKeys([a])[0]).toEqual(ks[0]); /* every member derives the same */
    expect(preambleKeys(Array.from({ length: 6 }, (_, i) => new Uint8Array(32).fill(i))).length).toBe(MAX_PREAMBLE_KEYS);
  });

  it('a plaintext cluster gets one fixed key (it authenticates nothing, as gossip itself)', () => {
    expect(preambleKeys(undefined)).toEqual(preambleKeys([]));
    expect(preambleKeys(undefined)).toHaveLength(1);
  });

  it('go to the relay in a KEY record before any route', () => {
    const r = encodeKey(KEY);
    expect(r.length).toBe(RELAY_REC);
    expect(r.readUInt32LE(0)).toBe(3);
    expect(r.subarray(8, 24)).toEqual(KEY);
    expect(() => encodeKey(Buffer.alloc(8))).toThrow(RangeError);
  });
});
