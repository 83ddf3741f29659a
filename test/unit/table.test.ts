/** Service table, port pool, virtual ranges, app metadata. */
import { describe, expect, it } from 'vitest';
import { IdentityPool, isLoopback, VirtualRanges } from '../../src/table/addresses.js';
import { parsePortRange, PortPool } from '../../src/table/port-pool.js';
import { type ServiceEntry, ServiceTable } from '../../src/table/service-table.js';
import { parseMeta, parseTags } from '../../src/trap/apps.js';

function entry(id: string, version: number, port = 80): ServiceEntry {
  return { id, vip: '10.0.0.5', port, proto: 'tcp', node: 'n1', endpoint: { ip: '192.0.2.1', port: 40000 }, appId: 'a', tags: {}, version };
}

describe('ServiceTable', () => {
  it('holds several instances per key and emits added/removed', () => {
    const t = new ServiceTable();
    const seen: string[] = [];
    t.on('added', (e) => seen.push(`+${e.id}`));
    t.on('removed', (e) => seen.push(`-${e.id}`));
    t.upsert(entry('x', 1));
    t.upsert(entry('y', 1));
    expect(t.lookup({ vip: '10.0.0.5', port: 80, proto: 'tcp' }).map((e) => e.id)).toEqual(['x', 'y']);
    expect(t.lookup({ vip: '10.0.0.5', port: 80, proto: 'udp' })).toEqual([]);
    t.remove('x');
    expect(seen).toEqual(['+x', '+y', '-x']);
    expect(t.size).toBe(1);
  });

  it('ignores an older version of an entry and accepts a newer one', () => {
    const t = new ServiceTable();
    t.upsert(entry('x', 5, 80));
    expect(t.upsert(entry('x', 4, 81))).toBe(false);
    expect(t.get('x')?.port).toBe(80);
    expect(t.upsert(entry('x', 6, 81))).toBe(true);
    expect(t.lookup({ vip: '10.0.0.5', port: 80, proto: 'tcp' })).toEqual([]);
    expect(t.get('x')?.port).toBe(81);
  });

  it('versions grow monotonically', () => {
    const t = new ServiceTable();
    const a = t.nextVersion();
    expect(t.nextVersion()).toBeGreaterThan(a);
  });
});

describe('PortPool', () => {
  it('hands out each port once, reuses released ones and skips busy ones', () => {
    let now = 0;
    const p = new PortPool(100, 102, () => now);
    expect([p.allocate(), p.allocate(), p.allocate()]).toEqual([100, 101, 102]);
    expect(p.allocate()).toBeUndefined();
    p.release(101);
    expect(p.allocate()).toBe(101);
    p.markBusy(100, 1000);
    expect(p.allocate()).toBeUndefined();
    now = 2000;
    expect(p.allocate()).toBe(100);
  });

  it('parses ranges and refuses bad ones', () => {
    expect(parsePortRange('40000-60000')).toEqual({ low: 40000, high: 60000 });
    expect(() => parsePortRange('6-5')).toThrow(RangeError);
    expect(() => parsePortRange('abc')).toThrow(RangeError);
    expect(() => new PortPool(0, 10)).toThrow(RangeError);
  });
});

describe('virtual addresses', () => {
  it('knows vips, identities, loopback', () => {
    const r = new VirtualRanges(['10.0.0.0/8']);
    expect(r.contains('10.1.2.3')).toBe(true);
    expect(r.contains('::ffff:10.1.2.3')).toBe(true);
    expect(r.contains('169.254.3.4')).toBe(true);
    expect(r.contains('192.0.2.1')).toBe(false);
    expect(r.isVip('169.254.3.4')).toBe(false);
    expect(r.isVip('10.0.0.1')).toBe(true);
    expect(isLoopback('127.0.0.53')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('10.0.0.1')).toBe(false);
  });

  it('hands out unique link-local identities, never the metadata address', () => {
    const p = new IdentityPool();
    const seen = new Set<string>();
    for (let i = 0; i < 254 * 256 - 2 * 254 - 1; i++) {
      const ip = p.allocate();
      expect(seen.has(ip)).toBe(false);
      seen.add(ip);
    }
    expect(seen.has('169.254.169.254')).toBe(false);
    expect(() => p.allocate()).toThrow(RangeError);
  });
});

describe('app metadata', () => {
  it('parses tags and refuses bad ones', () => {
    expect(parseTags(['grp=1', 'env=prod'])).toEqual({ grp: '1', env: 'prod' });
    expect(() => parseTags(['=x'])).toThrow(/bad tag/);
    expect(() => parseTags(['a=b c'])).toThrow(/bad tag/);
  });

  it('validates untrusted HELLO metadata', () => {
    expect(parseMeta(Buffer.from('{"ip":"10.0.0.5","name":"Web","tags":{"a":"b"},"cmd":["x"]}'))).toEqual({
      ip: '10.0.0.5',
      name: 'web',
      tags: { a: 'b' },
      cmd: ['x'],
    });
    expect(parseMeta(Buffer.from('nope'))).toBe('app metadata is not JSON');
    expect(parseMeta(Buffer.from('[]'))).toMatch(/object/);
    expect(parseMeta(Buffer.from('{"name":"bad name!"}'))).toMatch(/not a valid DNS name/);
    expect(parseMeta(Buffer.from('{"tags":{"a":1}}'))).toMatch(/must be a string/);
    expect(parseMeta(Buffer.from('{"cmd":[1]}'))).toMatch(/cmd/);
  });
});
