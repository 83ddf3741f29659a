/** `node dist/bench/net.js` (root): the network benchmark. appswitch beside native Linux networking and the usual
 * alternatives (veth + bridge as Docker lays it out, an L4 proxy), in one run, on one machine: throughput (iperf 2)
 * on one host and across two namespace hosts, connection set-up (a C load generator compiled at run time) and an
 * HTTP workload (wrk against nginx, or a Node.js server when nginx is absent). Prints tables of medians and ratios
 * and, unless --smoke, rewrites the "## Network" section of bench/RESULTS.md (the rest of the file is kept).
 *   --smoke       one run of ~2 s per measurement (the whole pass well under a minute)
 *   --runs N      runs per measurement (default 5); runs are interleaved (every setup once, then again), so slow
 *                 drift of a noisy machine spreads over all setups instead of falling on one
 *   --duration S  seconds per measurement (default 10)
 *   --only T,...  only these tables: same, cross, conn, http
 * Traffic goes only over loopback and between namespaces this script creates (TEST-NET-1 addresses, no route off
 * the machine); every namespace and process it starts is removed at the end, also on failure or on a signal. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killTree, ROOT, sleep, TestBridge, TestHost, waitFor } from '../test/helpers/hosts.js';
import { numOption, replaceSection } from './ops-common.js';

// ---------------------------------------------------------------------------------------------------------------
// options

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
function numArg(name: string, dflt: number): number {
  return numOption(args, 'bench', name, dflt);
}
const RUNS = Math.round(numArg('--runs', smoke ? 1 : 5));
const DURATION = Math.round(numArg('--duration', smoke ? 1 : 10));
const onlyArg = args.indexOf('--only');
const ONLY = onlyArg >= 0 ? new Set((args[onlyArg + 1] ?? '').split(',')) : undefined;
/** Upper bound for one measuring command: its duration plus start-up, then it is killed. */
const CMD_TIMEOUT = DURATION * 1000 + 30_000;

// ---------------------------------------------------------------------------------------------------------------
// the C load generator and accept server (bench/netbench.c, shared with bench/soak.ts; compiled into a temp dir)

const NETBENCH_C = readFileSync(path.join(ROOT, 'bench/netbench.c'), 'utf8');

// ---------------------------------------------------------------------------------------------------------------
// what is installed

/** The programs the benchmark runs, with the Debian package that provides each. */
const TOOLS = { iperf: 'iperf', haproxy: 'haproxy', wrk: 'wrk', nginx: 'nginx', gcc: 'gcc' } as const;
type Tool = keyof typeof TOOLS;

function has(prog: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .concat(['/usr/sbin', '/sbin'])
    .some((d) => d !== '' && existsSync(path.join(d, prog)));
}

/** First line of a program's version output (which some print on stderr, some with a non-zero exit code). */
function version(cmd: string[]): string {
  try {
    const r = execFileSync(cmd[0] as string, cmd.slice(1), { stdio: 'pipe', timeout: 5000 }).toString();
    return r.split('\n')[0]?.trim() ?? '?';
  } catch (e) {
    const err = e as { stdout?: Buffer; stderr?: Buffer };
    const out = `${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`;
    return out.split('\n')[0]?.trim() ?? '?';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// statistics and parsing

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Mbit/s from the summary line of an iperf 2 client run with `-f m` (the last figure: the whole interval). */
function iperfMbits(out: string): number {
  const all = [...out.matchAll(/([\d.]+) Mbits\/sec/g)];
  const last = all[all.length - 1];
  if (!last) throw new Error(`no Mbits/sec in iperf output:\n${out}`);
  return Number(last[1]);
}

/** A `key value` figure from a netbench line. */
function field(out: string, key: string): number {
  const m = new RegExp(`${key} ([\\d.]+)`).exec(out);
  if (!m) throw new Error(`no ${key} in output:\n${out}`);
  return Number(m[1]);
}

/** Requests/s, median latency (ms) and error count from `wrk --latency`. */
function wrkFigures(out: string): { rps: number; p50ms: number; errors: number } {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s*50%\s+([\d.]+)(us|ms|s)\s*$/m.exec(out);
  if (!rps || !p50) throw new Error(`unexpected wrk output:\n${out}`);
  const scale = { us: 1e-3, ms: 1, s: 1e3 }[p50[2] as 'us' | 'ms' | 's'];
  let errors = 0;
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (se) errors += se.slice(1).reduce((a, b) => a + Number(b), 0);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (non2xx) errors += Number(non2xx[1]);
  return { rps: Number(rps[1]), p50ms: Number(p50[1]) * scale, errors };
}

// ---------------------------------------------------------------------------------------------------------------
// cases: one setup measured once per run; its figures are collected and reduced to medians at the end

type Figures = Record<string, number>;

interface Case {
  /** The table this row belongs to, and its label there. */
  table: 'same' | 'cross' | 'conn' | 'http';
  label: string;
  /** Unique id of the row. */
  key: string;
  /** The row this one is compared with (its own key when it is the baseline). */
  baseline: string;
  /** Extra columns shown as they are (e.g. number of clients). */
  extra?: string;
  measure?: () => Promise<Figures>;
  /** Why the row is not measured (missing package, failed set-up). */
  skip?: string;
  samples: Figures[];
  failure?: string;
}

const cases: Case[] = [];
function addCase(c: Omit<Case, 'samples'>): Case {
  const full: Case = { ...c, samples: [] };
  cases.push(full);
  return full;
}

/** Medians of one figure over a case's runs (NaN when it has none). */
function med(c: Case | undefined, fig: string): number {
  const xs = (c?.samples ?? []).map((s) => s[fig]).filter((x): x is number => typeof x === 'number');
  return xs.length ? median(xs) : NaN;
}
function range(c: Case, fig: string): string {
  const xs = c.samples.map((s) => s[fig]).filter((x): x is number => typeof x === 'number');
  if (xs.length < 2) return '–';
  return `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;
}
function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}
function ratio(x: number, base: number): string {
  return Number.isFinite(x) && Number.isFinite(base) && base > 0 ? `${(x / base).toFixed(2)}×` : '–';
}

// ---------------------------------------------------------------------------------------------------------------
// helpers for servers in namespaces

/** Waits until something in the namespace listens on TCP `port`. */
async function waitListen(h: TestHost, port: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => (await h.exec(['ss', '-Hltn', `sport = :${port}`], 5000)).stdout.trim() !== '', timeoutMs, 50);
}

/** Starts a long-running server (under appswitch when `appswitch` gives run's arguments); keeps the tail of its output
 * for the error message when it does not come up. The host kills it at destroy() in any case. */
function server(h: TestHost, cmd: string[], appswitch?: string[]): { stop: () => void; output: () => string } {
  const p = appswitch ? h.run(appswitch, cmd) : h.spawn(cmd);
  let out = '';
  p.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  p.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  return { stop: () => killTree(p, 'SIGKILL'), output: () => out };
}

async function run(h: TestHost, cmd: string[], appswitch?: string[]): Promise<string> {
  const r = appswitch ? await h.runToEnd(appswitch, cmd, CMD_TIMEOUT) : await h.exec(cmd, CMD_TIMEOUT);
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} exited ${r.code ?? r.signal}:\n${r.stdout}${r.stderr}`.slice(0, 2000));
  return r.stdout;
}

function nginxConf(dir: string, listen: string): string {
  mkdirSync(path.join(dir, 'www'), { recursive: true });
  writeFileSync(path.join(dir, 'www/index.html'), 'x'.repeat(1024));
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nuser root;\n` +
      `events { worker_connections 4096; }\n` +
      `http {\n  access_log off;\n  keepalive_requests 1000000;\n` +
      `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;\n` +
      `  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;\n` +
      `  server { listen ${listen}; root ${dir}/www; }\n}\n`,
  );
  return conf;
}

/** The same 1 KiB answer from Node.js, for machines without nginx. */
const NODE_HTTP = "const b=Buffer.alloc(1024,120);require('http').createServer((q,r)=>{r.setHeader('content-type','text/html');r.end(b)}).listen(+process.argv[2],process.argv[1])";

// ---------------------------------------------------------------------------------------------------------------
// rendering

function render(meta: string, notes: string[]): string {
  const out: string[] = ['## Network', '', meta, ''];
  const byKey = new Map(cases.map((c) => [c.key, c]));
  const status = (c: Case): string | undefined =>
    c.skip ?? (ONLY && !ONLY.has(c.table) ? 'not measured (--only)' : c.samples.length ? undefined : `failed: ${c.failure ?? '?'}`);

  const tput = (table: 'same' | 'cross', title: string, baseName: string): void => {
    out.push(title, '', `| setup | Mbit/s (median) | min–max | × ${baseName} |`, '|---|---:|---:|---:|');
    for (const c of cases.filter((x) => x.table === table)) {
      const s = status(c);
      if (s) out.push(`| ${c.label} | ${s} | | |`);
      else out.push(`| ${c.label} | ${fmt(med(c, 'mbits'))} | ${range(c, 'mbits')} | ${ratio(med(c, 'mbits'), med(byKey.get(c.baseline), 'mbits'))} |`);
    }
    out.push('');
  };
  tput('same', '### Throughput, one host (iperf 2, one TCP stream, 128 KiB writes)', 'native loopback');
  tput('cross', '### Throughput, two hosts (two namespaces on one Linux bridge)', 'native');

  out.push(
    '### Connection set-up (socket → connect → accept → 1 byte → EOF → close; C client threads, C server with one accept thread)',
    '',
    '| setup | clients | median µs | p99 µs | conn/s | median × native | p99 × native | conn/s × native |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const c of cases.filter((x) => x.table === 'conn')) {
    const s = status(c);
    const b = byKey.get(c.baseline);
    if (s) out.push(`| ${c.label} | ${c.extra ?? ''} | ${s} | | | | | |`);
    else
      out.push(
        `| ${c.label} | ${c.extra ?? ''} | ${fmt(med(c, 'p50'))} | ${fmt(med(c, 'p99'))} | ${fmt(med(c, 'cps'))} | ` +
          `${ratio(med(c, 'p50'), med(b, 'p50'))} | ${ratio(med(c, 'p99'), med(b, 'p99'))} | ${ratio(med(c, 'cps'), med(b, 'cps'))} |`,
      );
  }
  out.push('');

  const httpServer = cases.find((x) => x.table === 'http')?.extra ?? 'nginx';
  out.push(
    `### HTTP: wrk → ${httpServer} (1 KiB body, wrk -t1 -c16)`,
    '',
    '| setup | connections | req/s (median) | min–max | median latency ms | req/s × native | latency × native |',
    '|---|---|---:|---:|---:|---:|---:|',
  );
  for (const c of cases.filter((x) => x.table === 'http')) {
    const s = status(c);
    const b = byKey.get(c.baseline);
    const conn = c.key.endsWith('close') ? 'new per request (`Connection: close`)' : 'keep-alive';
    if (s) out.push(`| ${c.label} | ${conn} | ${s} | | | | |`);
    else
      out.push(
        `| ${c.label} | ${conn} | ${fmt(med(c, 'rps'))} | ${range(c, 'rps')} | ${fmt(med(c, 'p50ms'))} | ` +
          `${ratio(med(c, 'rps'), med(b, 'rps'))} | ${ratio(med(c, 'p50ms'), med(b, 'p50ms'))} |`,
      );
  }
  out.push('');
  // the targets of issue 5, as ratios measured in this run
  const t = (key: string, fig: string): number => med(byKey.get(key), fig);
  const targets: Array<[string, number, string, (x: number) => boolean]> = [
    ['same-host throughput, fast path ÷ native loopback', t('as-same', 'mbits') / t('lo', 'mbits'), '≥ 1.10', (x) => x >= 1.1],
    ['same-host throughput, fast path ÷ veth + bridge', t('as-same', 'mbits') / t('bridge', 'mbits'), '≥ 1.40', (x) => x >= 1.4],
    ['same-host throughput, fast path ÷ haproxy', t('as-same', 'mbits') / t('haproxy', 'mbits'), '≥ 3.00', (x) => x >= 3],
    ['cross-host throughput ÷ native', t('as-cross', 'mbits') / t('bridge', 'mbits'), '≥ 0.97', (x) => x >= 0.97],
  ];
  for (const n of [1, 16]) {
    const best = Math.min(t(`conn-as-${n}`, 'p50'), t(`conn-as-tcp-${n}`, 'p50'));
    targets.push([`connection set-up median, ${n} client${n > 1 ? 's' : ''}: best appswitch ÷ native`, best / t(`conn-native-${n}`, 'p50'), '≤ 1.50', (x) => x <= 1.5]);
    targets.push([`connection set-up median, ${n} client${n > 1 ? 's' : ''}: best appswitch ÷ haproxy`, best / t(`conn-haproxy-${n}`, 'p50'), '< 1.00', (x) => x < 1]);
  }
  out.push('### Targets (issue 5; ratios from this run)', '', '| target | measured | wanted | met |', '|---|---:|---:|---|');
  for (const [name, x, want, ok] of targets) out.push(`| ${name} | ${Number.isFinite(x) ? `${x.toFixed(2)}×` : '–'} | ${want} | ${Number.isFinite(x) ? (ok(x) ? 'yes' : '**no**') : '–'} |`);
  out.push('');
  const errs = cases.filter((c) => c.samples.some((s) => (s.errors ?? 0) > 0));
  for (const c of errs) notes.push(`${c.label} (${c.table}${c.extra ? `, ${c.extra}` : ''}): ${c.samples.map((s) => s.errors ?? 0).join('/')} errors in its runs.`);
  for (const c of cases.filter((x) => !x.skip && x.failure && x.samples.length)) notes.push(`${c.label} (${c.table}): a run failed: ${c.failure}`);
  if (notes.length) out.push(...notes.map((n) => `* ${n}`), '');
  return out.join('\n');
}

/** Replaces the "## Network" section of bench/RESULTS.md (up to the next "## " heading), or appends it. */
function writeSection(section: string): void {
  replaceSection(path.join(ROOT, 'bench/RESULTS.md'), '# Benchmark results', '## Network', section);
}

// ---------------------------------------------------------------------------------------------------------------
// main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root (it creates network namespaces)\n');
    process.exit(1);
  }
  const missing = (Object.keys(TOOLS) as Tool[]).filter((t) => !has(t));
  if (missing.length) {
    process.stdout.write(
      `bench: missing ${missing.join(', ')}; rows that need them are skipped. To run them: apt-get install ${missing.map((t) => TOOLS[t]).join(' ')}\n`,
    );
  }
  const ok = (t: Tool): boolean => !missing.includes(t);
  const need = (...ts: Tool[]): string | undefined => {
    const m = ts.filter((t) => !ok(t));
    return m.length ? `skipped: no ${m.join(', ')} (apt-get install ${m.map((t) => TOOLS[t]).join(' ')})` : undefined;
  };

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-netbench-'));
  const cleanTmp = (): void => rmSync(tmp, { recursive: true, force: true });
  process.on('exit', cleanTmp);
  const notes: string[] = [];

  let netbench: string | undefined;
  if (ok('gcc')) {
    writeFileSync(path.join(tmp, 'netbench.c'), NETBENCH_C);
    netbench = path.join(tmp, 'netbench');
    execFileSync('gcc', ['-O2', '-Wall', '-o', netbench, path.join(tmp, 'netbench.c'), '-lpthread'], { stdio: 'pipe' });
  }

  // native: no daemon in this namespace, so the daemon's sweeps never see (and never pay for) native sockets
  const hn = TestHost.create('netn', '192.0.2.1');
  // appswitch on one host: daemon in the namespace, servers by vip
  const ha = TestHost.create('neta', '192.0.2.1');
  // two hosts on one bridge: daemons a and b joined
  const bridge = new TestBridge('netx');
  const [h1, h2] = bridge.hostsOf('netx', 2) as [TestHost, TestHost];
  const stops: Array<() => void> = [];
  try {
    await Promise.all([
      ha.startDaemon(['--log-level', 'warn']),
      h1.startDaemon(['--log-level', 'warn', '--node-name', 'a']),
      h2.startDaemon(['--log-level', 'warn', '--node-name', 'b', '--join', '192.0.2.1']),
    ]);

    // ---- servers (all started up front, idle between their turns)
    const P = { iperfLo: 5101, iperfProxy: 5102, iperfVip: 5001, iperfX: 5201, connLo: 7101, connProxy: 7102, connVip: 7001, http: 8080 };
    const VIP = { iperf: '10.0.0.5', http: '10.0.0.6', conn: '10.0.0.7' };
    /** A set-up step that failed takes only its own rows down (they say why), not the whole benchmark. */
    const broken = new Map<string, string>();
    const group = async (name: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        const why = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').slice(0, 300);
        broken.set(name, why);
        process.stderr.write(`bench: set-up of ${name} failed: ${why}\n`);
      }
    };
    const start = async (h: TestHost, cmd: string[], ready: () => Promise<void>, appswitch?: string[]): Promise<void> => {
      const s = server(h, cmd, appswitch);
      stops.push(s.stop);
      try {
        await ready();
      } catch (e) {
        throw new Error(`${cmd[0]} did not come up: ${String(e)}\n${s.output()}`);
      }
    };
    if (ok('iperf')) {
      await group('iperf-native', () => start(hn, ['iperf', '-s', '-B', '127.0.0.1', '-p', String(P.iperfLo)], () => waitListen(hn, P.iperfLo)));
      await group('iperf-bridge', () => start(h1, ['iperf', '-s', '-p', String(P.iperfX)], () => waitListen(h1, P.iperfX)));
      await group('iperf-as', () =>
        start(ha, ['iperf', '-s', '-p', String(P.iperfVip)], () => ha.waitService(VIP.iperf, P.iperfVip), ['--ip', VIP.iperf]),
      );
      await group('iperf-as-cross', () =>
        start(h1, ['iperf', '-s', '-p', String(P.iperfVip)], () => h2.waitService(VIP.iperf, P.iperfVip, 30_000), ['--ip', VIP.iperf]),
      );
    }
    if (netbench) {
      const nb = netbench;
      await group('conn-native', () => start(hn, [nb, 'serve', '127.0.0.1', String(P.connLo), '1'], () => waitListen(hn, P.connLo)));
      await group('conn-as', () =>
        start(ha, [nb, 'serve', '0.0.0.0', String(P.connVip), '1'], () => ha.waitService(VIP.conn, P.connVip), ['--ip', VIP.conn]),
      );
    }
    if (ok('haproxy')) {
      const cfg = path.join(tmp, 'haproxy.cfg');
      writeFileSync(
        cfg,
        'global\n  maxconn 4000\n' +
          'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n' +
          `listen iperf\n  bind 127.0.0.1:${P.iperfProxy}\n  server s1 127.0.0.1:${P.iperfLo}\n` +
          `listen conn\n  bind 127.0.0.1:${P.connProxy}\n  server s1 127.0.0.1:${P.connLo}\n`,
      );
      await group('haproxy', () => start(hn, ['haproxy', '-db', '-f', cfg], () => waitListen(hn, P.connProxy)));
    }
    const httpServer = ok('nginx') ? 'nginx' : 'Node.js http';
    if (ok('wrk')) {
      if (ok('nginx')) {
        const native = path.join(tmp, 'nginx-native');
        const vip = path.join(tmp, 'nginx-vip');
        await group('http-native', () =>
          start(hn, ['nginx', '-c', nginxConf(native, `127.0.0.1:${P.http}`), '-p', native, '-e', path.join(native, 'error.log')], () =>
            waitListen(hn, P.http),
          ),
        );
        await group('http-as', () =>
          start(
            ha,
            ['nginx', '-c', nginxConf(vip, String(P.http)), '-p', vip, '-e', path.join(vip, 'error.log')],
            () => ha.waitService(VIP.http, P.http),
            ['--ip', VIP.http],
          ),
        );
      } else {
        notes.push('nginx is not installed: the HTTP rows use a Node.js http server instead (apt-get install nginx for nginx).');
        await group('http-native', () => start(hn, ['node', '-e', NODE_HTTP, '127.0.0.1', String(P.http)], () => waitListen(hn, P.http)));
        await group('http-as', () =>
          start(ha, ['node', '-e', NODE_HTTP, '0.0.0.0', String(P.http)], () => ha.waitService(VIP.http, P.http), ['--ip', VIP.http]),
        );
      }
    }
    /** Why a row cannot run: a missing package, else a failed set-up step it depends on. */
    const skip = (tools: Tool[], groups: string[]): string | undefined =>
      need(...tools) ?? groups.map((g) => broken.get(g)).filter(Boolean).map((w) => `set-up failed: ${w}`)[0];

    // ---- the rows
    const iperfC = (ip: string, port: number): string[] => ['iperf', '-c', ip, '-p', String(port), '-t', String(DURATION), '-f', 'm'];
    addCase({ table: 'same', key: 'lo', baseline: 'lo', label: 'native loopback, one namespace (baseline)', skip: skip(['iperf'], ['iperf-native']),
      measure: async () => ({ mbits: iperfMbits(await run(hn, iperfC('127.0.0.1', P.iperfLo))) }) });
    addCase({ table: 'same', key: 'bridge-same', baseline: 'lo', label: 'two namespaces, veth + Linux bridge (Docker’s default layout)', skip: skip(['iperf'], ['iperf-bridge']),
      measure: async () => ({ mbits: iperfMbits(await run(h2, iperfC(h1.address, P.iperfX))) }) });
    addCase({ table: 'same', key: 'haproxy', baseline: 'lo', label: 'haproxy `mode tcp` in the path (client → haproxy → server, loopback)', skip: skip(['iperf', 'haproxy'], ['iperf-native', 'haproxy']),
      measure: async () => ({ mbits: iperfMbits(await run(hn, iperfC('127.0.0.1', P.iperfProxy))) }) });
    addCase({ table: 'same', key: 'as-same', baseline: 'lo', label: `appswitch, fast path (server \`--ip ${VIP.iperf}\`, client by vip: a Unix socket pair)`, skip: skip(['iperf'], ['iperf-as']),
      measure: async () => ({ mbits: iperfMbits(await run(ha, iperfC(VIP.iperf, P.iperfVip), [])) }) });
    addCase({ table: 'same', key: 'as-same-tcp', baseline: 'lo', label: 'appswitch, fast path off (client `appswitch run --no-fastpath`: loopback TCP)', skip: skip(['iperf'], ['iperf-as']),
      measure: async () => ({ mbits: iperfMbits(await run(ha, iperfC(VIP.iperf, P.iperfVip), ['--no-fastpath'])) }) });
    addCase({ table: 'cross', key: 'bridge', baseline: 'bridge', label: `native (client in host 2 → ${h1.address} in host 1)`, skip: skip(['iperf'], ['iperf-bridge']),
      measure: async () => ({ mbits: iperfMbits(await run(h2, iperfC(h1.address, P.iperfX))) }) });
    addCase({ table: 'cross', key: 'as-cross', baseline: 'bridge', label: `appswitch (daemons a, b joined; server \`--ip ${VIP.iperf}\` on a, client on b by vip)`, skip: skip(['iperf'], ['iperf-as-cross']),
      measure: async () => ({ mbits: iperfMbits(await run(h2, iperfC(VIP.iperf, P.iperfVip), [])) }) });

    // HTTP before connection set-up in each run: the set-up rows leave tens of thousands of TIME_WAIT sockets that the
    // daemon's sweep reads from /proc/net/tcp for a minute; a run's HTTP rows come after the previous run's set-up rows
    // by about that minute (throughput rows in between), so neither workload inherits the other's leftovers.
    for (const mode of ['keepalive', 'close'] as const) {
      const wrk = (ip: string): string[] => [
        'wrk', '-t1', '-c16', `-d${DURATION}s`, '--latency', ...(mode === 'close' ? ['-H', 'Connection: close'] : []), `http://${ip}:${P.http}/`,
      ];
      const fig = (out: string): Figures => {
        const w = wrkFigures(out);
        return { rps: w.rps, p50ms: w.p50ms, errors: w.errors };
      };
      addCase({ table: 'http', key: `http-native-${mode}`, baseline: `http-native-${mode}`, extra: httpServer, label: 'native loopback', skip: skip(['wrk'], ['http-native']),
        measure: async () => fig(await run(hn, wrk('127.0.0.1'))) });
      addCase({ table: 'http', key: `http-as-${mode}`, baseline: `http-native-${mode}`, extra: httpServer, label: `appswitch (${httpServer} \`--ip ${VIP.http}\`, wrk under \`appswitch run\`)`, skip: skip(['wrk'], ['http-as']),
        measure: async () => fig(await run(ha, wrk(VIP.http), [])) });
    }

    const conn = (out: string): Figures => ({
      p50: field(out, 'median_us'), p99: field(out, 'p99_us'), cps: field(out, 'conns_per_s'), errors: field(out, 'errors'),
    });
    for (const n of [1, 16]) {
      const load = (ip: string, port: number): string[] => [netbench ?? 'netbench', 'load', ip, String(port), String(n), String(DURATION)];
      addCase({ table: 'conn', key: `conn-native-${n}`, baseline: `conn-native-${n}`, extra: String(n), label: 'native loopback', skip: skip(['gcc'], ['conn-native']),
        measure: async () => conn(await run(hn, load('127.0.0.1', P.connLo))) });
      addCase({ table: 'conn', key: `conn-haproxy-${n}`, baseline: `conn-native-${n}`, extra: String(n), label: 'haproxy `mode tcp`', skip: skip(['gcc', 'haproxy'], ['conn-native', 'haproxy']),
        measure: async () => conn(await run(hn, load('127.0.0.1', P.connProxy))) });
      addCase({ table: 'conn', key: `conn-as-${n}`, baseline: `conn-native-${n}`, extra: String(n), label: 'appswitch, fast path (client and server under `appswitch run`)', skip: skip(['gcc'], ['conn-as']),
        measure: async () => conn(await run(ha, load(VIP.conn, P.connVip), [])) });
      addCase({ table: 'conn', key: `conn-as-tcp-${n}`, baseline: `conn-native-${n}`, extra: String(n), label: 'appswitch, fast path off (client `--no-fastpath`)', skip: skip(['gcc'], ['conn-as']),
        measure: async () => conn(await run(ha, load(VIP.conn, P.connVip), ['--no-fastpath'])) });
    }

    // ---- measure: every setup once per run, runs interleaved; the bridge row is measured once and shown twice
    const shared = new Map([['bridge-same', 'bridge']]);
    const t0 = Date.now();
    for (let r = 1; r <= RUNS; r++) {
      for (const c of cases) {
        if (c.skip || !c.measure || shared.has(c.key) || (ONLY && !ONLY.has(c.table))) continue;
        process.stderr.write(`run ${r}/${RUNS}: ${c.table} ${c.label}${c.extra && c.table === 'conn' ? `, ${c.extra} clients` : ''}${c.table === 'http' ? ` (${c.key})` : ''}\n`);
        try {
          c.samples.push(await c.measure());
        } catch (e) {
          c.failure = (e instanceof Error ? e.message : String(e)).split('\n').slice(0, 3).join(' ').slice(0, 300);
          process.stderr.write(`  failed: ${c.failure}\n`);
        }
        await sleep(200);
      }
    }
    for (const [copy, from] of shared) {
      const c = cases.find((x) => x.key === copy);
      const src = cases.find((x) => x.key === from);
      if (c && src) {
        c.samples = src.samples;
        if (src.failure !== undefined) c.failure = src.failure;
      }
    }
    notes.push(
      'On one machine a "host" is a network namespace: the veth + bridge row of the one-host table and the native row of the two-host table are one measurement.',
      'Native and haproxy rows run in a namespace without an appswitch daemon; appswitch rows in one with its daemon.',
      ...(ok('haproxy') ? ['haproxy runs with its defaults (threads = CPUs, no splice).'] : []),
    );
    notes.push(
      `${os.cpus().length} cores shared by client, server, proxy and daemon; the machine is shared and noisy: read the ratios, not the absolute figures.`,
    );

    const versions = [
      ok('iperf') ? version(['iperf', '-v']) : '',
      ok('haproxy') ? version(['haproxy', '-v']).replace(/ - https?:.*$/, '') : '',
      ok('nginx') ? version(['nginx', '-v']) : '',
      ok('wrk') ? version(['wrk', '-v']).replace(/ \[.*$/, '') : '',
    ].filter(Boolean);
    const meta =
      `${new Date().toISOString()} · ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}) · kernel ${os.release()} · ` +
      `medians of ${RUNS} run${RUNS > 1 ? 's' : ''} of ${DURATION} s${smoke ? ' (smoke)' : ''} · ${Math.round((Date.now() - t0) / 1000)} s in all` +
      (versions.length ? ` · ${versions.join(', ')}` : '') +
      (missing.length ? ` · not installed: ${missing.join(', ')}` : '');
    const section = render(meta, notes);
    process.stdout.write(`\n${section}\n`);
    if (!smoke && !ONLY) {
      writeSection(section);
      process.stdout.write('bench: wrote the "## Network" section of bench/RESULTS.md\n');
    }
  } finally {
    for (const s of stops) s();
    await bridge.destroy();
    await hn.destroy();
    await ha.destroy();
    cleanTmp();
  }
}

// a signal would end the process without 'exit' hooks: turn it into an exit, so namespaces and processes go too
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(128 + (os.constants.signals[sig] ?? 0)));

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
