/** Ingress: three appswitch hosts on one segment (g1 and g2 gateways, h3 plain) and an outside host that runs no
 * appswitch. An app exposed with `run --expose 8080:80` (instances on h3, g1 and g2) is reached from the outside host
 * through either gateway, and its program sees the outside client's real address and port; what is not exposed is
 * not reachable; a trapped program cannot pass itself off as an outside client through a gateway's host port;
 * `appswitch expose`/`unexpose`; failover of an instance's host and of a gateway. */
import { spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import path from 'node:path';
import { GroupMember, sh } from '../helpers/accounts.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { ExposureView, MemberView, ServiceView, StatusResult } from '../../src/daemon/control-protocol.js';
import { CLI, finish, ROOT, type Result, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const SERVER = path.join(ROOT, 'test/helpers/peer-http.py');
const VIP = '10.0.0.80';
const accounts = new GroupMember('asi');
const GROUP = accounts.group;
const MEMBER = accounts.member;

let br: TestBridge;
let g1: TestHost;
let g2: TestHost;
let h3: TestHost;
let out: TestHost;

const members = (h: TestHost): Promise<MemberView[]> => request<MemberView[]>(h.socket, 'members');
const exposures = (h: TestHost): Promise<ExposureView[]> => request<ExposureView[]>(h.socket, 'exposures');
const services = (h: TestHost): Promise<ServiceView[]> => request<ServiceView[]>(h.socket, 'services');
const status = (h: TestHost): Promise<StatusResult> => request<StatusResult>(h.socket, 'status');

/** curl from the outside host; stdout: the body, then the local port curl used on a last line. */
async function curl(to: string, port: number, maxSeconds = 10): Promise<{ code: number | null; body: string; localPort: number }> {
  const r = await out.exec(['curl', '-sS', '-m', String(maxSeconds), '-w', '\n%{local_port}', `http://${to}:${port}/`], 15_000);
  const lines = r.stdout.trim().split('\n');
  return { code: r.code, body: lines.length > 1 ? lines.slice(0, -1).join('\n') : '', localPort: Number(lines[lines.length - 1]) };
}

/** An answer of peer-http.py through a gateway: which instance, and the client it saw. */
function answer(body: string): { name: string; ip: string; port: number } {
  const m = /^(\S+) ([\d.]+):(\d+)$/.exec(body.trim());
  expect(m, `unexpected answer: ${body}`).not.toBeNull();
  return { name: (m as RegExpExecArray)[1] as string, ip: (m as RegExpExecArray)[2] as string, port: Number((m as RegExpExecArray)[3]) };
}

beforeAll(async () => {
  accounts.create();
  br = new TestBridge('in');
  [g1, g2, h3] = br.hostsOf('in', 3) as [TestHost, TestHost, TestHost];
  out = br.outside();
  await out.exec(['ip', 'addr', 'add', '192.0.2.200/24', 'dev', 'v0']);
  chmodSync(g1.stateDir, 0o755);
  await g1.startDaemon(['--node-name', 'g1', '--gateway', '--group', GROUP]);
  await Promise.all([
    /* g1 steers to its own instance (locality first, docs/ingress-local.md); g2 relays to every instance */
    g2.startDaemon(['--node-name', 'g2', '--gateway', '--no-ingress-steering', '--join', '192.0.2.1']),
    h3.startDaemon(['--node-name', 'h3', '--join', '192.0.2.1']),
  ]);
  for (const h of [g1, g2, h3]) await waitFor(async () => (await members(h)).filter((m) => m.state === 'alive').length === 3, 15_000);
  for (const [h, name] of [[h3, 'h3'], [g1, 'g1'], [g2, 'g2']] as const) {
    h.run(['--ip', VIP, '--name', 'web', '--lb', 'round-robin', '--expose', '8080:80'], ['python3', SERVER, name, '80', '81']);
  }
  for (const h of [g1, g2]) {
    await waitFor(async () => (await services(h)).filter((s) => s.vip === VIP && s.port === 80).length === 3, 30_000, 100);
    await waitFor(async () => (await exposures(h)).some((e) => e.vip === VIP && e.port === 80 && e.hostPort === 8080 && e.state === 'active'), 10_000);
  }
}, 60_000);

afterAll(async () => {
  await br?.destroy();
  accounts.remove();
});

describe('ingress', () => {
  it('get exposures shows the exposure, its source and both gateways', async () => {
    const r = await h3.cli(['get', 'exposures', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as ExposureView[];
    expect(rows).toContainEqual({ vip: VIP, port: 80, hostPort: 8080, source: 'app', gateways: ['g1', 'g2'], state: 'active', detail: null });
    const text = await h3.cli(['get', 'exposures']);
    expect(text.stdout).toMatch(/10\.0\.0\.80:80\s+8080\s+app\s+g1,g2\s+active/);
  });

  it('an outside client reaches the service through each gateway; the program sees its real address and port', async () => {
    for (const gw of ['192.0.2.1', '192.0.2.2']) {
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        const c = await curl(gw, 8080);
        expect(c.code, c.body).toBe(0);
        const a = answer(c.body);
        expect(a.ip).toBe('192.0.2.200');
        expect(a.port).toBe(c.localPort);
        seen.add(a.name);
      }
      if (gw === '192.0.2.1') expect([...seen]).toEqual(['g1']); /* g1 has an instance: steered to it, no relay */
      else expect(seen.has('h3'), `answers through ${gw}: ${[...seen].join(',')}`).toBe(true); /* round-robin over 3: another node's instance too */
    }
    const s = await status(g2);
    expect(s.ingress?.gateway).toBe(true);
    /* the relay reports its counts periodically */
    await waitFor(async () => ((await status(g2)).ingress?.forwarded ?? 0) >= 4, 5_000, 100);
    expect((await status(g1)).steering?.accepted).toBeGreaterThanOrEqual(4);
    expect((await status(h3)).ingress?.gateway).toBe(false);
  });

  it('a port of the app that is not exposed is not reachable from outside, not even at its real endpoint', async () => {
    const c = await curl('192.0.2.1', 81);
    expect(c.code).not.toBe(0);
    const real = (await services(g1)).filter((s) => s.vip === VIP && (s.port === 81 || s.port === 80));
    expect(real.length).toBeGreaterThanOrEqual(6);
    const before = (await status(h3)).unidentified;
    const direct = real.find((s) => s.node === 'h3' && s.port === 81) as ServiceView;
    const [ip, port] = direct.endpoint.split(':') as [string, string];
    const d = await curl(ip, Number(port));
    expect(d.code).not.toBe(0); /* the connection reaches the real socket, and its accept refuses an unidentified client */
    expect((await status(h3)).unidentified).toBeGreaterThan(before);
  });

  it('a trapped program cannot reach a gateway exposure host port (it would pass for an outside client)', async () => {
    const before = (await status(h3)).daemonPortRefused;
    const rs = await Promise.all([
      h3.runToEnd([], ['curl', '-sS', '-m', '5', 'http://192.0.2.1:8080/']),
      h3.runToEnd([], ['curl', '-sS', '-m', '5', 'http://192.0.2.2:8080/']),
      g1.runToEnd([], ['curl', '-sS', '-m', '5', 'http://192.0.2.1:8080/']), /* its own gateway too */
    ]);
    for (const r of rs) expect(r.code, r.stdout + r.stderr).toBe(7); /* couldn't connect */
    expect((await status(h3)).daemonPortRefused).toBeGreaterThanOrEqual(before + 2);
  });

  it('run --expose refuses a host port inside the pool or a daemon port', async () => {
    const [pool, daemon, bad] = await Promise.all([
      h3.runToEnd(['--ip', '10.0.0.81', '--expose', '45000:80'], ['true']),
      h3.runToEnd(['--ip', '10.0.0.81', '--expose', '7947:80'], ['true']),
      h3.runToEnd(['--expose', '80:90:100'], ['true']),
    ]);
    expect(pool.code).toBe(125);
    expect(pool.stderr).toContain('--expose: host port 45000 is inside the port pool 40000-60000');
    expect(daemon.code).toBe(125);
    expect(daemon.stderr).toContain('--expose: host port 7947 is a port of the appswitch daemon');
    expect(bad.code).toBe(125);
    expect(bad.stderr).toContain('expected [HOSTPORT:]PORT');
  });

  it('a group member without root gets ERR_PERMISSION on expose, and may read exposures', async () => {
    const g = sh('id', ['-g', MEMBER]).trim();
    const as = (args: string[]): Promise<Result> =>
      finish(spawn('setpriv', ['--reuid', MEMBER, '--regid', g, '--init-groups', '--', 'node', CLI, ...args, '--socket', g1.socket], { stdio: ['ignore', 'pipe', 'pipe'] }), 15_000);
    const [r, read] = await Promise.all([as(['expose', `${VIP}:81`, '--port', '8081']), as(['get', 'exposures', '--json'])]);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('ERR_PERMISSION');
    expect(read.code, read.stderr).toBe(0);
    expect((JSON.parse(read.stdout) as ExposureView[]).some((e) => e.hostPort === 8081)).toBe(false);
  });

  it('appswitch expose makes another port reachable; a taken host port is ERR_CONFLICT; unexpose closes it again', async () => {
    const conflict = await h3.cli(['expose', `${VIP}:81`, '--port', '8080']);
    expect(conflict.code).toBe(125);
    expect(conflict.stderr).toContain('ERR_CONFLICT');
    const e = await h3.cli(['expose', `${VIP}:81`, '--port', '8081', '--json']);
    expect(e.code, e.stderr).toBe(0);
    expect((JSON.parse(e.stdout) as { exposure: ExposureView }).exposure).toMatchObject({ vip: VIP, port: 81, hostPort: 8081, source: 'api' });
    await waitFor(async () => (await exposures(g2)).some((x) => x.hostPort === 8081 && x.state === 'active'), 10_000);
    await waitFor(async () => (await curl('192.0.2.2', 8081)).code === 0, 10_000, 200);
    const c = await curl('192.0.2.2', 8081);
    expect(answer(c.body).ip).toBe('192.0.2.200');
    const u = await h3.cli(['unexpose', `${VIP}:81`]);
    expect(u.code, u.stderr).toBe(0);
    await waitFor(async () => !(await exposures(g2)).some((x) => x.hostPort === 8081), 10_000);
    await waitFor(async () => (await curl('192.0.2.2', 8081)).code !== 0, 10_000, 200);
    const gone = await h3.cli(['unexpose', `${VIP}:81`]);
    expect(gone.stderr).toContain('ERR_NOT_FOUND');
  });

  it("the instance's host cut off: the next external connections go to the other instances", async () => {
    br.setLink(h3, false);
    for (const gw of ['192.0.2.1', '192.0.2.2']) {
      for (let i = 0; i < 3; i++) {
        const c = await curl(gw, 8080);
        expect(c.code, c.body).toBe(0);
        expect(['g1', 'g2']).toContain(answer(c.body).name);
      }
    }
  });

  it('one of two gateways cut off: the other keeps serving', async () => {
    br.setLink(g1, false);
    for (let i = 0; i < 3; i++) {
      const c = await curl('192.0.2.2', 8080);
      expect(c.code, c.body).toBe(0);
      const a = answer(c.body);
      expect(a.name).toBe('g2'); /* the gateway's own instance: h3 and g1 are cut off */
      expect(a.ip).toBe('192.0.2.200');
    }
    expect((await curl('192.0.2.1', 8080, 2)).code).not.toBe(0); /* g1 is cut off: no answer */
  });
});
