/** Issue 10, item 3: only a real generator may register a program, and a user may not take another user's vip or
 * name. Attacks: a member of the daemon's group, outside any trap, sends a HELLO with a forged app (another app's
 * vip and tags) on the trap socket — before the fix it was registered and could read that app's data; the same
 * member runs a launcher that is not setuid (the launcher refuses itself), and root runs the launcher without
 * CAP_SYS_ADMIN (the daemon refuses it); root's own non-launcher process sends garbage and a HELLO. The group and the
 * users are temporary (created here, removed afterwards). Real daemon, in a namespace this file creates. */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeAccounts as removeAccountsOf, sh } from '../helpers/accounts.js';
import { launcherPath, native } from '../../src/native/binding.js';
import { compileHelper, finish, killTree, type Result, TestHost, waitFor } from '../helpers/hosts.js';

const tag = (process.pid % 100000).toString();
const GROUP = `asrg${tag}`;
const MEMBER = `asrm${tag}`;
const ALICE = `asra${tag}`;
const BOB = `asrb${tag}`;

let h: TestHost;
let ATTACK: string;


function removeAccounts(): void {
  removeAccountsOf([MEMBER, ALICE, BOB], GROUP);
}

const uidOf = (u: string): string => sh('id', ['-u', u]).trim();
const trap = (): string => path.join(h.stateDir, 'trap.sock');

/** Runs a command as `user` (uid, primary gid, supplementary groups) inside the test's namespace. */
function asUser(user: string, cmd: string[]): Promise<Result> {
  const p = spawn('ip', ['netns', 'exec', h.ns, 'setpriv', '--reuid', user, '--regid', sh('id', ['-g', user]).trim(), '--init-groups', '--', ...cmd], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  return finish(p, 15_000);
}

async function apps(): Promise<Array<{ id: string; ip?: string; name?: string; tags: Record<string, string> }>> {
  return JSON.parse((await h.cli(['get', 'apps', '--json'])).stdout) as Array<{ id: string; ip?: string; name?: string; tags: Record<string, string> }>;
}

beforeAll(async () => {
  removeAccounts();
  sh('groupadd', ['--system', GROUP]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', GROUP, MEMBER]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', ALICE]);
  sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', BOB]);
  ATTACK = compileHelper('attack-caps');
  chmodSync(path.dirname(ATTACK), 0o755);
  h = TestHost.create('reg');
  chmodSync(h.stateDir, 0o755); /* the state dir is traversable; the sockets decide */
  await h.startDaemon(['--group', GROUP]);
});

afterAll(async () => {
  await h?.destroy();
  removeAccounts();
});

describe('registrations only from generators', () => {
  it("a group member outside any trap cannot register a forged app with another app's vip and tags", async () => {
    const victim = h.run(['--ip', '10.0.0.5', '--tag', 'team=red'], ['sleep', '60']);
    try {
      await waitFor(async () => (await apps()).some((a) => a.ip === '10.0.0.5'));
      const r = await asUser(MEMBER, [ATTACK, 'hello', trap(), '{"ip":"10.0.0.5","tags":{"team":"red"},"cmd":["forged"]}']);
      expect(r.stdout).toContain('connect ok'); /* the socket's mode lets the group in: the daemon's check decides */
      expect(r.stdout).toMatch(/reply result -1: ERR_PERMISSION: only appswitch run may register programs \(pid \d+ runs .*attack-caps, not the appswitch launcher\)/);
      /* the daemon logs the refusal beside its answer: the line may reach us just after the answer */
      await waitFor(() => /"uid":\d+.*"exe":".*attack-caps".*trap connection refused/.test(h.daemonLog), 5000).catch(() => undefined);
      await h.waitForLog(/"uid":\d+.*"exe":".*attack-caps".*trap connection refused/);
      const now = await apps();
      expect(now.filter((a) => a.ip === '10.0.0.5')).toHaveLength(1);
    } finally {
      killTree(victim, 'SIGKILL');
    }
  });

  it('a group member running a launcher that is not setuid root is refused by the launcher, before the daemon', async () => {
    const before = (h.daemonLog.match(/app started/g) ?? []).length;
    const r = await asUser(MEMBER, [launcherPath(), '--socket', trap(), '--meta', '{"ip":"10.0.0.6","cmd":["true"]}', '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/appswitch-launcher is not setuid root \(real and effective uid \d+\)/);
    expect((h.daemonLog.match(/app started/g) ?? []).length).toBe(before);
  });

  it('the launcher without CAP_SYS_ADMIN (root, with it out of the bounding set) is refused by the daemon', async () => {
    const before = (h.daemonLog.match(/app started/g) ?? []).length;
    const r = await h.exec(['setpriv', '--bounding-set', '-sys_admin', '--', launcherPath(), '--socket', trap(), '--meta', '{"ip":"10.0.0.6","cmd":["true"]}', '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/ERR_PERMISSION: only appswitch run may register programs \(pid \d+ lacks CAP_SYS_ADMIN/);
    expect((h.daemonLog.match(/app started/g) ?? []).length).toBe(before);
  });

  it("root's own process (not the launcher) is refused before its messages are parsed, and the daemon keeps serving", async () => {
    const fd = native.seqpacketConnect(trap());
    native.send(fd, Buffer.from('garbage'));
    try {
      native.send(fd, Buffer.alloc(112, 0xff));
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EPIPE'); /* the daemon may have dropped us already */
    }
    await waitFor(() => (h.daemonLog.match(/trap connection refused: pid \d+ runs .*not the appswitch launcher/g) ?? []).length > 0);
    native.close(fd);
    expect(h.daemonLog).not.toMatch(/malformed trap message/);
    const r = await h.exec([ATTACK, 'hello', trap(), '{"ip":"10.0.0.7","cmd":["x"]}']);
    expect(r.stdout).toMatch(/reply result -1: ERR_PERMISSION: only appswitch run may register programs/);
    expect((await apps()).some((a) => a.ip === '10.0.0.7')).toBe(false);
    const ok = await h.runToEnd(['--ip', '10.0.0.8'], ['true']);
    expect(ok.code, ok.stderr).toBe(0);
  });
});

describe('a vip or name belongs to the user whose app holds it', () => {
  /** `sudo appswitch run` as `user` would: root, with SUDO_UID telling who asked. */
  const runAs = (user: string, appArgs: string[], cmd: string[]): ReturnType<TestHost['run']> =>
    h.run(appArgs, cmd, { env: { SUDO_UID: uidOf(user), SUDO_USER: user } });

  it("another user's --ip or --name is refused (EADDRINUSE); the same user may run more instances", async () => {
    const a = runAs(ALICE, ['--ip', '10.0.0.20', '--name', 'shop'], ['sleep', '60']);
    try {
      await waitFor(async () => (await apps()).some((x) => x.ip === '10.0.0.20'));
      const byIp = await finish(runAs(BOB, ['--ip', '10.0.0.20'], ['true']));
      expect(byIp.code).toBe(125);
      expect(byIp.stderr).toContain(`EADDRINUSE: --ip 10.0.0.20 is held by app`);
      expect(byIp.stderr).toContain(`of another user (uid ${uidOf(ALICE)})`);
      const byName = await finish(runAs(BOB, ['--name', 'shop'], ['true']));
      expect(byName.code).toBe(125);
      expect(byName.stderr).toMatch(/EADDRINUSE: --(name shop|ip 10\.\d+\.\d+\.\d+) is held by app/);
      const root = await finish(h.run(['--ip', '10.0.0.20'], ['true'])); /* root without sudo is uid 0: another user too */
      expect(root.code).toBe(125);
      const again = await finish(runAs(ALICE, ['--ip', '10.0.0.20', '--name', 'shop'], ['true']));
      expect(again.code, again.stderr).toBe(0);
      const other = await finish(runAs(BOB, ['--ip', '10.0.0.21'], ['true']));
      expect(other.code, other.stderr).toBe(0);
      await h.waitForLog(/EADDRINUSE: --ip 10\.0\.0\.20 is held.*app refused/);
    } finally {
      killTree(a, 'SIGKILL');
    }
  });
});
