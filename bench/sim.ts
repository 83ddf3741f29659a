// Gossip simulator: N members in one process on the in-memory network and a virtual clock (LAN profile), measuring
// key propagation, failure detection, false positives and bandwidth. Usage:
//   node dist/bench/sim.js [--quick] [--json] [--trials N] [--seed S] [--sizes 10,100] [--loss 0,0.01]

import {
  Memberlist,
  MemoryNetwork,
  seededRandom,
  type ProfileName,
  type ProtocolConfig,
} from '../src/gossip/index.js';

interface Args {
  sizes: number[];
  losses: number[];
  trials: number;
  deadTrials: number;
  seed: number;
  json: boolean;
  profile: ProfileName;
  config: Partial<ProtocolConfig>;
}

/** One row of the result table. */
interface Row {
  members: number;
  loss: number;
  /** Virtual ms until every member saw every other member alive after the staggered joins. */
  joinConvergedMs: number;
  keyP50Ms: number;
  keyMaxMs: number;
  keyTrials: number;
  keyFailures: number;
  deadP50Ms: number;
  deadMaxMs: number;
  deadTrials: number;
  deadFailures: number;
  falsePositives: number;
  /** Steady state (no changes): bytes sent per member per second. */
  idleBytesPerMemberPerSec: number;
  /** Whole measured run (joins excluded): bytes sent per member per second. */
  bytesPerMemberPerSec: number;
  wallMs: number;
  /** CPU time (user + system) of this process for the scenario: stable when the machine is shared. */
  cpuMs: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    sizes: [10, 100, 1000],
    losses: [0, 0.01],
    trials: 5,
    deadTrials: 3,
    seed: 42,
    json: false,
    profile: 'lan',
    config: {},
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--quick':
        a.sizes = [10, 100];
        break;
      case '--json':
        a.json = true;
        break;
      case '--trials':
        a.trials = Number(v);
        i++;
        break;
      case '--dead-trials':
        a.deadTrials = Number(v);
        i++;
        break;
      case '--seed':
        a.seed = Number(v);
        i++;
        break;
      case '--sizes':
        a.sizes = String(v).split(',').map(Number);
        i++;
        break;
      case '--loss':
        a.losses = String(v).split(',').map(Number);
        i++;
        break;
      case '--profile':
        a.profile = v as ProfileName;
        i++;
        break;
      case '--set': {
        // --set gossipInterval=100
        const [key, val] = String(v).split('=');
        (a.config as Record<string, number>)[key!] = Number(val);
        i++;
        break;
      }
      default:
        throw new Error(`unknown argument ${k}`);
    }
  }
  return a;
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function runScenario(n: number, loss: number, args: Args, seed: number): Row {
  const wall0 = Date.now();
  const cpu0 = process.cpuUsage();
  const net = new MemoryNetwork({ seed, lossRate: loss, latencyMs: 1, jitterMs: 2 });
  const clock = net.clock;
  const rnd = seededRandom(seed ^ 0x5eed);
  const nodes: Memberlist[] = [];
  const down = new Set<number>();
  const keySeen = new Map<string, number>();
  const deadSeen = new Map<string, number>();
  let falsePositives = 0;
  const aliveCount: number[] = [];

  for (let i = 0; i < n; i++) {
    const addr = `m${i}.sim:7946`;
    const ml = new Memberlist({
      name: `m${i}`,
      transport: net.createTransport(addr),
      clock: net.clockFor(addr),
      random: seededRandom(seed * 1_000_003 + i),
      profile: args.profile,
      config: args.config,
    });
    const idx = i;
    const states = new Map<string, string>();
    aliveCount.push(1);
    ml.on('member', (e) => {
      const prev = states.get(e.name);
      if (prev === 'alive') aliveCount[idx]!--;
      if (e.state === 'alive') aliveCount[idx]!++;
      states.set(e.name, e.state);
      if (e.name === ml.name) return;
      if (e.state === 'dead' || e.state === 'left') {
        const target = Number(e.name.slice(1));
        if (!down.has(target)) falsePositives++;
        else deadSeen.set(e.name, (deadSeen.get(e.name) ?? 0) + 1);
      }
    });
    ml.on('change', (e) => {
      if (e.value !== undefined) keySeen.set(e.key, (keySeen.get(e.key) ?? 0) + 1);
    });
    nodes.push(ml);
  }
  // Self counts as alive from the start (the event for ourselves is not emitted at construction).
  // Staggered joins: node i joins through node 0 and a random earlier node.
  const joinSpacing = 5;
  for (let i = 1; i < n; i++) {
    const ml = nodes[i]!;
    const other = 1 + Math.floor(rnd() * Math.max(1, i - 1));
    const seeds = i > 1 ? [nodes[0]!.address, nodes[other]!.address] : [nodes[0]!.address];
    clock.setTimeout(() => {
      ml.join(seeds).catch(() => undefined);
    }, i * joinSpacing);
  }
  const t0 = clock.now();
  const running = (): number => n - down.size;
  const allSeeAll = (): boolean => {
    for (let i = 0; i < n; i++) if (!down.has(i) && aliveCount[i]! < running()) return false;
    return true;
  };
  // Check convergence every 100 ms of virtual time (a full check is O(n)).
  let converged = false;
  const joinLimit = n * joinSpacing + 120_000;
  while (clock.now() - t0 < joinLimit) {
    clock.advance(100);
    if (clock.now() - t0 > n * joinSpacing && allSeeAll()) {
      converged = true;
      break;
    }
  }
  const joinConvergedMs = converged ? clock.now() - t0 : NaN;
  const phase = (what: string): void => {
    if (process.env.SIM_DEBUG) {
      const u = process.cpuUsage(cpu0);
      process.stderr.write(`  ${what}: wall ${Date.now() - wall0} ms, cpu ${Math.round((u.user + u.system) / 1000)} ms, virtual ${clock.now() - t0} ms\n`);
    }
  };
  phase('joined');

  // Steady state bandwidth.
  clock.advance(2_000);
  const idleWindow = 10_000;
  let b0 = net.counters.bytesSent + net.counters.streamBytes;
  clock.advance(idleWindow);
  const idleBytes = net.counters.bytesSent + net.counters.streamBytes - b0;
  const measureStart = clock.now();
  phase('idle');
  b0 = net.counters.bytesSent + net.counters.streamBytes;

  // Key propagation.
  const keyTimes: number[] = [];
  let keyFailures = 0;
  for (let t = 0; t < args.trials; t++) {
    let owner = Math.floor(rnd() * n);
    while (down.has(owner)) owner = (owner + 1) % n;
    const key = `trial-${t}`;
    const start = clock.now();
    nodes[owner]!.setLocal(key, `value-${t}`);
    const ok = clock.runUntil(() => (keySeen.get(key) ?? 0) >= running(), 30_000);
    if (ok) keyTimes.push(clock.now() - start);
    else keyFailures++;
    clock.advance(1_000 + rnd() * 1_000);
  }

  phase('keys');
  // Failure detection.
  const deadTimes: number[] = [];
  let deadFailures = 0;
  for (let t = 0; t < args.deadTrials; t++) {
    let victim = 1 + Math.floor(rnd() * (n - 1));
    while (down.has(victim)) victim = 1 + ((victim + 1) % (n - 1));
    down.add(victim);
    nodes[victim]!.shutdown();
    const name = `m${victim}`;
    const start = clock.now();
    const ok = clock.runUntil(() => (deadSeen.get(name) ?? 0) >= running(), 120_000);
    if (ok) deadTimes.push(clock.now() - start);
    else deadFailures++;
    clock.advance(2_000);
  }
  phase('dead');
  const measured = (clock.now() - measureStart) / 1000;
  const bytes = net.counters.bytesSent + net.counters.streamBytes - b0;
  for (let i = 0; i < n; i++) if (!down.has(i)) nodes[i]!.shutdown();
  return {
    members: n,
    loss,
    joinConvergedMs,
    keyP50Ms: median(keyTimes),
    keyMaxMs: keyTimes.length > 0 ? Math.max(...keyTimes) : NaN,
    keyTrials: args.trials,
    keyFailures,
    deadP50Ms: median(deadTimes),
    deadMaxMs: deadTimes.length > 0 ? Math.max(...deadTimes) : NaN,
    deadTrials: args.deadTrials,
    deadFailures,
    falsePositives,
    idleBytesPerMemberPerSec: idleBytes / n / (idleWindow / 1000),
    bytesPerMemberPerSec: bytes / n / measured,
    wallMs: Date.now() - wall0,
    cpuMs: ((): number => {
      const u = process.cpuUsage(cpu0);
      return (u.user + u.system) / 1000;
    })(),
  };
}

function fmt(x: number, digits = 0): string {
  return Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const rows: Row[] = [];
  for (const n of args.sizes) {
    for (const loss of args.losses) {
      const row = runScenario(n, loss, args, args.seed + n + Math.round(loss * 1000));
      rows.push(row);
      if (!args.json) process.stderr.write(`done n=${n} loss=${loss} in ${row.wallMs} ms\n`);
    }
  }
  if (args.json) {
    process.stdout.write(JSON.stringify({ profile: args.profile, config: args.config, rows }, null, 2) + '\n');
    return;
  }
  const header = [
    'members',
    'loss',
    'join conv (s)',
    'key p50 (ms)',
    'key max (ms)',
    'dead p50 (ms)',
    'dead max (ms)',
    'false pos',
    'idle B/member/s',
    'B/member/s',
    'wall (s)',
    'cpu (s)',
  ];
  const lines = rows.map((r) => [
    String(r.members),
    `${(r.loss * 100).toFixed(0)}%`,
    fmt(r.joinConvergedMs / 1000, 1),
    fmt(r.keyP50Ms) + (r.keyFailures > 0 ? ` (${r.keyFailures} fail)` : ''),
    fmt(r.keyMaxMs),
    fmt(r.deadP50Ms) + (r.deadFailures > 0 ? ` (${r.deadFailures} fail)` : ''),
    fmt(r.deadMaxMs),
    String(r.falsePositives),
    fmt(r.idleBytesPerMemberPerSec),
    fmt(r.bytesPerMemberPerSec),
    fmt(r.wallMs / 1000, 1),
    fmt(r.cpuMs / 1000, 1),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  const out = [row(header), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...lines.map(row)];
  process.stdout.write(`profile ${args.profile} ${JSON.stringify(args.config)}, trials: key ${args.trials}, dead ${args.deadTrials}\n`);
  process.stdout.write(out.join('\n') + '\n');
}

main();
