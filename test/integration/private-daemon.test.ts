/** Issue 14, "Better still": an ordinary user (not root, not in the appswitch group, no system daemon) runs apps under
 * a private daemon of its own (`appswitch daemon --private`, started by hand or by ensureDaemon), and `appswitch
 * run` finds it with no --socket. The program runs as the user with no capabilities, in a user namespace of the
 * launcher's; apps talk by name; an unmapped vip gets an errno. Attacks: a state directory prepared by someone else
 * (another owner, a loose mode, a symlink) is refused; another user's control request, `appswitch run` and launcher
 * are refused; the control socket is 0600; programs cannot see the state directory; a process of the user that is
 * not the launcher cannot register. Everything runs in a network namespace of the test's (the daemon uses
 * 127.0.0.1 there), as throwaway users removed afterwards; nothing of the user is left running. */
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launcherPath } from '../../src/native/binding.js';
import { removeAccounts, sh } from '../helpers/accounts.js';
import { CLI, finish, killTree, ROOT, type Result, TestHost, waitFor } from '../helpers/hosts.js';

const tag = (process.pid % 100000).toString();
const USER = `aspu${tag}`;
const OTHER = `aspo${tag}`;
const GROUP = `aspg${tag}`; /* a supplementary group of USER's (not the appswitch group) */

let h: TestHost;
let base: string; /* 0755 */
let xdg: string; /* the user's XDG_RUNTIME_DIR, 0700 */
let xdgOther: string;
let work: string; /* the user's working directory */
let uid = -1;
let daemon: ChildProcess | undefined;

const uidOf = (u: string): number => Number(sh('id', ['-u', u]).trim());
const stateDir = (): string => path.join(xdg, 'appswitch');
const controlSocket = (): string => path.join(stateDir(), 'appswitch.sock');

/** A command as `user` in the test's namespace, with a login's ids and a clean environment (no APPSWITCH_SOCKET: the
 * CLI must find the private daemon itself). */
function spawnAs(user: string, cmd: string[], env: Record<string, string> = {}): ChildProcess {
  const vars = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/', XDG_RUNTIME_DIR: user === USER ? xdg : xdgOther, ...env };
  return h.spawn(['setpriv', '--reuid', user, '--regid', sh('id', ['-g', user]).trim(), '--init-groups', '--', 'env', '-i', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), ...cmd], { cwd: work });
}

const as = (user: string, cmd: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<Result> => finish(spawnAs(user, cmd, env), timeoutMs);
const runAs = (user: string, appArgs: string[], cmd: string[]): Promise<Result> => as(user, ['node', CLI, 'run', ...appArgs, '--', ...cmd]);

/** A node -e script that calls src/cli/private-daemon.ts (compiled) and prints its answer as JSON. */
function privateApi(call: string): string[] {
  const mod = path.join(ROOT, 'dist/src/cli/private-daemon.js');
  return ['node', '--input-type=module', '-e', `const m = await import(${JSON.stringify(mod)}); const r = await ${call}; console.log(JSON.stringify(r));`];
}

/** The processes of `user` that still run: a zombie (`<defunct>`, already dead, its exit not yet collected by
 * the parent it was handed to) is none. */
function processesOf(user: string): string[] {
  try {
    return sh('pgrep', ['-u', user, '-a'])
      .trim()
      .split('\n')
      .filter((l) => l && !l.endsWith('<defunct>'));
  } catch {
    return []; /* pgrep: exit 1, none */
  }
}

function killUser(user: string): void {
  for (const line of processesOf(user)) {
    try {
      process.kill(Number(line.split(' ')[0]), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

beforeAll(() => {
  removeAccounts([USER, OTHER], GROUP);
  sh('groupadd', ['--system', GROUP]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', GROUP, USER]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', OTHER]);
  uid = uidOf(USER);
  base = mkdtempSync(path.join(tmpdir(), 'appswitch-private-'));
  chmodSync(base, 0o755);
  for (const [name, u] of [
    ['xdg', USER],
    ['xdg-other', OTHER],
    ['work', USER],
  ] as const) {
    const d = path.join(base, name);
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, uidOf(u), Number(sh('id', ['-g', u]).trim()));
  }
  xdg = path.join(base, 'xdg');
  xdgOther = path.join(base, 'xdg-other');
  work = path.join(base, 'work');
  h = TestHost.create('pd');
});

afterAll(async () => {
  if (daemon) killTree(daemon, 'SIGKILL');
  killUser(USER);
  killUser(OTHER);
  await h?.destroy();
  removeAccounts([USER, OTHER], GROUP);
  if (base) rmSync(base, { recursive: true, force: true });
});

describe('a private daemon for an ordinary user', () => {
  it('refuses a state directory it did not make for itself: another owner, a loose mode, a symlink', async () => {
    const bad = path.join(base, 'bad');
    mkdirSync(bad, { mode: 0o755 });
    chownSync(bad, uid, uid);
    const cases: Array<[string, () => void, RegExp]> = [
      ['owner', () => mkdirSync(path.join(bad, 'appswitch'), { mode: 0o700 }) /* root's */, /belongs to uid 0/],
      ['mode', () => (chownSync(path.join(bad, 'appswitch'), uid, uid), chmodSync(path.join(bad, 'appswitch'), 0o755)), /mode is 0755/],
      ['symlink', () => (rmSync(path.join(bad, 'appswitch'), { recursive: true }), symlinkSync(xdg, path.join(bad, 'appswitch'))), /not a directory/],
    ];
    for (const [what, make, why] of cases) {
      make();
      const r = await as(USER, ['node', CLI, 'daemon', '--private'], { XDG_RUNTIME_DIR: bad });
      expect(r.code, `${what}: ${r.stderr}`).not.toBe(0);
      expect(r.stderr, what).toMatch(why);
    }
    expect(processesOf(USER)).toEqual([]);
  });

  it('ensureDaemon starts one detached for the user, and finds it running the second time', async () => {
    const first = await as(USER, privateApi('m.ensureDaemon({ log: (l) => console.error(l) })'));
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toEqual({ socket: controlSocket(), started: true, private: true });
    expect(first.stderr).toMatch(/starting a private daemon/);
    const again = await as(USER, privateApi('m.ensureDaemon({ log: (l) => console.error(l) })'));
    expect(JSON.parse(again.stdout)).toEqual({ socket: controlSocket(), started: false, private: true });
    /* its state: the user's own, 0700; the control socket 0600 */
    const st = statSync(stateDir());
    expect([st.uid, st.mode & 0o777]).toEqual([uid, 0o700]);
    const sock = statSync(controlSocket());
    expect([sock.uid, sock.mode & 0o777]).toEqual([uid, 0o600]);
    expect(existsSync(path.join(stateDir(), 'daemon.log'))).toBe(true);
    const info = JSON.parse((await as(USER, ['node', CLI, 'status', '--json'])).stdout) as { private?: boolean; owner?: number; nodeAddress: string };
    expect(info).toMatchObject({ private: true, owner: uid, nodeAddress: '127.0.0.1' });
  });

  it('runs a program as the user, with no capabilities; its files are the user\'s', async () => {
    const r = await runAs(USER, [], ['sh', '-c', 'id -u; id -g; touch made-here; grep -E "^Cap(Eff|Prm|Bnd|Amb)" /proc/self/status']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, 2)).toEqual([String(uid), sh('id', ['-g', USER]).trim()]);
    for (const cap of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) expect(r.stdout).toMatch(new RegExp(`^${cap}:\\s+0000000000000000$`, 'm'));
    expect(statSync(path.join(work, 'made-here')).uid).toBe(uid);
  });

  it('a setuid launcher (an installation\'s, for its group) gives up root first: the program is the user\'s all the same', async () => {
    const setuid = path.join(base, 'setuid-launcher');
    copyFileSync(launcherPath(), setuid);
    chownSync(setuid, 0, Number(sh('getent', ['group', GROUP]).split(':')[2]));
    chmodSync(setuid, 0o4750);
    const r = await as(USER, ['node', CLI, 'run', '--', 'sh', '-c', 'grep -E "^(Uid|Gid|CapEff|CapPrm|CapBnd):" /proc/self/status'], { APPSWITCH_LAUNCHER: setuid });
    expect(r.code, r.stderr).toBe(0);
    const gid = sh('id', ['-g', USER]).trim();
    expect(r.stdout).toMatch(new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^Gid:\\s+${gid}\\s+${gid}\\s+${gid}\\s+${gid}$`, 'm'));
    for (const cap of ['CapEff', 'CapPrm', 'CapBnd']) expect(r.stdout).toMatch(new RegExp(`^${cap}:\\s+0000000000000000$`, 'm'));
  });

  it('keeps the supplementary groups for access checks, shown as nogroup (setgroups is denied in the user namespace)', async () => {
    const file = path.join(base, 'group-only');
    writeFileSync(file, 'for the group\n');
    chownSync(file, 0, Number(sh('getent', ['group', GROUP]).split(':')[2]));
    chmodSync(file, 0o640);
    const mine = path.join(work, 'mine');
    const r = await runAs(USER, [], ['sh', '-c', `id -G; cat ${file}; touch ${mine}; chgrp ${GROUP} ${mine} || echo no chgrp`]);
    expect(r.code, r.stderr).toBe(0);
    const [groups, text, chgrp] = r.stdout.split('\n');
    expect(groups?.split(' ')).toEqual([sh('id', ['-g', USER]).trim(), '65534']);
    expect(text).toBe('for the group');
    expect(chgrp).toBe('no chgrp');
    expect(statSync(mine).gid).toBe(Number(sh('id', ['-g', USER]).trim()));
  });

  it('hides the state directory from programs; the trap socket refuses a process of the user that is not the launcher', async () => {
    const r = await runAs(USER, [], ['sh', '-c', `ls -A ${stateDir()}; echo end`]);
    expect(r.stdout).toBe('end\n');
    const py = `import socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\ns.connect(${JSON.stringify(path.join(stateDir(), 'trap.sock'))})\ntime.sleep(0.3)`;
    const probe = await as(USER, ['python3', '-c', py]);
    expect(probe.code, probe.stderr).toBe(0);
    await waitFor(() => /trap connection refused: pid \d+ runs \S*python3\S*, not the appswitch launcher/.test(readFileSync(path.join(stateDir(), 'daemon.log'), 'utf8')), 5000);
  });

  it('two apps talk by name (a server on virtual port 80, no privilege needed); a vip that maps to nothing gets ECONNREFUSED', async () => {
    const server = spawnAs(USER, ['node', CLI, 'run', '--name', 'srv', '--', 'python3', '-m', 'http.server', '80', '--bind', '0.0.0.0', '--directory', work]);
    try {
      const client = await waitFor(async () => {
        const r = await runAs(USER, [], ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://srv/made-here']);
        return r.stdout === '200' ? r : undefined;
      }, 20_000, 300);
      expect(client?.stdout).toBe("200");
      /* same host: the fast path (a Unix socket pair) works in private mode too */
      const st = JSON.parse((await as(USER, ['node', CLI, 'status', '--json'])).stdout) as { connections: { fastpath: number } };
      expect(st.connections.fastpath).toBeGreaterThan(0);
      /* `appswitch up`'s way: --project; a bare name resolves inside the project (its resolv.conf is the user's) */
      const inProject = spawnAs(USER, ['node', CLI, 'run', '--project', 'demo', '--name', 'api', '--', 'python3', '-m', 'http.server', '8082', '--bind', '0.0.0.0', '--directory', work]);
      try {
        const viaProject = await waitFor(async () => {
          const r = await runAs(USER, ['--project', 'demo'], ['curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', 'http://api:8082/made-here']);
          return r.stdout === '200' ? r : undefined;
        }, 20_000, 300);
        expect(viaProject?.stdout).toBe('200');
      } finally {
        killTree(inProject, 'SIGTERM');
        await finish(inProject, 5000);
      }
      const none = await runAs(USER, [], ['python3', '-c', 'import socket\ntry:\n socket.create_connection(("10.77.0.9", 80), 5)\nexcept OSError as e:\n print(e.errno)']);
      expect(none.stdout.trim()).toBe('111'); /* ECONNREFUSED */
    } finally {
      killTree(server, 'SIGTERM');
      await finish(server, 5000);
    }
  });

  it('exposes an app on localhost:HOSTPORT through the relay (a gateway on 127.0.0.1)', async () => {
    const server = spawnAs(USER, ['node', CLI, 'run', '--name', 'pub', '--expose', '18080:8080', '--', 'python3', '-m', 'http.server', '8080', '--bind', '0.0.0.0', '--directory', work]);
    try {
      /* from the user's shell, not under appswitch: the outside world of a private daemon is this host's loopback */
      const r = await waitFor(async () => {
        const c = await as(USER, ['curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:18080/made-here']);
        return c.stdout === '200' ? c : undefined;
      }, 20_000, 300);
      expect(r?.stdout).toBe('200');
      /* changes through the control API (root's on a system daemon) are the user's on its private daemon */
      const apps = JSON.parse((await as(USER, ['node', CLI, 'get', 'apps', '--json'])).stdout) as Array<{ name: string | null; ip: string | null }>;
      const vip = apps.find((a) => a.name === 'pub')?.ip;
      expect(vip).toBeTruthy();
      const exposed = await as(USER, ['node', CLI, 'expose', `${vip}:8080`, '--port', '18081']);
      expect(exposed.code, exposed.stderr).toBe(0);
      const second = await waitFor(async () => {
        const c = await as(USER, ['curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:18081/made-here']);
        return c.stdout === '200' ? c : undefined;
      }, 20_000, 300);
      expect(second?.stdout).toBe('200');
      const below = await runAs(USER, ['--expose', '80:8080'], ['true']);
      expect(below.code).not.toBe(0);
      expect(below.stderr).toMatch(/host port 80 is below 1024/);
      const belowApi = await as(USER, ['node', CLI, 'expose', `${vip}:8080`, '--port', '80']);
      expect(belowApi.code).not.toBe(0);
      expect(belowApi.stderr).toMatch(/host port 80 is below 1024/);
    } finally {
      killTree(server, 'SIGTERM');
      await finish(server, 5000);
    }
  });

  it("refuses another user's control request and program, even with the socket file opened up", async () => {
    /* the directory and socket modes would stop the other user first: open them up so the daemon's own check runs */
    chmodSync(xdg, 0o711);
    chmodSync(stateDir(), 0o711);
    chmodSync(controlSocket(), 0o666);
    chmodSync(path.join(stateDir(), 'trap.sock'), 0o666);
    try {
      const status = await as(OTHER, ['node', CLI, 'status', '--json', '--socket', controlSocket()]);
      expect(status.code).not.toBe(0);
      expect(status.stderr).toMatch(new RegExp(`ERR_PERMISSION.*uid ${uidOf(OTHER)} is not root and not uid ${uid}`));
      const run = await as(OTHER, ['node', CLI, 'run', '--socket', controlSocket(), '--', 'id', '-u']);
      expect(run.code).not.toBe(0);
      expect(run.stdout).toBe('');
      /* the other user's own launcher, --private, at this daemon's trap socket: not its own daemon */
      const direct = await as(OTHER, [launcherPath(), '--private', '--socket', path.join(stateDir(), 'trap.sock'), '--', 'id', '-u']);
      expect(direct.code).toBe(125);
      expect(direct.stdout).toBe('');
      expect(direct.stderr).toMatch(/is not your private daemon's trap socket/);
    } finally {
      chmodSync(xdg, 0o700);
      chmodSync(stateDir(), 0o700);
      chmodSync(controlSocket(), 0o600);
      chmodSync(path.join(stateDir(), 'trap.sock'), 0o600);
    }
  });

  it('restarts under a running program: its generator comes back to the new daemon, which serves it by name', async () => {
    const server = spawnAs(USER, ['node', CLI, 'run', '--name', 'kept', '--', 'python3', '-m', 'http.server', '8081', '--bind', '0.0.0.0', '--directory', work]);
    const get = async (): Promise<string> => (await runAs(USER, [], ['curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', 'http://kept:8081/made-here'])).stdout;
    try {
      await waitFor(async () => (await get()) === '200', 20_000, 300);
      const stop = await as(USER, privateApi('m.stopPrivateDaemon()'));
      expect(stop.stdout.trim()).toBe('true');
      const start = await as(USER, privateApi('m.ensureDaemon({ log: () => {} })'));
      expect(JSON.parse(start.stdout)).toMatchObject({ started: true, private: true });
      expect(await waitFor(async () => (await get()) === '200', 20_000, 300)).toBe(true);
      expect(server.exitCode).toBeNull();
    } finally {
      killTree(server, 'SIGTERM');
      await finish(server, 5000);
    }
  });

  it('keeps its log bounded: a log past 16 MiB becomes daemon.log.1 and daemon.log starts again', async () => {
    const stop = await as(USER, privateApi('m.stopPrivateDaemon()'));
    expect(stop.stdout.trim()).toBe('true');
    const log = path.join(stateDir(), 'daemon.log');
    appendFileSync(log, `${'x'.repeat(17 * 1024 * 1024)}\nthe end of the old log\n`);
    const start = await as(USER, privateApi('m.ensureDaemon({ log: () => {} })'));
    expect(JSON.parse(start.stdout)).toMatchObject({ started: true, private: true });
    expect(await waitFor(() => existsSync(`${log}.1`) && readFileSync(log, 'utf8').includes('log rotated'), 10_000, 100)).toBe(true);
    expect(statSync(log).size).toBeLessThan(64 * 1024);
    expect(readFileSync(`${log}.1`, 'utf8')).toContain('the end of the old log');
    expect(statSync(`${log}.1`).uid).toBe(uid); /* the user's, as the log is */
    expect(statSync(`${log}.1`).mode & 0o777).toBe(0o600);
  });

  it('after a crash (SIGKILL: its sockets are left behind), ensureDaemon starts a new one', async () => {
    const pid = Number(readFileSync(path.join(stateDir(), 'lock'), 'utf8').trim());
    expect(processesOf(USER).some((l) => l.startsWith(`${pid} `))).toBe(true);
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !processesOf(USER).some((l) => l.startsWith(`${pid} `)), 5000);
    expect(existsSync(controlSocket())).toBe(true); /* stale */
    const start = await as(USER, privateApi('m.ensureDaemon({ log: () => {} })'));
    expect(start.code, start.stderr).toBe(0);
    expect(JSON.parse(start.stdout)).toMatchObject({ started: true, private: true });
    const r = await runAs(USER, [], ['id', '-u']);
    expect(r.stdout.trim()).toBe(String(uid));
  });

  it('stops, and leaves no process and no socket behind', async () => {
    const r = await as(USER, privateApi('m.stopPrivateDaemon()'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('true');
    await waitFor(() => processesOf(USER).length === 0, 10_000);
    expect(existsSync(controlSocket())).toBe(false);
    const again = await as(USER, privateApi('m.stopPrivateDaemon()'));
    expect(again.stdout.trim()).toBe('false');
  });

  it('appswitch up with no daemon running: starts the private one, runs the shop as the user, ports on localhost, down', async () => {
    const shop = path.join(ROOT, 'examples/shop');
    const up = await finish(spawnAs(USER, ['sh', '-c', `cd ${shop} && exec node ${CLI} up -d`], { NO_COLOR: '1' }), 120_000);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    expect(up.stderr).toMatch(/starting a private daemon for uid/);
    expect(up.stdout).toMatch(/project shop is up/);
    /* every program of the project is the user's */
    const rows = JSON.parse((await as(USER, ['node', CLI, 'ps', '-p', 'shop', '--json'])).stdout) as Array<{ name: string; state: string; pid: number }>;
    expect(rows.map((r) => `${r.name}:${r.state}`).sort()).toEqual(['api-1:ready', 'api-2:ready', 'cache:ready', 'web:ready']);
    for (const r of rows) expect(statSync(`/proc/${r.pid}`).uid).toBe(uid);
    /* from the project, by name; and from the host (not under appswitch) at the exposed port, through the relay */
    const inside = await runAs(USER, ['--project', 'shop'], ['curl', '-s', '-m', '5', '-f', 'http://web:8080/']);
    expect(inside.code, inside.stderr).toBe(0);
    expect(JSON.parse(inside.stdout)).toMatchObject({ visits: 1 });
    const outside = await h.exec(['curl', '-s', '-m', '5', '-f', 'http://127.0.0.1:18080/']);
    expect(outside.code, outside.stderr).toBe(0);
    expect(JSON.parse(outside.stdout)).toMatchObject({ visits: 2 });
    const down = await as(USER, ['node', CLI, 'down', '-p', 'shop'], {}, 60_000);
    expect(down.code, down.stderr).toBe(0);
    for (const r of rows) expect(existsSync(`/proc/${r.pid}`)).toBe(false);
    const stop = await as(USER, privateApi('m.stopPrivateDaemon()'));
    expect(stop.stdout.trim()).toBe('true');
    await waitFor(() => processesOf(USER).length === 0, 10_000);
  });

  it('appswitch daemon --private by hand; run finds it with no --socket; root gets no private daemon', async () => {
    daemon = spawnAs(USER, ['node', CLI, 'daemon', '--private']);
    await waitFor(async () => (await as(USER, ['node', CLI, 'status', '--json'])).code === 0, 15_000, 200);
    const r = await runAs(USER, [], ['id', '-u']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(String(uid));
    const root = await h.exec(['node', CLI, 'daemon', '--private']);
    expect(root.code).not.toBe(0);
    expect(root.stderr).toMatch(/--private is for an ordinary user/);
    const rootLauncher = await h.exec([launcherPath(), '--private', '--socket', path.join(stateDir(), 'trap.sock'), '--', 'id', '-u']);
    expect([rootLauncher.code, rootLauncher.stdout]).toEqual([125, '']);
    expect(rootLauncher.stderr).toMatch(/--private is for an ordinary user's own daemon/);
    killTree(daemon, 'SIGTERM');
    await finish(daemon, 10_000);
    daemon = undefined;
    await waitFor(() => processesOf(USER).length === 0, 10_000);
  });
});
