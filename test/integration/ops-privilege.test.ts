/** Privilege: the control and trap sockets are 0660 root:GROUP, and the daemon checks SO_PEERCRED on every
 * connection, so a user outside the group can neither use the control API nor register or run an app, even
 * through a socket file with looser permissions; a user in the group can use the control API, but registering an
 * app takes a real generator: started by root, or by a member through the installed setuid launcher
 * (test/security/register.test.ts, test/integration/run-as-user.test.ts). The group and both
 * users are temporary (created here, removed afterwards), so a real `appswitch` group is never touched. */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeAccounts as removeAccountsOf, sh } from '../helpers/accounts.js';
import { CLI, compileHelper, finish, type Result, TestHost } from '../helpers/hosts.js';
import { launcherPath } from '../../src/native/binding.js';

const tag = (process.pid % 100000).toString();
const GROUP = `asg${tag}`;
const OUTSIDER = `aso${tag}`;
const MEMBER = `asm${tag}`;

let host: TestHost;
let gid = -1;


function removeAccounts(): void {
  removeAccountsOf([OUTSIDER, MEMBER], GROUP);
}

/** Runs a command as `user` (its own uid, primary gid and supplementary groups). */
function asUser(user: string, cmd: string[], env: Record<string, string> = {}): Promise<Result> {
  const g = sh('id', ['-g', user]).trim();
  const p = spawn('setpriv', ['--reuid', user, '--regid', g, '--init-groups', '--', ...cmd], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
  });
  return finish(p, 15_000);
}

const control = (): string => host.socket;
const trap = (): string => path.join(host.stateDir, 'trap.sock');

beforeAll(async () => {
  removeAccounts();
  sh('groupadd', ['--system', GROUP]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', OUTSIDER]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', GROUP, MEMBER]);
  gid = Number(sh('getent', ['group', GROUP]).split(':')[2]);
  host = TestHost.create('priv');
  chmodSync(host.stateDir, 0o755); /* the state dir is traversable; the sockets decide */
  await host.startDaemon(['--group', GROUP]);
});

afterAll(async () => {
  await host?.destroy();
  removeAccounts();
});

describe('socket files', () => {
  it('are 0660, owned by root and the group', () => {
    for (const p of [control(), trap()]) {
      const st = statSync(p);
      expect(st.mode & 0o777).toBe(0o660);
      expect(st.uid).toBe(0);
      expect(st.gid).toBe(gid);
    }
  });

  it('the test users can reach the CLI (else the checks below would prove nothing)', async () => {
    const r = await asUser(OUTSIDER, ['node', CLI, 'version', '--socket', '/nonexistent']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('appswitch');
  });
});

describe('a user outside the group', () => {
  it('cannot use the control API: permission denied on the socket', async () => {
    const r = await asUser(OUTSIDER, ['node', CLI, 'status', '--socket', control()]);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`permission denied on ${control()}`);
    expect(r.stderr).toContain("members of the daemon's group");
  });

  it('cannot run an app', async () => {
    const r = await asUser(OUTSIDER, ['node', CLI, 'run', '--socket', control(), '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('permission denied');
  });

  describe('through socket files made world-writable (the SO_PEERCRED check alone)', () => {
    beforeAll(() => {
      chmodSync(control(), 0o666);
      chmodSync(trap(), 0o666);
    });
    afterAll(() => {
      chmodSync(control(), 0o660);
      chmodSync(trap(), 0o660);
    });

    it('the control API answers ERR_PERMISSION and logs the refusal', async () => {
      const r = await asUser(OUTSIDER, ['node', CLI, 'get', 'apps', '--socket', control()]);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`ERR_PERMISSION: permission denied: uid`);
      expect(r.stderr).toContain(`is not root and not in group ${GROUP}`);
      await host.waitForLog(/control connection refused: uid \d+ is not root/);
    });

    it('appswitch run is refused (control API)', async () => {
      const r = await asUser(OUTSIDER, ['node', CLI, 'run', '--socket', control(), '--', 'true']);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain('ERR_PERMISSION');
    });

    it('a generator cannot register an app (trap socket): the daemon answers ERR_PERMISSION', async () => {
      const before = (host.daemonLog.match(/app started/g) ?? []).length;
      /* a HELLO of its own (the launcher, not setuid here, refuses an ordinary user before connecting: register.test.ts) */
      const attack = compileHelper('attack-caps');
      chmodSync(path.dirname(attack), 0o755);
      const r = await asUser(OUTSIDER, [attack, 'hello', trap(), '{"cmd":["true"]}']);
      expect(r.stdout).toContain('connect ok');
      expect(r.stdout).toContain('ERR_PERMISSION: permission denied: uid');
      await host.waitForLog(/trap connection refused: uid \d+ is not root/);
      expect((host.daemonLog.match(/app started/g) ?? []).length).toBe(before);
      const apps = JSON.parse((await host.cli(['get', 'apps', '--json'])).stdout) as unknown[];
      expect(apps).toEqual([]);
    });
  });
});

describe('a user in the group', () => {
  it('can use the control API', async () => {
    const s = await asUser(MEMBER, ['node', CLI, 'status', '--json', '--socket', control()]);
    expect(s.code, s.stderr).toBe(0);
    expect(JSON.parse(s.stdout)).toMatchObject({ nodeAddress: host.address, group: GROUP });
    const a = await asUser(MEMBER, ['node', CLI, 'get', 'services', '--socket', control()]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(/^VIP\s+PORT/);
  });

  it("passes the group check but not the generator check: registering takes the launcher, root's or the setuid one", async () => {
    const before = (host.daemonLog.match(/app started/g) ?? []).length;
    const attack = compileHelper('attack-caps');
    chmodSync(path.dirname(attack), 0o755);
    const r = await asUser(MEMBER, [attack, 'hello', trap(), '{"cmd":["true"]}']);
    expect(r.stdout).toContain('connect ok');
    expect(r.stdout).not.toContain('permission denied: uid'); /* the group check let it in */
    expect(r.stdout).toMatch(/ERR_PERMISSION: only appswitch run may register programs \(pid \d+ runs .*attack-caps, not the appswitch launcher\)/);
    const l = await asUser(MEMBER, [launcherPath(), '--socket', trap(), '--meta', '{"cmd":["true"]}', '--', 'true']);
    expect(l.code).toBe(125);
    expect(l.stderr).toContain('is not setuid root'); /* the launcher as a checkout builds it */
    expect((host.daemonLog.match(/app started/g) ?? []).length).toBe(before);
  });
});
