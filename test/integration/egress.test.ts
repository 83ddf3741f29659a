/** Egress through gateways and the egress policy (docs/egress.md), on namespace hosts: gw is an egress gateway with a
 * foot in the outside subnet (198.51.100.2/24); h1 and h2 have no address there (no route to the outside) and send
 * their apps' outside connects through gw (`--egress via-gateway`); h2 also has an egress policy. The outside host
 * runs a plain python http.server and no appswitch. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { MemberView, StatusResult } from '../../src/daemon/control-protocol.js';
import { TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

let br: TestBridge;
let gw: TestHost;
let h1: TestHost;
let h2: TestHost;
let out: TestHost;
let server: ChildProcess;
let server2: ChildProcess;
let serverLog = '';

const OUTSIDE = '198.51.100.10';
const URL = `http://${OUTSIDE}:8080/`;

/** A client under appswitch: connects, prints the peer the program sees, fetches / and prints the status line; or
 * prints the errno of a failed connect. */
const CLIENT = `
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.settimeout(10)
try:
    s.connect((host, port))
except OSError as e:
    print("ERR", e.errno, flush=True); sys.exit(0)
p = s.getpeername()
print("PEER", p[0], p[1], flush=True)
try:
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    print("STATUS", data.split(b"\\r\\n", 1)[0].decode() or "EMPTY", flush=True)
except OSError as e:
    print("RECVERR", e.errno, flush=True)
`;

/** Two connections at once, to two outside destinations through the same gateway endpoint: each socket shows its own
 * peer, before and after the other connected. */
const TWO = `
import socket
a = socket.create_connection(("${OUTSIDE}", 8080), 10)
pa = a.getpeername()
b = socket.create_connection(("${OUTSIDE}", 8081), 10)
print("A", pa[0], pa[1], a.getpeername()[0], a.getpeername()[1])
print("B", b.getpeername()[0], b.getpeername()[1])
`;

/** Sends one datagram; prints OK or the errno. */
const UDP = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2]))); print("OK")
except OSError as e:
    print("ERR", e.errno)
`;

const requests = (): number => serverLog.split('\n').filter((l) => l.includes('"GET /')).length;
const status = (h: TestHost): Promise<StatusResult> => request<StatusResult>(h.socket, 'status');
const members = (h: TestHost): Promise<MemberView[]> => request<MemberView[]>(h.socket, 'members');

beforeAll(async () => {
  br = new TestBridge('eg');
  [gw, h1, h2] = br.hostsOf('eg', 3) as [TestHost, TestHost, TestHost];
  gw.addAddress('198.51.100.2/24');
  out = br.outside();
  server = out.spawn(['python3', '-u', '-m', 'http.server', '8080', '--bind', OUTSIDE]);
  server.stderr?.on('data', (b: Buffer) => (serverLog += b.toString()));
  server.stdout?.on('data', (b: Buffer) => (serverLog += b.toString()));
  server2 = out.spawn(['python3', '-u', '-m', 'http.server', '8081', '--bind', OUTSIDE]);
  server2.stderr?.on('data', (b: Buffer) => (serverLog += b.toString()));
  await gw.startDaemon(['--node-name', 'gw', '--egress-gateway']);
  await Promise.all([
    h1.startDaemon(['--node-name', 'h1', '--join', gw.address, '--egress', 'via-gateway']),
    h2.startDaemon(['--node-name', 'h2', '--join', gw.address, '--egress', 'via-gateway', '--egress-allow', 'grp=pay=198.51.100.0/24', '--metrics-address', '127.0.0.1:9464']),
  ]);
  for (const h of [gw, h1, h2]) await waitFor(async () => (await members(h)).filter((m) => m.state === 'alive').length === 3, 20_000);
  for (const h of [h1, h2]) await waitFor(async () => (await status(h)).egress?.liveGateways === 1, 10_000);
  for (const port of [8080, 8081]) {
    await waitFor(async () => (await out.exec(['python3', '-c', `import socket; socket.create_connection(("${OUTSIDE}", ${port}), 1)`])).code === 0, 10_000);
  }
}, 60_000);

afterAll(async () => {
  await br?.destroy();
});

describe('egress', () => {
  it('h1 cannot reach the outside by itself (no route): the test would prove nothing otherwise', async () => {
    const r = await h1.exec(['python3', '-c', CLIENT, OUTSIDE, '8080']);
    expect(r.stdout).toMatch(/^ERR (101|113)/); /* ENETUNREACH (or EHOSTUNREACH) */
  });

  it('an app on h1 fetches from the outside through the gateway: the server sees the gateway, the app the server', async () => {
    const before = requests();
    const c = await h1.runToEnd(['--tag', 'grp=any'], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', URL]);
    expect(c.stderr).toBe('');
    expect(c.stdout).toBe('200');
    await waitFor(() => requests() > before, 5000);
    const last = serverLog.split('\n').filter((l) => l.includes('"GET /')).pop();
    expect(last).toMatch(/^198\.51\.100\.2 /); /* from the gateway's outside address */
    const p = await h1.runToEnd([], ['python3', '-c', CLIENT, OUTSIDE, '8080']);
    expect(p.stdout).toContain(`PEER ${OUTSIDE} 8080`);
    expect(p.stdout).toContain('STATUS HTTP/1.0 200 OK');
    const s = await status(gw);
    expect(s.egress?.proxy?.forwarded).toBeGreaterThanOrEqual(2);
    expect((await status(h1)).egress?.viaGateway).toBeGreaterThanOrEqual(2);
  });

  it('two connections through one gateway to two destinations: each socket shows its own peer', async () => {
    const r = await h1.runToEnd([], ['python3', '-c', TWO]);
    expect(r.stdout).toContain(`A ${OUTSIDE} 8080 ${OUTSIDE} 8080`);
    expect(r.stdout).toContain(`B ${OUTSIDE} 8081`);
  });

  it('egress policy on h2: grp=pay fetches, grp=web is refused (ECONNREFUSED: curl exit 7), logged and counted', async () => {
    const ok = await h2.runToEnd(['--tag', 'grp=pay'], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', URL]);
    expect(ok.stdout).toBe('200');
    const before = requests();
    const denied = await h2.runToEnd(['--tag', 'grp=web'], ['curl', '-sS', '-m', '10', URL]);
    expect(denied.code).toBe(7);
    await waitFor(() => h2.daemonLog.includes('connect denied by egress policy'), 5000);
    const line = h2.daemonLog.split('\n').find((l) => l.includes('connect denied by egress policy')) ?? '';
    const o = JSON.parse(line) as { tags: Record<string, string>; destination: string };
    expect(o.tags).toEqual({ grp: 'web' });
    expect(o.destination).toBe(`${OUTSIDE}:8080`);
    const s = await status(h2);
    expect(s.egressDenied).toBeGreaterThanOrEqual(1);
    const j = JSON.parse((await h2.cli(['status', '--json'])).stdout) as { egressDenied: number };
    expect(j.egressDenied).toBeGreaterThanOrEqual(1);
    const m = await h2.exec(['curl', '-sS', '-m', '5', 'http://127.0.0.1:9464/metrics']);
    expect(m.stdout).toMatch(/^appswitch_egress_total\{result="denied"\} [1-9]/m);
    expect(m.stdout).toMatch(/^appswitch_egress_total\{result="via_gateway"\} [1-9]/m);
    const u = await h2.runToEnd(['--tag', 'grp=web'], ['python3', '-c', UDP, OUTSIDE, '9999']);
    expect(u.stdout.trim()).toBe('ERR 1'); /* a datagram denied by the egress policy: EPERM */
    expect(requests()).toBe(before);
  });

  it('attack: a plain process on h1 connecting to the egress port gets nothing forwarded', async () => {
    const before = requests();
    const r = await h1.exec(['python3', '-c', CLIENT, gw.address, '7949']);
    expect(r.stdout).not.toContain('STATUS HTTP');
    expect(r.stdout).toMatch(/STATUS EMPTY|RECVERR 104|^ERR 111/m);
    await waitFor(async () => ((await status(gw)).egress?.proxy?.refusals.unidentified ?? 0) >= 1, 5000);
    await gw.waitForLog('egress proxy: connection reset: its node does not vouch for it');
    expect(requests()).toBe(before);
  });

  it('attack: a process on the gateway itself (not another member) gets nothing forwarded', async () => {
    const before = requests();
    const r = await gw.exec(['python3', '-c', CLIENT, gw.address, '7949']);
    expect(r.stdout).not.toContain('STATUS HTTP');
    await waitFor(async () => ((await status(gw)).egress?.proxy?.refusals['not-a-member'] ?? 0) >= 1, 5000);
    expect(requests()).toBe(before);
  });

  it("attack: a trapped program connecting to the gateway's egress port directly is refused", async () => {
    const before = requests();
    const r = await h1.runToEnd([], ['python3', '-c', CLIENT, gw.address, '7949']);
    expect(r.stdout.trim()).toBe('ERR 111');
    const own = await gw.runToEnd([], ['python3', '-c', CLIENT, gw.address, '7949']); /* on the gateway itself too */
    expect(own.stdout.trim()).toBe('ERR 111');
    expect(requests()).toBe(before);
    expect((await status(h1)).daemonPortRefused).toBeGreaterThanOrEqual(1);
    expect((await status(gw)).daemonPortRefused).toBeGreaterThanOrEqual(1);
  });

  it('a datagram to an outside address in via-gateway mode is EPERM', async () => {
    const u = await h1.runToEnd([], ['python3', '-c', UDP, OUTSIDE, '9999']);
    expect(u.stdout.trim()).toBe('ERR 1');
    expect((await status(h1)).egress?.udpRefused).toBeGreaterThanOrEqual(1);
  });

  it('direct mode still works on a node with a route (the gateway itself)', async () => {
    const c = await gw.runToEnd([], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', URL]);
    expect(c.stdout).toBe('200');
    expect((await status(gw)).egress?.mode).toBe('direct');
  });

  it('with no live egress gateway the connect fails with ENETUNREACH and nothing reaches the outside', async () => {
    gw.daemon?.kill('SIGTERM'); /* it announces that it leaves */
    await waitFor(async () => (await status(h1)).egress?.liveGateways === 0, 15_000);
    const before = requests();
    const r = await h1.runToEnd([], ['python3', '-c', CLIENT, OUTSIDE, '8080']);
    expect(r.stdout.trim()).toBe('ERR 101');
    const c = await h1.runToEnd([], ['curl', '-sS', '-m', '5', URL]);
    expect(c.code).toBe(7);
    expect(requests()).toBe(before);
    expect((await status(h1)).egress?.noGateway).toBeGreaterThanOrEqual(2);
    await h1.waitForLog('no live egress gateway');
  });
});
