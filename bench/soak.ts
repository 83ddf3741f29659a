/** `npm run soak` (root): connections at a steady rate through appswitch for a minute, and whether the daemon stays
 * flat. A C client (bench/netbench.c `rate`) opens connections at a target rate, paced over several threads (each:
 * connect, one request byte, one reply byte, close; failures counted by step and errno) against a C echo server;
 * client and server both run under `appswitch run`. Three setups, one after another:
 *   same host, fast path (the default: the daemon hands both ends a Unix socket pair)
 *   same host, client `--no-fastpath` (loopback TCP)
 *   cross host (two namespaces on a Linux bridge, daemons joined; server on one, client on the other)
 * For each it prints the achieved rate, connections, failures, the daemon's descriptors and RSS before the client
 * starts and after it ended (after a short settle), the RSS of the client's and the server's trap generator
 * (appswitch-launcher), and the fast-path offers still pending when the client ended.
 *   --seconds N   seconds per setup (default 60)
 *   --rate R      target connections per second (default 2500)
 *   --threads T   client threads (default 8)
 *   --smoke       5 s per setup; prints only (the full run rewrites the "## Soak" section of bench/RESULTS-ops.md)
 * Traffic stays on loopback and between namespaces this script creates; everything it starts is removed at the end,
 * also on failure or on a signal. The same code runs in test/integration/soak.test.ts (smoke length). */
import { type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finish, killTree, sleep, TestBridge, TestHost, waitFor } from '../test/helpers/hosts.js';
import {
  compileNetbench,
  cpuJiffies,
  cpuSeconds,
  daemonServices,
  daemonStatus,
  firstChild,
  fmt,
  generatorRssKb,
  isMain,
  loadAverage,
  numOption,
  requireRoot,
  rssKb,
  steadyFds,
  writeOpsSection,
} from './ops-common.js';

/** What one soak run does. */
export interface SoakOptions {
  /** Seconds per setup. */
  seconds: number;
  /** Target connections per second. */
  rate: number;
  /** Client threads sharing the rate (default 8). */
  threads?: number;
  /** How long to wait after the client ended for the daemons' descriptor counts to come back (default 10 s). */
  settleMs?: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** One daemon's descriptors and RSS before the client started and after it ended. */
export interface DaemonFigures {
  node: string;
  fdsStart: number;
  fdsEnd: number;
  rssStartMb: number;
  /** A third of the way into the run: the heap has grown to its working size by then; from there to the end it
   * must stay flat (a leak grows with the connections). */
  rssThirdMb: number;
  rssEndMb: number;
}

/** The figures of one setup. */
export interface SoakRow {
  setup: string;
  target: number;
  seconds: number;
  /** Successful connections per second over the whole run. */
  achieved: number;
  connections: number;
  failed: number;
  /** Failures by step and errno ("connect:ECONNREFUSED=3 ..."), empty when none. */
  errors: string;
  /** Client threads whose one connection had taken more than 20 s when the client gave up on them (a hang). */
  stuck: number;
  /** Client threads still working through their backlog 60 s after the end (the machine could not keep up: not a
   * hang, but their remaining slots are missing from connections). */
  late: number;
  medianUs: number;
  p99Us: number;
  daemons: DaemonFigures[];
  /** RSS (KiB) of the client's and the server's generator, first and last sample while the client ran. */
  clientGenKb: [number, number];
  serverGenKb: [number, number];
  /** Fast-path offers pending in the daemons right after the client ended (each holds two descriptors). */
  pendingOffers: number;
  /** Connections completed in each second of the run. */
  perSecond: number[];
  /** CPU used during the run, in cores (1 = one core busy all the time): the daemons, the two generators (the client's
   * including its `appswitch run` start-up), the client and server programs, and the whole machine (which adds
   * whatever else ran: other work on a shared machine, and kernel work not charged to a process). */
  cpu: { daemons: number; generators: number; programs: number; machine: number };
  /** Daemon CPU time per successful connection (µs, all daemons of the setup). */
  daemonUsPerConn: number;
  /** The machine's load average at the end. */
  load: number;
  /** Set when the client did not report (it crashed or hung): its exit and the tail of its output. */
  problem?: string;
}

/** Fd counts of the daemons may not grow by more than this over a run (see settle for why it is not 0). */
export const FD_TOLERANCE = 2;

const PORT = 7001;
const VIP_SAME = '10.0.0.7';
const VIP_CROSS = '10.0.0.8';

interface Setup {
  setup: string;
  client: TestHost;
  clientArgs: string[];
  vip: string;
  /** The daemons whose descriptors and RSS are watched, with their node names. */
  daemons: Array<[string, TestHost]>;
  serverPid: number | undefined;
}

/** Waits until every daemon's steady fd count is back to its start (+ FD_TOLERANCE) or the time is up. Why the
 * tolerance is 2 and not 0: the count is the minimum of five readings 60 ms apart, which leaves out the /proc file a
 * sweep holds open for a moment (sweeps read /proc/net/{tcp,tcp6,udp,udp6,unix} one after another, every 500 ms).
 * After a TCP run /proc/net/tcp holds tens of thousands of TIME_WAIT lines, a sweep can then take longer than the
 * readings, and the interval timer starts the next sweep while one still runs: up to two such files can be open
 * across all five readings. Anything the daemon keeps (a fast-path offer: two, a trap connection: one per app) stays
 * in every reading and grows with the number of connections, far beyond 2 at 2,000 connections/s. */
async function settle(daemons: Array<[string, TestHost]>, start: number[], settleMs: number): Promise<number[]> {
  const read = (): Promise<number[]> => Promise.all(daemons.map(([, h]) => steadyFds(h.daemon?.pid)));
  try {
    await waitFor(async () => (await read()).every((n, i) => n <= (start[i] as number) + FD_TOLERANCE), settleMs, 200);
  } catch {
    /* reported as it is */
  }
  return read();
}

async function runSetup(s: Setup, nb: string, opts: Required<Omit<SoakOptions, 'log'>>, log: (l: string) => void): Promise<SoakRow> {
  // a few connections first: the first cross-host connection opens the daemons' pooled peer connection (one socket
  // in each, kept), which belongs to the steady state, not to the run
  await finish(s.client.run(s.clientArgs, [nb, 'rate', s.vip, String(PORT), '1', '0.2', '50']), 30_000);
  const pids = s.daemons.map(([, h]) => h.daemon?.pid);
  const fdsStart = await Promise.all(pids.map((p) => steadyFds(p)));
  const rssStart = pids.map((p) => rssKb(p) / 1024);
  const serverGen: number[] = [generatorRssKb(s.serverPid)];
  const clientGen: number[] = [];
  const serverProg = firstChild(s.serverPid);
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  const daemonCpu0 = sum(pids.map(cpuSeconds));
  const serverCpu0 = [cpuSeconds(s.serverPid), cpuSeconds(serverProg)];
  const machine0 = cpuJiffies();
  const t0 = Date.now();

  log(`soak: ${s.setup}: ${opts.rate} conn/s for ${opts.seconds} s`);
  const cmd = [nb, 'rate', s.vip, String(PORT), String(opts.threads), String(opts.seconds), String(opts.rate)];
  const p: ChildProcess = s.client.run(s.clientArgs, cmd);
  const perSecond: number[] = [];
  let lastOk = 0;
  let lastFailed = 0;
  let partial = '';
  p.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      const m = /^tick (\d+) ok (\d+) failed (\d+)$/.exec(line);
      if (!m) continue;
      const [sec, ok, failed] = [Number(m[1]), Number(m[2]), Number(m[3])];
      const dOk = ok - lastOk;
      const dFailed = failed - lastFailed;
      perSecond.push(dOk);
      [lastOk, lastFailed] = [ok, failed];
      // every 10 s, and every second that falls short or fails: a collapse shows in the log as it happens
      if (sec % 10 === 0 || dOk < 0.9 * opts.rate || dFailed > 0) log(`  ${s.setup}: second ${sec}: ${dOk} ok, ${dFailed} failed`);
    }
  });
  // the client's processes are gone once it ended: their last readings (every 250 ms) stand for their totals
  const clientCpu = [0, 0];
  let rssThird: number[] | undefined;
  const sampler = setInterval(() => {
    if (!rssThird && Date.now() - t0 >= (opts.seconds * 1000) / 3) rssThird = pids.map((pid) => rssKb(pid) / 1024);
    const c = generatorRssKb(p.pid);
    if (Number.isFinite(c)) clientGen.push(c);
    serverGen.push(generatorRssKb(s.serverPid));
    const cpu = [cpuSeconds(p.pid), cpuSeconds(firstChild(p.pid))];
    cpu.forEach((x, i) => Number.isFinite(x) && (clientCpu[i] = x));
  }, 250);
  // netbench gives up on its threads at most 60 s after the end (late or stuck), then exits
  const r = await finish(p, opts.seconds * 1000 + 90_000).finally(() => clearInterval(sampler));
  serverGen.push(generatorRssKb(s.serverPid));
  const wall = (Date.now() - t0) / 1000;
  const machine1 = cpuJiffies();
  const cores = (sec: number): number => sec / wall;
  const cpu = {
    daemons: cores(sum(pids.map(cpuSeconds)) - daemonCpu0),
    generators: cores((clientCpu[0] as number) + cpuSeconds(s.serverPid) - (serverCpu0[0] as number)),
    programs: cores((clientCpu[1] as number) + cpuSeconds(serverProg) - (serverCpu0[1] as number)),
    machine: ((machine1.busy - machine0.busy) / Math.max(1, machine1.total - machine0.total)) * os.cpus().length,
  };

  // after the settle: taken offers are reported to the daemon in batches (AS_CLAIMED, at most a second late), and
  // only then does it let go of their placeholders
  const fdsEnd = await settle(s.daemons, fdsStart, opts.settleMs);
  const statuses = await Promise.all(s.daemons.map(([, h]) => daemonStatus(h)));
  const pendingOffers = statuses.reduce((a, st) => a + st.pendingOffers, 0);
  const rssEnd = pids.map((pid) => rssKb(pid) / 1024);

  const num = (key: string): number => Number(new RegExp(`\\b${key} ([\\d.]+)`).exec(r.stdout)?.[1] ?? NaN);
  const reported = /^count /m.test(r.stdout);
  const connections = reported ? num('count') : lastOk;
  const failed = reported ? num('failed') : lastFailed;
  const seconds = reported ? num('seconds') : opts.seconds;
  const row: SoakRow = {
    setup: s.setup,
    target: opts.rate,
    seconds,
    achieved: connections / seconds,
    connections,
    failed,
    errors: (/^errors ?(.*)$/m.exec(r.stdout)?.[1] ?? '').trim(),
    stuck: reported ? num('stuck') : opts.threads,
    late: reported ? num('late') : 0,
    medianUs: num('median_us'),
    p99Us: num('p99_us'),
    daemons: s.daemons.map(([node], i) => ({
      node,
      fdsStart: fdsStart[i] as number,
      fdsEnd: fdsEnd[i] as number,
      rssStartMb: rssStart[i] as number,
      rssThirdMb: rssThird?.[i] ?? NaN,
      rssEndMb: rssEnd[i] as number,
    })),
    clientGenKb: [clientGen[0] ?? NaN, clientGen[clientGen.length - 1] ?? NaN],
    serverGenKb: [serverGen.find(Number.isFinite) ?? NaN, serverGen.filter(Number.isFinite).pop() ?? NaN],
    pendingOffers,
    perSecond,
    cpu,
    daemonUsPerConn: (1e6 * cpu.daemons * wall) / Math.max(1, connections),
    load: loadAverage(),
  };
  if (!reported || r.code !== 0) row.problem = `client exited ${r.code ?? r.signal}: ${(r.stdout + r.stderr).slice(-600)}`;
  log(
    `soak: ${s.setup}: ${connections} connections (${fmt(row.achieved)}/s), ${failed} failed${row.errors ? ` (${row.errors})` : ''}, ` +
      `daemon fds ${row.daemons.map((d) => `${d.fdsStart}→${d.fdsEnd}`).join(', ')}, pending offers ${pendingOffers}`,
  );
  return row;
}

/** Runs the three setups; every namespace and process it made is gone when it returns or throws. */
export async function soak(options: SoakOptions): Promise<SoakRow[]> {
  const log = options.log ?? ((l: string): void => void process.stderr.write(`${l}\n`));
  const opts = { seconds: options.seconds, rate: options.rate, threads: options.threads ?? 8, settleMs: options.settleMs ?? 10_000 };
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-soak-'));
  const procs: ChildProcess[] = [];
  const hs = TestHost.create('soak', '192.0.2.1');
  const bridge = new TestBridge('soakx');
  const [h1, h2] = bridge.hostsOf('soakx', 2) as [TestHost, TestHost];
  try {
    const nb = compileNetbench(tmp);
    await Promise.all([
      hs.startDaemon(['--log-level', 'warn']),
      h1.startDaemon(['--log-level', 'warn', '--node-name', 'a']),
      h2.startDaemon(['--log-level', 'warn', '--node-name', 'b', '--join', '192.0.2.1']),
    ]);
    const serve = (h: TestHost, vip: string): ChildProcess => {
      const p = h.run(['--ip', vip], [nb, 'echo', '0.0.0.0', String(PORT), '2']);
      procs.push(p);
      return p;
    };
    const same = serve(hs, VIP_SAME);
    const cross = serve(h1, VIP_CROSS);
    const hasService = async (h: TestHost, vip: string): Promise<boolean> => (await daemonServices(h)).some((x) => x.vip === vip && x.port === PORT);
    await waitFor(() => hasService(hs, VIP_SAME), 15_000, 100);
    await waitFor(() => hasService(h2, VIP_CROSS), 30_000, 100); // announced to b by gossip
    await waitFor(() => Number.isFinite(generatorRssKb(same.pid)) && Number.isFinite(generatorRssKb(cross.pid)), 5000);

    const setups: Setup[] = [
      { setup: 'same host, fast path', client: hs, clientArgs: [], vip: VIP_SAME, daemons: [['one', hs]], serverPid: same.pid },
      { setup: 'same host, client --no-fastpath (TCP)', client: hs, clientArgs: ['--no-fastpath'], vip: VIP_SAME, daemons: [['one', hs]], serverPid: same.pid },
      { setup: 'cross host (bridge, daemons a ← b)', client: h2, clientArgs: [], vip: VIP_CROSS, daemons: [['a', h1], ['b', h2]], serverPid: cross.pid },
    ];
    const rows: SoakRow[] = [];
    for (const s of setups) {
      rows.push(await runSetup(s, nb, opts, log));
      await sleep(500);
    }
    return rows;
  } finally {
    for (const p of procs) killTree(p, 'SIGKILL');
    await bridge.destroy();
    await hs.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The "## Soak" section: the table and, under it, what else a reader needs (errors, hangs, machine load). */
export function renderSoak(rows: SoakRow[], meta: string): string {
  const out = [
    '## Soak',
    '',
    meta,
    '',
    '| setup | target conn/s | achieved conn/s | connections | failed | median / p99 µs | daemon fds start → end | daemon RSS MB start → ⅓ → end | generator RSS KB client | generator RSS KB server | pending offers at end |',
    '|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|',
  ];
  const pair = (a: number, b: number, d = 0): string => `${fmt(a, d)} → ${fmt(b, d)}`;
  for (const r of rows) {
    const many = r.daemons.length > 1;
    const fds = r.daemons.map((d) => `${many ? `${d.node}: ` : ''}${pair(d.fdsStart, d.fdsEnd)}`).join(', ');
    const rss = r.daemons.map((d) => `${many ? `${d.node}: ` : ''}${fmt(d.rssStartMb, 1)} → ${fmt(d.rssThirdMb, 1)} → ${fmt(d.rssEndMb, 1)}`).join(', ');
    out.push(
      `| ${r.setup} | ${r.target} | ${fmt(r.achieved)} | ${r.connections} | ${r.failed} | ${fmt(r.medianUs)} / ${fmt(r.p99Us)} | ${fds} | ${rss} | ` +
        `${pair(r.clientGenKb[0], r.clientGenKb[1])} | ${pair(r.serverGenKb[0], r.serverGenKb[1])} | ${r.pendingOffers} |`,
    );
  }
  out.push('');
  const notes: string[] = [];
  for (const r of rows) {
    const ps = r.perSecond;
    const low = ps.length ? Math.min(...ps) : NaN;
    notes.push(
      `${r.setup}: connections per second ${fmt(low)}–${fmt(ps.length ? Math.max(...ps) : NaN)} over the ${ps.length} seconds; ` +
        `CPU in cores: daemon${r.daemons.length > 1 ? 's' : ''} ${fmt(r.cpu.daemons, 2)}, generators ${fmt(r.cpu.generators, 2)}, ` +
        `client and server ${fmt(r.cpu.programs, 2)}, whole machine ${fmt(r.cpu.machine, 2)} of ${os.cpus().length} ` +
        `(the rest: kernel work not charged to these processes, and other work on the machine); ` +
        `daemon CPU ${fmt(r.daemonUsPerConn)} µs per connection; ` +
        `load average ${fmt(r.load, 1)} at the end` +
        (r.failed ? `; failures: ${r.errors}` : '') +
        (r.stuck ? `; ${r.stuck} client threads stuck (one connection over 20 s)` : '') +
        (r.late ? `; ${r.late} client threads late (still working through their backlog 60 s after the end)` : '') +
        (r.problem ? `; ${r.problem.replace(/\s+/g, ' ')}` : ''),
    );
  }
  notes.push(
    'Daemon fds: the smallest of five readings 60 ms apart, before the client starts and after it ended and the count settled ' +
      '(up to 10 s); the server stays up. Daemon RSS: before the client, a third of the way into the run (Node.js has grown its heap to its working size by then) and after the settle; flat from the second to the third reading means no growth with the connections. Generator RSS: the first and last reading (every 250 ms) while the client ran.',
    'Each connection: connect to the server’s virtual address, write 1 byte, read the 1-byte reply, read the server’s close, close. ' +
      'The client keeps to a schedule (threads take turns at 1/rate intervals) and catches up when late, so a shortfall in ' +
      'the achieved rate is time the connections really took. After the end it waits for every scheduled connection (up to 60 s); ' +
      'only a single connection taking over 20 s counts as stuck.',
  );
  out.push(...notes.map((n) => `* ${n}`), '');
  return out.join('\n');
}

export function soakMeta(opts: { seconds: number; rate: number; threads: number; smoke: boolean }, startedLoad: number): string {
  return (
    `${new Date().toISOString()} · ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}) · kernel ${os.release()} · ` +
    `${opts.seconds} s per setup at ${opts.rate} conn/s, ${opts.threads} client threads, server with 2 accept threads` +
    `${opts.smoke ? ' (smoke)' : ''} · load average ${fmt(startedLoad, 1)} before the run`
  );
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const smoke = args.includes('--smoke');
  const num = (name: string, dflt: number): number => numOption(args, 'soak', name, dflt, false);
  requireRoot('soak');
  const opts = { seconds: num('--seconds', smoke ? 5 : 60), rate: num('--rate', 2500), threads: Math.round(num('--threads', 8)), smoke };
  const load0 = loadAverage();
  const rows = await soak(opts);
  const section = renderSoak(rows, soakMeta(opts, load0));
  process.stdout.write(`\n${section}\n`);
  if (!smoke) {
    writeOpsSection('## Soak', section);
    process.stdout.write('soak: wrote the "## Soak" section of bench/RESULTS-ops.md\n');
  }
  const bad = rows.filter((r) => r.failed > 0 || r.stuck > 0 || r.late > 0 || r.problem || r.daemons.some((d) => d.fdsEnd > d.fdsStart + FD_TOLERANCE));
  if (bad.length) process.exitCode = 1;
}

if (isMain(import.meta.url)) {
  // a signal would end the process without 'exit' hooks: turn it into an exit, so namespaces and processes go too
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(128 + (os.constants.signals[sig] ?? 0)));
  main().catch((e: unknown) => {
    process.stderr.write(`soak: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
