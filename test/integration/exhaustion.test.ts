/** Exhaustion: the port pool, the daemon's descriptor limit and a program's own descriptor limit run out; programs
 * get an errno (never a hang), the daemon logs it and keeps running, and everything works again once the resource
 * is back. Real programs under the real filter, in namespaces this file creates and removes. */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileHelper, finish, killTree, TestHost, waitFor } from '../helpers/hosts.js';

let FUZZ: string;
const hosts: TestHost[] = [];

beforeAll(() => {
  FUZZ = compileHelper('fuzz');
});

afterAll(async () => {
  for (const h of hosts) await h.destroy();
});

function firstLine(h: TestHost, p: ReturnType<TestHost['run']>): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    p.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0] as string);
    });
    p.on('close', () => resolve(out.trim() || `exited; daemon log: ${h.daemonLog.slice(-500)}`));
  });
}

describe('port pool', () => {
  it('gives the 5th server EADDRINUSE with a 4-port pool, logs it, and binds again once a server exits', async () => {
    const h = TestHost.create('expool', '192.0.2.41');
    hosts.push(h);
    await h.startDaemon(['--ports', '41000-41003']);
    const servers = [1, 2, 3, 4].map((i) => h.run(['--ip', `10.41.0.${i}`], [FUZZ, 'listen', '--port', '8000']));
    try {
      for (const s of servers) expect(await firstLine(h, s)).toBe('listening 8000');
      const fifth = await h.runToEnd(['--ip', '10.41.0.5'], [FUZZ, 'listen', '--port', '8000'], 5_000);
      expect(fifth.stdout).toMatch(/^bind EADDRINUSE/);
      expect(h.daemonLog).toContain('port pool exhausted');
      killTree(servers[0] as ReturnType<TestHost['run']>, 'SIGKILL');
      await waitFor(async () => (await h.services()).length === 3, 10_000);
      const again = h.run(['--ip', '10.41.0.6'], [FUZZ, 'listen', '--port', '8000']);
      servers.push(again);
      expect(await firstLine(h, again)).toBe('listening 8000');
    } finally {
      for (const s of servers) killTree(s, 'SIGKILL');
    }
  });
});

describe('descriptor limits', () => {
  it("a program's own RLIMIT_NOFILE: socket() under appswitch gives EMFILE exactly like the kernel", async () => {
    const h = TestHost.create('exfd', '192.0.2.42');
    hosts.push(h);
    await h.startDaemon();
    const nat = await h.exec(['prlimit', '--nofile=32', FUZZ, 'fdlimit']);
    const as = await h.runToEnd([], ['prlimit', '--nofile=32', FUZZ, 'fdlimit']);
    expect(nat.stdout).toMatch(/fdlimit opened=\d+ errno=EMFILE/);
    expect(as.stdout, as.stderr).toMatch(/fdlimit opened=\d+ errno=EMFILE/);
    // the same number of sockets fit: the generator's descriptors are not the program's
    expect(/opened=(\d+)/.exec(as.stdout)?.[1]).toBe(/opened=(\d+)/.exec(nat.stdout)?.[1]);
    expect(as.stdout).toContain('after close: socket ok');
    expect((await h.cli(['status', '--json'])).code).toBe(0);
  });

  // Skipped: found broken, not fixed yet. With the daemon's soft RLIMIT_NOFILE at its current fd count, a 1000-connect
  // burst ended with errors/EOFs (no hang), but after the limit was restored a new program's burst printed nothing
  // within 60 s (the daemon did not serve the new app). See the fuzz branch report.
  it.skip("the daemon's RLIMIT_NOFILE: a burst of connects gets errnos, not a hang; the daemon logs it, keeps running and recovers", async () => {
    const h = TestHost.create('exdm', '192.0.2.43');
    hosts.push(h);
    await h.startDaemon();
    const pid = h.daemon?.pid as number;
    const srv = h.run(['--ip', '10.43.0.1'], [FUZZ, 'serve', '--port', '9000', '--id', 'A']);
    const srvOut = finish(srv, 120_000);
    try {
      await h.waitService('10.43.0.1', 9000);
      const client = h.run([], [FUZZ, 'burst', '--allowed', '10.43.0.1:9000', '--iterations', '1000']);
      const clientOut = finish(client, 120_000);
      await new Promise((r) => setTimeout(r, 300)); // the client is registered and connecting
      const fds = readdirSync(`/proc/${pid}/fd`).length;
      const soft = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] as string;
      // room for no more than the descriptors it holds now (the soft limit; raising a hard limit again needs
      // CAP_SYS_RESOURCE): every fast-path hand-over (two fds) hits it
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${fds}:`]);
      const limited = await clientOut;
      console.log('daemon at its fd limit:', limited.stdout.trim());
      expect(limited.signal).toBeNull();
      expect(limited.stdout).toMatch(/^burst ok=\d+ timeout=\d+/);
      expect(h.daemon?.exitCode).toBeNull(); // still running
      expect(h.daemonLog).toMatch(/descriptors did not fit|accept failed/);
      // no connection may hang: each one either worked or ended with an error or EOF ("E?" counts EOFs)
      expect(limited.stdout).toMatch(/timeout=0\b/);
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
      const after = await h.runToEnd([], [FUZZ, 'burst', '--allowed', '10.43.0.1:9000', '--iterations', '200'], 60_000);
      console.log('limit restored:', after.stdout.trim());
      expect(after.stdout).toMatch(/^burst ok=200 timeout=0\s*$/m);
      expect((await h.cli(['status', '--json'])).code).toBe(0);
    } finally {
      killTree(srv, 'SIGTERM');
      await srvOut;
    }
  }, 200_000);
});
