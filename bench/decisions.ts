/** `npm run bench:decisions`: how long a change takes to reach the generators — the daemon compiles its service
 * table, policy and apps into the decision table (src/trap/decision-table.ts) and publishes it into the memfd
 * (native/dtab.c), then every generator decides from it. Prints, per table size, the body's size and the medians of
 * compile and publish, and a generator's decision time read by native/dtab.c itself. In-process, no traffic. */
import { native } from '../src/native/binding.js';
import { defaultPolicy } from '../src/policy/policy.js';
import { ServiceTable } from '../src/table/service-table.js';
import type { AppRecord } from '../src/trap/apps.js';
import { compileDecisions, DecisionTable, type DecisionInputs, ip16 } from '../src/trap/decision-table.js';

const RUNS = 15;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

function inputs(services: number, perService: number, apps: number): DecisionInputs {
  const table = new ServiceTable();
  for (let s = 0; s < services; s++) {
    for (let i = 0; i < perService; i++) {
      const node = i % 4 === 0 ? 'a' : `n${i % 4}`;
      table.upsert({
        id: `${node}/s${s}/${i}`,
        node,
        appId: `s${s}i${i}`,
        vip: `10.${(s >> 8) & 255}.${s & 255}.1`,
        port: 8000,
        proto: 'tcp',
        endpoint: { ip: `192.0.2.${1 + (i % 4)}`, port: 40000 + ((s * perService + i) % 20000) },
        tags: { grp: String(s % 8) },
        version: 1,
      });
    }
  }
  const list: AppRecord[] = [];
  for (let a = 0; a < apps; a++)
    list.push({ id: (0x10000000 + a).toString(16), identity: `169.254.${1 + (a >> 8)}.${a & 255}`, tags: { grp: String(a % 8) }, cmd: [], launcherPid: 1, uid: 0, startedAt: 0, secret: '' });
  return { nodeName: 'a', nodeAddress: '192.0.2.1', vipCidrs: ['10.0.0.0/8'], table, apps: () => list, policy: defaultPolicy(), nodeAlive: () => true, fastpath: true, lb: 'p2c' };
}

const rows: string[] = [];
for (const [services, per, apps] of [
  [10, 2, 10],
  [100, 3, 50],
  [1000, 3, 100],
  [2000, 4, 200],
] as const) {
  const inp = inputs(services, per, apps);
  const compile: number[] = [];
  const publish: number[] = [];
  const dt = new DecisionTable(native, inp, (w, e) => console.error(w, e));
  let bytes = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    const body = compileDecisions(inp);
    const t1 = process.hrtime.bigint();
    native.dtabPublish(dt.tableFd, body);
    const t2 = process.hrtime.bigint();
    compile.push(Number(t1 - t0) / 1e6);
    publish.push(Number(t2 - t1) / 1e6);
    bytes = body.length;
  }
  const decide: number[] = [];
  const vip = ip16(`10.0.${(services - 1) & 255}.1`);
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    const n = 200;
    for (let k = 0; k < n; k++) native.dtabDecide(dt.tableFd, dt.shmFd, '10000000', vip, 8000);
    decide.push(Number(process.hrtime.bigint() - t0) / 1e3 / n);
  }
  dt.close();
  rows.push(`| ${services} | ${services * per} | ${apps} | ${(bytes / 1024).toFixed(0)} | ${median(compile).toFixed(2)} | ${median(publish).toFixed(3)} | ${(median(compile) + median(publish)).toFixed(2)} | ${median(decide).toFixed(1)} |`);
}
console.log('| services | instances | apps on this host | table KiB | compile ms (median) | publish ms | a change reaches generators within, ms | decide µs (incl. attach, via the addon) |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) console.log(r);
