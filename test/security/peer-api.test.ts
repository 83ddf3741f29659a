/** Issue 10, item 6: the peer API (TCP 7947) answered anyone, and its answers "claim" a client's record, so a
 * process that asked about every ephemeral port learnt other apps' identities and made legitimate accepts fail (3
 * of 5 --no-fastpath connections dropped). Daemons with DEFAULT flags; three attackers ask at once, the whole time
 * legitimate clients connect: a process on host 1 without the key, one on host 2 (a member address) without the
 * key, and one on host 3 (not a member) WITH a copy of the key. None may get an answer, and every legitimate
 * connection must succeed, same-host and cross-host. */
import { copyFileSync, existsSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idServer, services, tally, waitMembers } from '../helpers/gossip-attack.js';
import { killTree, ROOT, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const SPAM = path.join(ROOT, 'test/helpers/peer-spam.mjs');
const LOW = 33000;
const HIGH = 33019;

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;
let h3: TestHost;
const started: ChildProcess[] = [];

beforeAll(async () => {
  br = new TestBridge('pa');
  [h1, h2, h3] = br.hostsOf('pa', 3) as [TestHost, TestHost, TestHost];
  await h1.startDaemon();
  await h2.startDaemon(['--join', '192.0.2.1']);
  await waitMembers([h1, h2], 2);
  // host 1's clients leave from 20 ports only, so that asking about all of them takes no time
  const r = await h1.exec(['sysctl', '-w', `net.ipv4.ip_local_port_range=${LOW} ${HIGH}`]);
  expect(r.code, r.stderr).toBe(0);
  started.push(idServer(h1, ['--ip', '10.0.0.7', '--tag', 'team=a', '--no-fastpath'], 8000, 'same-host'));
  started.push(idServer(h2, ['--ip', '10.0.0.8', '--tag', 'team=a'], 8000, 'cross-host'));
  await waitFor(async () => {
    const s = await services(h1);
    return s.some((e) => e.vip === '10.0.0.7') && s.some((e) => e.vip === '10.0.0.8');
  }, 20_000);
});

afterAll(async () => {
  for (const p of started) killTree(p, 'SIGKILL');
  await br?.destroy();
});

interface SpamResult {
  requests: number;
  answers: number;
  identities: string[];
  connects: number;
}

async function spam(h: TestHost, keyFile: string | undefined, ms: number): Promise<SpamResult> {
  const spec: Record<string, unknown> = { target: '192.0.2.1:7947', ip: '192.0.2.1', low: LOW, high: HIGH, ms };
  if (keyFile) spec.key = keyFile;
  const r = await h.exec(['node', SPAM, JSON.stringify(spec)], ms + 30_000);
  return JSON.parse(r.stdout.trim() || '{"requests":-1,"answers":-1,"identities":[],"connects":0}') as SpamResult;
}

describe('peer API attacks (default flags)', () => {
  it('no answer without the key or from a non-member, and every legitimate --no-fastpath connection succeeds', async () => {
    const stolen = path.join(h3.stateDir, 'stolen.key');
    const key = path.join(h1.stateDir, 'gossip.key');
    if (existsSync(key)) copyFileSync(key, stolen);
    const attackers = Promise.all([
      spam(h1, undefined, 20_000), /* same host as the clients, no key */
      spam(h2, undefined, 20_000), /* from a member's address, no key */
      spam(h3, existsSync(stolen) ? stolen : undefined, 20_000), /* not a member, with the key */
    ]);
    await new Promise((r) => setTimeout(r, 1000)); /* let them connect and start asking */
    const same = await tally(h1, ['--tag', 'team=a', '--no-fastpath'], '10.0.0.7', 8000, 5);
    const cross = await tally(h1, ['--tag', 'team=a', '--no-fastpath'], '10.0.0.8', 8000, 5);
    const [local, member, outsider] = await attackers;
    expect(local.requests).toBeGreaterThan(0);
    expect.soft(local, 'host 1, no key').toMatchObject({ answers: 0, identities: [] });
    expect.soft(member, 'host 2, no key').toMatchObject({ answers: 0, identities: [] });
    expect.soft(outsider, 'host 3 (not a member), with the key').toMatchObject({ answers: 0, identities: [] });
    expect.soft(same.counts, same.raw).toEqual({ 'same-host': 5 });
    expect.soft(cross.counts, cross.raw).toEqual({ 'cross-host': 5 });
    // the requests were seen and dropped: counted and logged (rate-limited), not silently lost
    await h1.waitForLog(/peer API request dropped/);
  });
});
