/** `npm run bench:profile` (root): where the daemon's time goes per connection. Starts a daemon in a test namespace
 * under `node --cpu-prof`, a one-byte server and a connect-loop client (bench/netbench.c) under `appswitch run`,
 * runs the loop for a few seconds with the fast path and then without it, and prints, for each, the daemon's CPU per
 * connection (from /proc, all threads, kernel time included), the messages per connection, and the JavaScript
 * thread's profile: self time per connection of the functions that cost most. The profile files stay in
 * bench/profiles/ for Chrome DevTools or speedscope.
 *   --seconds N   load per mode (default 5)
 *   --clients N   concurrent client threads (default 1) */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, finish, killTree, ROOT, sleep, TestHost, waitFor } from '../test/helpers/hosts.js';
import { compileNetbench, cpuSeconds, daemonStatus, numOption, requireRoot } from './ops-common.js';
import { type CpuProfile, selfTimes } from './cpu-profile.js';

const args = process.argv.slice(2);
const SECONDS = numOption(args, 'bench:profile', '--seconds', 5);
const CLIENTS = numOption(args, 'bench:profile', '--clients', 1, true);

async function main(): Promise<void> {
  requireRoot('bench:profile');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-profile-'));
  const outDir = path.join(ROOT, 'bench/profiles');
  mkdirSync(outDir, { recursive: true });
  const nb = compileNetbench(tmp);
  const rows: string[] = [];
  for (const mode of ['fast path', 'fast path off'] as const) {
    const h = TestHost.create('prof');
    const profDir = mkdtempSync(path.join(tmp, 'cpuprof-'));
    try {
      const d = h.spawn(['node', '--cpu-prof', `--cpu-prof-dir=${profDir}`, CLI, 'daemon', '--state-dir', h.stateDir, '--node-address', h.address, '--log-level', 'warn']);
      h.daemon = d;
      await waitFor(async () => (await h.cli(['status'])).code === 0, 15_000, 100);
      const srv = h.run(['--ip', '10.0.0.7'], [nb, 'serve', '0.0.0.0', '7001', '1']);
      await h.waitService('10.0.0.7', 7001);
      const pid = d.pid as number;
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
      d.kill('SIGINT'); // --cpu-prof writes its file at a clean exit
      await new Promise((r) => d.once('close', r));
      const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
      if (!file) throw new Error('the daemon wrote no profile');
      const prof = JSON.parse(readFileSync(path.join(profDir, file), 'utf8')) as CpuProfile;
      const kept = path.join(outDir, `daemon-${mode.replace(/ /g, '-')}.cpuprofile`);
      rmSync(kept, { force: true });
      copyFileSync(path.join(profDir, file), kept);
      const top = selfTimes(prof).filter((x) => x.name !== '(idle)');
      const busy = top.reduce((a, x) => a + x.us, 0);
      rows.push(
        `## ${mode}: ${conns} connections in ${(wallMs / 1000).toFixed(1)} s, client median ${median} µs, ${CLIENTS} client thread(s)`,
        '',
        `daemon CPU (all threads, user + kernel, /proc): ${((cpu * 1e6) / conns).toFixed(1)} µs per connection; ` +
          `messages per connection: ${(msgs / conns).toFixed(2)}; JavaScript thread busy (profile, incl. start-up): ${(busy / conns).toFixed(1)} µs per connection`,
        '',
        '| function (self time) | µs per connection | share of the busy JS thread |',
        '|---|---:|---:|',
        ...top.slice(0, 15).map((x) => `| ${x.name.replace(/\|/g, '\\|')} | ${(x.us / conns).toFixed(2)} | ${((100 * x.us) / busy).toFixed(1)}% |`),
        '',
        `profile: ${path.relative(ROOT, kept)}`,
        '',
      );
    } finally {
      await h.destroy();
    }
    await sleep(200);
  }
  rmSync(tmp, { recursive: true, force: true });
  process.stdout.write(`${rows.join('\n')}\n`);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
main().catch((e: unknown) => {
  process.stderr.write(`bench:profile: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
