/** `npm run scale` (root): many programs under appswitch at once on one host, and what each one costs. N servers
 * (a tiny C HTTP server, bench/netbench.c `http`, each `appswitch run --ip 10.1.0.I`) are started one after another,
 * each timed from `appswitch run` to its service being in the daemon's table; then N clients (curl under `appswitch
 * run`, then `sleep` so that they stay) fetch each from its own server, and the first few also from another one.
 * With all 2N up: the app list (`appswitch get apps --json`), every generator's RSS (appswitch-launcher), the
 * daemon's RSS and descriptors against before, and the daemon's CPU while idle (/proc/PID/stat over a few seconds).
 * Then all exit and the app list must be empty again.
 *   --servers N   servers, and as many clients (default 25: 50 programs)
 *   --idle S      seconds over which the idle daemon's CPU is read (default 5)
 *   --smoke       prints only (the full run rewrites the "## Scale" section of bench/RESULTS-ops.md)
 * Traffic stays inside the namespace this script creates; everything it starts is removed at the end, also on failure
 * or on a signal. The same code runs in test/integration/scale.test.ts. */
import { type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { finish, killTree, type Result, sleep, TestHost, waitFor } from '../test/helpers/hosts.js';
import {
  compileNetbench,
  cpuSeconds,
  daemonServices,
  firstChild,
  fmt,
  generatorRssKb,
  isMain,
  loadAverage,
  median,
  numOption,
  requireRoot,
  rssKb,
  steadyFds,
  writeOpsSection,
} from './ops-common.js';

/** What one scale run does. */
export interface ScaleOptions {
  /** Servers, and as many clients. */
  servers: number;
  /** Seconds over which the idle daemon's CPU is read. */
  idleSeconds: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** One fetch of one client: from which server, and whether the answer was that server's. */
export interface Fetch {
  client: number;
  server: number;
  ok: boolean;
  /** What came back instead (curl's error or another body), when not ok. */
  got?: string;
}

/** The figures of a scale run. */
export interface ScaleResult {
  servers: number;
  clients: number;
  fetches: Fetch[];
  /** Apps in `appswitch get apps --json` with every program up, and after all of them exited. */
  appsUp: number;
  appsAfter: number;
  /** RSS (KiB) of every generator (appswitch-launcher) with all programs up. */
  generatorKb: number[];
  /** RSS (KiB) of the server programs (netbench http), for scale. */
  serverProgramKb: number[];
  daemonRssBeforeMb: number;
  daemonRssUpMb: number;
  daemonFdsBefore: number;
  daemonFdsUp: number;
  daemonFdsAfter: number;
  /** Per server, ms from `appswitch run` to its service in the daemon's table (servers started one at a time), and
   * the part of it after the generator was exec'd (the rest is Node.js starting the `appswitch run` command). */
  startMs: number[];
  afterExecMs: number[];
  /** The daemon's CPU use while all programs idle (% of one core) and over how many seconds. */
  idleCpuPct: number;
  idleSeconds: number;
  /** The machine's load average when the programs were up (other work shares it). */
  load: number;
  /** Seconds from the first `appswitch run` until every client had fetched. */
  upSeconds: number;
}

const PORT = 8080;
const vipOf = (i: number): string => `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;
/** The first clients also fetch from a server halfway round (another client's server). */
const CROSS = 5;

async function appCount(h: TestHost): Promise<number> {
  const r = await h.cli(['get', 'apps', '--json']);
  if (r.code !== 0) throw new Error(`appswitch get apps failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as unknown[]).length;
}

/** Runs the scale measurement; the namespace and every process it made are gone when it returns or throws. */
export async function scale(options: ScaleOptions): Promise<ScaleResult> {
  const log = options.log ?? ((l: string): void => void process.stderr.write(`${l}\n`));
  const n = options.servers;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-scale-'));
  const h = TestHost.create('scale', '192.0.2.1');
  const servers: ChildProcess[] = [];
  const clients: ChildProcess[] = [];
  try {
    const nb = compileNetbench(tmp);
    await h.startDaemon(['--log-level', 'warn']);
    const dpid = h.daemon?.pid as number;
    await sleep(1000);
    const daemonRssBeforeMb = rssKb(dpid) / 1024;
    const daemonFdsBefore = await steadyFds(dpid);
    const t0 = performance.now();

    // servers, one at a time: the time to the service is the start-up of one program, not of a crowd
    const startMs: number[] = [];
    const afterExecMs: number[] = [];
    for (let i = 0; i < n; i++) {
      const vip = vipOf(i);
      const started = performance.now();
      const p = h.run(['--ip', vip, '--name', `srv${i + 1}`], [nb, 'http', '0.0.0.0', String(PORT), '1', `server-${i + 1}`]);
      servers.push(p);
      let exec: number | undefined; // when node had become the generator (it execs appswitch-launcher)
      await waitFor(async () => {
        if (exec === undefined && Number.isFinite(generatorRssKb(p.pid))) exec = performance.now();
        return (await daemonServices(h)).some((s) => s.vip === vip && s.port === PORT);
      }, 20_000, 10);
      const up = performance.now();
      startMs.push(up - started);
      afterExecMs.push(up - (exec ?? up));
    }
    log(`scale: ${n} servers up, median ${fmt(median(startMs))} ms from appswitch run to the service`);

    // clients, all at once: each fetches from its own server (the first CROSS also from one halfway round), then stays
    const outputs: Array<Promise<Result>> = [];
    const targets: number[][] = [];
    for (let j = 0; j < n; j++) {
      const t = [j];
      if (j < CROSS && n > 1) t.push((j + Math.ceil(n / 2)) % n);
      targets.push(t);
      const urls = t.map((i) => `http://${vipOf(i)}:${PORT}/`);
      const script = 'for u; do curl -sS --noproxy "*" --max-time 10 "$u" 2>&1 || printf " (curl %s)" $?; echo; done; echo DONE; exec sleep 3600';
      const p = h.run(['--name', `cli${j + 1}`], ['sh', '-c', script, 'sh', ...urls]);
      clients.push(p);
      outputs.push(finish(p, 600_000));
    }
    const seen: string[] = clients.map(() => '');
    clients.forEach((p, j) => p.stdout?.on('data', (d: Buffer) => (seen[j] += d.toString())));
    try {
      await waitFor(() => seen.every((s) => s.includes('DONE')), 60_000, 100);
    } catch {
      log(`scale: ${seen.filter((s) => !s.includes('DONE')).length} clients did not finish their fetches`);
    }
    const upSeconds = (performance.now() - t0) / 1000;
    const fetches: Fetch[] = [];
    targets.forEach((t, j) => {
      const lines = (seen[j] ?? '').split('\n');
      t.forEach((i, k) => {
        const got = lines[k] ?? '';
        const ok = got === `server-${i + 1}`;
        fetches.push(ok ? { client: j + 1, server: i + 1, ok } : { client: j + 1, server: i + 1, ok, got: got || '(nothing)' });
      });
    });
    log(`scale: ${fetches.filter((f) => f.ok).length}/${fetches.length} fetches answered by the right server`);

    // everything up: list, memory, descriptors, then the idle daemon's CPU
    await sleep(500);
    const appsUp = await appCount(h);
    const all = [...servers, ...clients];
    const generatorKb = all.map((p) => generatorRssKb(p.pid));
    const serverProgramKb = servers.map((p) => rssKb(firstChild(p.pid)));
    const daemonRssUpMb = rssKb(dpid) / 1024;
    const daemonFdsUp = await steadyFds(dpid);
    const load = loadAverage();
    const cpu0 = cpuSeconds(dpid);
    const w0 = performance.now();
    await sleep(options.idleSeconds * 1000);
    const idleCpuPct = (100 * (cpuSeconds(dpid) - cpu0)) / ((performance.now() - w0) / 1000);
    log(`scale: ${appsUp} apps listed; daemon ${fmt(idleCpuPct, 1)}% of a core while idle`);

    // all exit: the list empties and the descriptors return
    for (const p of all) killTree(p, 'SIGTERM');
    await Promise.all(outputs);
    let appsAfter = appsUp;
    try {
      await waitFor(async () => (appsAfter = await appCount(h)) === 0, 15_000, 200);
    } catch {
      /* reported */
    }
    let daemonFdsAfter = NaN;
    try {
      await waitFor(async () => (daemonFdsAfter = await steadyFds(dpid)) <= daemonFdsBefore, 10_000, 200);
    } catch {
      /* reported */
    }
    return {
      servers: n,
      clients: n,
      fetches,
      appsUp,
      appsAfter,
      generatorKb,
      serverProgramKb,
      daemonRssBeforeMb,
      daemonRssUpMb,
      daemonFdsBefore,
      daemonFdsUp,
      daemonFdsAfter,
      startMs,
      afterExecMs,
      idleCpuPct,
      idleSeconds: options.idleSeconds,
      load,
      upSeconds,
    };
  } finally {
    for (const p of [...servers, ...clients]) killTree(p, 'SIGKILL');
    await h.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The "## Scale" section. */
export function renderScale(r: ScaleResult, meta: string): string {
  const apps = r.servers + r.clients;
  const okFetches = r.fetches.filter((f) => f.ok).length;
  const growthKb = ((r.daemonRssUpMb - r.daemonRssBeforeMb) * 1024) / apps;
  const rows: Array<[string, string]> = [
    ['programs under appswitch at once', `${apps} (${r.servers} servers, ${r.clients} clients)`],
    ['fetches answered by the right server', `${okFetches} / ${r.fetches.length} (each client its own server, ${Math.min(CROSS, r.clients)} also another)`],
    ['apps listed with all up / after they exit', `${r.appsUp} / ${r.appsAfter}`],
    ['generator (appswitch-launcher) RSS per program, KB: median / max', `${fmt(median(r.generatorKb))} / ${fmt(Math.max(...r.generatorKb.filter(Number.isFinite)))}`],
    ['for scale: server program (C http) RSS, KB, median', fmt(median(r.serverProgramKb))],
    ['daemon RSS, MB: before → all up (growth per app)', `${fmt(r.daemonRssBeforeMb, 1)} → ${fmt(r.daemonRssUpMb, 1)} (${fmt(growthKb)} KB per app)`],
    ['daemon fds: before → all up → after exit', `${r.daemonFdsBefore} → ${r.daemonFdsUp} → ${fmt(r.daemonFdsAfter)} (${fmt((r.daemonFdsUp - r.daemonFdsBefore) / apps, 1)} per app)`],
    ['`appswitch run` → service in the table, ms: median / max (servers one at a time)', `${fmt(median(r.startMs))} / ${fmt(Math.max(...r.startMs))}`],
    [
      '… of which after the generator was exec’d, ms: median / max (polled every 10 ms: 0 means within one step)',
      `${fmt(median(r.afterExecMs))} / ${fmt(Math.max(...r.afterExecMs))}`,
    ],
    [`daemon CPU while the ${apps} apps idle (% of one core, over ${r.idleSeconds} s)`, fmt(r.idleCpuPct, 2)],
    ['all started and every client done', `${fmt(r.upSeconds, 1)} s`],
  ];
  const out = ['## Scale', '', meta, '', '| figure | value |', '|---|---:|', ...rows.map(([k, v]) => `| ${k} | ${v} |`), ''];
  const bad = r.fetches.filter((f) => !f.ok);
  const notes = [
    'Servers: `appswitch run --ip 10.1.0.I -- netbench http` (bench/netbench.c), started one after another; the time includes ' +
      'starting Node.js for the `appswitch run` command (which then execs the C generator) and its trapped bind and listen registering the service. ' +
      'Clients: `appswitch run -- sh -c "curl ...; exec sleep"`, all started at once.',
    'RSS figures are read from /proc/PID/status (VmRSS) with all programs up; the daemon is one Node.js process, so its RSS ' +
      'moves with garbage collection as well as with the apps.',
    `Machine load average ${fmt(r.load, 1)} with all programs up (2 shared cores; other work runs beside).`,
    ...bad.slice(0, 10).map((f) => `Failed: client ${f.client} → server ${f.server}: ${f.got ?? ''}`),
  ];
  out.push(...notes.map((x) => `* ${x}`), '');
  return out.join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const smoke = args.includes('--smoke');
  const num = (name: string, dflt: number): number => numOption(args, 'scale', name, dflt, true);
  requireRoot('scale');
  const opts = { servers: num('--servers', 25), idleSeconds: num('--idle', 5) };
  if (opts.servers > 2500) {
    process.stderr.write('scale: at most 2500 servers (10.1.0.0/16 addresses)\n');
    process.exit(2);
  }
  const load0 = loadAverage();
  const r = await scale(opts);
  const meta =
    `${new Date().toISOString()} · ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}) · kernel ${os.release()} · ` +
    `${r.servers + r.clients} programs${smoke ? ' (smoke)' : ''} · load average ${fmt(load0, 1)} before the run`;
  const section = renderScale(r, meta);
  process.stdout.write(`\n${section}\n`);
  if (!smoke) {
    writeOpsSection('## Scale', section);
    process.stdout.write('scale: wrote the "## Scale" section of bench/RESULTS-ops.md\n');
  }
  if (r.fetches.some((f) => !f.ok) || r.appsUp !== r.servers + r.clients || r.appsAfter !== 0) process.exitCode = 1;
}

if (isMain(import.meta.url)) {
  // a signal would end the process without 'exit' hooks: turn it into an exit, so namespaces and processes go too
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(128 + (os.constants.signals[sig] ?? 0)));
  main().catch((e: unknown) => {
    process.stderr.write(`scale: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
