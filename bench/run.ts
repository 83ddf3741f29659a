/** `npm run bench`: appswitch side by side with native, in one run, on one machine. First the trapped-call and
 * connect-loop rows (this file), then the network benchmark (bench/net.ts: throughput, connection set-up, HTTP,
 * beside veth+bridge and haproxy), with the same options, then the ingress rows (bench/ingress.ts). The UDP rows (bench/udp.ts) measure what a datagram costs. Prints tables of medians and ratios and writes
 * bench/RESULTS.md. Needs root (it creates network namespaces as its test hosts).
 *   --smoke      a quick pass for CI (~10 s here, well under a minute for the network part)
 *   --runs N     repetitions per measurement (default 7 here, 5 in the network part; smoke 3 and 1)
 *   --no-net     only this file's rows */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { finish, killTree, probe, ROOT, type TestHost, TestHost as Host, waitFor } from '../test/helpers/hosts.js';
import { udpRows } from './udp.js';

interface Row {
  name: string;
  unit: string;
  native: number;
  appswitch: number;
}

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const runsArg = args.indexOf('--runs');
const RUNS = runsArg >= 0 ? Number(args[runsArg + 1]) : smoke ? 3 : 7;
const net = !args.includes('--no-net');
const CALLS = smoke ? 20_000 : 100_000;
const CONNS = smoke ? 300 : 2000;
const DATAGRAMS = smoke ? 300 : 5000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function field(out: string, key: string): number {
  const m = new RegExp(`${key} (\\d+)`).exec(out);
  if (!m) throw new Error(`no ${key} in output:\n${out}`);
  return Number(m[1]);
}

async function repeat(fn: () => Promise<number>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) xs.push(await fn());
  return median(xs);
}

/** A cheap trapped call, timed one by one inside the probe: the median and p99 of each run, then their medians. */
async function trappedCall(h: TestHost, bin: string): Promise<Row[]> {
  const nat: Array<{ med: number; p99: number }> = [];
  const app: Array<{ med: number; p99: number }> = [];
  for (let i = 0; i < RUNS; i++) {
    const n = (await h.exec([bin, 'loop', String(CALLS)])).stdout;
    nat.push({ med: field(n, 'median_ns'), p99: field(n, 'p99_ns') });
    const a = (await h.runToEnd([], [bin, 'loop', String(CALLS)])).stdout;
    app.push({ med: field(a, 'median_ns'), p99: field(a, 'p99_ns') });
  }
  const m = (xs: Array<{ med: number; p99: number }>, k: 'med' | 'p99'): number => median(xs.map((x) => x[k])) / 1000;
  return [
    { name: 'trapped call: getsockname(), median of each call', unit: 'µs/call', native: m(nat, 'med'), appswitch: m(app, 'med') },
    { name: 'trapped call: getsockname(), p99 of each call', unit: 'µs/call', native: m(nat, 'p99'), appswitch: m(app, 'p99') },
  ];
}

const ACCEPT_LOOP = 'import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((sys.argv[1],int(sys.argv[2])))\ns.listen(4096)\nprint("up",flush=True)\nwhile True:\n  c,_=s.accept(); c.close()';

async function connectLoop(h: TestHost, bin: string): Promise<Row> {
  const nat = h.spawn(['python3', '-c', ACCEPT_LOOP, h.address, '7300']);
  let up = '';
  nat.stdout?.on('data', (d: Buffer) => (up += d.toString()));
  await waitFor(() => up.includes('up'));
  const native = await repeat(async () => field((await h.exec([bin, 'connloop', h.address, '7300', String(CONNS)], 120_000)).stdout, 'ns_per_conn'));
  killTree(nat, 'SIGKILL');
  const srv = h.run(['--ip', '10.0.0.100'], ['python3', '-c', ACCEPT_LOOP, '0.0.0.0', '7300']);
  const done = finish(srv, 600_000);
  await h.waitService('10.0.0.100', 7300);
  const trapped = await repeat(async () =>
    field((await h.runToEnd([], [bin, 'connloop', '10.0.0.100', '7300', String(CONNS)], 120_000)).stdout, 'ns_per_conn'),
  );
  killTree(srv, 'SIGKILL');
  await done;
  return { name: 'socket()+connect()+close()', unit: 'µs', native: native / 1000, appswitch: trapped / 1000 };
}

/** Rewrites the top section of bench/RESULTS.md (before the first `## ` heading); other scripts' sections stay. */
function writeResults(section: string): void {
  const file = path.join(ROOT, 'bench/RESULTS.md');
  let rest = '';
  try {
    const old = readFileSync(file, 'utf8');
    const i = old.indexOf('\n## ');
    if (i >= 0) rest = old.slice(i + 1);
  } catch {
    /* first run */
  }
  writeFileSync(file, `# Benchmark results\n\n${section}${rest ? `\n${rest}` : ''}`);
}

function render(rows: Row[]): string {
  const head = `| measurement | unit | native | appswitch | ratio (appswitch/native) |\n|---|---|---:|---:|---:|`;
  const body = rows.map((r) => `| ${r.name} | ${r.unit} | ${r.native.toFixed(2)} | ${r.appswitch.toFixed(2)} | ${(r.appswitch / r.native).toFixed(2)}× |`);
  return [head, ...body].join('\n');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root (it creates a network namespace)\n');
    process.exit(1);
  }
  const bin = probe();
  const h = Host.create('bench');
  try {
    await h.startDaemon(['--log-level', 'warn']);
    const rows = [...(await trappedCall(h, bin)), await connectLoop(h, bin), ...(await udpRows(h, RUNS, DATAGRAMS))];
    const trapped = rows[0] as Row;
    const table = `${render(rows)}\n\nTarget (issue 5): trapped call median ≤ 15 µs — measured ${trapped.appswitch.toFixed(2)} µs: ${trapped.appswitch <= 15 ? 'met' : '**not met**'}.`;
    const meta = `${new Date().toISOString()} · ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}) · kernel ${os.release()} · medians of ${RUNS} runs${smoke ? ' (smoke)' : ''}`;
    process.stdout.write(`\n${meta}\n\n${table}\n`);
    if (!smoke) writeResults(`${meta}\n\n${table}\n`);
  } finally {
    await h.destroy();
  }
  if (net) {
    // the network benchmark, same options, in the same run (its own process: it sets up its own namespaces)
    const r = spawnSync(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'net.js'), ...args.filter((a) => a !== '--no-net')], {
      stdio: 'inherit',
    });
    if (r.status !== 0) process.exit(r.status ?? 1);
    // the ingress rows (bench/ingress.ts: outside client -> gateway -> instance, beside haproxy), same options
    const ing = spawnSync(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'ingress.js'), ...args.filter((a) => a === '--smoke' || a === '--runs' || /^\d+$/.test(a))], {
      stdio: 'inherit',
    });
    if (ing.status !== 0) process.exit(ing.status ?? 1);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
