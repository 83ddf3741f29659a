/** One daemon per state directory (src/daemon/state-lock.ts): a second daemon started on the directory of a running
 * one — here from another network namespace, so that its own ports are free and only the directory is shared —
 * refuses with one line naming the first one's pid and exit code 125, before it touches anything there; the first
 * keeps serving, with its control socket and its state file as they were. */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppView } from '../../src/daemon/control-protocol.js';
import { request } from '../../src/cli/client.js';
import { CLI, finish, killTree, TestBridge, TestHost, waitFor } from '../helpers/hosts.js';

const apps = (h: TestHost): Promise<AppView[]> => request<AppView[]>(h.socket, 'apps');

/** The pid in the last "daemon started" line of a host's daemon log. */
function startedPid(h: TestHost): number {
  const lines = h.daemonLog.split('\n').filter((l) => l.includes('"daemon started"'));
  return Number(/"pid":(\d+)/.exec(lines.at(-1) ?? '')?.[1]);
}

describe('state directory lock', () => {
  let bridge: TestBridge;
  let first: TestHost;
  let second: TestHost;
  beforeAll(async () => {
    bridge = new TestBridge('lock');
    [first, second] = bridge.hostsOf('lock', 2) as [TestHost, TestHost];
    await first.startDaemon();
  });
  afterAll(async () => {
    await bridge?.destroy();
  });

  it('a second daemon on the same state dir refuses with the pid of the first, which keeps serving', async () => {
    const keeper = first.run(['--name', 'keeper'], ['sleep', '300']);
    try {
      await waitFor(async () => (await apps(first)).some((a) => a.name === 'keeper'), 15_000);
      const stateFile = path.join(first.stateDir, 'state.json');
      await waitFor(() => existsSync(stateFile) && readFileSync(stateFile, 'utf8').includes('keeper'), 15_000);
      const stateBefore = readFileSync(stateFile, 'utf8');
      const pid = startedPid(first);
      expect(pid, first.daemonLog).toBeGreaterThan(0);

      const other = second.spawn(['node', CLI, 'daemon', '--state-dir', first.stateDir, '--node-address', second.address, '--log-level', 'info']);
      const r = await finish(other, 30_000);
      expect(r.code, r.stdout + r.stderr).toBe(125);
      expect(r.stderr).toBe(`appswitch: state dir ${first.stateDir} is in use by daemon pid ${pid}\n`);
      expect(r.stdout).not.toContain('daemon started'); /* the log is stdout; the refusal is the one line on stderr */

      // the first daemon is untouched: its socket answers, its state file and its app are as they were
      expect(existsSync(first.socket)).toBe(true);
      expect((await first.cli(['status', '--json'])).code).toBe(0);
      expect((await apps(first)).map((a) => a.name)).toContain('keeper');
      expect(readFileSync(stateFile, 'utf8')).toBe(stateBefore);
      expect(readFileSync(path.join(first.stateDir, 'lock'), 'utf8')).toBe(`${pid}\n`);
    } finally {
      killTree(keeper, 'SIGKILL');
    }
  }, 90_000);

  it('the lock goes with the daemon: after it stops, a new daemon starts on the directory', async () => {
    const d = first.daemon;
    expect(d).toBeDefined();
    await new Promise<void>((resolve) => {
      d?.once('exit', () => resolve());
      d?.kill('SIGKILL'); /* no clean stop: a crash must not leave a stale lock either */
    });
    await first.startDaemon();
    const pid = startedPid(first);
    expect(pid).not.toBe(d?.pid);
    expect(readFileSync(path.join(first.stateDir, 'lock'), 'utf8')).toBe(`${pid}\n`);
  }, 60_000);
});
