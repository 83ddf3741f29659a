/** `npm run bench:ingress` (root; also run by `npm run bench` after the network rows): external client → gateway →
 * instance, on namespace hosts of one bridge: an outside host (no appswitch), a gateway host and an instance host.
 * Rows, side by side in one run and interleaved (every row once, then again: A B A B), medians and ratios:
 *   native    the outside client connects to the instance's server directly
 *   haproxy   `mode tcp` on the gateway host (its defaults), forwarding to the instance
 *   appswitch `appswitch daemon --gateway` on the gateway host and the server under `appswitch run --expose`: the
 *             relay forwards (docs/relay.md), or, with the instance on the gateway itself, the client is steered
 *             to the program's socket (docs/ingress-local.md)
 * and the same three with the instance on the gateway host itself. Measures: throughput (iperf3 -t DURATION, one
 * stream) and new connections/s (bench/netbench.c `load`, 16 concurrent clients: connect, read 1 byte, EOF, close).
 * Writes the "## Ingress" section of bench/RESULTS.md unless --smoke.
 *   --smoke       one run of 1 s per measurement
 *   --runs N      runs per measurement (default 3)
 *   --duration S  seconds per measurement (default 5)
 *   --only T      only the mbits or the cps rows (RESULTS.md is not written)
 *   --clients N   concurrent clients of the connection rows (default 16)
 *   --profile     both daemons under `node --cpu-prof`: prints where each one's JavaScript thread spent its time, per
 *                 connection of the appswitch connection rows (use with --only cps; profiles kept in bench/profiles/)
 *   --daemon-flags "F ..."  more flags for both daemons (e.g. "--sweep-interval 5000"); nothing is written
 *   --gateway-flags "F ..." more flags for the gateway's daemon only (e.g. "--relay-workers 2"); nothing is written
 *   --where W     only the rows with the instance on another host (cross) or on the gateway (local); nothing is
 *                 written
 * Traffic stays between the namespaces this script creates; everything is removed at the end, also on failure. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killTree, ROOT, sleep, TestBridge, type TestHost, waitFor } from '../test/helpers/hosts.js';
import { keepProfile, profileTable } from './cpu-profile.js';
import { compileNetbench, compileTrapfloor, cpuSeconds, median, numOption, replaceSection } from './ops-common.js';

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const RUNS = Math.round(numOption(args, 'bench:ingress', '--runs', smoke ? 1 : 3));
const DURATION = Math.round(numOption(args, 'bench:ingress', '--duration', smoke ? 1 : 5));
const CMD_TIMEOUT = DURATION * 1000 + 30_000;
const CLIENTS = Math.round(numOption(args, 'bench:ingress', '--clients', 16));
const onlyAt = args.indexOf('--only');
const ONLY = onlyAt >= 0 ? args[onlyAt + 1] : undefined; /* mbits or cps: only that table (nothing is written) */
const PROFILE = args.includes('--profile');
/** The words of the argument after `name` ("--daemon-flags "F ...""), or none. */
const wordsAfter = (name: string): string[] => {
  const at = args.indexOf(name);
  return at >= 0 ? (args[at + 1] ?? '').split(/\s+/).filter(Boolean) : [];
};
const DAEMON_FLAGS = wordsAfter('--daemon-flags');
const GATEWAY_FLAGS = wordsAfter('--gateway-flags');
const whereAt = args.indexOf('--where');
const WHERE = whereAt >= 0 ? args[whereAt + 1] : undefined; /* cross or local: only those rows (nothing is written) */
if (WHERE !== undefined && WHERE !== 'cross' && WHERE !== 'local') {
  process.stderr.write('bench:ingress: --where takes cross or local\n');
  process.exit(2);
}

type Where = 'cross' | 'local';
type Setup = 'native' | 'floor' | 'handover' | 'haproxy' | 'appswitch';
/** The trap floors: the server under bench/trapfloor.c, reached directly (connection rows only). */
const isFloor = (s: Setup): s is 'floor' | 'handover' => s === 'floor' || s === 'handover';
/** No proxy in the path: no proxy CPU to measure. */
const isDirect = (s: Setup): boolean => s === 'native' || isFloor(s);
type Measure = 'mbits' | 'cps';
interface Row {
  where: Where;
  setup: Setup;
  measure: Measure;
  target: { ip: string; port: number };
  samples: number[];
  errors: number[];
  /** CPU seconds the proxy used during each sample, the gateway's daemon (the relay's record reader), and the
   * instance host's daemon. */
  cpu: number[];
  reader: number[];
  instDaemon: number[];
  /** Connections made (connection rows). */
  count: number[];
  failure?: string;
}

const P = { iperfInst: 5201, iperfGw: 5202, connInst: 7001, connGw: 7002, floorInst: 7101, floorGw: 7102, handInst: 7111, handGw: 7112 };
/** Ports on the gateway: haproxy and the relay, for (cross, local) x (iperf, conn). */
const FRONT = {
  haproxy: { cross: { mbits: 15201, cps: 17001 }, local: { mbits: 15202, cps: 17002 } },
  appswitch: { cross: { mbits: 25201, cps: 27001 }, local: { mbits: 25202, cps: 27002 } },
};
const VIPS = { cross: { mbits: '10.0.0.21', cps: '10.0.0.22' }, local: { mbits: '10.0.0.23', cps: '10.0.0.24' } };

function field(out: string, key: string): number {
  const m = new RegExp(`${key} ([\\d.]+)`).exec(out);
  if (!m) throw new Error(`no ${key} in output:\n${out.slice(0, 500)}`);
  return Number(m[1]);
}

function iperf3Mbits(out: string): number {
  const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = j.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new Error(`iperf3: ${j.error ?? 'no result'}`);
  return bps / 1e6;
}

async function waitListen(h: TestHost, port: number, output: () => string): Promise<void> {
  try {
    await waitFor(async () => (await h.exec(['ss', '-Hltn', `sport = :${port}`], 5000)).stdout.trim() !== '', 15_000, 50);
  } catch {
    throw new Error(`nothing listens on ${h.address}:${port}; servers said:\n${output()}`);
  }
}

/** Runs `make` (which creates the namespaces) with each new network namespace getting its own TCP hash table
 * (net.ipv4.tcp_child_ehash_entries), as separate machines have; the setting is put back at once. Shared, a daemon's
 * sweep (a sock_diag dump of its namespace) walks every host's sockets, the outside client's hundred thousand
 * TIME_WAIT ones among them: a cost a real gateway host, whose clients are elsewhere, does not have. */
function ownTcpTables<T>(make: () => T): T {
  const knob = '/proc/sys/net/ipv4/tcp_child_ehash_entries';
  let old: string | undefined;
  try {
    old = readFileSync(knob, 'utf8').trim();
    writeFileSync(knob, '65536');
  } catch {
    old = undefined; /* a kernel before 6.1: shared tables */
  }
  try {
    return make();
  } finally {
    if (old !== undefined) writeFileSync(knob, old);
  }
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench:ingress: needs root (it creates network namespaces)\n');
    process.exit(1);
  }
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'appswitch-ingress-'));
  const netbench = compileNetbench(tmp);
  const trapfloor = compileTrapfloor(tmp);
  const { bridge, gw, inst, out } = ownTcpTables(() => {
    const b = new TestBridge('ing');
    const [g, i] = b.hostsOf('ing', 2) as [TestHost, TestHost];
    return { bridge: b, gw: g, inst: i, out: b.outside('ingout') };
  });
  await out.exec(['ip', 'addr', 'add', '192.0.2.200/24', 'dev', 'v0']); /* the outside client reaches the gateway's node address */
  const stops: Array<() => void> = [];
  try {
    let said = '';
    const bg = (h: TestHost, cmd: string[]): number | undefined => {
      const p = h.spawn(cmd);
      const keep = (d: Buffer): void => void (said = `${said}${cmd[0]}: ${d.toString()}`.slice(-3000));
      p.stdout?.on('data', keep);
      p.stderr?.on('data', keep);
      stops.push(() => killTree(p, 'SIGKILL'));
      return p.pid;
    };
    bg(inst, ['iperf3', '-s', '-p', String(P.iperfInst)]);
    bg(gw, ['iperf3', '-s', '-p', String(P.iperfGw)]);
    bg(inst, [netbench, 'serve', '0.0.0.0', String(P.connInst), '1']);
    bg(gw, [netbench, 'serve', '0.0.0.0', String(P.connGw), '1']);
    /* the trap floors: the same server under a supervisor that traps only accept (no appswitch) and lets each one run
     * (continue), or makes it itself and hands the connection over (addfd) */
    bg(inst, [trapfloor, 'continue', netbench, 'serve', '0.0.0.0', String(P.floorInst), '1']);
    bg(gw, [trapfloor, 'continue', netbench, 'serve', '0.0.0.0', String(P.floorGw), '1']);
    bg(inst, [trapfloor, 'addfd', netbench, 'serve', '0.0.0.0', String(P.handInst), '1']);
    bg(gw, [trapfloor, 'addfd', netbench, 'serve', '0.0.0.0', String(P.handGw), '1']);
    const floorPort = { floor: { cross: P.floorInst, local: P.floorGw }, handover: { cross: P.handInst, local: P.handGw } };
    const backend = { cross: { mbits: P.iperfInst, cps: P.connInst }, local: { mbits: P.iperfGw, cps: P.connGw } };
    const hostOf = { cross: inst, local: gw };

    // haproxy `mode tcp` on the gateway (its defaults: threads = CPUs, no splice)
    const cfg = path.join(tmp, 'haproxy.cfg');
    let hcfg = 'global\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n';
    for (const w of ['cross', 'local'] as const)
      for (const m of ['mbits', 'cps'] as const)
        hcfg += `listen ${w}-${m}\n  bind 0.0.0.0:${FRONT.haproxy[w][m]}\n  server s1 ${hostOf[w].address}:${backend[w][m]}\n`;
    writeFileSync(cfg, hcfg);
    const haproxyPid = bg(gw, ['haproxy', '-db', '-f', cfg]);

    // appswitch: a daemon on each host with default flags but --gateway on the gateway host; the same servers run under
    // appswitch with --expose (on the instance host: cross; on the gateway host: local, where the gateway steers the
    // outside client to the program's own socket when it can, docs/ingress-local.md)
    const profDir = path.join(tmp, 'cpuprof');
    const prof = (who: string): string[] => (PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${profDir}/${who}`] : []);
    await gw.startDaemon(['--gateway', ...DAEMON_FLAGS, ...GATEWAY_FLAGS], prof('gateway'));
    await inst.startDaemon(['--join', gw.address, ...DAEMON_FLAGS], prof('instance'));
    const apps: Array<[TestHost, string, number, string[]]> = [
      [inst, VIPS.cross.mbits, FRONT.appswitch.cross.mbits, ['iperf3', '-s', '-p', '80']],
      [inst, VIPS.cross.cps, FRONT.appswitch.cross.cps, [netbench, 'serve', '0.0.0.0', '80', '1']],
      [gw, VIPS.local.mbits, FRONT.appswitch.local.mbits, ['iperf3', '-s', '-p', '80']],
      [gw, VIPS.local.cps, FRONT.appswitch.local.cps, [netbench, 'serve', '0.0.0.0', '80', '1']],
    ];
    for (const [h, vip, hostPort, cmd] of apps) {
      const p = h.run(['--ip', vip, '--expose', `${hostPort}:80`], cmd);
      const keep = (d: Buffer): void => void (said = `${said}${cmd[0]}: ${d.toString()}`.slice(-3000));
      p.stdout?.on('data', keep);
      p.stderr?.on('data', keep);
      stops.push(() => killTree(p, 'SIGKILL'));
    }
    await waitFor(async () => {
      const r = await gw.cli(['get', 'exposures', '--json']);
      const rows = r.code === 0 ? (JSON.parse(r.stdout) as Array<{ hostPort: number; state: string }>) : [];
      return apps.every(([, , hp]) => rows.some((x) => x.hostPort === hp && x.state === 'active'));
    }, 30_000);
    await waitFor(async () => (await gw.services()).filter((x) => x.port === 80).length >= 4, 30_000);
    /** The gateway's relay process (none when every row is steered) and its daemon. */
    const relayPid = (): number | undefined => {
      const pids = execFileSync('ip', ['netns', 'pids', gw.ns]).toString().split(/\s+/).filter(Boolean);
      return pids.map(Number).find((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'appswitch-relay';
        } catch {
          return false;
        }
      });
    };
    const daemonPid = gw.daemon?.pid;
    for (const [h, p] of [[inst, P.iperfInst], [gw, P.iperfGw], [inst, P.connInst], [gw, P.connGw], [inst, P.floorInst], [gw, P.floorGw], [inst, P.handInst], [gw, P.handGw], [gw, FRONT.haproxy.cross.cps]] as const) await waitListen(h, p, () => said);

    const rows: Row[] = [];
    for (const measure of (['mbits', 'cps'] as const).filter((m) => !ONLY || m === ONLY))
      for (const where of (['cross', 'local'] as const).filter((w) => !WHERE || w === WHERE))
        for (const setup of ['native', 'floor', 'handover', 'haproxy', 'appswitch'] as const) {
          if (isFloor(setup) && measure !== 'cps') continue;
          const target =
            setup === 'native' ? { ip: hostOf[where].address, port: backend[where][measure] }
            : isFloor(setup) ? { ip: hostOf[where].address, port: floorPort[setup][where] }
            : { ip: gw.address, port: FRONT[setup][where][measure] };
          rows.push({ where, setup, measure, target, samples: [], errors: [], cpu: [], reader: [], instDaemon: [], count: [] });
        }
    const t0 = Date.now();
    for (let r = 1; r <= RUNS; r++) {
      for (const row of rows) {
        process.stderr.write(`run ${r}/${RUNS}: ${row.measure} ${row.where} ${row.setup}\n`);
        const pidOf = row.setup === 'appswitch' ? relayPid() : row.setup === 'haproxy' ? haproxyPid : undefined;
        const cpu0 = cpuSeconds(pidOf);
        const daemon0 = cpuSeconds(daemonPid);
        const inst0 = cpuSeconds(inst.daemon?.pid);
        try {
          if (row.measure === 'mbits') {
            const res = await out.exec(['iperf3', '-c', row.target.ip, '-p', String(row.target.port), '-t', String(DURATION), '-J'], CMD_TIMEOUT);
            row.samples.push(iperf3Mbits(res.stdout));
          } else {
            const res = await out.exec([netbench, 'load', row.target.ip, String(row.target.port), String(CLIENTS), String(DURATION)], CMD_TIMEOUT);
            row.samples.push(field(res.stdout, 'conns_per_s'));
            row.errors.push(field(res.stdout, 'errors'));
            row.count.push(field(res.stdout, 'count'));
            process.stderr.write(`  ${res.stdout.trim()}\n`);
          }
        } catch (e) {
          row.failure = (e instanceof Error ? e.message : String(e)).split('\n')[0]?.slice(0, 200);
          process.stderr.write(`  failed: ${row.failure}\n`);
        }
        if (!isDirect(row.setup)) {
          const cpu = pidOf === undefined ? 0 : cpuSeconds(pidOf) - cpu0;
          row.cpu.push(cpu);
          const daemon = row.setup === 'appswitch' ? cpuSeconds(daemonPid) - daemon0 : 0;
          row.reader.push(daemon);
          const instd = row.setup === 'appswitch' ? cpuSeconds(inst.daemon?.pid) - inst0 : 0;
          row.instDaemon.push(instd);
          process.stderr.write(
            `  ${row.setup} CPU ${cpu.toFixed(2)} s (gateway daemon ${daemon.toFixed(2)} s, instance daemon ${instd.toFixed(2)} s), last ${fmt(row.samples[row.samples.length - 1] ?? NaN)}\n`,
          );
        }
        await sleep(500);
      }
    }

    const med = (w: Where, s: Setup, m: Measure): number => {
      const row = rows.find((x) => x.where === w && x.setup === s && x.measure === m);
      return row && row.samples.length ? median(row.samples) : NaN;
    };
    const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–');
    const lines: string[] = ['## Ingress', ''];
    lines.push(
      `${new Date().toISOString()} · ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}) · kernel ${os.release()} · medians of ${RUNS} run${RUNS > 1 ? 's' : ''} of ${DURATION} s${smoke ? ' (smoke)' : ''}, rows interleaved · ${Math.round((Date.now() - t0) / 1000)} s in all`,
      '',
      'External client (an outside namespace, no appswitch) → gateway host → instance. `appswitch`: `appswitch daemon --gateway` on the gateway host, `appswitch daemon --join` on the instance host (default flags otherwise), the server under `appswitch run --ip VIP --expose HOSTPORT:80`; the outside client connects to the gateway\'s HOSTPORT. Instance on another host: the gateway\'s relay forwards (appswitch-relay: epoll + splice, instance picked from the decision table; docs/relay.md). Instance on the gateway host: the gateway steers the client to the program\'s own listening socket (BPF sk_lookup; docs/ingress-local.md), no proxy. haproxy `mode tcp` with its defaults (threads = CPUs, no splice). Each host namespace has its own TCP hash table (`net.ipv4.tcp_child_ehash_entries`), as separate machines do.',
      '',
    );
    const unit = { mbits: 'throughput, Mbit/s (iperf3, one stream)', cps: `new connections/s (${CLIENTS} concurrent clients: connect, 1 byte, EOF, close)` };
    for (const m of ['mbits', 'cps'] as const) {
      lines.push(
        `### ${unit[m]}`,
        '',
        '| instance | setup | median | min–max | × native | × haproxy | proxy CPU, % of a core | instance host\'s daemon, % of a core |',
        '|---|---|---:|---:|---:|---:|---:|---:|',
      );
      for (const row of rows.filter((x) => x.measure === m)) {
        const v = row.samples.length ? median(row.samples) : NaN;
        const range = row.samples.length > 1 ? `${fmt(Math.min(...row.samples))}–${fmt(Math.max(...row.samples))}` : '–';
        const label = { native: 'native (client → instance directly)', floor: 'trap floor, let through: client → instance directly, the server\'s accept trapped and let through (bench/trapfloor.c continue, no appswitch)', handover: 'trap floor, handed over: the same, the accept made by the supervisor and the connection handed over (bench/trapfloor.c addfd)', haproxy: 'haproxy `mode tcp` on the gateway', appswitch: row.where === 'cross' ? 'appswitch gateway (relay)' : 'appswitch gateway (steered, no proxy)' }[row.setup];
        const where = row.where === 'cross' ? 'on another host' : 'on the gateway host';
        const errs = row.errors.reduce((a, b) => a + b, 0);
        const pct = (xs: number[]): string => (xs.length ? `${((median(xs) / DURATION) * 100).toFixed(0)}` : '–');
        const cpu = isDirect(row.setup) ? '–' : row.setup === 'appswitch' ? `${pct(row.cpu)} (+ daemon ${pct(row.reader)})` : pct(row.cpu);
        lines.push(`| ${where} | ${label}${errs ? ` (${errs} errors)` : ''}${row.failure && !row.samples.length ? ` failed: ${row.failure}` : ''} | ${fmt(v)} | ${range} | ${ratio(v, med(row.where, 'native', m))} | ${ratio(v, med(row.where, 'haproxy', m))} | ${cpu} | ${row.setup === 'appswitch' ? pct(row.instDaemon) : '–'} |`);
      }
      lines.push('');
    }
    const tgt: Array<[string, number, number]> = [
      ['throughput, instance on another host: appswitch ÷ haproxy', med('cross', 'appswitch', 'mbits') / med('cross', 'haproxy', 'mbits'), 0.9],
      ['new connections/s, instance on another host: appswitch ÷ haproxy', med('cross', 'appswitch', 'cps') / med('cross', 'haproxy', 'cps'), 0.9],
      ['throughput, instance on the gateway: appswitch ÷ native', med('local', 'appswitch', 'mbits') / med('local', 'native', 'mbits'), 0.95],
      ['new connections/s, instance on the gateway: appswitch ÷ native', med('local', 'appswitch', 'cps') / med('local', 'native', 'cps'), 0.95],
    ];
    lines.push('### Targets (issue 13; ratios from this run)', '', '| target | measured | wanted | met | trap floors, × native: let through; handed over |', '|---|---:|---:|---|---:|');
    const floorOf = (w: Where): string => {
      const [a, b] = (['floor', 'handover'] as const).map((s) => med(w, s, 'cps') / med(w, 'native', 'cps'));
      return Number.isFinite(a) && Number.isFinite(b) ? `${(a as number).toFixed(2)}×; ${(b as number).toFixed(2)}×` : '–';
    };
    const floors = ['–', floorOf('cross'), '–', floorOf('local')];
    tgt.forEach(([name, x, want], i) => {
      lines.push(`| ${name} | ${Number.isFinite(x) ? `${x.toFixed(2)}×` : '–'} | ≥ ${want.toFixed(2)} | ${Number.isFinite(x) ? (x >= want ? 'yes' : '**no**') : '–'} | ${floors[i] ?? '–'} |`);
    });
    lines.push(
      '',
      '* proxy CPU: what the proxy process used while the row ran (all its threads: the relay runs one worker per two CPUs, haproxy one thread per CPU), including the kernel\'s network work done in its context; for appswitch, also what the gateway\'s daemon used (its relay\'s stats and refusals, the instance node\'s rare who-is questions, the generators\' batches of outside clients).',
      '* trap floors: the server runs under bench/trapfloor.c, a seccomp supervisor with one thread (SYNC_WAKE_UP, as appswitch\'s generator) that traps only accept(). Let through: it answers each with SECCOMP_USER_NOTIF_FLAG_CONTINUE and the kernel runs the program\'s own accept. Handed over: it accepts on its copy of the listener and installs the connection with SECCOMP_ADDFD_FLAG_SEND, the fewest calls of a design that sees each connection before the program does. appswitch must see it (it drops unvetted connections and shows virtual peers), so the handed-over floor bounds its connection rows against native.',
      `* ${os.cpus().length} cores shared by client, proxy and server; the machine is shared with other work: read the ratios, not the absolute figures.`,
      '',
    );
    const section = lines.join('\n');
    process.stdout.write(`\n${section}\n`);
    if (PROFILE) {
      const conns = rows.filter((r) => r.setup === 'appswitch' && r.measure === 'cps').reduce((a, r) => a + r.count.reduce((x, y) => x + y, 0), 0);
      process.stdout.write(`\n${await daemonProfiles([gw, inst], profDir, conns)}\n`);
    }
    if (!smoke && !ONLY && !WHERE && !DAEMON_FLAGS.length && !GATEWAY_FLAGS.length) {
      replaceSection(path.join(ROOT, 'bench/RESULTS.md'), '# Benchmark results', '## Ingress', section);
      process.stdout.write('bench:ingress: wrote the "## Ingress" section of bench/RESULTS.md\n');
    }
  } finally {
    for (const s of stops) s();
    await bridge.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Stops both daemons cleanly (node writes its profile at a clean exit) and renders each one's heaviest functions per
 * connection of the appswitch connection rows; the profiles are kept in bench/profiles/ingress-*.cpuprofile. */
async function daemonProfiles(hosts: TestHost[], dir: string, conns: number): Promise<string> {
  const out: string[] = [`## Daemon profiles: ${conns} connections through the appswitch gateway (both rows, all runs)`, ''];
  for (const [h, who] of [[hosts[0], 'gateway'], [hosts[1], 'instance']] as const) {
    const kept = h ? await keepProfile(h, path.join(dir, who), `ingress-${who}`) : undefined;
    if (!kept) out.push(`${who}: no profile written`, '');
    else out.push(...profileTable(`### ${who} host's daemon (the whole run)`, kept, conns));
  }
  return out.join('\n');
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(128 + (os.constants.signals[sig] ?? 0)));

main().catch((e: unknown) => {
  process.stderr.write(`bench:ingress: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
