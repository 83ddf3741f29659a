/** Policy rules, the load balancer and the app directory. */
import { describe, expect, it } from 'vitest';
import { defaultPolicy, SharedTagPolicy } from '../../src/policy/policy.js';
import { Balancer } from '../../src/table/balancer.js';
import { AppDirectory } from '../../src/table/directory.js';
import type { ServiceEntry } from '../../src/table/service-table.js';

const party = (tags: Record<string, string>, identity = '10.0.0.1'): { appId: string; identity: string; tags: Record<string, string> } => ({
  appId: 'x',
  identity,
  tags,
});

describe('SharedTagPolicy', () => {
  const p = new SharedTagPolicy();
  it('allows a shared K=V and refuses otherwise', () => {
    expect(p.decide(party({ grp: '1' }), party({ grp: '1', env: 'x' })).allow).toBe(true);
    expect(p.decide(party({ grp: '1' }), party({ grp: '2' })).allow).toBe(false);
    expect(p.decide(party({ grp: '1' }), party({ team: '1' })).allow).toBe(false);
  });
  it('treats an app without tags as zone=default', () => {
    expect(p.decide(party({}), party({})).allow).toBe(true);
    expect(p.decide(party({}), party({ zone: 'default' })).allow).toBe(true);
    expect(p.decide(party({}), party({ grp: '1' })).allow).toBe(false);
  });
  it('lets members of one distributed app reach each other (default policy)', () => {
    expect(defaultPolicy().decide(party({ a: '1' }, '10.0.0.7'), party({ b: '2' }, '10.0.0.7')).allow).toBe(true);
    expect(defaultPolicy().decide(party({ a: '1' }, '10.0.0.7'), party({ b: '2' }, '10.0.0.8')).allow).toBe(false);
  });
});

function inst(port: number): ServiceEntry {
  return { id: `n/${port}`, vip: '10.0.0.5', port: 80, proto: 'tcp', node: 'n', endpoint: { ip: '192.0.2.1', port }, appId: 'a', tags: {}, version: 1 };
}

describe('Balancer', () => {
  const xs = [inst(1), inst(2), inst(3)];
  it('round-robin cycles', () => {
    const b = new Balancer();
    expect([0, 1, 2, 3].map(() => b.pick(xs, 'round-robin', 'k')?.endpoint.port)).toEqual([1, 2, 3, 1]);
  });
  it('least-conn and p2c prefer the less loaded instance', () => {
    const b = new Balancer();
    b.setInflight(new Map([['192.0.2.1:1', 5], ['192.0.2.1:2', 0], ['192.0.2.1:3', 9]]));
    expect(b.pick(xs, 'least-conn', 'k')?.endpoint.port).toBe(2);
    const counts = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const p = b.pick(xs, 'p2c', 'k')!.endpoint.port;
      counts.set(p, (counts.get(p) ?? 0) + 1);
    }
    expect(counts.get(3) ?? 0).toBe(0); // the most loaded never wins a pair
    expect(counts.get(2)!).toBeGreaterThan(counts.get(1)!);
  });
  it('random covers every instance; an empty list gives nothing', () => {
    const b = new Balancer();
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(b.pick(xs, 'random', 'k')!.endpoint.port);
    expect(seen.size).toBe(3);
    expect(b.pick([], 'p2c', 'k')).toBeUndefined();
  });
});

describe('AppDirectory', () => {
  it('assigns a stable vip per name, shared by instances, unique against other names', () => {
    const d = new AppDirectory();
    const v = d.vipForName('web', '10.0.0.0/8');
    expect(d.vipForName('web', '10.0.0.0/8')).toBe(v);
    d.put({ id: 'a', node: 'n1', identity: v, vip: true, name: 'web', tags: {} });
    expect(d.vipForName('web', '10.0.0.0/8')).toBe(v);
    expect(d.vipsOf('web')).toEqual([v]);
    expect(d.nameOf(v)).toBe('web');
    // a tiny range forces probing past an address another name holds
    const small = new AppDirectory();
    const first = small.vipForName('a', '10.9.9.0/30');
    small.put({ id: '1', node: 'n', identity: first, vip: true, name: 'a', tags: {} });
    const second = small.vipForName('b', '10.9.9.0/30');
    expect(second).not.toBe(first);
    small.put({ id: '2', node: 'n', identity: second, vip: true, name: 'b', tags: {} });
    expect(() => small.vipForName('c', '10.9.9.0/30')).toThrow(RangeError);
    small.removeNode('n');
    expect(small.all()).toEqual([]);
  });
});
