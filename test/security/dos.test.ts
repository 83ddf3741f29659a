/** Attack 5 of issue 10: one program disabling the daemon for everyone.
 * (a) a program connects to its own listener thousands of times and never accepts: each fast-path connection held
 *     descriptors in the daemon until it ran out (and expired offers leaked theirs);
 * (b) the daemon out of descriptors: the sweep's /proc reads failed, were taken as "nothing is listening", and every
 *     service of the node was withdrawn — other programs' too;
 * (c) a program holding 1,100 bound UDP sockets: publishing its services past the gossip store's key cap threw out of
 *     the trap path and ended the daemon, and the saved state made every restart exit 125.
 * Real programs under the real filter, in namespaces this file creates and removes. */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { StatusResult } from '../../src/daemon/control-protocol.js';
import { compileHelper, finish, killTree, TestHost, waitFor } from '../helpers/hosts.js';

let ATTACK: string;
let FUZZ: string;
const hosts: TestHost[] = [];

beforeAll(() => {
  ATTACK = compileHelper('attack-dos');
  FUZZ = compileHelper('fuzz');
});

afterAll(async () => {
  for (const h of hosts) await h.destroy();
});

function watch(p: ChildProcess): { text: () => string } {
  let out = '';
  p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  return { text: () => out };
}

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const status = (h: TestHost): Promise<StatusResult> => request<StatusResult>(h.socket, 'status');

describe('(a) connects that are never accepted', () => {
  it("hold nothing in the daemon and at most 128 offers in the attacker's own generator; other apps' connects keep working", async () => {
    const h = TestHost.create('dosa', '192.0.2.81');
    hosts.push(h);
    await h.startDaemon(['--max-pending-per-app', '300']);
    const pid = h.daemon?.pid as number;
    execFileSync('prlimit', ['--pid', String(pid), '--nofile=1200:']); // the attack below makes 3,000 connects
    const victim = h.run(['--ip', '10.81.0.1'], [FUZZ, 'serve', '--port', '9000', '--id', 'V']);
    const victimDone = finish(victim, 120_000);
    let attacker: ChildProcess | undefined;
    try {
      await h.waitService('10.81.0.1', 9000);
      const warm = await h.runToEnd([], [FUZZ, 'burst', '--allowed', '10.81.0.1:9000', '--iterations', '5'], 30_000);
      expect(warm.stdout).toMatch(/^burst ok=5 timeout=0\s*$/m);
      await waitFor(async () => (await status(h)).apps === 1);
      const start = fdCount(pid);

      attacker = h.run(['--ip', '10.81.0.2'], [ATTACK, 'selfconnect', '8000', '3000']);
      const out = watch(attacker);
      await waitFor(() => out.text().includes('selfconnect'), 60_000);
      console.log('attacker:', out.text().trim().split('\n').pop());
      const during = await status(h);
      const attackerFds = fdCount(attacker.pid as number);
      console.log('during the attack: daemon fds', fdCount(pid), 'start', start, 'pending offers', during.pendingOffers, 'attacker generator fds', attackerFds);
      /* the connects are decided in the attacker's generator (native/gen_decide.c) and each fast-path offer goes to the
       * server's generator, here its own: the daemon holds no descriptor for them, and the generator at most
       * AS_OFFERS_MAX (128) offers, the oldest given up first */
      expect(during.pendingOffers).toBe(0);
      expect(fdCount(pid)).toBeLessThan(start + 16);
      expect(attackerFds).toBeLessThan(128 + 64);
      expect(out.text()).toMatch(/inprogress=3000/); // every connect was set up (the listener's own backlog holds them)

      // another app, meanwhile: every connect works, over the fast path. The attacker's generator reports its own
      // connects in batches that may still be on their way (a busy daemon reads them late): count from when they stop
      let before = await status(h);
      await waitFor(async () => {
        await new Promise((r) => setTimeout(r, 300));
        const now = await status(h);
        const settled = now.connections.fastpath === before.connections.fastpath;
        before = now;
        return settled;
      }, 20_000);
      const other = await h.runToEnd([], [FUZZ, 'burst', '--allowed', '10.81.0.1:9000', '--iterations', '200'], 60_000);
      expect(other.stdout).toMatch(/^burst ok=200 timeout=0\s*$/m);
      const after = await status(h);
      expect(after.connections.fastpath - before.connections.fastpath).toBe(200);
      expect(h.daemonLog).not.toContain('daemon out of file descriptors');

      killTree(attacker, 'SIGKILL');
      await waitFor(async () => (await status(h)).apps === 1, 30_000);
      await waitFor(() => fdCount(pid) <= start, 15_000).catch(() => undefined);
      console.log('after the attacker exited: daemon fds', fdCount(pid), 'start', start);
      expect(fdCount(pid)).toBeLessThanOrEqual(start);
      expect((await status(h)).pendingOffers).toBe(0);
    } finally {
      if (attacker) killTree(attacker, 'SIGKILL');
      killTree(victim, 'SIGTERM');
      await victimDone;
    }
  }, 180_000);
});

describe('(b) the socket tables cannot be read', () => {
  it("no service of any program is withdrawn while the daemon is out of descriptors", async () => {
    const h = TestHost.create('dosb', '192.0.2.82');
    hosts.push(h);
    await h.startDaemon();
    const pid = h.daemon?.pid as number;
    const tcp = h.run(['--ip', '10.82.0.1'], [FUZZ, 'serve', '--port', '9000', '--id', 'T']);
    const udp = h.run(['--ip', '10.82.0.2'], [ATTACK, 'udpsink', '5300', '1000', '120']);
    const done = [finish(tcp, 120_000), finish(udp, 120_000)];
    const soft = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] as string;
    try {
      await h.waitService('10.82.0.1', 9000);
      await h.waitService('10.82.0.2', 5300);
      const services = (await h.services()).length;
      expect(services).toBe(3); // TCP+UDP of the fuzz server, and the UDP sink
      // no descriptor at all can be opened: the limit is the lowest free descriptor number, read once the daemon's
      // descriptors have settled (the CLI's control connection above closes a moment after the CLI exits: a slot
      // freed after the limit is set would let the sweep read again)
      const fds = (): string => readdirSync(`/proc/${pid}/fd`).sort().join(',');
      let last = '';
      let steady = 0;
      await waitFor(() => {
        const now = fds();
        steady = now === last ? steady + 1 : 0;
        last = now;
        return steady >= 3;
      }, 10_000, 200);
      const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
      let lowestFree = 0;
      while (used.has(lowestFree)) lowestFree++;
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${lowestFree}:`]);
      // ~20 sweeps fail in the 10 s between the first line and the next (FdBudget logs at most one per 10 s)
      await waitFor(() => h.daemonLog.includes('daemon still out of file descriptors') || h.daemonLog.includes('service down'), 30_000, 200);
      await h.waitForLog('reading /proc/net for the sweep');
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
      await waitFor(() => h.daemonLog.includes('file descriptors available again'), 30_000);
      expect(h.daemonLog).not.toContain('service down');
      expect((await h.services()).length).toBe(services);
      const c = await h.runToEnd([], [FUZZ, 'burst', '--allowed', '10.82.0.1:9000', '--iterations', '3'], 30_000);
      expect(c.stdout).toMatch(/^burst ok=3 timeout=0\s*$/m);
    } finally {
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
      killTree(tcp, 'SIGTERM');
      killTree(udp, 'SIGKILL');
      await Promise.all(done);
    }
  }, 120_000);
});

describe('(c) a program holding 1,100 bound UDP sockets', () => {
  it('the daemon survives, the program gets ENOBUFS past the limit, a SIGKILLed daemon restarts with its state in part', async () => {
    const h = TestHost.create('dosc', '192.0.2.83');
    hosts.push(h);
    // a daemon whose per-app limit is above the gossip store's key cap (1,024 per node): publishing fails there
    await h.startDaemon(['--max-services-per-app', '2000']);
    const big = h.run(['--ip', '10.83.0.1'], [ATTACK, 'udpbind', '1100']);
    const bigOut = watch(big);
    const bigDone = finish(big, 120_000);
    try {
      await waitFor(() => bigOut.text().includes('udpbind'), 60_000);
      console.log('1,100 sockets, limit 2000:', bigOut.text().trim());
      expect(bigOut.text()).toContain('udpbind bound=1100 first=-');
      expect((await status(h)).services).toBe(1100);
      await h.waitForLog('gossip refused to publish');
      // the node's gossip keys are full: a new program's registration publishes one more (this ended the daemon)
      const next = await h.runToEnd([], ['true'], 20_000);
      expect(next.code, next.stderr).toBe(0);
      expect(h.daemon?.exitCode).toBeNull();
      expect((await status(h)).services).toBe(1100); // alive and serving

      // SIGKILL, then a daemon with the default limit on the same state dir: it starts, restores what it can
      await waitFor(() => (readFileSync(`${h.stateDir}/state.json`, 'utf8').match(/"service"/g) ?? []).length === 1100, 30_000);
      const old = h.daemon as ChildProcess;
      killTree(old, 'SIGKILL');
      await finish(old, 10_000);
      await h.startDaemon();
      await waitFor(async () => (await status(h)).awaitingReconnect === 0 && (await status(h)).apps === 1, 15_000);
      const back = await status(h);
      console.log('restarted: apps', back.apps, 'services', back.services);
      expect(back.services).toBe(256);
      await h.waitForLog('not restored');

      // a program with the default limit: ENOBUFS past 256, and the daemon keeps serving
      const small = h.run(['--ip', '10.83.0.2'], [ATTACK, 'udpbind', '300']);
      const smallOut = watch(small);
      const smallDone = finish(small, 60_000);
      await waitFor(() => smallOut.text().includes('udpbind'), 60_000);
      console.log('300 sockets, default limit:', smallOut.text().trim());
      expect(smallOut.text()).toContain('udpbind bound=256 first=ENOBUFS');
      const end = await status(h);
      expect(end.limitsReached.services).toBeGreaterThan(0);
      await h.waitForLog('--max-services-per-app');
      killTree(small, 'SIGKILL');
      await smallDone;

      // a program that binds and closes 1,000 sockets one after another holds one at a time: never refused (the
      // sockets it closed since the last sweep are forgotten when it reaches the limit)
      const loop = await h.runToEnd(['--ip', '10.83.0.3'], [ATTACK, 'bindclose', '1000'], 60_000);
      console.log('bind and close 1,000 times, default limit:', loop.stdout.trim());
      expect(loop.stdout).toContain('bindclose ok=1000 first=-');
      await waitFor(async () => (await status(h)).apps === 1, 30_000);
      const saved = (): string[] => readFileSync(`${h.stateDir}/state.json`, 'utf8').split('\n');
      await waitFor(() => saved().filter((l) => l.startsWith('{"service"')).length === 256, 30_000).catch(async (e: unknown) => {
        /* seen once: say what the file and the daemon held instead */
        const st = await status(h).catch(() => undefined);
        process.stdout.write(`state.json held ${saved().filter((l) => l.startsWith('{"service"')).length} service lines; daemon: ${JSON.stringify(st)}\n`);
        throw e;
      }); // written

      // a state file damaged in the middle: the daemon starts and restores everything but the damaged record
      const again = h.daemon as ChildProcess;
      killTree(again, 'SIGKILL');
      await finish(again, 10_000);
      const file = `${h.stateDir}/state.json`;
      const lines = saved();
      const svc = lines.map((l, i) => (l.startsWith('{"service"') ? i : -1)).filter((i) => i >= 0);
      expect(svc.length).toBe(256);
      const mid = svc[128] as number;
      lines[mid] = `${(lines[mid] as string).slice(0, 30)}\u0000\u0001#`;
      writeFileSync(file, lines.join('\n'));
      await h.startDaemon();
      await waitFor(async () => (await status(h)).apps === 1 && (await status(h)).awaitingReconnect === 0, 15_000);
      expect((await status(h)).services).toBe(255);
      await h.waitForLog('saved state damaged');
    } finally {
      killTree(big, 'SIGKILL');
      await bigDone;
    }
  }, 180_000);
});
