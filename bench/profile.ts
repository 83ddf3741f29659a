/** `npm run bench:profile` (root): where the daemon's time goes per connection. Starts a daemon in a test namespace
 * under `node --cpu-prof`, a one-byte server and a connect-loop client (bench/netbench.c) under `appswitch run`,
 * runs the loop for a few seconds with the fast path and then without it, and prints, for each, the daemon's CPU per
 * connection (from /proc, all threads, kernel time included), the messages per connection, and the JavaScript
 * thread's profile: self time per connection of the functions that cost most. The profile files stay in
 * bench/profiles/ for Chrome DevTools or speedscope.
 *   --seconds N   load per mode (default 5)
 * Then the same client across hosts (two namespaces on a bridge: the server on one, the client on the other), with
 * both daemons profiled: the server's daemon asks the client's who each client is.
 *   --seconds N   load per mode (default 5)
 *   --clients N   concurrent client threads (default 1)
 *   --cross       only the cross-host run */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finish, killTree, sleep, TestBridge, TestHost } from '../test/helpers/hosts.js';
import { compileNetbench, cpuSeconds, daemonStatus, numOption, requireRoot } from './ops-common.js';
import { keepProfile, profileTable } from './cpu-profile.js';

const args = process.argv.slice(2);
const SECONDS = numOption(args, 'bench:profile', '--seconds', 5);
const CLIENTS = numOption(args, 'bench:profile', '--clients', 1, true);
const CROSS_ONLY = args.includes('--cross');

/** One daemon under --cpu-prof on host h (joining `join` when given). */
async function profiledDaemon(h: TestHost, profDir: string, extra: string[] = []): Promise<void> {
  await h.startDaemon(['--log-level', 'warn', ...extra], ['--cpu-prof', `--cpu-prof-dir=${profDir}`]);
}

/** A kept profile's section, with the daemon's CPU per connection (and its messages per connection) first. */
function table(title: string, kept: string | undefined, conns: number, cpu: number, msgs?: number): string[] {
  if (!kept) throw new Error('the daemon wrote no profile');
  const summary =
    `daemon CPU (all threads, user + kernel, /proc): ${((cpu * 1e6) / conns).toFixed(1)} µs per connection; ` +
    (msgs === undefined ? '' : `messages per connection: ${(msgs / conns).toFixed(2)}; `);
  return profileTable(title, kept, conns, summary);
}

/** One host: the fast path, then without it. */
async function sameHost(nb: string, tmp: string, rows: string[]): Promise<void> {
  for (const mode of ['fast path', 'fast path off'] as const) {
    const h = TestHost.create('prof');
    const profDir = mkdtempSync(path.join(tmp, 'cpuprof-'));
    try {
      await profiledDaemon(h, profDir);
      const srv = h.run(['--ip', '10.0.0.7'], [nb, 'serve', '0.0.0.0', '7001', '1']);
      await h.waitService('10.0.0.7', 7001);
      const pid = h.daemon?.pid as number;
      const cpu0 = cpuSeconds(pid);
      const msgs0 = (await daemonStatus(h)).trapMessages;
      const t0 = Date.now();
      const run = await finish(h.run(mode === 'fast path' ? [] : ['--no-fastpath'], [nb, 'load', '10.0.0.7', '7001', String(CLIENTS), String(SECONDS)]), SECONDS * 1000 + 30_000);
      const wallMs = Date.now() - t0;
      const cpu = cpuSeconds(pid) - cpu0;
      const msgs = (await daemonStatus(h)).trapMessages - msgs0;
      const conns = Number(/count (\d+)/.exec(run.stdout)?.[1] ?? NaN);
      const median = /median_us ([\d.]+)/.exec(run.stdout)?.[1] ?? '?';
      killTree(srv, 'SIGKILL');
      const kept = await keepProfile(h, profDir, `daemon-${mode.replace(/ /g, '-')}`);
      rows.push(...table(`## ${mode}: ${conns} connections in ${(wallMs / 1000).toFixed(1)} s, client median ${median} µs, ${CLIENTS} client thread(s)`, kept, conns, cpu, msgs));
    } finally {
      await h.destroy();
    }
    await sleep(200);
  }
}

/** Two hosts on a bridge: the server on a, the client on b (the server's daemon asks the client's who each client
 * is); both daemons profiled. */
async function crossHost(nb: string, tmp: string, rows: string[]): Promise<void> {
  const bridge = new TestBridge('profx');
  const [a, b] = bridge.hostsOf('profx', 2) as [TestHost, TestHost];
  try {
    const dirs = [mkdtempSync(path.join(tmp, 'cpuprof-a-')), mkdtempSync(path.join(tmp, 'cpuprof-b-'))] as const;
    await profiledDaemon(a, dirs[0], ['--node-name', 'a']);
    await profiledDaemon(b, dirs[1], ['--node-name', 'b', '--join', a.address]);
    const srv = a.run(['--ip', '10.0.0.7'], [nb, 'serve', '0.0.0.0', '7001', '1']);
    await b.waitService('10.0.0.7', 7001, 30_000);
    const pids = [a.daemon?.pid as number, b.daemon?.pid as number];
    const cpu0 = pids.map(cpuSeconds);
    const t0 = Date.now();
    const run = await finish(b.run([], [nb, 'load', '10.0.0.7', '7001', String(CLIENTS), String(SECONDS)]), SECONDS * 1000 + 30_000);
    const wallMs = Date.now() - t0;
    const cpu = pids.map((p, i) => cpuSeconds(p) - (cpu0[i] as number));
    const conns = Number(/count (\d+)/.exec(run.stdout)?.[1] ?? NaN);
    const median = /median_us ([\d.]+)/.exec(run.stdout)?.[1] ?? '?';
    killTree(srv, 'SIGKILL');
    rows.push(`## cross host: ${conns} connections in ${(wallMs / 1000).toFixed(1)} s, client median ${median} µs, ${CLIENTS} client thread(s)`, '');
    const keptA = await keepProfile(a, dirs[0], 'daemon-cross-server');
    const keptB = await keepProfile(b, dirs[1], 'daemon-cross-client');
    rows.push(...table("### the server's daemon (a)", keptA, conns, cpu[0] as number));
    rows.push(...table("### the client's daemon (b)", keptB, conns, cpu[1] as number));
  } finally {
    await bridge.destroy();
  }
}

async function main(): Promise<void> {
  requireRoot('bench:profile');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-profile-'));
  const nb = compileNetbench(tmp);
  const rows: string[] = [];
  try {
    if (!CROSS_ONLY) await sameHost(nb, tmp, rows);
    await crossHost(nb, tmp, rows);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  process.stdout.write(`${rows.join('\n')}\n`);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
main().catch((e: unknown) => {
  process.stderr.write(`bench:profile: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
