/** Restart without loss: the daemon is killed (SIGKILL) or stopped (SIGTERM) under running programs and a new one
 * takes over from the state it saved. Programs keep running, established connections keep flowing (their data never
 * went through the daemon), trapped calls made meanwhile wait for the new daemon (or fail with ENETDOWN after
 * `--daemon-wait`), and services are back in the table, and in the cluster, within moments. */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppView, ServiceView } from '../../src/daemon/control-protocol.js';
import { request } from '../../src/cli/client.js';
import { finish, killTree, sleep, TestBridge, TestHost, waitFor } from '../helpers/hosts.js';

const services = (h: TestHost): Promise<ServiceView[]> => request<ServiceView[]>(h.socket, 'services');
const apps = (h: TestHost): Promise<AppView[]> => request<AppView[]>(h.socket, 'apps');
const has = async (h: TestHost, vip: string, port: number): Promise<boolean> =>
  (await services(h)).some((s) => s.vip === vip && s.port === port);

/** A client that waits for `trigger` to exist, then connects (a trapped call) and says how it went. */
function lateClient(trigger: string, vip: string, port: number): string {
  return [
    'import os,socket,time,errno',
    `while not os.path.exists(${JSON.stringify(trigger)}): time.sleep(0.02)`,
    't=time.time()',
    'try:',
    `  s=socket.create_connection((${JSON.stringify(vip)},${port}),timeout=30); print("connected after %.2f" % (time.time()-t), flush=True)`,
    'except OSError as e:',
    '  print("failed %s after %.2f" % (errno.errorcode.get(e.errno, e.errno), time.time()-t), flush=True)',
  ].join('\n');
}

function killDaemon(h: TestHost, sig: NodeJS.Signals): Promise<void> {
  const d = h.daemon;
  if (!d || d.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    d.once('exit', () => resolve());
    d.kill(sig);
  });
}

describe('daemon restart, one host', () => {
  let h: TestHost;
  let triggers: string;
  beforeAll(async () => {
    triggers = mkdtempSync(`${tmpdir()}/appswitch-rs-`);
    h = TestHost.create('rs');
    await h.startDaemon();
  });
  afterAll(async () => {
    await h?.destroy();
    rmSync(triggers, { recursive: true, force: true });
  });

  it('SIGKILL: iperf keeps flowing, a call made meanwhile waits and succeeds, services and apps come back, new connections work', async () => {
    const srv = h.run(['--ip', '10.0.0.5', '--name', 'ip'], ['iperf', '-s', '-p', '5001']);
    const srvDone = finish(srv, 120_000);
    await h.waitService('10.0.0.5', 5001);
    const before = (await apps(h)).map((a) => `${a.id}/${a.identity}`);
    const trigger = `${triggers}/go-${Date.now()}`; /* not in the state dir: programs cannot see that one */
    const late = h.run([], ['python3', '-c', lateClient(trigger, '10.0.0.5', 5001)]);
    const lateDone = finish(late, 60_000);
    const cl = h.run([], ['iperf', '-c', '10.0.0.5', '-p', '5001', '-t', '6', '-i', '1', '-f', 'm']);
    const clDone = finish(cl, 60_000);
    let clOut = '';
    cl.stdout?.on('data', (d: Buffer) => (clOut += d.toString()));
    /* the kill must come after both clients are registered and data flows (a loaded machine can take seconds) */
    await waitFor(async () => (await apps(h)).length === before.length + 2, 20_000);
    await waitFor(() => /\d+\.\d+-\s*1\.\d+ sec/.test(clOut), 20_000);

    await killDaemon(h, 'SIGKILL');
    writeFileSync(trigger, ''); // the late client's connect is trapped while no daemon runs
    await sleep(700);
    const t0 = Date.now();
    await h.startDaemon();
    await waitFor(() => has(h, '10.0.0.5', 5001), 20_000); /* how soon is measured (printed), not asserted */
    process.stdout.write(`service back in the table ${Date.now() - t0} ms after the new daemon was started\n`);

    const l = await lateDone;
    expect(l.stdout, l.stderr).toMatch(/connected after/);
    const after = (await apps(h)).map((a) => `${a.id}/${a.identity}`);
    for (const a of before) expect(after).toContain(a); // the same apps, with the same ids and identities

    const c = await clDone;
    expect(c.code, c.stderr).toBe(0);
    const intervals = [...c.stdout.matchAll(/\d+\.\d+-\s*(\d+)\.\d+ sec\s+[\d.]+ \w?Bytes\s+([\d.]+) Mbits\/sec/g)].map((m) => ({
      end: Number(m[1]),
      mbits: Number(m[2]),
    }));
    const perSecond = intervals.filter((i) => i.end <= 6);
    expect(perSecond.length).toBeGreaterThanOrEqual(6); // six 1-second reports and the total
    for (const i of perSecond) expect(i.mbits).toBeGreaterThan(0); // no second without data across the restart

    const n = await h.runToEnd([], ['iperf', '-c', '10.0.0.5', '-p', '5001', '-t', '1', '-f', 'm']);
    expect(n.code, n.stderr).toBe(0);
    expect(n.stdout).toMatch(/Mbits\/sec/);
    killTree(srv, 'SIGKILL');
    await srvDone;
  });

  it('a trapped call waits at most --daemon-wait, then fails with ENETDOWN; the program keeps running', async () => {
    const trigger = `${triggers}/go2-${Date.now()}`;
    const py = `${lateClient(trigger, '10.0.0.99', 80)}\nprint("still running", flush=True)`;
    const before = (await apps(h)).length;
    const late = h.run(['--daemon-wait', '800'], ['python3', '-c', py]);
    const done = finish(late, 30_000);
    // registered before the daemon goes (a fixed sleep lost that race on a loaded machine: `appswitch run` starts Node)
    await waitFor(async () => (await apps(h)).some((a) => a.cmd.join(' ').includes(trigger)), 15_000);
    await killDaemon(h, 'SIGKILL');
    writeFileSync(trigger, '');
    const r = await done; // the daemon stays down meanwhile
    expect(r.stdout, r.stderr).toMatch(/failed ENETDOWN after (\d+\.\d+)/);
    expect(Number(/after (\d+\.\d+)/.exec(r.stdout)?.[1])).toBeGreaterThanOrEqual(0.7);
    expect(r.stdout).toContain('still running');
    await h.startDaemon();
  });

  it('SIGTERM (systemctl restart) keeps the apps too; --clean starts empty and a program keeps its identity', async () => {
    const srv = h.run(['--ip', '10.0.0.6'], ['python3', '-m', 'http.server', '8000']);
    const srvDone = finish(srv, 60_000);
    await h.waitService('10.0.0.6', 8000);
    await killDaemon(h, 'SIGTERM');
    expect(existsSync(`${h.stateDir}/state.json`)).toBe(true);
    await h.startDaemon();
    await waitFor(() => has(h, '10.0.0.6', 8000), 5000);
    const c = await h.runToEnd([], ['curl', '-sS', '-m', '10', 'http://10.0.0.6:8000/']);
    expect(c.stdout).toContain('Directory listing');

    await killDaemon(h, 'SIGKILL');
    await h.startDaemon(['--clean']);
    // the generator comes back as a new app with the identity its program has been using; no service was kept
    await waitFor(async () => (await apps(h)).some((a) => a.identity === '10.0.0.6'), 5000);
    expect(await has(h, '10.0.0.6', 8000)).toBe(false);
    killTree(srv, 'SIGKILL');
    await srvDone;
  });
});

describe('daemon restart, two hosts', () => {
  let br: TestBridge;
  let a: TestHost;
  let b: TestHost;
  beforeAll(async () => {
    br = new TestBridge('rx');
    [a, b] = br.hostsOf('rx', 2) as [TestHost, TestHost];
    await a.startDaemon(['--node-name', 'ra']);
    await b.startDaemon(['--node-name', 'rb', '--join', '192.0.2.1']);
  });
  afterAll(async () => {
    await br?.destroy();
  });

  it('a restarted daemon re-announces its services: a host that had dropped them sees them again', async () => {
    const srv = a.run(['--ip', '10.0.0.7'], ['python3', '-m', 'http.server', '8000']);
    const srvDone = finish(srv, 90_000);
    await waitFor(() => has(b, '10.0.0.7', 8000), 30_000);
    await killDaemon(a, 'SIGKILL');
    await waitFor(async () => !(await has(b, '10.0.0.7', 8000)), 20_000); // b declared a dead and withdrew its entries
    const t0 = Date.now();
    await a.startDaemon(['--node-name', 'ra', '--join', '192.0.2.2']);
    await waitFor(() => has(b, '10.0.0.7', 8000), 30_000).catch((e: unknown) => {
      /* seen once in several runs: say what b's gossip saw of ra (member states, records refused or waiting) */
      const lines = b.daemonLog.split('\n').filter((l) => /member state|record from gossip|gossip: dropped|joined|service/.test(l));
      process.stdout.write(`b's log (gossip) when the re-announce did not arrive:\n${lines.slice(-40).join('\n')}\n`);
      process.stdout.write(`a's log since the restart:\n${a.daemonLog.split('\n').slice(-60).join('\n')}\n`);
      throw e;
    });
    process.stdout.write(`service re-announced to the other host ${Date.now() - t0} ms after the restart\n`);
    const c = await b.runToEnd([], ['curl', '-sS', '-m', '10', 'http://10.0.0.7:8000/']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toContain('Directory listing');
    killTree(srv, 'SIGKILL');
    await srvDone;
  });
});
