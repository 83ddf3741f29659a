/** The application network on two hosts: tag policy, load balancing over instances, and distributed apps that
 * share one vip and talk over loopback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { MemberView, ServiceView } from '../../src/daemon/control-protocol.js';
import { type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { finish, killTree, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;
const started: ChildProcess[] = [];

const count = async (h: TestHost, vip: string, port: number): Promise<number> =>
  (await request<ServiceView[]>(h.socket, 'services')).filter((s) => s.vip === vip && s.port === port).length;

/** An HTTP server that answers its own id, under appswitch. */
function idServer(h: TestHost, appArgs: string[], port: number, id: string): ChildProcess {
  const py = `import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(self):\n    b=b"${id}|"+self.client_address[0].encode()\n    self.send_response(200); self.send_header("Content-Length",str(len(b))); self.end_headers(); self.wfile.write(b)\n  def log_message(self,*a): pass\nhttp.server.ThreadingHTTPServer(("0.0.0.0",${port}),H).serve_forever()`;
  const p = h.run(appArgs, ['python3', '-c', py]);
  started.push(p);
  return p;
}

/** A client under appswitch that makes n requests, each on a new connection, and prints a tally. */
function tally(h: TestHost, appArgs: string[], url: string, n: number): Promise<{ counts: Record<string, number>; errors: number; raw: string }> {
  const py = `import urllib.request,collections,json\nc=collections.Counter(); e=0\nfor i in range(${n}):\n  try: c[urllib.request.urlopen("${url}",timeout=5).read().decode().split("|")[0]]+=1\n  except Exception as x: e+=1\nprint(json.dumps({"counts":c,"errors":e}))`;
  return h.runToEnd(appArgs, ['python3', '-c', py], 120_000).then((r) => ({ ...(JSON.parse(r.stdout || '{"counts":{},"errors":-1}') as { counts: Record<string, number>; errors: number }), raw: r.stdout + r.stderr }));
}

beforeAll(async () => {
  br = new TestBridge('an');
  [h1, h2] = br.hostsOf('an', 2) as [TestHost, TestHost];
  await h1.startDaemon();
  await h2.startDaemon(['--join', '192.0.2.1']);
  for (const h of [h1, h2]) {
    await waitFor(async () => (await request<MemberView[]>(h.socket, 'members')).filter((m) => m.state === 'alive').length === 2, 15_000);
  }
});

afterAll(async () => {
  for (const p of started) killTree(p, 'SIGKILL');
  await br?.destroy();
});

describe('names and DNS', () => {
  it('--name gives an app a vip that every program under appswitch on every host resolves (curl, getent, Node)', async () => {
    const hostResolv = readFileSync('/etc/resolv.conf', 'utf8');
    idServer(h1, ['--name', 'web'], 8000, 'named');
    const vip = await waitFor(async () => (await request<ServiceView[]>(h2.socket, 'services')).find((x) => x.name === 'web')?.vip, 30_000); /* readiness, not speed: programs start slower while the other test lane runs */
    expect(vip).toMatch(/^10\./);
    const c = await h2.runToEnd([], ['curl', '-sS', '-m', '10', 'http://web:8000/']);
    expect(c.stdout, c.stderr).toMatch(/^named\|/);
    const g = await h2.runToEnd([], ['getent', 'hosts', 'web']);
    expect(g.stdout.trim().split(/\s+/)[0]).toBe(vip);
    const js = `require('dns').lookup('web.appswitch.local', {family: 4}, (e, a) => { console.log(e ? e.code : a); require('dns').lookup('web', {family: 6}, (e2, a2) => console.log(e2 ? e2.code : a2)); })`;
    const n = await h2.runToEnd([], ['node', '-e', js]);
    const [v4, v6] = n.stdout.trim().split('\n');
    expect(v4).toBe(vip);
    expect(v6).toMatch(/ENOTFOUND|ENODATA/); // AAAA: NOERROR with no records
    const nx = await h2.runToEnd([], ['getent', 'hosts', 'nosuchapp.appswitch.local']);
    expect(nx.code).toBe(2);
    // the program saw the daemon's resolv.conf; the host's file is untouched; --dns-override=false keeps the host's
    const seen = await h2.runToEnd([], ['cat', '/etc/resolv.conf']);
    expect(seen.stdout).toContain('nameserver 192.0.2.2');
    expect(seen.stdout).toContain('appswitch.local');
    expect(readFileSync('/etc/resolv.conf', 'utf8')).toBe(hostResolv);
    const off = await h2.runToEnd(['--dns-override', 'false'], ['cat', '/etc/resolv.conf']);
    expect(off.stdout).toBe(hostResolv);
  });
});

describe('tag policy', () => {
  it('a client may connect only when it shares a tag with the service; refusals are ECONNREFUSED, logged and counted', async () => {
    idServer(h1, ['--ip', '10.0.5.1', '--tag', 'grp=1', '--tag', 'env=prod'], 8000, 'tagged');
    idServer(h1, ['--ip', '10.0.5.2'], 8000, 'untagged');
    await waitFor(async () => (await count(h2, '10.0.5.1', 8000)) === 1 && (await count(h2, '10.0.5.2', 8000)) === 1, 20_000);
    const ok = await h2.runToEnd(['--tag', 'grp=1'], ['curl', '-sS', '-m', '5', 'http://10.0.5.1:8000/']);
    expect(ok.stdout).toMatch(/^tagged\|/);
    const other = await h2.runToEnd(['--tag', 'grp=2'], ['curl', '-sS', '-m', '5', 'http://10.0.5.1:8000/']);
    expect(other.code).toBe(7);
    const untaggedToTagged = await h2.runToEnd([], ['curl', '-sS', '-m', '5', 'http://10.0.5.1:8000/']);
    expect(untaggedToTagged.code).toBe(7);
    const untagged = await h2.runToEnd([], ['curl', '-sS', '-m', '5', 'http://10.0.5.2:8000/']);
    expect(untagged.stdout).toMatch(/^untagged\|/);
    const zone = await h2.runToEnd(['--tag', 'zone=default'], ['curl', '-sS', '-m', '5', 'http://10.0.5.2:8000/']);
    expect(zone.stdout).toMatch(/^untagged\|/);
    await h2.waitForLog('connect denied by policy');
    await h2.waitForLog(/"clientTags":\{"grp":"2"\}.*"serviceTags":\{"grp":"1","env":"prod"\}/);
    const st = await request<{ denied: number }>(h2.socket, 'status');
    expect(st.denied).toBe(2);
  });
});

describe('load balancing', () => {
  it('spreads 300 requests over 3 instances on two hosts, and keeps succeeding when one is killed', async () => {
    const a = idServer(h1, ['--ip', '10.0.6.1'], 8080, 'i1');
    idServer(h1, ['--ip', '10.0.6.1'], 8080, 'i2');
    idServer(h2, ['--ip', '10.0.6.1'], 8080, 'i3');
    await waitFor(async () => (await count(h1, '10.0.6.1', 8080)) === 3 && (await count(h2, '10.0.6.1', 8080)) === 3, 30_000); /* readiness, not speed: programs start slower while the other test lane runs */
    const t = await tally(h2, [], 'http://10.0.6.1:8080/', 300);
    expect(t.errors, t.raw).toBe(0);
    for (const id of ['i1', 'i2', 'i3']) expect(t.counts[id], JSON.stringify(t.counts)).toBeGreaterThanOrEqual(60);
    killTree(a, 'SIGKILL');
    await finish(a);
    const after = await tally(h2, [], 'http://10.0.6.1:8080/', 100);
    expect(after.errors, after.raw).toBe(0);
    expect(after.counts.i1 ?? 0).toBe(0);
    expect((after.counts.i2 ?? 0) + (after.counts.i3 ?? 0)).toBe(100);
  });

  it('a refusing instance is skipped before the program sees an error (blocking and non-blocking connects)', async () => {
    // a host whose daemon does not sweep: an instance that closed its listening socket stays in the table and
    // refuses every connection, deterministically
    const h = br.hostsOf('an-ns', 1)[0] as TestHost;
    await h.startDaemon(['--node-name', 'a3', '--sweep-interval', '600000', '--gossip-port', '7950']);
    const closer = h.run(['--ip', '10.0.6.2'], ['python3', '-c', 'import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",8081))\ns.listen()\nprint("closing",flush=True)\ns.close()\ntime.sleep(60)']);
    started.push(closer);
    idServer(h, ['--ip', '10.0.6.2'], 8081, 'live');
    await waitFor(async () => (await count(h, '10.0.6.2', 8081)) === 2, 30_000); /* readiness, not speed: programs start slower while the other test lane runs */
    const t = await tally(h, [], 'http://10.0.6.2:8081/', 40); // urllib: blocking connects
    expect(t.errors, t.raw).toBe(0);
    expect(t.counts.live).toBe(40);
    const js = `const http=require('http');let ok=0,bad=0,n=0;const go=()=>{if(n++===40){console.log(JSON.stringify({ok,bad}));return;}http.get('http://10.0.6.2:8081/',{agent:false},r=>{r.resume();r.on('end',()=>{ok++;go();});}).on('error',()=>{bad++;go();});};go();`;
    const nb = await h.runToEnd([], ['node', '-e', js]); // Node: non-blocking connects
    expect(JSON.parse(nb.stdout)).toEqual({ ok: 40, bad: 0 });
    const st = await request<{ retried: number }>(h.socket, 'status');
    expect(st.retried).toBeGreaterThan(0); // the refusing instance was picked, and skipped
    expect(h.daemonLog).not.toContain('every instance refused');
  });
});

describe('client identity', () => {
  it("accept() and getpeername() give the client's vip, or its link-local identity, same host and cross-host", async () => {
    idServer(h1, ['--ip', '10.0.7.1'], 8000, 'who');
    await waitFor(async () => (await count(h2, '10.0.7.1', 8000)) === 1, 30_000); /* readiness, not speed: programs start slower while the other test lane runs */
    const cross = await h2.runToEnd(['--ip', '10.0.7.2'], ['curl', '-sS', '-m', '5', 'http://10.0.7.1:8000/']);
    expect(cross.stdout).toBe('who|10.0.7.2');
    const same = await h1.runToEnd(['--ip', '10.0.7.3'], ['curl', '-sS', '-m', '5', 'http://10.0.7.1:8000/']);
    expect(same.stdout).toBe('who|10.0.7.3');
    const anon = await h2.runToEnd([], ['curl', '-sS', '-m', '5', 'http://10.0.7.1:8000/']);
    expect(anon.stdout).toMatch(/^who\|169\.254\.\d+\.\d+$/);
    // a Node server sees the same through getpeername()
    const srv = `require('net').createServer(s => s.end(s.remoteAddress + '\\n')).listen(8001)`;
    started.push(h1.run(['--ip', '10.0.7.1'], ['node', '-e', srv]));
    await waitFor(async () => (await count(h2, '10.0.7.1', 8001)) === 1, 30_000); /* readiness, not speed: programs start slower while the other test lane runs */
    const n = await h2.runToEnd(['--ip', '10.0.7.4'], ['nc', '-N', '10.0.7.1', '8001']);
    expect(n.stdout.trim()).toMatch(/^(::ffff:)?10\.0\.7\.4$/);
  });

  it('a connection that no appswitch daemon set up is closed at accept and never reaches the program', async () => {
    const svc = (await request<ServiceView[]>(h1.socket, 'services')).find((s) => s.vip === '10.0.7.1' && s.port === 8000);
    expect(svc).toBeDefined();
    const before = (await request<{ unidentified: number }>(h1.socket, 'status')).unidentified;
    // plain curl from the host itself, straight to the real port
    const r = await h1.exec(['curl', '-sS', '-m', '5', `http://${svc!.endpoint}/`]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain('who|');
    await waitFor(async () => (await request<{ unidentified: number }>(h1.socket, 'status')).unidentified > before, 5000);
    await h1.waitForLog('unidentified connection dropped at accept');
    // and from another host, also outside appswitch
    const r2 = await h2.exec(['curl', '-sS', '-m', '5', `http://${svc!.endpoint}/`]);
    expect(r2.code).not.toBe(0);
    // the server still serves identified clients
    const ok = await h2.runToEnd(['--ip', '10.0.7.2'], ['curl', '-sS', '-m', '5', 'http://10.0.7.1:8000/']);
    expect(ok.stdout).toBe('who|10.0.7.2');
  });
});

describe('distributed applications (shared vip)', () => {
  it('a member reaches the member serving a port over 127.0.0.1, across hosts and on one host', async () => {
    idServer(h1, ['--ip', '10.0.0.7'], 9100, 'B');
    await waitFor(async () => (await count(h2, '10.0.0.7', 9100)) === 1, 30_000); /* readiness, not speed: programs start slower while the other test lane runs */
    const cross = await h2.runToEnd(['--ip', '10.0.0.7'], ['curl', '-sS', '-m', '5', 'http://127.0.0.1:9100/']);
    expect(cross.stdout).toMatch(/^B\|/);
    const local = await h1.runToEnd(['--ip', '10.0.0.7'], ['curl', '-sS', '-m', '5', 'http://localhost:9100/']);
    expect(local.stdout).toMatch(/^B\|/);
    const byVip = await h2.runToEnd(['--ip', '10.0.0.7'], ['curl', '-sS', '-m', '5', 'http://10.0.0.7:9100/']);
    expect(byVip.stdout).toMatch(/^B\|/);
    // another app's loopback is its own: it does not reach B
    const stranger = await h2.runToEnd(['--ip', '10.0.0.8'], ['curl', '-sS', '-m', '5', 'http://127.0.0.1:9100/']);
    expect(stranger.code, stranger.stderr).toBe(7); /* 7: curl's own "cannot connect"; 125 would be appswitch failing (its stderr says why) */
  });
});
