/** Events and edges end to end (docs/events.md): two daemons on a bridge (namespaces this file creates and removes),
 * real programs under appswitch connecting by name — over the fast path, over TCP (--no-fastpath), across hosts — a
 * client denied by policy and a connect to a port nobody serves. Asserted: what a subscriber of `appswitch events
 * --json` sees, the edges at node and cluster scope (the other node's edges present), the Prometheus series with
 * names, names in `get connections` (and --watch), and that a subscriber that never reads does not make the daemon
 * grow while 20k events flow (its queue is bounded: what it missed is reported as events.lost). */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { MemberView } from '../../src/daemon/control-protocol.js';
import type { AppswitchEvent, EdgesView, EdgeView } from '../../src/events/types.js';
import { CLI, finish, killTree, ROOT, sleep, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const METRICS = 9464;
const API = '10.0.0.5';
const ECHO = path.join(ROOT, 'test/helpers/echo-server.py');

/** Connects n times to host:port (echoing a word each time); then tries each extra "host:port" once and reports what
 * happened; then, with a hold file, keeps one more connection open until that file exists. */
const CLIENT = `
import errno, os, socket, sys, time
host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ok = 0
for i in range(n):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"ping")
        ok += s.recv(16) == b"ping"
res = ["ok=%d" % ok]
for hp in sys.argv[5:]:
    h, p = hp.rsplit(":", 1)
    try:
        socket.create_connection((h, int(p)), timeout=5).close()
        res.append(hp + "=connected")
    except OSError as e:
        res.append(hp + "=" + errno.errorcode.get(e.errno, str(e.errno)))
held = socket.create_connection((host, port), timeout=10) if hold != "-" else None
print(" ".join(res), flush=True)
while hold != "-" and not os.path.exists(hold):
    time.sleep(0.05)
`;

/** n connects to a port nobody serves: each is refused at once (an event each). */
const FLOOD = `
import socket, sys
n, r = int(sys.argv[1]), 0
for i in range(n):
    s = socket.socket()
    try:
        s.connect(("${API}", 9998))
    except ConnectionRefusedError:
        r += 1
    finally:
        s.close()
print("refused=%d" % r, flush=True)
`;

/** A subscriber over the control socket that reads its first line, then nothing until a file appears; then reads
 * what is waiting for 2 s and reports how many events it got and how many it was told it lost. */
const STALLED = `
import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(sys.argv[1])
s.sendall(b'{"id":1,"method":"events","params":{"types":["connect.refused"]}}\\n')
buf = b""
while b"\\n" not in buf:
    buf += s.recv(1)
print("subscribed", buf.decode().strip(), flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
s.settimeout(2)
buf = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
except socket.timeout:
    pass
n = lost = 0
for line in buf.split(b"\\n"):
    if not line.strip():
        continue
    e = json.loads(line)
    if e["type"] == "events.lost":
        lost += e["lost"]
    else:
        n += 1
print("events=%d lost=%d" % (n, lost), flush=True)
`;

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;
let dir: string;
/** Everything `appswitch events --json` on h1 printed. */
const seen: AppswitchEvent[] = [];
let follower: ChildProcess;
let textFollower: ChildProcess;
let textOut = '';
const servers: ChildProcess[] = [];

function lines(p: ChildProcess, onLine: (l: string) => void): void {
  let buf = '';
  p.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}

/** Runs the client script as app `name` (extra appswitch flags) on host h. */
function client(h: TestHost, appArgs: string[], args: string[]): ChildProcess {
  return h.run(appArgs, ['python3', '-c', CLIENT, ...args]);
}

async function firstLine(p: ChildProcess, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no output')), timeoutMs);
    let done = false;
    lines(p, (l) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      resolve(l);
    });
  });
}

/** The edges through the control socket's newline-JSON protocol (`edges` method; the HTTP API's GET /v1/edges serves
 * the same view). */
function edges(h: TestHost, scope?: 'node' | 'cluster'): Promise<EdgesView> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(h.socket);
    let buf = '';
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify({ id: 1, method: 'edges', params: scope ? { scope } : {} }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      s.destroy();
      const r = JSON.parse(buf.slice(0, i)) as { result?: EdgesView; error?: { message: string } };
      if (r.result) resolve(r.result);
      else reject(new Error(r.error?.message ?? 'no answer'));
    });
    s.on('error', reject);
  });
}

const edgeOf = (v: EdgesView, client: string, port: number): EdgeView | undefined =>
  v.edges.find((e) => (e.client.name ?? e.client.identity) === client && e.service.vip === API && e.service.port === port);

async function scrape(): Promise<Map<string, number>> {
  const r = await h1.exec(['curl', '-sS', '-m', '5', `http://${h1.address}:${METRICS}/metrics`]);
  expect(r.code, r.stderr).toBe(0);
  const m = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-events-'));
  br = new TestBridge('ev');
  [h1, h2] = br.hostsOf('ev', 2) as [TestHost, TestHost];
  await h1.startDaemon(['--node-name', 'e1', '--metrics-address', `${h1.address}:${METRICS}`]);
  await h2.startDaemon(['--node-name', 'e2', '--join', h1.address]);
  for (const h of [h1, h2]) await waitFor(async () => (await request<MemberView[]>(h.socket, 'members')).filter((m) => m.state === 'alive').length === 2, 15_000);
  follower = h1.spawn(['node', CLI, 'events', '--json']);
  lines(follower, (l) => {
    if (l.trim()) seen.push(JSON.parse(l) as AppswitchEvent);
  });
  textFollower = h1.spawn(['node', CLI, 'events', '--app', 'intruder', '--type', 'connect.denied,connect.allowed']);
  textFollower.stdout?.on('data', (d: Buffer) => (textOut += d.toString()));
  /* the followers are subscribed once they see an app start (a program that ends at once) */
  await waitFor(async () => {
    await h1.runToEnd(['--name', 'hello'], ['true'], 10_000);
    return seen.some((e) => e.type === 'app.started' && e.client?.name === 'hello');
  }, 20_000, 100);
  const api = h1.run(['--ip', API, '--name', 'api', '--tag', 'zone=shop'], ['python3', ECHO, '8080']);
  servers.push(api);
  await h2.waitService(API, 8080, 20_000);
  await waitFor(() => seen.some((e) => e.type === 'service.up' && e.service?.vip === API && e.service.port === 8080), 10_000);
}, 60_000);

afterAll(async () => {
  for (const p of [follower, textFollower, ...servers]) if (p) killTree(p, 'SIGKILL');
  await br?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('events and edges, two nodes', () => {
  it('connects by name over the fast path, TCP and across hosts; a denial; a refusal: events, edges, metrics', async () => {
    const hold = path.join(dir, 'release');
    const web = client(h1, ['--name', 'web', '--tag', 'zone=shop'], ['api', '8080', '5', hold, `${API}:9999`]);
    expect(await firstLine(web)).toBe(`ok=5 ${API}:9999=ECONNREFUSED`);
    /* its edge at once (the generator's batch comes within 20 ms): six connections (one still open), a rate */
    const early = await waitFor(async () => {
      const e = edgeOf(await edges(h1, 'node'), 'web', 8080);
      return e?.connections === 6 ? e : undefined;
    }, 10_000);
    expect(early?.ratePerSecond).toBeGreaterThan(0);
    const webtcp = await finish(client(h1, ['--name', 'webtcp', '--tag', 'zone=shop', '--no-fastpath'], ['api', '8080', '3', '-']), 30_000);
    const remote = await finish(client(h2, ['--name', 'remote', '--tag', 'zone=shop'], ['api', '8080', '4', '-']), 30_000);
    const intruder = await finish(client(h1, ['--name', 'intruder', '--ip', '10.0.1.9', '--tag', 'zone=other'], [API, '8080', '0', '-', `${API}:8080`]), 30_000);
    expect(webtcp.stdout.trim(), webtcp.stderr).toBe('ok=3');
    expect(remote.stdout.trim(), remote.stderr).toBe('ok=4');
    expect(intruder.stdout.trim(), intruder.stderr).toBe(`ok=0 ${API}:8080=ECONNREFUSED`);

    /* the subscriber's events (connects decided in generators arrive in their batches, a moment later) */
    const allowed = (name: string): AppswitchEvent[] => seen.filter((e) => e.type === 'connect.allowed' && e.client?.name === name);
    await waitFor(() => allowed('web').length === 6 && allowed('webtcp').length === 3, 10_000);
    for (const e of allowed('web')) {
      expect(e).toMatchObject({ node: 'e1', path: 'fastpath', service: { vip: API, port: 8080, name: 'api' }, client: { name: 'web', node: 'e1' } });
      expect(e.endpoint).toMatch(/^192\.0\.2\.1:\d+$/);
    }
    for (const e of allowed('webtcp')) expect(e).toMatchObject({ path: 'tcp', service: { vip: API, port: 8080, name: 'api' } });
    expect(allowed('remote')).toHaveLength(0); /* decided and seen on e2 */
    const denied = await waitFor(() => seen.find((e) => e.type === 'connect.denied'), 10_000);
    expect(denied).toMatchObject({ client: { name: 'intruder', identity: '10.0.1.9', node: 'e1' }, service: { vip: API, port: 8080, name: 'api' }, detail: 'policy' });
    const refused = await waitFor(() => seen.find((e) => e.type === 'connect.refused' && e.client?.name === 'web'), 10_000);
    expect(refused).toMatchObject({ service: { vip: API, port: 9999 }, detail: 'no such service' });
    for (const name of ['api', 'web', 'webtcp', 'intruder']) expect(seen.some((e) => e.type === 'app.started' && e.client?.name === name), name).toBe(true);
    expect(seen.some((e) => e.type === 'app.started' && e.client?.name === 'remote' && e.client.node === 'e2')).toBe(true);
    const seqs = seen.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    /* the text follower filtered on intruder: its denial, nobody else's connects */
    await waitFor(() => /connect\.denied {2}client intruder \(10\.0\.1\.9\) -> api 10\.0\.0\.5:8080 {2}policy/.test(textOut), 5000);
    expect(textOut).not.toMatch(/client web /);

    /* edges: node scope on e1 has e1's clients; cluster scope adds e2's. `active` counts the connections the last
     * sweep found open: on a loaded machine the sweep is paced (daemon/sweep-pace.ts), so wait for one that saw the
     * closes */
    const swept = (v: EdgesView): boolean => edgeOf(v, 'web', 8080)?.active === 1 && edgeOf(v, 'webtcp', 8080)?.active === 0;
    let node = await edges(h1, 'node');
    for (const end = Date.now() + 15_000; !swept(node) && Date.now() < end; node = await edges(h1, 'node')) await sleep(100);
    expect(node.scope).toBe('node');
    expect(edgeOf(node, 'web', 8080)).toMatchObject({ connections: 6, fastpath: 6, tcp: 0, active: 1, refused: 0, denied: 0, service: { name: 'api' }, client: { node: 'e1' } });
    expect(edgeOf(node, 'web', 9999)).toMatchObject({ connections: 0, refused: 1 });
    expect(edgeOf(node, 'webtcp', 8080)).toMatchObject({ connections: 3, tcp: 3, fastpath: 0, active: 0 });
    expect(edgeOf(node, 'intruder', 8080)).toMatchObject({ connections: 0, denied: 1 });
    expect(edgeOf(node, 'remote', 8080)).toBeUndefined();
    const cluster = await edges(h1);
    expect(cluster).toMatchObject({ scope: 'cluster', node: 'e1', missing: [], truncated: [] });
    expect(edgeOf(cluster, 'remote', 8080)).toMatchObject({ connections: 4, tcp: 4, client: { node: 'e2' }, service: { name: 'api' } });
    expect(edgeOf(cluster, 'web', 8080)?.connections).toBe(6);
    const fromE2 = await edges(h2, 'cluster');
    expect(edgeOf(fromE2, 'web', 8080)?.connections).toBe(6);

    /* Prometheus on e1: names as labels */
    const m = await scrape();
    expect(m.get('appswitch_edge_connections_total{client_app="web",service="api"}')).toBe(6);
    expect(m.get('appswitch_edge_connections_total{client_app="webtcp",service="api"}')).toBe(3);
    expect(m.get('appswitch_edge_denied_total{client_app="intruder",service="api"}')).toBe(1);
    expect(m.get('appswitch_edge_refused_total{client_app="web",service="api"}')).toBe(1); /* 9999: the vip's app */
    expect(m.get('appswitch_edge_active{client_app="web",service="api"}')).toBe(1);
    expect(m.get('appswitch_edge_connections_total{client_app="other",service="other"}')).toBe(0);

    /* get connections: names; --watch prints the table and keeps going */
    const conns = JSON.parse((await h1.cli(['get', 'connections', '--json'])).stdout) as Array<{ clientName: string | null; serverName: string | null; path: string }>;
    expect(conns).toContainEqual(expect.objectContaining({ clientName: 'web', serverName: 'api', path: 'fastpath' }));
    const watch = h1.spawn(['node', CLI, 'get', 'connections', '--watch', '--json']);
    const firstTable = JSON.parse(await firstLine(watch, 10_000)) as Array<{ clientName: string | null }>;
    killTree(watch, 'SIGKILL');
    expect(firstTable.some((c) => c.clientName === 'web')).toBe(true);
    const text = await h1.cli(['get', 'connections']);
    expect(text.stdout).toMatch(/web \(169\.254\.\d+\.\d+\)|web \(10\.\d+\.\d+\.\d+\)/);

    writeFileSync(hold, '');
    expect((await finish(web, 10_000)).code).toBe(0);
  });

  it('a subscriber that never reads: the daemon stays bounded while 20k events flow, and the reader is told what it lost', async () => {
    const pid = h1.daemon?.pid as number;
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('daemon');
    const go = path.join(dir, 'read-now');
    const stalled = h1.spawn(['python3', '-c', STALLED, h1.socket, go]);
    const subscribed = await firstLine(stalled, 10_000);
    expect(subscribed).toBe('subscribed {"id":1,"result":{"stream":"events"}}');
    const out = finish(stalled, 60_000);
    /* warm up (the code paths, the heap) and take the baseline */
    expect((await h1.runToEnd(['--name', 'flood', '--tag', 'zone=shop'], ['python3', '-c', FLOOD, '1000'], 30_000)).stdout).toContain('refused=1000');
    const before = rssKb(pid);
    const flood = await h1.runToEnd(['--name', 'flood', '--tag', 'zone=shop'], ['python3', '-c', FLOOD, '20000'], 50_000);
    expect(flood.stdout, flood.stderr).toContain('refused=20000');
    const floodRefused = async (): Promise<number> =>
      (await edges(h1, 'node')).edges.filter((e) => e.client.name === 'flood' && e.service.port === 9998).reduce((n, e) => n + e.refused, 0);
    await waitFor(async () => (await floodRefused()) === 21_000, 10_000);
    const after = rssKb(pid);
    expect(after - before, `VmRSS ${before} kB -> ${after} kB`).toBeLessThan(96 * 1024);
    writeFileSync(go, '');
    const r = await out;
    const m = /events=(\d+) lost=(\d+)/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    const [got, lost] = [Number(m?.[1]), Number(m?.[2])];
    expect(got + lost).toBe(21_000);
    expect(lost).toBeGreaterThan(15_000);
    expect(existsSync(go)).toBe(true);
  });
});
