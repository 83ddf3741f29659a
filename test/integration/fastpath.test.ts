/** The same-host fast path: colocated programs talk over a Unix socket pair while they see TCP. Real programs under
 * the real filter, in a namespace this file creates and removes. */
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileHelper, finish, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;
let P: string;

interface Status {
  connections: { tcp: number; fastpath: number };
  fastpath: boolean;
}

async function status(host: TestHost): Promise<Status> {
  const r = await host.cli(['status', '--json']);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Status;
}

/** Connections counted since `before`, by path. */
async function delta(host: TestHost, before: Status): Promise<{ tcp: number; fastpath: number }> {
  const now = await status(host);
  return { tcp: now.connections.tcp - before.connections.tcp, fastpath: now.connections.fastpath - before.connections.fastpath };
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The probe's epoll server at ip:8000 under appswitch, for n connections; the counters as it came up. */
async function probeServer(ip: string, n: number): Promise<{ before: Status; out: ReturnType<typeof finish> }> {
  const before = await status(h);
  const out = finish(h.run(['--ip', ip], [P, 'server', '8000', String(n)]), 60_000);
  await h.waitService(ip, 8000, 20_000);
  return { before, out };
}

/** One probe client connection to ip:8000 in `mode`, which must say it went well. */
async function probeClient(ip: string, mode: string, appArgs: string[] = []): Promise<void> {
  const c = await h.runToEnd(appArgs, [P, 'client', ip, '8000', mode]);
  expect(c.stdout, c.stderr).toContain(`ok client ${mode}`);
}

beforeAll(async () => {
  P = compileHelper('fastpath-probe');
  h = TestHost.create('fast');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

describe('fast path', () => {
  it('looks like TCP from both ends: names, SO_DOMAIN/PROTOCOL, TCP options, half-close, poll/epoll, sendfile/splice', async () => {
    const before = await status(h);
    expect(before.fastpath).toBe(true);
    const srv = h.run(['--ip', '10.1.0.1'], [P, 'server', '8000', '3']);
    const out = finish(srv, 60_000);
    await h.waitService('10.1.0.1', 8000, 20_000);
    for (const mode of ['blocking', 'nonblock', 'sendfile']) {
      const c = await h.runToEnd(['--ip', '10.1.0.2'], [P, 'client', '10.1.0.1', '8000', mode]);
      expect(c.stdout, c.stderr).not.toContain('FAIL');
      expect(c.stdout).toContain(`ok client ${mode}`);
      expect(c.stdout).toMatch(/client local=10\.1\.0\.2:\d+ peer=10\.1\.0\.1:8000/);
    }
    const s = await out;
    expect(s.stdout, s.stderr).not.toContain('FAIL');
    expect(s.code).toBe(0);
    // the server, waiting in epoll on its listener, woke up for each and saw the client's identity and its own vip
    expect(s.stdout.match(/server local=10\.1\.0\.1:8000 peer=10\.1\.0\.2:\d+/g)).toHaveLength(3);
    expect(await delta(h, before)).toEqual({ tcp: 0, fastpath: 3 });
  });

  it('keeps a socket registered in epoll before connect() on TCP (as nginx does) and it works', async () => {
    const { before, out } = await probeServer('10.1.0.3', 2);
    await probeClient('10.1.0.3', 'epoll-first');
    expect(await delta(h, before)).toEqual({ tcp: 1, fastpath: 0 });
    /* the instance at fd 200, far above the program's other descriptors: not where a walk of the numbers up to their
     * count ends (native/fd_inspect.c), so the listing of /proc/PID/fd finds it */
    await probeClient('10.1.0.3', 'epoll-high');
    expect((await out).stdout).not.toContain('FAIL');
    expect(await delta(h, before)).toEqual({ tcp: 2, fastpath: 0 });
  });

  it('looks in every epoll instance of the client: other instances alone keep the fast path; registered in the last one, behind another file of the same number, keeps TCP', async () => {
    const { before, out } = await probeServer('10.1.0.5', 2);
    await probeClient('10.1.0.5', 'epoll-other');
    expect(await delta(h, before)).toEqual({ tcp: 0, fastpath: 1 });
    await probeClient('10.1.0.5', 'epoll-last');
    expect((await out).stdout).not.toContain('FAIL');
    expect(await delta(h, before)).toEqual({ tcp: 1, fastpath: 1 });
  });

  it('keeps a program holding more descriptors than the generator looks through on TCP, and it works', async () => {
    const { before, out } = await probeServer('10.1.0.9', 1);
    await probeClient('10.1.0.9', 'many-fds');
    expect((await out).stdout).not.toContain('FAIL');
    expect(await delta(h, before)).toEqual({ tcp: 1, fastpath: 0 });
  });

  it('`appswitch run --no-fastpath` keeps that app on TCP', async () => {
    const { before, out } = await probeServer('10.1.0.4', 2);
    await probeClient('10.1.0.4', 'blocking', ['--no-fastpath']);
    await probeClient('10.1.0.4', 'blocking');
    expect((await out).code).toBe(0);
    expect(await delta(h, before)).toEqual({ tcp: 1, fastpath: 1 });
  });

  it('serves real programs: curl -> python http.server, Node http -> Node http, iperf', async () => {
    const before = await status(h);
    const py = h.run(['--name', 'web'], ['python3', '-u', '-m', 'http.server', '8080']);
    const node = h.run(
      ['--ip', '10.1.0.6'],
      ['node', '-e', "require('http').createServer((q,r)=>r.end('node:'+q.socket.remoteAddress)).listen(9000)"],
    );
    const ip = h.run(['--ip', '10.1.0.7'], ['iperf', '-s', '-p', '5001']);
    try {
      await h.waitService('10.1.0.6', 9000, 20_000);
      await h.waitService('10.1.0.7', 5001, 20_000);
      await waitFor(async () => (await h.services()).some((s) => s.name === 'web'), 30_000);
      const c = await h.runToEnd([], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', 'http://web:8080/']);
      expect(c.stdout, c.stderr).toBe('200');
      const n = await h.runToEnd(
        ['--ip', '10.1.0.8'],
        ['node', '-e', "require('http').get('http://10.1.0.6:9000/',r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>console.log(b))})"],
      );
      expect(n.stdout.trim()).toMatch(/^node:(::ffff:)?10\.1\.0\.8$/); // Node listens on :: (dual stack), as natively
      const i = await h.runToEnd([], ['iperf', '-c', '10.1.0.7', '-p', '5001', '-t', '2', '-y', 'C'], 30_000);
      const bps = Number(i.stdout.trim().split('\n').pop()?.split(',').pop());
      expect(bps, i.stdout + i.stderr).toBeGreaterThan(100e6);
      const d = await delta(h, before);
      expect(d.fastpath).toBeGreaterThanOrEqual(3);
    } finally {
      for (const p of [py, node, ip]) p.kill('SIGKILL');
    }
  });

  it('the daemon holds no descriptors once connections are accepted (offers are claimed)', async () => {
    const pid = h.daemon?.pid as number;
    const srv = h.run(['--ip', '10.1.0.9'], [P, 'server', '8000', '20']);
    const out = finish(srv, 60_000);
    await h.waitService('10.1.0.9', 8000, 20_000);
    const base = fdCount(pid);
    for (let i = 0; i < 20; i++) {
      const c = await h.runToEnd([], [P, 'client', '10.1.0.9', '8000', 'blocking']);
      expect(c.stdout).toContain('ok client blocking');
    }
    expect((await out).code).toBe(0);
    await waitFor(() => fdCount(pid) <= base, 5_000);
  });
});

describe('daemon --no-fastpath', () => {
  let off: TestHost;
  afterAll(async () => {
    await off?.destroy();
  });

  it('keeps every connection on TCP', async () => {
    off = TestHost.create('nofast', '192.0.2.9');
    await off.startDaemon(['--no-fastpath']);
    const before = await status(off);
    expect(before.fastpath).toBe(false);
    const srv = off.run(['--ip', '10.2.0.1'], [P, 'server', '8000', '1']);
    const out = finish(srv, 60_000);
    await off.waitService('10.2.0.1', 8000, 20_000).catch((e: unknown) => {
      throw new Error(`${String(e)}\n${off.daemonLog}`);
    });
    const c = await off.runToEnd([], [P, 'client', '10.2.0.1', '8000', 'nonblock']);
    expect(c.stdout).toContain('ok client nonblock');
    expect((await out).code).toBe(0);
    expect(await delta(off, before)).toEqual({ tcp: 1, fastpath: 0 });
  });
});
