/** Reading a V8 .cpuprofile (node --cpu-prof): self time by function, for bench/profile.ts and bench/ingress.ts. */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ROOT, type TestHost } from '../test/helpers/hosts.js';

export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples: number[];
  timeDeltas: number[];
}

/** Self time by function (µs), heaviest first, from a .cpuprofile. */
export function selfTimes(p: CpuProfile): Array<{ name: string; us: number }> {
  const byNode = new Map<number, number>();
  p.samples.forEach((id, i) => byNode.set(id, (byNode.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const byName = new Map<string, number>();
  const sources = new Map<string, string[]>();
  /** The native binding's wrappers are anonymous: name them by the key on their line (`send: wrap(...)`). */
  const nativeName = (url: string, line: number): string | undefined => {
    if (!url.endsWith('/native/binding.js')) return undefined;
    let lines = sources.get(url);
    if (!lines) {
      try {
        lines = readFileSync(new URL(url), 'utf8').split('\n');
      } catch {
        lines = [];
      }
      sources.set(url, lines);
    }
    const m = /^\s*(\w+): wrap\(/.exec(lines[line] ?? '');
    return m ? `native.${m[1]} (syscall and N-API)` : undefined;
  };
  for (const n of p.nodes) {
    const t = byNode.get(n.id);
    if (!t) continue;
    const f = n.callFrame;
    const name =
      nativeName(f.url, f.lineNumber) ?? `${f.functionName || '(anonymous)'} ${f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : ''}`.trim();
    byName.set(name, (byName.get(name) ?? 0) + t);
  }
  return [...byName].map(([name, us]) => ({ name, us })).sort((a, b) => b.us - a.us);
}

/** The top `n` functions of a profile file as markdown table rows, in µs per `per` (a connection), with their share
 * of the busy JavaScript thread. */
export function profileRows(file: string, per: number, n = 12): { busyUs: number; rows: string[] } {
  const top = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile).filter((x) => x.name !== '(idle)' && x.name !== '(program)');
  const busy = top.reduce((a, x) => a + x.us, 0);
  return {
    busyUs: busy,
    rows: top.slice(0, n).map((x) => `| ${x.name.replace(/\|/g, '\\|')} | ${(x.us / per).toFixed(2)} | ${((100 * x.us) / busy).toFixed(1)}% |`),
  };
}

/** Stops h's daemon cleanly (node --cpu-prof writes its file at a clean exit) and keeps the profile it wrote into
 * `dir` as bench/profiles/NAME.cpuprofile; undefined when it wrote none. */
export async function keepProfile(h: TestHost, dir: string, name: string): Promise<string | undefined> {
  const d = h.daemon;
  if (!d) return undefined;
  d.kill('SIGINT');
  await new Promise((r) => (d.exitCode !== null ? r(null) : d.once('close', r)));
  let file: string | undefined;
  try {
    file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  } catch {
    return undefined;
  }
  if (!file) return undefined;
  const outDir = path.join(ROOT, 'bench/profiles');
  mkdirSync(outDir, { recursive: true });
  const kept = path.join(outDir, `${name}.cpuprofile`);
  rmSync(kept, { force: true });
  copyFileSync(path.join(dir, file), kept);
  return kept;
}

/** A markdown section of a kept profile: a title, a summary line (with the busy time per connection appended), and
 * the heaviest functions per connection. */
export function profileTable(title: string, kept: string, conns: number, summary = ''): string[] {
  const per = Math.max(1, conns);
  const { busyUs, rows } = profileRows(kept, per, 15);
  return [
    title,
    '',
    `${summary}JavaScript thread busy (profile, start-up included): ${(busyUs / per).toFixed(1)} µs per connection`,
    '',
    '| function (self time) | µs per connection | share of the busy JS thread |',
    '|---|---:|---:|',
    ...rows,
    '',
    `profile: ${path.relative(ROOT, kept)}`,
    '',
  ];
}
