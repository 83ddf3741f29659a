/** Virtual services: a vip and a DNS name in front of servers outside appswitch. Two appswitch hosts (each with a foot
 * in the outside subnet 198.51.100.0/24) and one outside host running two plain HTTP servers and a port where nothing
 * listens. Apps reach the backends directly (no proxy), the dead one skipped; the tags policy applies; the virtual
 * service is replicated, survives daemon restarts (and --clean), and its deletion reaches every node; every bad field
 * of a control call is refused with a clear error, and only root may create or delete. */
import { spawn } from 'node:child_process';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { GroupMember, sh } from '../helpers/accounts.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { ServiceView, VserviceView } from '../../src/daemon/control-protocol.js';
import { CLI, finish, killTree, type Result, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const accounts = new GroupMember('asv');
const GROUP = accounts.group;
const MEMBER = accounts.member;

const LIVE1 = '198.51.100.10:8080';
const LIVE2 = '198.51.100.11:8081';
const DEAD = '198.51.100.10:8099'; /* nothing listens: the outside host answers with a reset */

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;
let out: TestHost;
const logs = { live1: '', live2: '' };

const vservices = (h: TestHost): Promise<VserviceView[]> => request<VserviceView[]>(h.socket, 'vservices');

/** The ERR_* code and message of a control call that must fail. */
async function callError(h: TestHost, method: 'createVservice' | 'deleteVservice', params: Record<string, unknown>): Promise<string> {
  try {
    await request(h.socket, method, params);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${method} ${JSON.stringify(params)} succeeded`);
}

const db = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ name: 'db', ip: '10.0.0.50', port: 80, backends: [LIVE1, DEAD, LIVE2], lb: 'round-robin', ...over });

/** Runs `curl` n times per URL in one app on h; returns how many answered 200 per URL, and the output. */
async function curlTimes(h: TestHost, urls: string[], n: number): Promise<{ ok: number[]; r: Result }> {
  const script = urls.map((u, k) => `for i in $(seq ${n}); do c=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' ${u}); echo "code${k}=$c"; done`).join('; ');
  const r = await h.runToEnd([], ['sh', '-c', script], 60_000);
  return { ok: urls.map((_, k) => (r.stdout.match(new RegExp(`code${k}=200`, 'g')) ?? []).length), r };
}

async function stop(h: TestHost): Promise<void> {
  const d = h.daemon;
  if (!d) return;
  const done = finish(d, 10_000);
  killTree(d, 'SIGTERM');
  await done;
}


const H1 = ['--node-name', 'h1', '--group', GROUP];
const H2 = ['--node-name', 'h2', '--join', '192.0.2.1'];

beforeAll(async () => {
  accounts.create();
  br = new TestBridge('vs');
  [h1, h2] = br.hostsOf('vs', 2) as [TestHost, TestHost];
  h1.addAddress('198.51.100.1/24');
  h2.addAddress('198.51.100.2/24');
  out = br.outside();
  await out.exec(['ip', 'addr', 'add', '198.51.100.11/24', 'dev', 'v0']);
  const s1 = out.spawn(['python3', '-m', 'http.server', '8080', '--bind', '198.51.100.10'], { cwd: '/' });
  const s2 = out.spawn(['python3', '-m', 'http.server', '8081', '--bind', '198.51.100.11'], { cwd: '/' });
  s1.stderr?.on('data', (b: Buffer) => (logs.live1 += b.toString()));
  s2.stderr?.on('data', (b: Buffer) => (logs.live2 += b.toString()));
  chmodSync(h1.stateDir, 0o755); /* the group member reaches the socket; the socket's mode and SO_PEERCRED decide */
  await Promise.all([h1.startDaemon(H1), h2.startDaemon(H2)]); /* host 2's join is retried until host 1 answers */
  await waitFor(async () => (await request<Array<{ state: string }>>(h2.socket, 'members')).filter((m) => m.state === 'alive').length === 2, 15_000);
  await waitFor(async () => (await out.exec(['curl', '-sS', '-o', '/dev/null', `http://${LIVE2}/`])).code === 0, 10_000);
  logs.live1 = logs.live2 = '';
}, 60_000);

afterAll(async () => {
  await br?.destroy();
  accounts.remove();
});

describe('virtual service', () => {
  it('created on host 1, it reaches host 2: get vservices, get services', async () => {
    const made = await h1.cli(['create', 'vservice', 'db', '--ip', '10.0.0.50', '--port', '80', '--backend', LIVE1, '--backend', DEAD, '--backend', LIVE2, '--lb', 'round-robin', '--json']);
    expect(made.code, made.stderr).toBe(0);
    expect(JSON.parse(made.stdout)).toMatchObject({ name: 'db', ip: '10.0.0.50', port: 80, backends: [LIVE1, DEAD, LIVE2], lb: 'round-robin', origin: 'h1', replaced: false });
    await waitFor(async () => (await vservices(h2)).some((v) => v.name === 'db'), 5000);
    const text = await h2.cli(['get', 'vservices']);
    expect(text.stdout).toMatch(/^NAME\s+VIP:PORT\s+BACKENDS\s+LB\s+TAGS/);
    expect(text.stdout).toMatch(/db\s+10\.0\.0\.50:80\s+198\.51\.100\.10:8080,198\.51\.100\.10:8099,\S*\s+round-robin\s+-/); /* 80 columns: the list is cut */
    const entries = (await request<ServiceView[]>(h2.socket, 'services')).filter((s) => s.vip === '10.0.0.50');
    expect(entries.map((e) => [e.endpoint, e.node, e.app, e.name])).toEqual([
      [LIVE1, '@vservice', 'vservice:db', 'db'],
      [DEAD, '@vservice', 'vservice:db', 'db'],
      [LIVE2, '@vservice', 'vservice:db', 'db'],
    ]);
  });

  it('apps on host 2 reach it by name and by vip: every request succeeds, both live backends serve, directly', async () => {
    const c = await curlTimes(h2, ['http://db:80/', 'http://10.0.0.50/'], 6);
    expect(c.ok, c.r.stdout + c.r.stderr).toEqual([6, 6]);
    const served1 = (logs.live1.match(/"GET \/ HTTP/g) ?? []).length;
    const served2 = (logs.live2.match(/"GET \/ HTTP/g) ?? []).length;
    expect(served1).toBeGreaterThan(0);
    expect(served2).toBeGreaterThan(0);
    expect(served1 + served2).toBe(12);
    /* a direct connection: the backends see host 2's own address, no proxy in between */
    for (const line of (logs.live1 + logs.live2).split('\n').filter((l) => l.includes('"GET /'))) expect(line).toMatch(/^198\.51\.100\.2 /);
    expect(h2.daemonLog).not.toMatch(/"level":(50|60)/);
    /* the dead backend was picked (round-robin over three) and refused: those connects were retried on another */
    await waitFor(async () => (await request<{ retried: number }>(h2.socket, 'status')).retried > 0, 5000);
  });

  it('the tags policy applies: an app whose tags the vservice does not share is refused, and the daemon logs it', async () => {
    const made = await request<VserviceView>(h1.socket, 'createVservice', { name: 'secret', ip: '10.0.0.51', port: 80, backends: [LIVE1], tags: ['grp=db'] });
    expect(made.tags).toEqual({ grp: 'db' });
    await waitFor(async () => (await vservices(h2)).some((v) => v.name === 'secret'), 5000);
    const denied = await h2.runToEnd(['--tag', 'grp=web'], ['curl', '-sS', '-m', '5', 'http://10.0.0.51/'], 30_000);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Failed to connect|Couldn't connect|Connection refused/);
    await waitFor(() => /connect denied by policy.*10\.0\.0\.51:80|10\.0\.0\.51:80.*connect denied by policy/.test(h2.daemonLog), 5000);
    const allowed = await h2.runToEnd(['--tag', 'grp=db'], ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', 'http://10.0.0.51/'], 30_000);
    expect(allowed.stdout).toBe('200');
  });

  it('create on an existing name replaces it (and says so)', async () => {
    const r = await request<VserviceView & { replaced: boolean }>(h1.socket, 'createVservice', { name: 'secret', ip: '10.0.0.51', port: 80, backends: [LIVE2], tags: ['grp=db'] });
    expect(r).toMatchObject({ replaced: true, backends: [LIVE2] });
    await waitFor(async () => (await vservices(h2)).find((v) => v.name === 'secret')?.backends[0] === LIVE2, 5000);
    expect((await request<ServiceView[]>(h2.socket, 'services')).filter((s) => s.vip === '10.0.0.51').map((s) => s.endpoint)).toEqual([LIVE2]);
  });

  it('survives restarts of host 2, then host 1 (alone, with --clean: from its objects.json, 0600)', async () => {
    const file = path.join(h1.stateDir, 'objects.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).toContain('"name":"db"');
    await stop(h2);
    await stop(h1);
    /* host 1 alone, with --clean: the virtual services come from its file, not from a peer */
    await h1.startDaemon([...H1, '--clean']);
    expect((await vservices(h1)).map((v) => v.name).sort()).toEqual(['db', 'secret']);
    await h2.startDaemon(H2);
    expect((await vservices(h2)).map((v) => v.name)).toContain('db'); /* from its own file, at once */
    await waitFor(async () => (await request<Array<{ state: string }>>(h2.socket, 'members')).filter((m) => m.state === 'alive').length === 2, 15_000);
    expect((await curlTimes(h2, ['http://db/', 'http://10.0.0.50/'], 1)).ok).toEqual([1, 1]);
  });

  it('deleted on host 2, it is gone on host 1 too, and connects are refused', async () => {
    const r = await h2.cli(['delete', 'vservice', 'db', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ name: 'db', deleted: true });
    await waitFor(async () => !(await vservices(h1)).some((v) => v.name === 'db'), 5000);
    expect((await request<ServiceView[]>(h1.socket, 'services')).filter((s) => s.vip === '10.0.0.50')).toEqual([]);
    const c = await h2.runToEnd([], ['curl', '-sS', '-m', '5', 'http://10.0.0.50/'], 30_000);
    expect(c.code).toBe(7); /* couldn't connect */
    expect(await callError(h1, 'deleteVservice', { name: 'db' })).toMatch(/^ERR_NOT_FOUND: no virtual service named db/);
  });
});

describe('bad requests', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['bad name', db({ name: 'Bad_Name' }), /name "Bad_Name" is not a valid DNS name/],
    ['ip not an address', db({ ip: '10.0.0.5x' }), /ip "10\.0\.0\.5x" is not an IP address/],
    ['ip outside the virtual ranges', db({ ip: '192.0.2.77' }), /outside the virtual ranges/],
    ['ip the network address', db({ ip: '10.0.0.0' }), /network address/],
    ['port 0', db({ port: 0 }), /port 0 is not an integer 1-65535/],
    ['port 65536', db({ port: 65536 }), /port 65536/],
    ['port not an integer', db({ port: 1.5 }), /port 1\.5/],
    ['port a string', db({ port: '80' }), /parameter "port" must be a number/],
    ['no backend', db({ backends: [] }), /give 1 to 64/],
    ['65 backends', db({ backends: Array.from({ length: 65 }, (_, i) => `198.51.100.10:${1000 + i}`) }), /give 1 to 64 \(got 65\)/],
    ['backend not ADDR:PORT', db({ backends: ['nope'] }), /is not ADDR:PORT/],
    ['IPv6 backend without brackets', db({ backends: ['2001:db8::1:80'] }), /is not ADDR:PORT/],
    ['backend port 0', db({ backends: ['198.51.100.10:0'] }), /port 0 is not 1-65535/],
    ['loopback backend', db({ backends: ['127.0.0.1:80'] }), /loopback/],
    ['IPv6 loopback backend', db({ backends: ['[::1]:80'] }), /loopback/],
    ['unspecified backend', db({ backends: ['0.0.0.0:80'] }), /unspecified/],
    ['multicast backend', db({ backends: ['224.0.0.1:80'] }), /multicast/],
    ['link-local backend', db({ backends: ['169.254.9.9:80'] }), /link-local/],
    ['virtual backend', db({ backends: ['10.1.2.3:80'] }), /virtual address/],
    ['a daemon port of a member', db({ backends: ['192.0.2.2:7946'] }), /appswitch daemon's gossip port/],
    ['a pool port of a member', db({ backends: ['192.0.2.1:45000'] }), /port pool/],
    ['a backend twice', db({ backends: [LIVE1, LIVE1] }), /listed twice/],
    ['unknown lb', db({ lb: 'fastest' }), /lb "fastest" is not one of/],
    ['tag without =', db({ tags: ['grp'] }), /bad tag "grp"/],
    ['tag with a bad key', db({ tags: ['a b=1'] }), /bad tag "a b=1"/],
    ['unknown field', db({ weight: 3 }), /takes no parameter "weight"/],
    ['missing backends', { name: 'db', ip: '10.0.0.50', port: 80 }, /needs the parameter "backends"/],
  ];
  for (const [what, params, msg] of cases) {
    it(`${what}: ERR_BAD_PARAMS`, async () => {
      const e = await callError(h1, 'createVservice', params);
      expect(e).toMatch(/^ERR_BAD_PARAMS: /);
      expect(e).toMatch(msg);
    });
  }

  it('clashes: the vip:port of another vservice, the identity or the name of an app: ERR_CONFLICT; delete of a missing name: ERR_NOT_FOUND', async () => {
    await request(h1.socket, 'createVservice', { name: 'one', ip: '10.0.0.70', port: 5432, backends: [LIVE1] });
    expect(await callError(h1, 'createVservice', { name: 'two', ip: '10.0.0.70', port: 5432, backends: [LIVE2] })).toMatch(/^ERR_CONFLICT: 10\.0\.0\.70:5432 is already served by virtual service one/);
    expect((await request<VserviceView>(h1.socket, 'createVservice', { name: 'two', ip: '10.0.0.70', port: 5433, backends: [LIVE2] })).port).toBe(5433);
    const app = h2.run(['--ip', '10.0.0.71', '--name', 'webapp'], ['python3', '-m', 'http.server', '8000']);
    await waitFor(async () => (await request<ServiceView[]>(h1.socket, 'services')).some((s) => s.vip === '10.0.0.71'), 10_000);
    expect(await callError(h1, 'createVservice', { name: 'three', ip: '10.0.0.71', port: 9000, backends: [LIVE1] })).toMatch(/^ERR_CONFLICT: ip 10\.0\.0\.71 is the identity of an app/);
    expect(await callError(h1, 'createVservice', { name: 'webapp', ip: '10.0.0.72', port: 80, backends: [LIVE1] })).toMatch(/^ERR_CONFLICT: name webapp is the name of an app/);
    killTree(app, 'SIGKILL');
    /* an app may not take a vservice's vip */
    const taken = await h2.runToEnd(['--ip', '10.0.0.70'], ['true']);
    expect(taken.code).toBe(125);
    expect(taken.stderr).toMatch(/--ip 10\.0\.0\.70 is the vip of virtual service (one|two): not an app's address/);
    expect(await callError(h1, 'deleteVservice', { name: 'nothing' })).toMatch(/^ERR_NOT_FOUND: no virtual service named nothing/);
    expect(await callError(h1, 'deleteVservice', { name: 'Bad Name' })).toMatch(/^ERR_BAD_PARAMS: /);
  });

  it("a non-root member of the daemon's group may list but not create or delete: ERR_PERMISSION", async () => {
    const g = sh('id', ['-g', MEMBER]).trim();
    const asMember = (args: string[]): Promise<Result> =>
      finish(spawn('setpriv', ['--reuid', MEMBER, '--regid', g, '--init-groups', '--', 'node', CLI, ...args, '--socket', h1.socket], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }), 15_000);
    const list = await asMember(['get', 'vservices', '--json']);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as VserviceView[]).map((v) => v.name)).toContain('one');
    const c = await asMember(['create', 'vservice', 'mine', '--ip', '10.0.0.80', '--port', '80', '--backend', LIVE1]);
    expect(c.code).toBe(125);
    expect(c.stderr).toContain('ERR_PERMISSION: createVservice changes the application network: it needs root');
    const d = await asMember(['delete', 'vservice', 'one']);
    expect(d.code).toBe(125);
    expect(d.stderr).toContain('ERR_PERMISSION');
    expect((await vservices(h1)).map((v) => v.name)).toContain('one');
    expect((await vservices(h1)).map((v) => v.name)).not.toContain('mine');
  });
});
