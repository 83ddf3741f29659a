/** The daemon's DNS server with real trapped clients (getent, Python) in a netns host: forwarders that have no route,
 * refuse, never answer, answer garbage or with the wrong id, or cut a TCP answer short (a fake upstream this test
 * starts, test/helpers/fake-dns.py) — each client gets its answer or SERVFAIL and the daemon keeps serving; and a
 * DNS server on --dns-port 5353 next to a resolver that already holds port 53 (a fake dnsmasq): programs resolve
 * through the virtual DNS address 169.254.0.53 and never reach the host's port 53. */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { AppView } from '../../src/daemon/control-protocol.js';
import { type ChildProcess } from 'node:child_process';
import { CLI, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const FAKE = path.join(ROOT, 'test/helpers/fake-dns.py');
const ASK = path.join(ROOT, 'test/helpers/dns-ask.py');

interface Asked {
  name: string;
  rcode: number | string;
  tc?: boolean;
  answers?: string[];
  peer?: [string, number];
}

/** Starts the fake upstream in the host's namespace (not under appswitch: it plays the network); resolves once it
 * listens. `seen()` is what it has read so far ("q udp ok", ...). */
async function fakeUpstream(h: TestHost, address: string, port: number): Promise<{ p: ChildProcess; seen: () => string[] }> {
  const p = h.spawn(['python3', '-u', FAKE, address, String(port)]);
  let out = '';
  p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  await waitFor(() => out.includes('ready'), 15_000);
  return { p, seen: () => out.split('\n').filter((l) => l.startsWith('q ')) };
}

/** Runs dns-ask.py under appswitch on `h`; one result per name, in order. */
async function ask(h: TestHost, names: string[], opts: string[] = []): Promise<Asked[]> {
  const r = await h.runToEnd([], ['python3', ASK, ...opts, ...names], 90_000);
  const lines = r.stdout.trim().split('\n').filter(Boolean);
  if (lines.length !== names.length) throw new Error(`dns-ask: ${r.stdout}\n${r.stderr}`);
  return lines.map((l) => JSON.parse(l) as Asked);
}

async function alive(h: TestHost): Promise<boolean> {
  return h.daemon?.exitCode === null && h.daemon.signalCode === null && (await h.cli(['status', '--json'])).code === 0;
}

async function appVip(h: TestHost, name: string): Promise<string> {
  return (await waitFor(async () => (await request<AppView[]>(h.socket, 'apps')).find((a) => a.name === name)?.ip, 15_000)) as string;
}

describe('forwarder faults, with the real daemon and trapped clients', () => {
  let h: TestHost;
  let fake: Awaited<ReturnType<typeof fakeUpstream>>;
  let vip: string;

  beforeAll(async () => {
    h = TestHost.create('dnsf');
    fake = await fakeUpstream(h, '127.0.0.1', 5300);
    // tried in order: no route in this namespace (UDP connect fails), nothing listening (ICMP port unreachable), the fake
    await h.startDaemon(['--dns-servers', '198.51.100.1', '--dns-servers', '127.0.0.1:5301', '--dns-servers', '127.0.0.1:5300']);
    h.run(['--name', 'web'], ['python3', '-m', 'http.server', '8000']);
    vip = await appVip(h, 'web');
  });

  afterAll(async () => {
    await h?.destroy();
  });

  it('a forwarder with no route costs that forwarder, not the daemon (issue 11 item 4)', async () => {
    expect(() => execFileSync('ip', ['-n', h.ns, 'route', 'get', '198.51.100.1'], { stdio: 'pipe' })).toThrow(); /* really no route */
    const g = await h.runToEnd([], ['getent', 'hosts', 'unknown.example'], 60_000);
    expect(g.code).toBe(2); /* REFUSED from the fake: not found */
    expect(await alive(h)).toBe(true);
    const web = await h.runToEnd([], ['getent', 'hosts', 'web'], 30_000);
    expect(web.stdout.trim().split(/\s+/)[0]).toBe(vip);
    const [ok] = await ask(h, ['ok.test']);
    expect(ok).toMatchObject({ rcode: 0, answers: ['203.0.113.5'] }); /* past the unroutable and the refusing forwarder */
    expect(fake.seen()).toContain('q udp ok');
  });

  it('garbage, wrong ids, a black hole and a cut TCP answer: each client gets its answer or SERVFAIL, and everyone else is served meanwhile', async () => {
    const names = ['hole.test', 'garbage.test', 'onlywrong.test', 'wrongid.test', 'nx.test', 'cut.test', 'tcpok.test', 'ok.test', 'web'];
    const r = Object.fromEntries((await ask(h, names)).map((x) => [x.name, x]));
    expect(r['hole.test']).toMatchObject({ rcode: 2 }); /* SERVFAIL after the forward timeout */
    expect(r['garbage.test']).toMatchObject({ rcode: 2 });
    expect(r['onlywrong.test']).toMatchObject({ rcode: 2 });
    expect(r['wrongid.test']).toMatchObject({ rcode: 0, answers: ['203.0.113.6'] }); /* the wrong one ignored, the right one used */
    expect(r['nx.test']).toMatchObject({ rcode: 3 });
    expect(r['cut.test']).toMatchObject({ rcode: 0, tc: true }); /* the TCP retry failed: the truncated answer is passed on */
    expect(r['tcpok.test']).toMatchObject({ rcode: 0, tc: false, answers: ['203.0.113.7'] });
    expect(r['ok.test']).toMatchObject({ rcode: 0, answers: ['203.0.113.5'] });
    expect(r['web']).toMatchObject({ rcode: 0, answers: [vip] });
    expect(fake.seen()).toEqual(expect.arrayContaining(['q udp hole', 'q udp garbage', 'q tcp cut', 'q tcp tcpok']));
    // the SERVFAILs are logged with every forwarder's failure
    await h.waitForLog(/"failures":\["198\.51\.100\.1:53 (ENETUNREACH|EHOSTUNREACH)","127\.0\.0\.1:5301 ECONNREFUSED","127\.0\.0\.1:5300 timeout"\]/);
    expect(await alive(h)).toBe(true);
  });

  it('queries over TCP: forwarded (a cut upstream answer leaves the truncated one), answered locally, SERVFAIL for a black hole', async () => {
    const r = await ask(h, ['ok.test', 'cut.test', 'web', 'hole.test'], ['--tcp']);
    expect(r[0]).toMatchObject({ rcode: 0, answers: ['203.0.113.5'] });
    expect(r[1]).toMatchObject({ rcode: 0, tc: true });
    expect(r[2]).toMatchObject({ rcode: 0, answers: [vip] });
    expect(r[3]).toMatchObject({ rcode: 2 });
    expect(await alive(h)).toBe(true);
    // none of this was an unexpected exception: every fault is an ordinary outcome
    expect(h.daemonLog).not.toMatch(/internal error/i);
    const status = JSON.parse((await h.cli(['status', '--json'])).stdout) as { internalErrors: Record<string, number> };
    expect(Object.values(status.internalErrors).reduce((x, y) => x + y, 0)).toBe(0);
  });
});

describe('--dns-port 5353 next to a resolver on port 53 (issue 11 item 7)', () => {
  let h: TestHost;
  let dnsmasq: Awaited<ReturnType<typeof fakeUpstream>>;
  let vip: string;

  beforeAll(async () => {
    h = TestHost.create('dnsp');
    dnsmasq = await fakeUpstream(h, '0.0.0.0', 53); /* the host's own resolver, on every address's port 53 */
    await h.startDaemon(['--dns-port', '5353', '--dns-servers', '127.0.0.1', '--metrics-address', '127.0.0.1:9464']); /* it forwards to the host's resolver */
    h.run(['--name', 'web'], ['python3', '-m', 'http.server', '8000']);
    vip = await appVip(h, 'web');
  });

  afterAll(async () => {
    await h?.destroy();
  });

  it("programs' resolv.conf names the virtual DNS address; getent and Python resolve app names; outside names go through the host's resolver", async () => {
    const conf = await h.runToEnd([], ['cat', '/etc/resolv.conf']);
    expect(conf.stdout).toContain('nameserver 169.254.0.53');
    const g = await h.runToEnd([], ['getent', 'hosts', 'web'], 30_000);
    expect(g.stdout.trim().split(/\s+/)[0]).toBe(vip);
    const py = await h.runToEnd([], ['python3', '-c', 'import socket; print(socket.gethostbyname("web"))'], 30_000);
    expect(py.stdout.trim()).toBe(vip);
    const [udp] = await ask(h, ['ok.test']);
    expect(udp).toMatchObject({ rcode: 0, answers: ['203.0.113.5'], peer: ['169.254.0.53', 53] });
    const [tcp] = await ask(h, ['web'], ['--tcp']);
    expect(tcp).toMatchObject({ rcode: 0, answers: [vip], peer: ['169.254.0.53', 53] });
    // the host's resolver saw only what the daemon forwarded, never a program's own query for an app name
    expect(dnsmasq.seen()).toContain('q udp ok');
    expect(dnsmasq.seen().filter((l) => / web$/.test(l))).toEqual([]);
    expect(await alive(h)).toBe(true);
    const metrics = await h.exec(['curl', '-sS', 'http://127.0.0.1:9464/metrics']);
    expect(metrics.stdout).toContain('appswitch_internal_errors_total{module="dns"} 0');
  });

  it('other ports of the virtual address are refused; another address of the identity range reaches nothing', async () => {
    const py = (dst: string, port: number): string =>
      `import socket\ns=socket.socket()\ns.settimeout(10)\ntry:\n  s.connect(("${dst}",${port})); print("connected")\nexcept OSError as e: print(e.errno)`;
    const other = await h.runToEnd([], ['python3', '-c', py('169.254.0.53', 80)], 30_000);
    expect(other.stdout.trim()).toBe('111'); /* ECONNREFUSED */
    const r = await ask(h, ['web'], ['--server', '169.254.0.54', '--timeout', '3']);
    expect(r[0]?.rcode).toMatch(/^error: .*(refused|Errno 111)/i);
  });
});

describe('a host with no address but loopback (a laptop offline), default flags', () => {
  let h: TestHost;
  let vip: string;

  beforeAll(async () => {
    h = TestHost.create('dnslo');
    execFileSync('ip', ['-n', h.ns, 'link', 'del', 'v0']); /* only lo is left: the daemon's default node address is 127.0.0.1 */
    const d = h.spawn(['node', CLI, 'daemon', '--state-dir', h.stateDir, '--log-level', 'warn']);
    h.daemon = d;
    await waitFor(async () => (await h.cli(['status', '--json'])).code === 0, 15_000, 100);
    h.run(['--name', 'web'], ['python3', '-m', 'http.server', '8000']);
    vip = await appVip(h, 'web');
  });

  afterAll(async () => {
    await h?.destroy();
  });

  it('programs resolve names through the virtual DNS address (127.0.0.1 would be their own loopback) and reach the app', async () => {
    const st = JSON.parse((await h.cli(['status', '--json'])).stdout) as { nodeAddress?: string };
    expect(st.nodeAddress).toBe('127.0.0.1');
    const conf = await h.runToEnd([], ['cat', '/etc/resolv.conf']);
    expect(conf.stdout).toContain('nameserver 169.254.0.53');
    const g = await h.runToEnd([], ['getent', 'hosts', 'web'], 30_000);
    expect(g.stdout.trim().split(/\s+/)[0]).toBe(vip);
    const c = await h.runToEnd([], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', 'http://web:8000/'], 30_000);
    expect(c.stdout.trim(), c.stderr).toBe('200');
    expect(await alive(h)).toBe(true);
  });
});
