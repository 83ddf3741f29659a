/** Connects decided in the generator from the decision table (native/dtab.h): with the daemon stopped (SIGSTOP) and
 * then killed (SIGKILL), programs already registered keep connecting to services already in the table, and keep
 * obeying its policy (a denied vip is refused at once, not after a wait for the daemon). Real programs under the real
 * filter, in a namespace this file creates and removes. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, ROOT, sleep, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;
const ECHO = path.join(ROOT, 'test/helpers/echo-server.py');
const ROUNDS = path.join(ROOT, 'test/helpers/connect-rounds.py');
const PROBE = path.join(ROOT, 'test/helpers/connect-probe.py');

beforeAll(async () => {
  h = TestHost.create('local');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

function daemonPid(): number {
  return Number(readFileSync(path.join(h.stateDir, 'lock'), 'utf8').trim());
}

describe('connects decided without the daemon', () => {
  it('keep working and keep obeying the policy while the daemon is stopped, then killed', async () => {
    const srv = h.run(['--ip', '10.3.0.1', '--tag', 'grp=1'], ['python3', ECHO, '8000']);
    const other = h.run(['--ip', '10.3.0.2', '--tag', 'grp=2'], ['python3', ECHO, '8000']);
    await h.waitService('10.3.0.1', 8000, 20_000);
    await h.waitService('10.3.0.2', 8000, 20_000);
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-rounds-')); /* not the state directory: programs do not see it */
    const go = path.join(dir, 'go-');
    const cli = h.run(['--tag', 'grp=1'], ['python3', ROUNDS, go, '10.3.0.1', '8000', '10.3.0.2', '3', '1']);
    let out = '';
    cli.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    cli.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    const done = finish(cli, 90_000);
    const until = (what: string): Promise<boolean> =>
      waitFor(() => out.includes(what), 20_000).catch((e: unknown) => {
        throw new Error(`${String(e)} waiting for "${what}": ${out}\n${h.daemonLog.slice(-3000)}`);
      });
    await until('ready');
    await sleep(200); /* the client's app is in the next publication of the table */

    writeFileSync(`${go}1`, ''); /* round 1: the daemon runs */
    await until('round 1');

    const pid = daemonPid();
    process.kill(pid, 'SIGSTOP');
    try {
      writeFileSync(`${go}2`, ''); /* round 2: the daemon is stopped */
      await until('round 2');
    } finally {
      process.kill(pid, 'SIGKILL'); /* round 3: the daemon is gone */
      process.kill(pid, 'SIGCONT');
    }
    writeFileSync(`${go}3`, '');
    const r = await done;
    expect(r.code, r.stderr).toBe(0);
    const rounds = r.stdout.split('\n').filter((l) => l.startsWith('round '));
    expect(rounds).toHaveLength(3);
    /* a port nobody serves is the daemon's to refuse (the table may be older than a new service): tried while it runs */
    expect(rounds[0]).toMatch(/nosvc=ECONNREFUSED/);
    for (const line of rounds) {
      expect(line).toMatch(/ok=20 denied=ECONNREFUSED denied_ms=\d+/);
      /* refused by the generator's own table, not after waiting for a daemon that does not answer */
      expect(Number(/denied_ms=(\d+)/.exec(line)?.[1])).toBeLessThan(1000);
    }
    srv.kill('SIGKILL');
    other.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('obey a change as soon as the daemon shows it: a service gone, then back with tags that deny the client', async () => {
    await h.startDaemon(); /* the test before killed it */
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-probe-'));
    try {
      const go = path.join(dir, 'go-');
      let srv = h.run(['--ip', '10.3.0.5', '--tag', 'grp=1'], ['python3', ECHO, '8000']);
      await h.waitService('10.3.0.5', 8000, 20_000);
      const cli = h.run(['--tag', 'grp=1'], ['python3', PROBE, go, '10.3.0.5', '8000', '3']);
      let out = '';
      cli.stdout?.on('data', (b: Buffer) => (out += b.toString()));
      cli.stderr?.on('data', (b: Buffer) => (out += b.toString()));
      const done = finish(cli, 60_000);
      const until = (what: string): Promise<boolean> =>
        waitFor(() => out.includes(what), 20_000).catch((e: unknown) => {
          throw new Error(`${String(e)} waiting for "${what}": ${out}`);
        });
      await until('ready');
      await sleep(200);
      writeFileSync(`${go}1`, '');
      await until('round 1');

      srv.kill('SIGKILL'); /* the service goes: the daemon removes it when its program ends */
      await waitFor(async () => !(await h.services()).some((s) => s.vip === '10.3.0.5'), 20_000);
      writeFileSync(`${go}2`, ''); /* the first connect after the daemon shows the change */
      await until('round 2');

      srv = h.run(['--ip', '10.3.0.5', '--tag', 'grp=2'], ['python3', ECHO, '8000']); /* back, for another group */
      await h.waitService('10.3.0.5', 8000, 20_000);
      writeFileSync(`${go}3`, '');
      const r = await done;
      expect(r.stdout.split('\n').filter((l) => l.startsWith('round '))).toEqual(['round 1 connected', 'round 2 ECONNREFUSED', 'round 3 ECONNREFUSED']);
      await h.waitForLog('connect denied by policy');
      srv.kill('SIGKILL');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
