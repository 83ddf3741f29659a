/** Attack 1(a) of issue 10: a trapped program sent straight to the daemons' own ports — SWIM gossip (UDP+TCP 7946,
 * unauthenticated without --gossip-key: fake members and service entries), the peer API (TCP 7947), metrics, another
 * node's DNS — on its own node and on every other member, and to other apps' real endpoints (node address : pool
 * port), which bypasses policy (a UDP service has no accept-time check at all). Two daemons on one bridge; every
 * attack runs as a real program under appswitch and must be refused, with nothing arriving (the daemons log every
 * packet or request they drop, and the UDP server counts what it receives). DNS through the resolver path (the
 * mounted resolv.conf: this node's own DNS port) keeps working. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { MemberView, ServiceView, StatusResult } from '../../src/daemon/control-protocol.js';
import { compileHelper, finish, killTree, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

let ATTACK: string;
let br: TestBridge;
let h1: TestHost;
let h2: TestHost;

beforeAll(async () => {
  ATTACK = compileHelper('attack-dos');
  br = new TestBridge('dp');
  [h1, h2] = br.hostsOf('dp', 2) as [TestHost, TestHost];
  await h1.startDaemon(['--metrics-address', '192.0.2.1:9464']);
  await h2.startDaemon(['--join', '192.0.2.1', '--metrics-address', '192.0.2.2:9464']);
  for (const h of [h1, h2]) {
    await waitFor(async () => (await request<MemberView[]>(h.socket, 'members')).filter((m) => m.state === 'alive').length === 2, 15_000);
  }
});

afterAll(async () => {
  await br?.destroy();
});

function watch(p: ChildProcess): { text: () => string } {
  let out = '';
  p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  return { text: () => out };
}

/** One attack step from a program under appswitch on h1 (tag grp=2: outside the victims' policy). */
async function attack(ip: string, port: number, proto: 'udp' | 'tcp'): Promise<string> {
  const r = await h1.runToEnd(['--tag', 'grp=2'], [ATTACK, 'send', ip, String(port), proto], 20_000);
  return (r.stdout.trim() || r.stderr.trim()).replace(/^send /, '');
}

/** What the daemons logged about traffic that reached them from outside the protocol. */
function dropLines(h: TestHost): string[] {
  return h.daemonLog.split('\n').filter((l) => /gossip: dropped packet|bad peer API request|malformed|unidentified connection/.test(l));
}

describe("the daemons' own ports and real service endpoints", () => {
  it('are refused to a trapped program on its own node and on another member; nothing arrives', async () => {
    const steps: Array<[string, number, 'udp' | 'tcp', string]> = [
      ['192.0.2.1', 7946, 'udp', 'EPERM'], // own gossip (SWIM packets)
      ['192.0.2.1', 7946, 'tcp', 'ECONNREFUSED'], // own gossip push-pull
      ['192.0.2.1', 7947, 'tcp', 'ECONNREFUSED'], // own peer API
      ['192.0.2.1', 9464, 'tcp', 'ECONNREFUSED'], // own metrics
      ['192.0.2.2', 7946, 'udp', 'EPERM'], // another member's gossip
      ['192.0.2.2', 7946, 'tcp', 'ECONNREFUSED'],
      ['192.0.2.2', 7947, 'tcp', 'ECONNREFUSED'], // another member's peer API
      ['192.0.2.2', 9464, 'tcp', 'ECONNREFUSED'], // another member's metrics
      ['192.0.2.2', 53, 'udp', 'EPERM'], // another member's DNS (only the own one is the resolver path)
      ['192.0.2.2', 53, 'tcp', 'ECONNREFUSED'],
    ];
    const before = (await request<StatusResult>(h1.socket, 'status')).daemonPortRefused ?? 0;
    const got: string[] = [];
    for (const [ip, port, proto] of steps) got.push(`${ip}:${port}/${proto} ${await attack(ip, port, proto)}`);
    console.log(got.join('\n'));
    expect(got).toEqual(steps.map(([ip, port, proto, want]) => `${ip}:${port}/${proto} ${want}`));
    const after = await request<StatusResult>(h1.socket, 'status');
    expect(after.daemonPortRefused - before).toBe(steps.length);
    await h1.waitForLog('a program may not reach an appswitch daemon port');
    expect(dropLines(h1)).toEqual([]);
    expect(dropLines(h2)).toEqual([]);
    // the cluster is intact
    expect((await request<MemberView[]>(h2.socket, 'members')).filter((m) => m.state === 'alive').length).toBe(2);
  });

  it("another app's real endpoints (node address : pool port) are refused; the vip path applies policy", async () => {
    const udp = h1.run(['--ip', '10.72.0.1', '--name', 'dosudp', '--tag', 'grp=1'], [ATTACK, 'udpsink', '5400', '1000', '120']);
    const udpOut = watch(udp);
    const udpDone = finish(udp, 130_000);
    const tcp = h2.run(['--ip', '10.72.0.2', '--tag', 'grp=1'], ['python3', '-m', 'http.server', '8000', '--bind', '0.0.0.0']);
    const tcpDone = finish(tcp, 130_000);
    try {
      await waitFor(() => udpOut.text().includes('listening 5400'), 30_000);
      const find = async (vip: string, port: number): Promise<ServiceView | undefined> =>
        (await request<ServiceView[]>(h1.socket, 'services')).find((s) => s.vip === vip && s.port === port);
      const u = (await waitFor(() => find('10.72.0.1', 5400), 30_000)) as ServiceView;
      const t = (await waitFor(() => find('10.72.0.2', 8000), 15_000)) as ServiceView;
      const [uip, uport] = u.endpoint.split(':') as [string, string];
      const [tip, tport] = t.endpoint.split(':') as [string, string];
      expect(uip).toBe('192.0.2.1');
      expect(tip).toBe('192.0.2.2');

      // the attacker (grp=2) is denied by policy through the vips...
      expect(await attack('10.72.0.2', 8000, 'tcp')).toBe('ECONNREFUSED');
      // ...and may not go round it to the real endpoints
      expect(await attack(uip, Number(uport), 'udp')).toBe('EPERM');
      expect(await attack(tip, Number(tport), 'tcp')).toBe('ECONNREFUSED');
      // a port of the pool that no service holds (yet) is closed as well
      expect(await attack('192.0.2.1', 59999, 'tcp')).toBe('ECONNREFUSED');
      expect(udpOut.text()).not.toContain('datagram');
      expect(dropLines(h2)).toEqual([]);

      // an allowed client reaches the UDP service by its vip (the one door)
      const ok = await h1.runToEnd(['--tag', 'grp=1'], [ATTACK, 'send', '10.72.0.1', '5400', 'udp'], 20_000);
      expect(ok.stdout.trim()).toBe('send ok');
      await waitFor(() => udpOut.text().includes('datagram 1'), 30_000);
    } finally {
      killTree(udp, 'SIGKILL');
      killTree(tcp, 'SIGKILL');
      await Promise.all([udpDone, tcpDone]);
    }
  });

  it('DNS through the resolver path (this node’s own DNS port) still works', async () => {
    const srv = h2.run(['--name', 'dnsweb'], ['python3', '-m', 'http.server', '8001']);
    const done = finish(srv, 60_000);
    try {
      const vip = await waitFor(async () => (await request<Array<{ name?: string; ip?: string }>>(h2.socket, 'apps')).find((a) => a.name === 'dnsweb')?.ip, 30_000);
      const r = await waitFor(async () => {
        const g = await h1.runToEnd([], ['getent', 'hosts', 'dnsweb'], 15_000);
        return g.stdout.includes(vip as string) ? g.stdout : '';
      }, 15_000);
      console.log('getent under appswitch:', r.trim());
      expect(r).toContain(vip);
    } finally {
      killTree(srv, 'SIGKILL');
      await done;
    }
  });
});
