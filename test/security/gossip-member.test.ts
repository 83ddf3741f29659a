/** Issue 10, item 1(c): a member that holds the cluster key publishes entries that are not its own to publish:
 * endpoints on loopback, link-local, a vip, another node's address, a port outside its pool; and app records with
 * a loopback vip or a node address as identity. Every one must be refused (never applied, logged), while a valid
 * entry of the same member waits for the member's @node record (its pool) and is applied when the record comes.
 * Daemons with DEFAULT flags; the rogue is a real Memberlist on a third host, given the cluster key. Before the fix
 * every entry was applied as it came. */
import { type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idServer, members, services, tally, waitMembers } from '../helpers/gossip-attack.js';
import { killTree, ROOT, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const ROGUE = path.join(ROOT, 'test/helpers/gossip-rogue.mjs');

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;
let h3: TestHost;
const started: ChildProcess[] = [];

beforeAll(async () => {
  br = new TestBridge('gm');
  [h1, h2, h3] = br.hostsOf('gm', 3) as [TestHost, TestHost, TestHost];
  await h1.startDaemon();
  await h2.startDaemon(['--join', '192.0.2.1']);
  await waitMembers([h1, h2], 2);
  started.push(idServer(h1, ['--ip', '10.0.0.5', '--tag', 'team=a'], 8000, 'real-5'));
  await waitFor(async () => (await services(h2)).some((e) => e.vip === '10.0.0.5'), 20_000);
});

afterAll(async () => {
  for (const p of started) killTree(p, 'SIGKILL');
  await br?.destroy();
});

const entry = (key: string, vip: string, ip: string, port: number): unknown => ({
  id: key, vip, port: 8000, proto: 'tcp', node: 'rogue', endpoint: { ip, port }, appId: key.split('/')[1], tags: { team: 'a' }, version: 1,
});

const INVALID: Record<string, unknown> = {
  'rogue/lo/1': entry('rogue/lo/1', '10.0.0.31', '127.0.0.1', 45001),
  'rogue/ll/1': entry('rogue/ll/1', '10.0.0.32', '169.254.7.7', 45001),
  'rogue/vip/1': entry('rogue/vip/1', '10.0.0.33', '10.0.0.5', 8000),
  'rogue/other/1': entry('rogue/other/1', '10.0.0.34', '192.0.2.1', 45001),
  'rogue/pool/1': entry('rogue/pool/1', '10.0.0.35', '192.0.2.3', 80),
  'rogue/hijack/1': entry('rogue/hijack/1', '10.0.0.5', '192.0.2.1', 40000),
  '@app/badvip': { id: 'badvip', node: 'rogue', identity: '127.0.0.1', vip: true, tags: {} },
  '@app/badid': { id: 'badid', node: 'rogue', identity: '192.0.2.1', vip: false, tags: {} },
};

/** Waits until both daemons logged the refusal of each key, then checks each. */
async function expectRefused(keys: string[]): Promise<void> {
  const refused = (h: TestHost, key: string): boolean =>
    h.daemonLog.split('\n').some((l) => l.includes('"record from gossip refused"') && l.includes(`"key":"${key}"`));
  await waitFor(() => keys.every((k) => refused(h1, k) && refused(h2, k)), 15_000).catch(() => undefined);
  for (const h of [h1, h2]) for (const key of keys) expect.soft(refused(h, key), `${key} refused and logged by ${h.address}`).toBe(true);
}

describe('a member with the key publishes entries that are not its own', () => {
  it('invalid entries are refused, a valid one waits for the @node record and is then applied', async () => {
    // the cluster's credentials: its key (a plaintext cluster, before the fix, needed none)
    const key = h1.daemonLog.includes('"gossipKey":"') ? { key: path.join(h1.stateDir, 'gossip.key') } : {};
    const rogue = h3.spawn(
      ['node', ROGUE, JSON.stringify({
        ...key,
        bind: '192.0.2.3', join: '192.0.2.1:7946', name: 'rogue',
        first: { ...INVALID, 'rogue/ok/1': entry('rogue/ok/1', '10.0.0.40', '192.0.2.3', 45001) },
        then: { '@node': { ports: { low: 45000, high: 45100 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53 } },
      })],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    started.push(rogue);
    let out = '';
    rogue.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    rogue.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    await waitFor(() => out.includes('first'), 20_000);
    await waitFor(async () => (await members(h2)).some((m) => m.name === 'rogue' && m.state === 'alive'), 20_000);
    // every invalid record is refused and logged on both daemons (the out-of-pool one once the pool is known)
    await expectRefused(Object.keys(INVALID).filter((k) => k !== 'rogue/pool/1'));
    // the valid entry waits: the rogue's pool is not known yet
    expect((await services(h2)).map((e) => `${e.vip} ${e.endpoint}`)).toEqual([expect.stringMatching(/^10\.0\.0\.5 192\.0\.2\.1:\d+$/)]);
    rogue.stdin?.write('go\n');
    await waitFor(() => out.includes('then'), 30_000);
    await waitFor(async () => (await services(h2)).some((e) => e.vip === '10.0.0.40'), 15_000);
    await expectRefused(['rogue/pool/1']);
    const s = await services(h2);
    expect(s.map((e) => `${e.vip} ${e.endpoint}`).sort()).toEqual(['10.0.0.40 192.0.2.3:45001', expect.stringMatching(/^10\.0\.0\.5 192\.0\.2\.1:\d+$/)].sort());
    expect((await services(h1)).map((e) => e.vip).sort()).toEqual(['10.0.0.40', '10.0.0.5']);
    // legitimate clients still reach only the real server
    const t = await tally(h2, ['--tag', 'team=a'], '10.0.0.5', 8000, 4);
    expect(t.counts, t.raw).toEqual({ 'real-5': 4 });
    rogue.stdin?.end();
  }, 120_000);
});
