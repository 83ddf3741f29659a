/** `npm run bench:sweep`: what one sweep's read of the TCP table costs with N TIME_WAIT sockets in the namespace,
 * /proc/net/tcp{,6} text against the sock_diag dump (src/daemon/listeners.ts tcpSnapshot), medians of --runs runs.
 * Each N runs in a fresh network namespace (unshare --net; root), where this file makes N TIME_WAIT sockets on
 * loopback plus --pairs open connections, then times both paths alternately: wall time and the process's CPU time
 * (user + system: the kernel formats /proc text in the reader's system time). The TIME_WAIT sockets last 60 s; making
 * 50k takes ~10 s here.
 *   --tw 0,20000,50000   the TIME_WAIT counts (one namespace each)
 *   --runs 20            repetitions per path
 *   --pairs 100          open connections held meanwhile (their sockets are in both reads) */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { snapshotNow, tcpSnapshot } from '../src/daemon/listeners.js';
import { native } from '../src/native/binding.js';
import { connect, listen, portOf, prepareNamespace, procTimeWaits, timeWaits } from '../test/helpers/tcp-churn.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? (args[i + 1] as string) : def;
};
const RUNS = Number(opt('--runs', '20'));
const PAIRS = Number(opt('--pairs', '100'));

interface Measure {
  wallMs: number;
  cpuMs: number;
}

interface InnerResult {
  tw: number;
  procRows: number;
  procBytes: number;
  dumpBytes: number;
  proc: Measure;
  diag: Measure;
  nowProc: Measure;
  nowDiag: Measure;
  /** native.tcpDiagDump() alone: synchronous, so this long the daemon's event loop waits (the /proc text is read on
   * libuv's threadpool; only its parsing holds the loop) */
  dumpOnly: Measure;
  twAtEnd: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function timed(fn: () => Promise<unknown> | unknown): Promise<Measure> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  return { wallMs: wall, cpuMs: (c.user + c.system) / 1000 };
}

function med(ms: Measure[]): Measure {
  return { wallMs: median(ms.map((m) => m.wallMs)), cpuMs: median(ms.map((m) => m.cpuMs)) };
}

function procText(): string {
  return readFileSync('/proc/net/tcp', 'utf8') + readFileSync('/proc/net/tcp6', 'utf8');
}

/** In the fresh namespace: make the sockets, time both paths, print one JSON line. */
async function inner(tw: number): Promise<void> {
  prepareNamespace();
  const servers = [await listen('127.0.0.1'), await listen('127.0.0.1')]; /* two: 50k client ports to one would be near the ~64k of the range */
  const keep: net.Socket[] = [];
  for (let i = 0; i < PAIRS; i++) keep.push(await connect('127.0.0.1', portOf(servers[i % 2] as net.Server)));
  await Promise.all(servers.map((s, i) => timeWaits('127.0.0.1', portOf(s), Math.floor(tw / 2) + (i === 0 ? tw % 2 : 0))));
  await new Promise((r) => setTimeout(r, 300));
  const text = procText();
  const dump = native.tcpDiagDump();
  const m: Record<'proc' | 'diag' | 'nowProc' | 'nowDiag' | 'dumpOnly', Measure[]> = { proc: [], diag: [], nowProc: [], nowDiag: [], dumpOnly: [] };
  for (let i = 0; i < RUNS; i++) {
    m.proc.push(await timed(() => tcpSnapshot(undefined, null)));
    m.diag.push(await timed(() => tcpSnapshot()));
    m.nowProc.push(await timed(() => snapshotNow(null)));
    m.nowDiag.push(await timed(() => snapshotNow()));
    m.dumpOnly.push(await timed(() => native.tcpDiagDump()));
  }
  const result: InnerResult = {
    tw: procTimeWaits(text),
    procRows: text.split('\n').length - 3 /* two headers, a final newline */,
    procBytes: text.length,
    dumpBytes: dump.length,
    proc: med(m.proc),
    diag: med(m.diag),
    nowProc: med(m.nowProc),
    nowDiag: med(m.nowDiag),
    dumpOnly: med(m.dumpOnly),
    twAtEnd: procTimeWaits(procText()),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  for (const c of keep) c.destroy();
  process.exit(0);
}

function outer(): void {
  const counts = opt('--tw', '0,20000,50000').split(',').map(Number);
  const self = fileURLToPath(import.meta.url);
  const rows: InnerResult[] = [];
  for (const n of counts) {
    const p = spawnSync('unshare', ['--net', process.execPath, self, '--inner', String(n), '--runs', String(RUNS), '--pairs', String(PAIRS)], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (p.status !== 0) throw new Error(`sweep bench with ${n} TIME_WAIT sockets failed (${p.status ?? p.signal}):\n${p.stderr}`);
    rows.push(JSON.parse(p.stdout.trim().split('\n').pop() as string) as InnerResult);
  }
  const f = (x: number): string => x.toFixed(2);
  console.log(`tcpSnapshot() and snapshotNow(): /proc text vs sock_diag dump, medians of ${RUNS} runs, ${PAIRS} open connections held`);
  console.log('| TIME_WAIT | /proc rows (bytes) | dump bytes | tcpSnapshot /proc wall/CPU ms | tcpSnapshot sock_diag wall/CPU ms | CPU ratio | snapshotNow /proc ms | snapshotNow sock_diag ms | tcpDiagDump alone ms |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.tw} (${r.twAtEnd} at end) | ${r.procRows} (${r.procBytes}) | ${r.dumpBytes} | ${f(r.proc.wallMs)} / ${f(r.proc.cpuMs)} | ${f(r.diag.wallMs)} / ${f(r.diag.cpuMs)} | ` +
        `${r.diag.cpuMs > 0 ? (r.proc.cpuMs / r.diag.cpuMs).toFixed(1) : '-'}x | ${f(r.nowProc.wallMs)} | ${f(r.nowDiag.wallMs)} | ${f(r.dumpOnly.wallMs)} |`,
    );
  }
}

const i = args.indexOf('--inner');
if (i >= 0) {
  inner(Number(args[i + 1])).catch((e: unknown) => {
    process.stderr.write(`${String((e as Error).stack ?? e)}\n`);
    process.exit(1);
  });
} else outer();
