/** Issue 14, "Run as yourself": a member of the daemon's group runs `appswitch run` without root, through a copy of
 * the launcher installed as scripts/install.sh installs it (setuid root, root:GROUP, 4750), and the program runs as
 * that user: its uid, groups, environment and cwd, files it writes are its own, no capabilities at all, and it still
 * works on the application network. Attacks: a user outside the group cannot execute the launcher, and a 4755 copy
 * refuses it anyway; the options only root may give are refused; a fake daemon socket of the member gets nothing; a
 * member cannot claim another user's vip (not even with a forged owner in --meta), nor --expose; --resolv must be
 * root's own file; the environment's debug knob is ignored; the generator cannot be read by the member.
 * The group, the users and the temp dirs are made here and removed afterwards. Real daemon, in a namespace. */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launcherPath } from '../../src/native/binding.js';
import { removeAccounts as removeAccountsOf, sh } from '../helpers/accounts.js';
import { CLI, finish, killTree, type Result, TestHost, waitFor } from '../helpers/hosts.js';

const tag = (process.pid % 100000).toString();
const GROUP = `asug${tag}`;
const MEMBER = `asum${tag}`;
const OTHER = `asuo${tag}`; /* a second member of the group */
const OUTSIDER = `asux${tag}`;

let h: TestHost;
let dir: string; /* 0755: the launcher copies, the member's own directory, the fake daemon's socket */
let launcher: string; /* setuid root, root:GROUP, 4750: what install.sh installs */
let plain: string; /* the same launcher, not setuid (as a checkout builds it) */
let userDir: string;
let gid = -1;
let skip = '';

const uidOf = (u: string): number => Number(sh('id', ['-u', u]).trim());
const trap = (): string => path.join(h.stateDir, 'trap.sock');

function removeAccounts(): void {
  removeAccountsOf([MEMBER, OTHER, OUTSIDER], GROUP);
}

/** Starts a command as `user` (uid, primary gid, supplementary groups: a login's), in the test's namespace, with an
 * ordinary user's environment; tracked by the host for cleanup. setpriv keeps root's capabilities up to its own
 * execve (PR_SET_KEEPCAPS), so a shell without any execs the command, as a user's shell would. */
function spawnAs(user: string, cmd: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): ChildProcess {
  return h.spawn(['setpriv', '--reuid', user, '--regid', sh('id', ['-g', user]).trim(), '--init-groups', '--', '/bin/sh', '-c', 'exec "$@"', 'sh', ...cmd], {
    cwd: opts.cwd ?? dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/', APPSWITCH_LAUNCHER: launcher, APPSWITCH_SOCKET: h.socket, ...(opts.env ?? {}) },
  });
}

function as(user: string, cmd: string[], opts: { env?: Record<string, string>; cwd?: string } = {}, timeoutMs = 20_000): Promise<Result> {
  return finish(spawnAs(user, cmd, opts), timeoutMs);
}

/** `appswitch run` as `user`. */
function runAs(user: string, appArgs: string[], cmd: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<Result> {
  return as(user, ['node', CLI, 'run', ...appArgs, '--', ...cmd], opts);
}

interface App {
  id: string;
  pid: number | null;
  ip: string | null;
  owner: number;
  cmd: string[];
}

async function apps(): Promise<App[]> {
  return JSON.parse((await h.cli(['get', 'apps', '--json'])).stdout) as App[];
}

async function fastpathConnections(): Promise<number> {
  return (JSON.parse((await h.cli(['status', '--json'])).stdout) as { connections: { fastpath: number } }).connections.fastpath;
}

const started = (): number => (h.daemonLog.match(/app started/g) ?? []).length;

beforeAll(async () => {
  removeAccounts();
  sh('groupadd', ['--system', GROUP]);
  for (const u of [MEMBER, OTHER]) sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', GROUP, u]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', OUTSIDER]);
  gid = Number(sh('getent', ['group', GROUP]).split(':')[2]);
  /* a fresh 0755 directory (the checkout or TMPDIR may be 0700 elsewhere) on a mount that honours setuid */
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-suid-'));
  chmodSync(dir, 0o755);
  if (/\bnosuid\b/.test(sh('findmnt', ['-n', '-o', 'OPTIONS', '-T', dir]))) skip = `${dir} is on a nosuid mount`;
  launcher = path.join(dir, 'appswitch-launcher');
  copyFileSync(launcherPath(), launcher);
  plain = path.join(dir, 'appswitch-launcher-plain');
  copyFileSync(launcherPath(), plain);
  chmodSync(plain, 0o755);
  chownSync(launcher, 0, gid);
  chmodSync(launcher, 0o4750); /* after chown, which clears the setuid bit */
  userDir = path.join(dir, 'home');
  mkdirSync(userDir);
  chownSync(userDir, uidOf(MEMBER), Number(sh('id', ['-g', MEMBER]).trim()));
  chmodSync(userDir, 0o700);
  /* the daemon admits only this launcher (its installation's), and root's CLI uses it too */
  process.env.APPSWITCH_LAUNCHER = launcher;
  h = TestHost.create('suid');
  chmodSync(h.stateDir, 0o755); /* as /run/appswitch: traversable, the sockets decide */
  await h.startDaemon(['--group', GROUP]);
}, 60_000);

afterAll(async () => {
  await h?.destroy();
  delete process.env.APPSWITCH_LAUNCHER;
  removeAccounts();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a member of the group runs programs as itself', () => {
  it('the launcher is installed as install.sh does (the premise of every test below)', () => {
    expect(skip).toBe('');
    const st = statSync(launcher);
    expect(st.mode & 0o7777).toBe(0o4750);
    expect([st.uid, st.gid]).toEqual([0, gid]);
  });

  it('id -u prints its uid; id -G its groups, exactly as outside appswitch; the exit status is the program\'s', async () => {
    const u = await runAs(MEMBER, [], ['id', '-u']);
    expect(u.code, u.stderr).toBe(0);
    expect(u.stdout.trim()).toBe(String(uidOf(MEMBER)));
    const outside = await as(MEMBER, ['id', '-G']);
    const g = await runAs(MEMBER, [], ['id', '-G']);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stdout.trim()).toBe(outside.stdout.trim());
    expect(g.stdout.trim().split(' ')).toContain(String(gid));
    const x = await runAs(MEMBER, [], ['sh', '-c', 'exit 7']);
    expect(x.code, x.stderr).toBe(7);
  });

  it('keeps its environment and cwd; a file it writes in its directory is its own', async () => {
    const r = await runAs(MEMBER, [], ['sh', '-c', 'pwd; echo "$H9_VAR"; echo written > out.txt'], { cwd: userDir, env: { H9_VAR: 'kept value' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n').slice(0, 2)).toEqual([userDir, 'kept value']);
    const st = statSync(path.join(userDir, 'out.txt'));
    expect(st.uid).toBe(uidOf(MEMBER));
    expect(st.gid).toBe(Number(sh('id', ['-g', MEMBER]).trim()));
    expect(readFileSync(path.join(userDir, 'out.txt'), 'utf8')).toBe('written\n');
  });

  it('has no capabilities at all, NO_NEW_PRIVS, and every uid its own', async () => {
    const r = await runAs(MEMBER, [], ['cat', '/proc/self/status']);
    expect(r.code, r.stderr).toBe(0);
    const field = (n: string): string => new RegExp(`^${n}:\\s*(.*)$`, 'm').exec(r.stdout)?.[1]?.trim() ?? 'missing';
    for (const f of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) expect(`${f} ${field(f)}`).toBe(`${f} 0000000000000000`);
    expect(field('NoNewPrivs')).toBe('1');
    const uid = String(uidOf(MEMBER));
    expect(field('Uid').split(/\s+/)).toEqual([uid, uid, uid, uid]);
  });

  it("works on the application network: a server under --ip on virtual port 80 (no privilege: its real port is the pool's) reached by vip and name; get apps shows the owner", async () => {
    writeFileSync(path.join(dir, 'index.html'), 'hello from the member\n');
    const server = spawnAs(MEMBER, ['node', CLI, 'run', '--ip', '10.0.0.50', '--name', 'mweb', '--', 'python3', '-m', 'http.server', '80', '--bind', '0.0.0.0', '--directory', dir]);
    try {
      await h.waitService('10.0.0.50', 80, 15_000);
      const before = await fastpathConnections();
      const c = await runAs(MEMBER, [], ['curl', '-sS', '--max-time', '10', 'http://10.0.0.50/index.html']);
      expect(c.code, c.stderr).toBe(0);
      expect(c.stdout).toBe('hello from the member\n');
      expect(await fastpathConnections()).toBeGreaterThan(before); /* generator to generator, as for root's programs */
      const byName = await runAs(MEMBER, [], ['curl', '-sS', '--max-time', '10', 'http://mweb/index.html']);
      expect(byName.stdout, byName.stderr).toBe('hello from the member\n');
      const [tcp, root] = await Promise.all([
        runAs(MEMBER, ['--no-fastpath'], ['curl', '-sS', '--max-time', '10', 'http://10.0.0.50/index.html']),
        h.runToEnd([], ['curl', '-sS', '--max-time', '10', 'http://10.0.0.50/index.html']),
      ]);
      expect(tcp.stdout, tcp.stderr).toBe('hello from the member\n');
      expect(root.stdout, root.stderr).toBe('hello from the member\n');
      const app = (await apps()).find((a) => a.ip === '10.0.0.50');
      expect(app?.owner).toBe(uidOf(MEMBER));
    } finally {
      killTree(server, 'SIGKILL');
    }
  });
});

describe('a daemon restart under a member\'s program', () => {
  it('its generator opens a new session, checked as the first, and gets its app back, still the member\'s', async () => {
    writeFileSync(path.join(dir, 'restart.html'), 'still here\n');
    const server = spawnAs(MEMBER, ['node', CLI, 'run', '--ip', '10.0.0.70', '--', 'python3', '-m', 'http.server', '8000', '--bind', '0.0.0.0', '--directory', dir]);
    try {
      await h.waitService('10.0.0.70', 8000, 15_000);
      const d = h.daemon;
      await new Promise<void>((resolve) => {
        d?.once('exit', () => resolve());
        d?.kill('SIGTERM');
      });
      await h.startDaemon(['--group', GROUP]);
      await h.waitForLog('app resumed after a daemon restart', 15_000);
      await h.waitService('10.0.0.70', 8000, 15_000);
      expect((await apps()).find((a) => a.ip === '10.0.0.70')?.owner).toBe(uidOf(MEMBER));
      const c = await runAs(MEMBER, [], ['curl', '-sS', '--max-time', '10', 'http://10.0.0.70:8000/restart.html']);
      expect(c.stdout, c.stderr).toBe('still here\n');
    } finally {
      killTree(server, 'SIGKILL');
    }
  });
});

describe('attacks', () => {
  it('a user outside the group cannot execute the launcher (EACCES)', async () => {
    const r = await as(OUTSIDER, [launcher, '--socket', trap(), '--', 'id', '-u']);
    expect(r.code).toBe(126); /* the shell's: exec failed */
    expect(r.stderr).toMatch(/Permission denied/);
    expect(r.stdout).toBe('');
    const cli = await as(OUTSIDER, ['node', CLI, 'run', '--', 'id', '-u']);
    expect(cli.code).toBe(125);
    expect(cli.stdout).toBe('');
  });

  it('a copy made 4755 by mistake still refuses a user outside the group, before reaching the daemon', async () => {
    const open = path.join(dir, 'appswitch-launcher-4755');
    copyFileSync(launcher, open);
    chownSync(open, 0, gid);
    chmodSync(open, 0o4755);
    const before = started();
    const r = await as(OUTSIDER, [open, '--socket', trap(), '--meta', '{"cmd":["id"]}', '--', 'id', '-u']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/appswitch: permission denied: uid \d+ is not in the launcher's group \(gid \d+\)/);
    expect(r.stdout).toBe('');
    expect(h.daemonLog).not.toMatch(new RegExp(`"uid":${uidOf(OUTSIDER)}\\b`)); /* it never connected */
    expect(started()).toBe(before);
  });

  it("a launcher installed with another group than the daemon's: the daemon checks the real uid against --group", async () => {
    /* a second daemon (--group GROUP) whose launcher is root:OUTSIDER's own group: the launcher lets the outsider in,
     * the daemon must not (through a trap socket made world-writable, so that only the daemon's check decides) */
    const other = path.join(dir, 'appswitch-launcher-other-group');
    copyFileSync(launcher, other);
    chownSync(other, 0, Number(sh('id', ['-g', OUTSIDER]).trim()));
    chmodSync(other, 0o4750);
    const h2 = TestHost.create('suid2');
    try {
      chmodSync(h2.stateDir, 0o755);
      process.env.APPSWITCH_LAUNCHER = other;
      await h2.startDaemon(['--group', GROUP]);
      chmodSync(path.join(h2.stateDir, 'trap.sock'), 0o666);
      const r = await as(OUTSIDER, [other, '--socket', path.join(h2.stateDir, 'trap.sock'), '--meta', '{"cmd":["id"]}', '--', 'id', '-u']);
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(new RegExp(`ERR_PERMISSION: only appswitch run may register programs \\(pid \\d+ runs for uid ${uidOf(OUTSIDER)}, which is not in group ${GROUP}\\)`));
      expect(r.stdout).toBe('');
    } finally {
      process.env.APPSWITCH_LAUNCHER = launcher;
      await h2.destroy();
    }
  });

  it('a launcher that is not setuid root, or none, says what to do', async () => {
    const r = await as(MEMBER, [plain, '--socket', trap(), '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('is not setuid root');
    expect(r.stderr).toContain('sudo scripts/install.sh');
    const cli = await as(MEMBER, ['node', CLI, 'run', '--', 'true'], { env: { APPSWITCH_LAUNCHER: plain } });
    expect(cli.code).toBe(125);
    expect(cli.stderr).toMatch(/needs the installed setuid launcher.*sudo scripts\/install\.sh.*appswitch group/);
    const missing = await as(MEMBER, ['node', CLI, 'run', '--', 'true'], { env: { APPSWITCH_LAUNCHER: path.join(dir, 'nonexistent') } });
    expect(missing.code).toBe(125);
    expect(missing.stderr).toMatch(/needs the installed setuid launcher: appswitch-launcher not found[^]*sudo scripts\/install\.sh/);
  });

  it('--user root, --cap-add, --cap-drop (but ALL) and --no-sockguard are refused for a member', async () => {
    const before = started();
    const cases = [
      [['--user', 'root'], '--user: only root may choose'],
      [['--cap-add', 'NET_RAW'], '--cap-add: only root may choose'],
      [['--cap-drop', 'NET_RAW'], '--cap-drop: only root may choose'],
    ] as const;
    const results = await Promise.all(cases.map(([args]) => runAs(MEMBER, [...args], ['id', '-u'])));
    cases.forEach(([args, text], i) => {
      const r = results[i] as Result;
      expect(r.code, args.join(' ')).toBe(125);
      expect(r.stderr).toContain(text);
      expect(r.stdout).toBe('');
    });
    const ns = await as(MEMBER, [launcher, '--socket', trap(), '--no-sockguard', '--', 'id', '-u']);
    expect(ns.code).toBe(125);
    expect(ns.stderr).toContain('only root may run a program without the socket guard');
    expect(started()).toBe(before);
    const all = await runAs(MEMBER, ['--cap-drop', 'ALL'], ['id', '-u']); /* what it has anyway */
    expect(all.code, all.stderr).toBe(0);
  });

  it('--socket to a fake daemon the member made is refused before anything is sent', async () => {
    const sock = path.join(userDir, 'fake.sock');
    const FAKE = [
      'import socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
      `s.bind(${JSON.stringify(sock)}); s.listen(4); s.settimeout(8)`,
      'print("listening", flush=True)',
      'while True:',
      '    try: c, _ = s.accept()',
      '    except socket.timeout: break',
      '    c.settimeout(2)',
      '    try: d = c.recv(4096); print("received" if d else "closed", len(d), flush=True)',
      '    except socket.timeout: print("nothing", flush=True)',
    ].join('\n');
    const fake = spawnAs(MEMBER, ['python3', '-c', FAKE]);
    let out = '';
    fake.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitFor(() => out.includes('listening'));
      /* its own socket file: refused at the file */
      const r = await as(MEMBER, [launcher, '--socket', sock, '--meta', '{"cmd":["true"]}', '--', 'true']);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`${sock} is not the daemon's trap socket (it is not a socket owned by root`);
      /* the file handed to root (as a careless admin might): refused at the listener, which is not root */
      chownSync(sock, 0, 0);
      chmodSync(sock, 0o777);
      const r2 = await as(MEMBER, [launcher, '--socket', sock, '--meta', '{"cmd":["true"]}', '--', 'true']);
      expect(r2.code).toBe(125);
      expect(r2.stderr).toContain(`its listener runs as uid ${uidOf(MEMBER)}, not root`);
      /* one connection (the second try; the first never connected), closed with nothing sent */
      await waitFor(() => /closed|nothing|received/.test(out), 10_000);
      expect(out.trim().split('\n')).toEqual(['listening', 'closed 0']);
    } finally {
      killTree(fake, 'SIGKILL');
    }
  });

  it("a member cannot take a vip or name another user holds, not even with a forged owner in --meta", async () => {
    const other = spawnAs(OTHER, ['node', CLI, 'run', '--ip', '10.0.0.60', '--name', 'oapp', '--', 'sleep', '30']);
    try {
      await waitFor(async () => (await apps()).some((a) => a.ip === '10.0.0.60'));
      expect((await apps()).find((a) => a.ip === '10.0.0.60')?.owner).toBe(uidOf(OTHER));
      const byIp = await runAs(MEMBER, ['--ip', '10.0.0.60'], ['true']);
      expect(byIp.code).toBe(125);
      expect(byIp.stderr).toContain(`--ip 10.0.0.60 is held by app`);
      expect(byIp.stderr).toContain(`of another user (uid ${uidOf(OTHER)})`);
      const byName = await runAs(MEMBER, ['--name', 'oapp'], ['true']);
      expect(byName.code).toBe(125);
      expect(byName.stderr).toMatch(/is held by app \w+ of another user/); /* the name's vip: 10.0.0.60 */
      const meta = JSON.stringify({ ip: '10.0.0.60', owner: uidOf(OTHER), cmd: ['true'] });
      const forged = await as(MEMBER, [launcher, '--socket', trap(), '--meta', meta, '--', 'true']);
      expect(forged.code).toBe(125);
      expect(forged.stderr).toContain(`of another user (uid ${uidOf(OTHER)})`);
      expect((await apps()).filter((a) => a.ip === '10.0.0.60')).toHaveLength(1);
    } finally {
      killTree(other, 'SIGKILL');
    }
  });

  it('a member may not --expose (opening ports on the gateways takes root)', async () => {
    const r = await runAs(MEMBER, ['--ip', '10.0.0.61', '--expose', '8081'], ['true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('ERR_PERMISSION: --expose needs root');
  });

  it('--resolv must be a root-owned file the member can read itself', async () => {
    const secretDir = mkdtempSync(path.join(tmpdir(), 'appswitch-secret-')); /* 0700 root */
    const secret = path.join(secretDir, 'secret');
    writeFileSync(secret, 'root only\n', { mode: 0o644 });
    const mine = path.join(userDir, 'resolv.conf');
    try {
      const r = await as(MEMBER, [launcher, '--socket', trap(), '--resolv', secret, '--', 'cat', '/etc/resolv.conf']);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`--resolv ${secret}: Permission denied`);
      expect(r.stdout).not.toContain('root only');
      await as(MEMBER, ['sh', '-c', `echo 'nameserver 192.0.2.99' > ${mine}`]);
      const r2 = await as(MEMBER, [launcher, '--socket', trap(), '--resolv', mine, '--', 'true']);
      expect(r2.code).toBe(125);
      expect(r2.stderr).toContain(`--resolv ${mine}: refused: not a regular file owned by root`);
    } finally {
      rmSync(secretDir, { recursive: true, force: true });
    }
  });

  it("ignores the environment's knobs (APPSWITCH_GENERATOR_DEBUG), which root's run honours", async () => {
    const r = await runAs(MEMBER, [], ['true'], { env: { APPSWITCH_GENERATOR_DEBUG: '1' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('appswitch-generator:');
    const dbg = await finish(h.run([], ['true'], { env: { APPSWITCH_GENERATOR_DEBUG: '1' } }), 20_000);
    expect(dbg.code, dbg.stderr).toBe(0);
    expect(dbg.stderr).toContain('appswitch-generator:'); /* the control: the knob works for root */
  });

  it("the member cannot read the generator's memory or environment (not dumpable, root's)", async () => {
    const p = spawnAs(MEMBER, ['node', CLI, 'run', '--', 'sleep', '30']);
    try {
      const app = await waitFor(async () => (await apps()).find((a) => a.cmd[0] === 'sleep' && a.owner === uidOf(MEMBER) && a.pid !== null));
      /* the program's parent is its generator, the launcher */
      const gen = Number(/^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${(app as App).pid}/status`, 'utf8'))?.[1]);
      const status = readFileSync(`/proc/${gen}/status`, 'utf8');
      expect(status).toMatch(/^Name:\s*appswitch-launc/m);
      expect(/^Uid:\s*(.*)$/m.exec(status)?.[1]?.split(/\s+/)).toEqual([String(uidOf(MEMBER)), '0', '0', '0']);
      const READ = `import sys\nfor f in ("mem", "environ"):\n    try: open(f"/proc/${gen}/{f}", "rb").read(1); print(f, "read")\n    except OSError as e: print(f, e.errno)`;
      const r = await as(MEMBER, ['python3', '-c', READ]);
      expect(r.stdout.trim().split('\n')).toEqual(['mem 13', 'environ 13']);
    } finally {
      killTree(p, 'SIGKILL');
    }
  });
  it('brings a project up as a member (appswitch up -d): its programs are the member\'s, ports are left out with a warning, down', async () => {
    const proj = path.join(userDir, 'proj');
    await as(MEMBER, ['mkdir', '-p', proj]);
    const yaml = ['name: mine', 'services:', '  web:', '    command: python3 -m http.server 8080', '    ports: ["18088:8080"]', '    ready: {tcp: 8080}', ''].join('\n');
    writeFileSync(path.join(proj, 'index.html'), 'member page\n');
    writeFileSync(path.join(proj, 'appswitch.yaml'), yaml);
    chownSync(path.join(proj, 'index.html'), uidOf(MEMBER), Number(sh('id', ['-g', MEMBER]).trim()));
    chownSync(path.join(proj, 'appswitch.yaml'), uidOf(MEMBER), Number(sh('id', ['-g', MEMBER]).trim()));
    const up = await as(MEMBER, ['node', CLI, 'up', '-d'], { cwd: proj, env: { NO_COLOR: '1' } }, 60_000);
    try {
      expect(up.code, up.stdout + up.stderr).toBe(0);
      expect(up.stderr).toMatch(/ports of web are not exposed: on a system daemon only root may expose a port/);
      const rows = JSON.parse((await as(MEMBER, ['node', CLI, 'ps', '-p', 'mine', '--json'])).stdout) as Array<{ pid: number; state: string }>;
      expect(rows.map((r) => r.state)).toEqual(['ready']);
      const app = (await apps()).find((a) => a.owner === uidOf(MEMBER) && a.cmd.join(' ').includes('http.server'));
      expect(app?.pid).toBeTypeOf('number');
      expect(statSync(`/proc/${app?.pid as number}`).uid).toBe(uidOf(MEMBER));
      const got = await runAs(MEMBER, ['--project', 'mine'], ['curl', '-s', '-m', '5', 'http://web:8080/index.html']);
      expect(got.stdout).toBe('member page\n');
      /* the supervisor's directory is the member's own, 0700 */
      const st = statSync(`/tmp/appswitch-${uidOf(MEMBER)}/projects/mine`);
      expect([st.uid, st.mode & 0o777]).toEqual([uidOf(MEMBER), 0o700]);
    } finally {
      const down = await as(MEMBER, ['node', CLI, 'down', '-p', 'mine'], { cwd: proj }, 60_000);
      rmSync(`/tmp/appswitch-${uidOf(MEMBER)}`, { recursive: true, force: true });
      expect(down.code, down.stderr).toBe(0);
    }
    expect((await apps()).filter((a) => a.owner === uidOf(MEMBER))).toEqual([]);
  }, 90_000);
});
