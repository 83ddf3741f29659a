/** Issue 10, item 1(b): gossip injection by a process that does not hold the cluster key. Two daemons started with
 * DEFAULT flags (no --gossip-key: each reads STATE-DIR/gossip.key, where the test bridge put a copy of the one
 * cluster key, the documented way to give a node the key) and a forging program built on appswitch's own gossip codec, run plainly in the host's
 * namespace and under `appswitch run`. It announces a fake member and publishes: a vip mapped to a host-loopback
 * service, an extra instance of a real service carrying the attacker's tags, and (under a newer epoch of the real
 * node's name) a re-pointed legitimate vip. The table must not change, and legitimate connects must all reach the
 * real servers. Before the fix (plaintext by default) the fake member joined and the vips were hijacked. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { entryValue, forge, idServer, members, plainServer, services, tally, waitMembers } from '../helpers/gossip-attack.js';
import { killTree, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;
const started: ChildProcess[] = [];

beforeAll(async () => {
  br = new TestBridge('gf');
  [h1, h2] = br.hostsOf('gf', 2) as [TestHost, TestHost];
  await h1.startDaemon(['--node-name', 'g1']);
  await h2.startDaemon(['--node-name', 'g2', '--join', '192.0.2.1']);
  await waitMembers([h1, h2], 2);
  started.push(idServer(h1, ['--ip', '10.0.0.5', '--tag', 'team=a'], 8000, 'real-5'));
  started.push(idServer(h1, ['--ip', '10.0.0.6', '--tag', 'team=a'], 8000, 'real-6'));
  started.push(plainServer(h2, '127.0.0.1', 18080, 'LOOPBACK-SECRET')); /* a host service only loopback may reach */
  started.push(plainServer(h2, '192.0.2.2', 45001, 'EVIL')); /* the attacker's own listener */
  await waitFor(async () => {
    const s = await services(h2);
    return s.some((e) => e.vip === '10.0.0.5') && s.some((e) => e.vip === '10.0.0.6');
  }, 20_000);
});

afterAll(async () => {
  for (const p of started) killTree(p, 'SIGKILL');
  await br?.destroy();
});

/** What host 2 should hold: the two real services, on host 1's address, and nothing else. */
async function assertTableIntact(): Promise<void> {
  const s = await services(h2);
  expect.soft(s.map((e) => `${e.vip}:${e.port} ${e.endpoint.replace(/:\d+$/, '')}`).sort()).toEqual(['10.0.0.5:8000 192.0.2.1', '10.0.0.6:8000 192.0.2.1']);
  expect.soft((await members(h2)).map((m) => m.name).sort()).toEqual(['g1', 'g2']);
  expect.soft((await members(h1)).map((m) => m.name).sort()).toEqual(['g1', 'g2']);
}

async function attack(how: 'plain' | 'trapped', evil: string): Promise<string> {
  const t = Date.now();
  const out = await forge(h2, how, {
    targets: ['192.0.2.2:7946', '192.0.2.1:7946'],
    rounds: 8,
    messages: [
      { kind: 'alive', node: evil, addr: '192.0.2.2:17946', incarnation: 1, epoch: t },
      // a vip mapped to a host-loopback service
      { kind: 'kv', node: evil, epoch: t, version: 1, key: `${evil}/x/1`, value: entryValue(evil, `${evil}/x/1`, '10.0.0.99', 80, { ip: '127.0.0.1', port: 18080 }, { team: 'evil' }) },
      // an instance of the real 10.0.0.5:8000 carrying the attacker's tags, at the attacker's endpoint
      { kind: 'kv', node: evil, epoch: t, version: 1, key: `${evil}/x/2`, value: entryValue(evil, `${evil}/x/2`, '10.0.0.5', 8000, { ip: '192.0.2.2', port: 45001 }, { team: 'evil' }) },
      // the real node's name under a newer epoch: its entries are replaced by a re-pointed 10.0.0.6:8000
      // an instance of the real 10.0.0.6:8000 with the legitimate clients' tags: it takes a share of their connects
      { kind: 'kv', node: evil, epoch: t, version: 1, key: `${evil}/x/4`, value: entryValue(evil, `${evil}/x/4`, '10.0.0.6', 8000, { ip: '192.0.2.2', port: 45001 }, { team: 'a' }) },
      // (sent to host 2 only: host 1 would refute it at once)
      { kind: 'kv', node: 'g1', epoch: t + 1e9, version: 1, key: 'g1/x/3', value: entryValue('g1', 'g1/x/3', '10.0.0.6', 8000, { ip: '192.0.2.2', port: 45001 }, { team: 'a' }), to: ['192.0.2.2:7946'] },
    ],
  });
  if (how === 'trapped') {
    /* a program under appswitch cannot even send there: every member's gossip port is a closed door (EPERM) */
    expect(out).toMatch(/"sent":0/);
    expect(out).toContain('192.0.2.2:7946: EPERM');
    expect(out).toContain('192.0.2.1:7946: EPERM');
    return out;
  }
  expect(out).toMatch(/"sent":[1-9]/); /* the packets left: the daemons received them */
  // the forged datagrams are processed as they arrive: wait until the daemon has seen them (dropped, or applied)
  await waitFor(
    async () => /"gossip: dropped packet"/.test(h2.daemonLog) || (await services(h2)).length !== 2 || (await members(h2)).length !== 2,
    10_000,
  ).catch(() => undefined);
  return out;
}

async function assertConnectsReachRealServers(): Promise<void> {
  const five = await tally(h2, ['--tag', 'team=a'], '10.0.0.5', 8000, 6);
  expect.soft(five.counts, five.raw).toEqual({ 'real-5': 6 });
  const six = await tally(h2, ['--tag', 'team=a'], '10.0.0.6', 8000, 6);
  expect.soft(six.counts, six.raw).toEqual({ 'real-6': 6 });
  // the attacker's tags reach nothing: no instance of 10.0.0.5 carries them
  const evil = await tally(h2, ['--tag', 'team=evil'], '10.0.0.5', 8000, 2);
  expect.soft(evil.counts['real-5'] ?? 0, evil.raw).toBe(0);
  expect.soft(evil.counts.EVIL ?? 0, evil.raw).toBe(0);
  // the loopback service stays out of reach of a vip
  const lo = await tally(h2, ['--tag', 'team=evil'], '10.0.0.99', 80, 1);
  expect.soft(lo.counts['LOOPBACK-SECRET'] ?? 0, lo.raw).toBe(0);
}

describe('gossip injection without the cluster key (default flags)', () => {
  it('the daemons run authenticated by default, from STATE-DIR/gossip.key (a copy of the one cluster key on each host)', () => {
    expect.soft(h1.daemonLog).toMatch(/"gossipKey":"[^"]*gossip\.key"/);
    expect.soft(h2.daemonLog).toMatch(/"gossipKey":"[^"]*gossip\.key"/);
  });

  it('a plain process in the host namespace: fake member, loopback vip, tag override and re-pointed vip are all dropped', async () => {
    await attack('plain', 'evil-plain');
    await assertTableIntact();
    expect.soft(await h2.waitForLog(/"reason":"unencrypted"/).then(() => true, (e: Error) => e.message), 'the refusal is logged').toBe(true);
    await assertConnectsReachRealServers();
  });

  it('the same attack from a program under appswitch run is refused at the switch (EPERM) and changes nothing', async () => {
    await attack('trapped', 'evil-trapped');
    await assertTableIntact();
    await assertConnectsReachRealServers();
  });
});
