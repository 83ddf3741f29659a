/** Issue 10, item 4: the check-then-continue race. A program makes a trapped call on fd N from one thread while
 * another dup2()s an injected host socket onto N: the generator judges a Unix socket (or an unconnected TCP socket
 * for sendto) and answers CONTINUE, and the kernel re-runs the call on whatever N is by then. The socket guard
 * (native/sockguard.h: cgroup v2 sock_addr BPF hooks on the generators cgroup) makes the kernel refuse such a call
 * with EPERM. Performed against host-loopback listeners in the daemon's namespace, as root and as an unprivileged
 * user under `appswitch run`; before the guard the same runs connected (hundreds of connections in 2 s) and
 * delivered thousands of datagrams. Also: the program cannot move itself into the generators cgroup, and its cgroup
 * leaf is removed when it ends. */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroup2Mount } from '../helpers/cgroup.js';
import { spawn } from 'node:child_process';
import { launcherPath } from '../../src/native/binding.js';
import { finish, killTree, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const TCP_PORT = 8111;
const UDP_PORT = 8112;
const ACCEPT_SECONDS = '10';
const SECONDS = '3';

let h: TestHost;
let dir: string; /* 0755: the unprivileged user must be able to run the probe */
let ATTACK: string;
let cgmount: string; /* a bind mount of the cgroup2 hierarchy, visible inside `ip netns exec` (which remounts /sys) */
let listener: ChildProcess;
const seen = { tcp: 0, udp: 0 };

interface Outcome {
  attempts: number;
  ok: number;
  eperm: number;
  other: number;
}

/** Host-loopback listeners in the daemon's namespace: what an escape would reach. One output line per arrival. */
const LISTENERS = `
const net = require('net'), dgram = require('dgram');
const s = net.createServer((c) => { process.stdout.write('tcp\\n'); c.destroy(); });
s.listen(${TCP_PORT}, '127.0.0.1', () => {
  const u = dgram.createSocket('udp4');
  u.on('message', () => process.stdout.write('udp\\n'));
  u.bind(${UDP_PORT}, '127.0.0.1', () => process.stdout.write('ready\\n'));
});`;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-race-'));
  chmodSync(dir, 0o755);
  ATTACK = path.join(dir, 'attack-race');
  execFileSync('gcc', ['-O1', '-Wall', '-o', ATTACK, path.join(ROOT, 'test/helpers/attack-race.c'), '-lpthread'], { stdio: 'pipe' });
  cgmount = path.join(dir, 'cgroup');
  mkdirSync(cgmount);
  execFileSync('mount', ['--bind', cgroup2Mount(), cgmount], { stdio: 'pipe' }); /* a bind mount changes no option */
  h = TestHost.create('race');
  await h.startDaemon();
  listener = h.spawn(['node', '-e', LISTENERS]);
  let out = '';
  listener.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
    const lines = out.split('\n');
    out = lines.pop() ?? '';
    for (const l of lines) if (l === 'tcp' || l === 'udp') seen[l]++;
  });
  await waitFor(() => out.includes('ready') || seen.tcp + seen.udp > 0 || undefined, 30_000).catch(() => undefined);
  // the listeners answer (a plain host process may reach them: only programs under appswitch must not)
  const probe = await h.exec(['node', '-e', `require('net').connect(${TCP_PORT}, '127.0.0.1').on('connect', function () { this.destroy(); })`]);
  expect(probe.code).toBe(0);
  await waitFor(() => seen.tcp >= 1 || undefined);
  seen.tcp = 0;
});

afterAll(async () => {
  if (listener) killTree(listener, 'SIGKILL');
  await h?.destroy();
  try {
    execFileSync('umount', [cgmount], { stdio: 'pipe' });
  } catch {
    /* not mounted */
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});


const AS_NOBODY = ['setpriv', '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', '--'];

async function attack(asUser: string[], args: string[]): Promise<Outcome> {
  const r = await h.runToEnd([], [...asUser, ATTACK, ...args], 60_000);
  expect(r.code, r.stderr).toBe(0);
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  expect(line, r.stdout + r.stderr).toBeDefined();
  return JSON.parse(line as string) as Outcome;
}

describe('the dup2 race against CONTINUE', () => {
  for (const [who, asUser] of [
    ['root', []],
    ['an unprivileged user', AS_NOBODY],
  ] as const) {
    it(`connect(): a Unix socket judged, a host TCP socket connected — refused by the kernel (${who})`, async () => {
      const before = seen.tcp;
      const o = await attack([...asUser], ['connect', '127.0.0.1', String(TCP_PORT), SECONDS]);
      expect(o.ok).toBe(0);
      expect(o.eperm).toBeGreaterThan(0); /* the race was won: the kernel ran connect() on a host socket */
      expect(seen.tcp - before).toBe(0);
    });

    it(`sendto(): a TCP socket judged ("ignores the destination"), a host UDP socket sent — refused (${who})`, async () => {
      const before = seen.udp;
      const o = await attack([...asUser], ['sendto', '127.0.0.1', String(UDP_PORT), SECONDS, 'tcp']);
      expect(o.ok).toBe(0);
      expect(o.eperm).toBeGreaterThan(0);
      expect(seen.udp - before).toBe(0);
    });
  }

  it('sendto(): a Unix datagram socket judged, a host UDP socket sent — refused', async () => {
    const before = seen.udp;
    const o = await attack([], ['sendto', '127.0.0.1', String(UDP_PORT), SECONDS, 'unix']);
    expect(o.ok).toBe(0);
    expect(o.eperm).toBeGreaterThan(0);
    expect(seen.udp - before).toBe(0);
  });

  it('accept(): a Unix listener judged, the app\'s own listener accepted — no unvetted connection reaches the program', async () => {
    /* the program accepts for ACCEPT_SECONDS from its start: long enough that the attack below, which needs the
     * listener's real endpoint from `get services` first (a CLI call can take seconds on a loaded machine), runs
     * against a live listener for most of it */
    const p = h.run(['--ip', '10.0.0.7'], [ATTACK, 'accept', '7100', ACCEPT_SECONDS]);
    let out = '';
    p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    const endpoint = await waitFor(async () => (await h.services()).find((s) => s.vip === '10.0.0.7' && s.port === 7100)?.endpoint, 30_000);
    expect(endpoint, out + h.daemonLog.slice(-3000)).toBeDefined();
    const [ip, port] = (endpoint as string).split(':') as [string, string];
    // a plain host process connects straight to the listener's real endpoint: only the race could hand it over
    const atk = h.spawn(['node', '-e', `const net = require('net'); setInterval(() => { const s = net.connect(${port}, '${ip}', () => s.end('attack')); s.on('error', () => {}); }, 5);`]);
    try {
      const r = await finish(p, 60_000);
      expect(r.code, r.stderr).toBe(0);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      expect(line, out + r.stderr).toBeDefined();
      const o = JSON.parse(line as string) as { attempts: number; stolen: number };
      expect(o.attempts).toBeGreaterThan(0);
      expect(o.stolen).toBe(0);
    } finally {
      killTree(atk, 'SIGKILL');
    }
  });

  it('programs still work: python http.server and curl by vip, UDP through a vip', async () => {
    const srv = h.run(['--ip', '10.0.0.5'], ['python3', '-u', '-m', 'http.server', '8000']);
    try {
      await h.waitService('10.0.0.5', 8000);
      const c = await h.runToEnd([], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', 'http://10.0.0.5:8000/']);
      expect(c.stdout, c.stderr).toBe('200');
    } finally {
      killTree(srv, 'SIGKILL');
    }
    const udp = h.run(['--ip', '10.0.0.6'], ['python3', '-u', '-c', 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("0.0.0.0",9000));d,a=s.recvfrom(100);s.sendto(d.upper(),a)']);
    try {
      await h.waitService('10.0.0.6', 9000);
      const c = await h.runToEnd([], ['python3', '-c', 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5);s.sendto(b"ping",("10.0.0.6",9000));print(s.recv(100).decode())']);
      expect(c.stdout.trim(), c.stderr).toBe('PING');
    } finally {
      killTree(udp, 'SIGKILL');
    }
  });
});

describe('the cgroups behind the guard', () => {
  const apps = (): string => path.join(cgmount, 'appswitch/apps');

  it('the generator runs in appswitch/generators, the program in its own leaf behind a cgroup namespace', async () => {
    const p = h.run([], ['sh', '-c', 'cat /proc/self/cgroup; sleep 30']);
    try {
      let out = '';
      p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
      await waitFor(() => out.includes('0::') || undefined);
      expect(out).toContain('0::/\n'); /* its cgroup namespace is rooted at its leaf */
      const launcher = p.pid as number;
      expect(readFileSync(`/proc/${launcher}/cgroup`, 'utf8')).toContain('0::/appswitch/generators\n');
      const leaf = path.join(apps(), String(launcher));
      expect(existsSync(leaf)).toBe(true);
      expect(readFileSync(path.join(leaf, 'cgroup.procs'), 'utf8').trim().split('\n').length).toBeGreaterThan(0);
    } finally {
      killTree(p, 'SIGTERM');
      await finish(p, 10_000);
    }
  });

  it('a root program cannot move itself into the generators cgroup', async () => {
    const procs = path.join(cgmount, 'appswitch/generators/cgroup.procs');
    const r = await h.runToEnd([], [ATTACK, 'cgroup-escape', procs]);
    const o = JSON.parse(r.stdout.trim()) as { open: boolean; write: number; errno: string };
    expect(o.open).toBe(true); /* the file is reachable and writable by root: the cgroup namespace is what refuses */
    expect(o.write).toBe(-1);
    expect(o.errno).toMatch(/No such file|Operation not permitted|Permission denied/);
  });

  it('removes the leaf when the program ends, also after a daemonizing program, and stale leaves of dead launchers', async () => {
    let dead = 4_000_000;
    while (existsSync(`/proc/${dead}`)) dead--;
    const stale = path.join(apps(), String(dead));
    mkdirSync(stale);
    const p = h.run([], ['true']);
    const launcher = p.pid as number;
    expect((await finish(p, 10_000)).code).toBe(0);
    await waitFor(() => !existsSync(path.join(apps(), String(launcher))) || undefined);
    expect(existsSync(stale)).toBe(false);
    /* a daemonizing program: its background child keeps running (without our stdout) after the main process exits */
    const d = h.run([], ['sh', '-c', 'sleep 3 </dev/null >/dev/null 2>&1 & exit 0']);
    const dl = d.pid as number;
    expect((await finish(d, 10_000)).code).toBe(0);
    expect(existsSync(path.join(apps(), String(dl)))).toBe(true); /* its background child still runs there */
    await waitFor(() => !existsSync(path.join(apps(), String(dl))) || undefined, 30_000);
  });
});

describe('without the guard', () => {
  it('a daemon run --insecure-no-sockguard runs programs without it, says so, and the race escapes again (the control)', async () => {
    const x = TestHost.create('racex');
    try {
      await x.startDaemon(['--insecure-no-sockguard']);
      await x.waitForLog('running without the socket guard');
      const l = x.spawn(['node', '-e', LISTENERS]);
      let got = 0;
      l.stdout?.on('data', (b: Buffer) => (got += b.toString().split('\n').filter((s) => s === 'udp').length));
      await waitFor(async () => (await x.exec(['ss', '-lun'])).stdout.includes(`127.0.0.1:${UDP_PORT}`) || undefined);
      const r = await finish(x.run([], [ATTACK, 'sendto', '127.0.0.1', String(UDP_PORT), SECONDS, 'tcp']), 60_000);
      expect(r.stderr).toContain('running without the socket guard');
      const o = JSON.parse(r.stdout.trim()) as Outcome;
      expect(o.ok).toBeGreaterThan(0); /* the attack is real on this kernel: the guard is what stops it */
      await waitFor(() => got > 0 || undefined);
    } finally {
      await x.destroy();
    }
  });
});
