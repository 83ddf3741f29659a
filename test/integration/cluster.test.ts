/** The service table across hosts: three daemons in three namespaces on one bridge, joined through one seed,
 * with real programs under appswitch on different hosts. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { MemberView, ServiceView } from '../../src/daemon/control-protocol.js';
import { finish, killTree, sleep, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

let br: TestBridge;
let hosts: TestHost[];

const services = (h: TestHost): Promise<ServiceView[]> => request<ServiceView[]>(h.socket, 'services');
const members = (h: TestHost): Promise<MemberView[]> => request<MemberView[]>(h.socket, 'members');
const has = async (h: TestHost, vip: string, port: number): Promise<boolean> =>
  (await services(h)).some((s) => s.vip === vip && s.port === port);

/** The daemon's 'member state' log lines about `member`. */
function memberLines(h: TestHost, member: string): Array<{ member: string; address: string; state: string; previous: string }> {
  return h.daemonLog
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes('"member state"'))
    .map((l) => JSON.parse(l) as { msg: string; member: string; address: string; state: string; previous: string })
    .filter((l) => l.msg === 'member state' && l.member === member);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

beforeAll(async () => {
  br = new TestBridge('cl');
  hosts = br.hostsOf('cl', 3);
  await hosts[0]!.startDaemon(['--node-name', 'h1']);
  await Promise.all([
    hosts[1]!.startDaemon(['--node-name', 'h2', '--join', '192.0.2.1']),
    hosts[2]!.startDaemon(['--node-name', 'h3', '--join', '192.0.2.1']),
  ]);
  for (const h of hosts) {
    await waitFor(async () => (await members(h)).filter((m) => m.state === 'alive').length === 3, 15_000);
  }
});

afterAll(async () => {
  await br?.destroy();
});

describe('cluster', () => {
  it('joins through one seed: every host sees three alive members', async () => {
    for (const h of hosts) {
      const ms = await members(h);
      expect(ms.map((m) => m.name).sort()).toEqual(['h1', 'h2', 'h3']);
      expect(ms.every((m) => m.state === 'alive')).toBe(true);
    }
    const r = await hosts[2]!.cli(['get', 'members']);
    expect(r.stdout).toMatch(/h1\s+192\.0\.2\.1:7946\s+alive/);
  });

  it('a server on host 1 is reached by its vip from a client on host 3', async () => {
    const [h1, , h3] = hosts as [TestHost, TestHost, TestHost];
    const srv = h1.run(['--ip', '10.0.0.5', '--name', 'web'], ['python3', '-m', 'http.server', '8000']);
    const out = finish(srv, 60_000);
    await waitFor(() => has(h3, '10.0.0.5', 8000), 30_000); /* the program's start and the replication; returns as soon as ready */
    const entry = (await services(h3)).find((s) => s.vip === '10.0.0.5');
    expect(entry?.node).toBe('h1');
    expect(entry?.endpoint).toMatch(/^192\.0\.2\.1:/);
    const c = await h3.runToEnd([], ['curl', '-sS', '-m', '10', 'http://10.0.0.5:8000/']);
    expect(c.code).toBe(0);
    expect(c.stdout).toContain('Directory listing');
    killTree(srv, 'SIGKILL');
    await out;
    await waitFor(async () => !(await has(h3, '10.0.0.5', 8000)), 15_000);
  });

  it('a new entry reaches all three hosts within 1 s (median of 10)', async () => {
    const [h1, h2, h3] = hosts as [TestHost, TestHost, TestHost];
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      const port = 8100 + i;
      const p = h1.run(['--ip', '10.0.1.1'], ['python3', '-c', `import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",${port}))\ns.listen()\ntime.sleep(60)`]);
      const done = finish(p, 90_000);
      await waitFor(() => has(h1, '10.0.1.1', port), 10_000, 5);
      const t0 = Date.now();
      await waitFor(async () => (await has(h2, '10.0.1.1', port)) && (await has(h3, '10.0.1.1', port)), 10_000, 5);
      delays.push(Date.now() - t0);
      killTree(p, 'SIGKILL');
      await done;
    }
    /* each entry arrived within the 10 s wait, far below the 30 s push-pull: it travelled by broadcast. How fast is
     * printed (and measured in bench/), not asserted: a loaded machine is slow, not wrong */
    console.log(`propagation to all hosts, ms: ${delays.join(' ')}; median ${median(delays)}`);
  });

  it('a cut link heals and the tables agree again', async () => {
    const [, h2, h3] = hosts as [TestHost, TestHost, TestHost];
    const s2 = h2.run(['--ip', '10.0.2.2'], ['python3', '-c', 'import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",9200))\ns.listen()\ntime.sleep(120)']);
    const s3 = h3.run(['--ip', '10.0.2.3'], ['python3', '-c', 'import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",9300))\ns.listen()\ntime.sleep(120)']);
    const d2 = finish(s2, 180_000);
    const d3 = finish(s3, 180_000);
    await waitFor(async () => (await has(h2, '10.0.2.3', 9300)) && (await has(h3, '10.0.2.2', 9200)), 5000);
    br.setLink(h3, false);
    // while cut, host 2 declares host 3 dead and withdraws its entries (and vice versa)
    await waitFor(async () => !(await has(h2, '10.0.2.3', 9300)), 20_000, 100);
    const m = (await members(h2)).find((x) => x.name === 'h3');
    expect(['dead', 'suspect']).toContain(m?.state);
    br.setLink(h3, true);
    const t0 = Date.now();
    await waitFor(async () => (await has(h2, '10.0.2.3', 9300)) && (await has(h3, '10.0.2.2', 9200)), 60_000, 100);
    console.log(`partition healed, tables agree after ${Date.now() - t0} ms`);
    const key = (s: ServiceView): string => `${s.node}/${s.vip}:${s.port}`;
    await waitFor(async () => {
      const all = await Promise.all(hosts.map(services));
      const sets = all.map((l) => l.map(key).sort().join(','));
      return sets.every((x) => x === sets[0]);
    }, 30_000, 200);
    killTree(s2, 'SIGKILL');
    killTree(s3, 'SIGKILL');
    await d2;
    await d3;
  });

  it("a dead host's entries disappear from the others within the suspicion timeout", async () => {
    const [h1, , h3] = hosts as [TestHost, TestHost, TestHost];
    const srv = h1.run(['--ip', '10.0.0.6'], ['python3', '-c', 'import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",8000))\ns.listen()\ntime.sleep(120)']);
    const out = finish(srv, 180_000);
    await waitFor(() => has(h3, '10.0.0.6', 8000), 5000);
    const seen = memberLines(h3, 'h1').length;
    const t0 = Date.now();
    killTree(h1.daemon!, 'SIGKILL');
    await waitFor(async () => !(await has(h3, '10.0.0.6', 8000)), 20_000, 50);
    const gone = Date.now() - t0;
    console.log(`dead host's entry withdrawn on host 3 after ${gone} ms`); /* printed, not asserted (timing) */
    await sleep(100);
    expect((await members(h3)).find((m) => m.name === 'h1')?.state).toBe('dead');
    // one log line per state change, with the member's name and address
    const changes = memberLines(h3, 'h1').slice(seen);
    expect(changes.filter((l) => l.state === 'dead')).toHaveLength(1); // usually after a 'suspect' line
    expect(changes.at(-1)).toMatchObject({ state: 'dead', address: '192.0.2.1:7946' });
    killTree(srv, 'SIGKILL');
    await out;
  });

  it('a daemon that stops cleanly announces that it leaves', async () => {
    const [, h2, h3] = hosts as [TestHost, TestHost, TestHost];
    killTree(h2.daemon!, 'SIGTERM');
    await waitFor(async () => (await members(h3)).find((m) => m.name === 'h2')?.state === 'left', 5000, 50);
    await waitFor(() => h2.daemon!.exitCode !== null, 5000);
    expect(h2.daemon!.exitCode).toBe(0);
    await h2.waitForLog('daemon stopped');
    // one line per change (h2 went through the cut-link test before): never the same state twice in a row
    const lines = memberLines(h3, 'h2');
    expect(lines.at(-1)).toMatchObject({ state: 'left', address: '192.0.2.2:7946', previous: 'alive' });
    lines.forEach((l, i) => expect(l.state).not.toBe(i ? lines[i - 1]?.state : l.previous));
  });
});

describe('cluster with a gossip key', () => {
  it('members with the key form a cluster and replicate; a daemon with another key stays out', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const { randomBytes } = await import('node:crypto');
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-key-'));
    const good = path.join(dir, 'good');
    const bad = path.join(dir, 'bad');
    // rotation: the first key encrypts, all decrypt; k1 is shared
    const k1 = randomBytes(32).toString('base64');
    writeFileSync(good, `# keyring\n${k1}\n`);
    const rotated = path.join(dir, 'rotated');
    writeFileSync(rotated, `${k1}\n${randomBytes(32).toString('hex')}\n`); // rotation, step 1: a new key added
    writeFileSync(bad, `${randomBytes(32).toString('base64')}\n`);
    const kb = new TestBridge('ck');
    try {
      const [a, b, c] = kb.hostsOf('ck', 3) as [TestHost, TestHost, TestHost];
      await a.startDaemon(['--node-name', 'k1', '--gossip-key', good]);
      await b.startDaemon(['--node-name', 'k2', '--gossip-key', good, '--join', '192.0.2.1']);
      await c.startDaemon(['--node-name', 'k3', '--gossip-key', bad, '--join', '192.0.2.1']);
      await waitFor(async () => (await members(b)).filter((m) => m.state === 'alive').length === 2, 15_000);
      const srv = a.run(['--ip', '10.0.9.1'], ['python3', '-m', 'http.server', '8000']);
      const out = finish(srv, 60_000);
      await waitFor(() => has(b, '10.0.9.1', 8000), 5000);
      const r = await b.runToEnd([], ['curl', '-sS', '-m', '5', 'http://10.0.9.1:8000/']);
      expect(r.stdout).toContain('Directory listing');
      await sleep(3000);
      expect((await members(a)).map((m) => m.name).sort()).toEqual(['k1', 'k2']);
      expect(await has(c, '10.0.9.1', 8000)).toBe(false);
      killTree(srv, 'SIGKILL');
      await out;
      // a keyring that still encrypts with k1 and also holds the next key joins (first step of a rotation)
      killTree(c.daemon!, 'SIGKILL');
      await waitFor(() => c.daemon!.exitCode !== null || c.daemon!.signalCode !== null, 5000);
      await c.startDaemon(['--node-name', 'k3', '--gossip-key', rotated, '--join', '192.0.2.1']);
      await waitFor(async () => (await members(a)).filter((m) => m.state === 'alive').length === 3, 15_000);
    } finally {
      await kb.destroy();
    }
  });
});
