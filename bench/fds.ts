/** `npm run bench:fds` (root): connection set-up from a client that holds many descriptors. Before a same-host
 * connection becomes a Unix socket pair (the fast path), the client's generator must tell whether the socket is in
 * one of the program's epoll instances (native/fd_inspect.h), and that costs a look at each of its descriptors. This
 * prints, side by side in one run, one client thread's connections per second (bench/netbench.c `load`, with an epoll
 * instance holding pipes: FDS descriptors in all) natively over loopback and under appswitch, the socket not
 * registered in the instance (the fast path, up to fd_inspect.h's limit) and registered before connect (nginx's and
 * Go's order: TCP), and rewrites the "## Connection set-up with many descriptors" section of bench/RESULTS.md.
 *   --runs N      runs per cell (default 3), interleaved
 *   --duration S  seconds per run (default 4)
 *   --fds A,B,... descriptor counts (default 8,100,250,1000,4000)
 * Traffic stays in one namespace this script creates (loopback and a vip); everything is removed at the end. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killTree, ROOT, TestHost, waitFor } from '../test/helpers/hosts.js';
import { median, numOption, replaceSection } from './ops-common.js';

const args = process.argv.slice(2);
const RUNS = numOption(args, 'bench:fds', '--runs', 3, true);
const DURATION = numOption(args, 'bench:fds', '--duration', 4);
const fdsArg = args.indexOf('--fds');
const FDS = (fdsArg >= 0 ? (args[fdsArg + 1] ?? '') : '8,100,250,1000,4000').split(',').map(Number);
if (FDS.some((n) => !Number.isInteger(n) || n < 1)) {
  process.stderr.write('bench:fds: --fds needs positive integers\n');
  process.exit(2);
}

type Setup = 'native' | 'appswitch' | 'registered';
const LABEL: Record<Setup, string> = {
  native: 'native loopback',
  appswitch: 'appswitch, socket not in the epoll instance (fast path when looked through)',
  registered: 'appswitch, socket registered in the instance before connect (TCP)',
};

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench:fds: needs root (it creates a network namespace)\n');
    process.exit(1);
  }
  const t0 = Date.now();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-fds-'));
  const nb = path.join(tmp, 'netbench');
  execFileSync('gcc', ['-O2', '-o', nb, path.join(ROOT, 'bench/netbench.c'), '-lpthread'], { stdio: 'pipe' });
  const h = TestHost.create('fdsb', '192.0.2.1');
  const got = new Map<string, number[]>();
  try {
    await h.startDaemon(['--log-level', 'warn']);
    const native = h.spawn([nb, 'serve', '127.0.0.1', '7101', '1']);
    const vip = h.run(['--ip', '10.0.0.9'], [nb, 'serve', '0.0.0.0', '7001', '1']);
    try {
      await waitFor(async () => (await h.exec(['ss', '-Hltn', 'sport = :7101'])).stdout.trim() !== '', 10_000, 50);
      await h.waitService('10.0.0.9', 7001, 20_000);
      for (let r = 1; r <= RUNS; r++) {
        for (const fds of FDS) {
          for (const setup of ['native', 'appswitch', 'registered'] as Setup[]) {
            process.stderr.write(`run ${r}/${RUNS}: ${fds} descriptors, ${setup}\n`);
            const load = [nb, 'load', ...(setup === 'native' ? ['127.0.0.1', '7101'] : ['10.0.0.9', '7001']), '1', String(DURATION), String(fds), ...(setup === 'registered' ? ['reg'] : [])];
            const res = setup === 'native' ? await h.exec(load, DURATION * 1000 + 30_000) : await h.runToEnd([], load, DURATION * 1000 + 30_000);
            const m = /conns_per_s ([\d.]+)/.exec(res.stdout);
            if (res.code !== 0 || !m) throw new Error(`${load.join(' ')} exited ${res.code}: ${res.stdout}${res.stderr}`.slice(0, 1000));
            const k = `${setup} ${fds}`;
            got.set(k, [...(got.get(k) ?? []), Number(m[1])]);
          }
        }
      }
    } finally {
      killTree(native, 'SIGKILL');
      killTree(vip, 'SIGKILL');
    }
  } finally {
    await h.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
  const med = (setup: Setup, fds: number): number => median(got.get(`${setup} ${fds}`) ?? []);
  const lines = [
    '## Connection set-up with many descriptors',
    '',
    `${new Date().toISOString()} · ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}) · kernel ${os.release()} · \`npm run bench:fds\` · medians of ${RUNS} runs of ${DURATION} s, interleaved · ${Math.round((Date.now() - t0) / 1000)} s in all`,
    '',
    'One client thread (bench/netbench.c `load ... 1 S FDS [reg]`): socket, connect, read a byte, read EOF, close, in a loop, holding an epoll instance with pipes, FDS descriptors in all (a busy event loop\'s connections); the server (`netbench serve`, one accept thread) under `appswitch run --ip 10.0.0.9` for the appswitch rows, plain on loopback for native. Before a connection becomes a fast-path Unix socket pair, the client\'s generator asks whether the socket is in one of the program\'s epoll instances (native/fd_inspect.h): one kcmp(2) per descriptor; a program holding more than 256 is not looked through and stays on TCP.',
    '',
    '| descriptors | setup | conn/s (median) | × native |',
    '|---:|---|---:|---:|',
  ];
  for (const fds of FDS) {
    for (const setup of ['native', 'appswitch', 'registered'] as Setup[]) {
      const v = med(setup, fds);
      const base = med('native', fds);
      lines.push(`| ${fds} | ${LABEL[setup]} | ${Number.isFinite(v) ? v.toFixed(0) : '–'} | ${Number.isFinite(v) && base > 0 ? `${(v / base).toFixed(2)}×` : '–'} |`);
    }
  }
  const section = lines.join('\n');
  process.stdout.write(`${section}\n`);
  replaceSection(path.join(ROOT, 'bench/RESULTS.md'), '# Benchmark results', '## Connection set-up with many descriptors', section);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(128 + (os.constants.signals[sig] ?? 0)));
main().catch((e: unknown) => {
  process.stderr.write(`bench:fds: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
