/** Exhaustion: the port pool, the daemon's descriptor limit and a program's own descriptor limit run out; programs
 * get an errno (never a hang), the daemon logs it and keeps running, and everything works again once the resource
 * is back. Real programs under the real filter, in namespaces this file creates and removes. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileHelper, finish, killTree, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

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
      await h.waitForLog('port pool exhausted');
      killTree(servers[0] as ReturnType<TestHost['run']>, 'SIGKILL');
      await waitFor(async () => (await h.services()).length === 3, 30_000);
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

  /* The daemon's soft RLIMIT_NOFILE is lowered to its lowest free descriptor number, so that no descriptor at all
   * can be opened (the limit bounds the number, not the count), with the sweep (its /proc reads) out of the way. */
  it("the daemon's RLIMIT_NOFILE: programs get errnos, never a hang or a clean EOF; the daemon logs it and recovers", async () => {
    const h = TestHost.create('exdm', '192.0.2.43');
    hosts.push(h);
    await h.startDaemon(['--sweep-interval', '600000']);
    const pid = h.daemon?.pid as number;
    const status = async (): Promise<{ apps: number; connections: { tcp: number; fastpath: number } }> =>
      JSON.parse((await h.cli(['status', '--json'])).stdout) as { apps: number; connections: { tcp: number; fastpath: number } };
    const srv = h.run(['--ip', '10.43.0.1'], [FUZZ, 'serve', '--port', '9000', '--id', 'A']);
    const srvOut = finish(srv, 60_000);
    const signals = mkdtempSync(path.join(tmpdir(), 'appswitch-ex-')); /* not the state dir: programs cannot see it */
    const go = path.join(signals, 'go');
    const done = path.join(signals, 'done');
    const soft = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] as string;
    try {
      await h.waitService('10.43.0.1', 9000);
      // registered (its generator holds its descriptor in the daemon) before the limit; connects once it may, and
      // stays registered until told (so that no descriptor comes free in the daemon meanwhile)
      const wait = (f: string): string => `while [ ! -e ${f} ]; do sleep 0.02; done`;
      const client = h.run([], ['sh', '-c', `${wait(go)}; ${FUZZ} burst --allowed 10.43.0.1:9000 --iterations 300; ${wait(done)}`]);
      const clientOut = finish(client, 60_000);
      await waitFor(async () => (await status()).apps === 2);
      const before = await status();
      const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
      let lowestFree = 0;
      while (used.has(lowestFree)) lowestFree++;
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${lowestFree}:`]);

      // a burst of connects: decided in the client's generator (native/gen_decide.c), the fast path's descriptors go
      // from generator to generator: none of the daemon's is needed, so every connect works, over the fast path.
      // None hangs (timeout) and none reads an EOF ("E?").
      writeFileSync(go, '');
      const limited = await firstLine(h, client);
      console.log('daemon out of descriptors:', limited);
      expect(limited).toMatch(/^burst ok=300 timeout=0$/);
      const ok = 300;
      expect(h.daemon?.exitCode).toBeNull(); // still running

      // a new program is refused at once with EMFILE and says why (the launcher, as `appswitch run` execs it)
      const launcher = path.join(ROOT, 'build/Release/appswitch-launcher');
      const refused = await h.exec([launcher, '--socket', path.join(h.stateDir, 'trap.sock'), '--meta', '{"tags":{}}', '--', 'true'], 15_000);
      console.log('new program while out of descriptors:', refused.code, refused.stderr.trim());
      expect(refused.code).toBe(125);
      expect(refused.stderr).toMatch(/out of file descriptors \(EMFILE\)/);
      // `appswitch run` itself asks the control socket first: a clear error too, no hang
      const run = await h.runToEnd([], ['true'], 15_000);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toMatch(/out of file descriptors/);
      await h.waitForLog('daemon out of file descriptors');

      expect(h.daemonLog.split('\n').filter((l) => l.includes('out of file descriptors')).length).toBeLessThanOrEqual(3); // rate-limited
      writeFileSync(done, '');
      expect((await clientOut).code).toBe(0);

      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
      await waitFor(() => h.daemonLog.includes('file descriptors available again'), 5_000);
      const after = await h.runToEnd([], [FUZZ, 'burst', '--allowed', '10.43.0.1:9000', '--iterations', '200'], 30_000);
      console.log('descriptors back:', after.stdout.trim());
      expect(after.stdout).toMatch(/^burst ok=200 timeout=0\s*$/m);
      console.log(h.daemonLog.split('\n').filter((l) => l.includes('file descriptors')).join('\n'));
      const end = await status();
      console.log('connections before, after:', before.connections, end.connections);
      // out of descriptors or not, every connection went over the fast path (the daemon counts them from the batches
      // its generators send, which carry no descriptor)
      expect(end.connections.tcp - before.connections.tcp).toBe(0);
      expect(end.connections.fastpath - before.connections.fastpath).toBe(ok + 200);
    } finally {
      killTree(srv, 'SIGTERM');
      await srvOut;
      rmSync(signals, { recursive: true, force: true });
    }
  }, 120_000);
});
