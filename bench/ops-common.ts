/** Shared by bench/soak.ts and bench/scale.ts (and their tests): the C helper program, /proc readings of a process,
 * the daemon's status over its control socket, and the sections of bench/RESULTS-ops.md. */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { request } from '../src/cli/client.js';
import type { AppView, ServiceView, StatusResult } from '../src/daemon/control-protocol.js';
import { ROOT, sleep, type TestHost } from '../test/helpers/hosts.js';

/** Compiles bench/netbench.c (the load generators and small servers, see its head comment) into `dir`. */
export function compileNetbench(dir: string): string {
  const out = path.join(dir, 'netbench');
  execFileSync('gcc', ['-O2', '-Wall', '-o', out, path.join(ROOT, 'bench/netbench.c'), '-lpthread'], { stdio: 'pipe' });
  return out;
}

/** Compiles bench/trapfloor.c (a supervisor that traps only accept: the floor of any design that traps it) into dir. */
export function compileTrapfloor(dir: string): string {
  const out = path.join(dir, 'trapfloor');
  execFileSync('gcc', ['-O2', '-Wall', '-o', out, path.join(ROOT, 'bench/trapfloor.c')], { stdio: 'pipe' });
  return out;
}

/** True when the module at `metaUrl` is the script node was started with (not imported by a test). */
export function isMain(metaUrl: string): boolean {
  const script = process.argv[1];
  return script !== undefined && metaUrl === pathToFileURL(script).href;
}

/** Resident set size of a process in KiB (VmRSS of /proc/PID/status), NaN when it is gone. */
export function rssKb(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Open descriptors of a process, NaN when it is gone. */
export function fdCount(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** The smallest of `n` fd counts taken `gapMs` apart. The daemon opens /proc files for a moment on every sweep
 * (every 500 ms) and for every `status` answered; the minimum leaves those out and keeps any descriptor it holds. */
export async function steadyFds(pid: number | undefined, n = 5, gapMs = 60): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < n; i++) {
    if (i) await sleep(gapMs);
    min = Math.min(min, fdCount(pid));
  }
  return min;
}

let clockTicks: number | undefined;

/** CPU time (user + system, all threads) a process has used since it started, in seconds (utime and stime of
 * /proc/PID/stat; they carry over an execve), NaN when it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return NaN;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // the command name may hold spaces
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  // fields[0] is field 3 (state): utime is field 14, stime field 15
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** The first child of a process (the program an appswitch-launcher started), if any. */
export function firstChild(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const kid = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
    return kid ? Number(kid) : undefined;
  } catch {
    return undefined;
  }
}

/** The generator is the process `appswitch run` became (node execs appswitch-launcher): its RSS in KiB, NaN while
 * it is still node or once it is gone. */
export function generatorRssKb(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    if (!readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('appswitch-launc')) return NaN;
  } catch {
    return NaN;
  }
  return rssKb(pid);
}

/** The daemon's `status` (as `appswitch status --json` shows it), asked over its control socket. */
export function daemonStatus(h: TestHost): Promise<StatusResult> {
  return request<StatusResult>(h.socket, 'status');
}

/** The daemon's app list (`appswitch get apps --json`). */
export function daemonApps(h: TestHost): Promise<AppView[]> {
  return request<AppView[]>(h.socket, 'apps');
}

/** The daemon's service table (`appswitch get services --json`). */
export function daemonServices(h: TestHost): Promise<ServiceView[]> {
  return request<ServiceView[]>(h.socket, 'services');
}

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** A number with the given decimals, or "–" when it is not one. */
export function fmt(x: number, decimals = 0): string {
  return Number.isFinite(x) ? x.toFixed(decimals) : '–';
}

export const RESULTS_OPS = path.join(ROOT, 'bench/RESULTS-ops.md');

/** Replaces the section of `file` that starts with the line `heading` ("## Soak"), up to the next "## " heading,
 * or appends it (a new file starts with `title`); the other sections are kept. */
export function replaceSection(file: string, title: string, heading: string, section: string): void {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : `${title}\n`;
  const start = old.search(new RegExp(`^${heading}[ \\t]*$`, 'm'));
  let text: string;
  if (start < 0) text = `${old.trimEnd()}\n\n${section.trimEnd()}\n`;
  else {
    const after = old.slice(start + 1);
    const next = after.search(/^## /m);
    const rest = next < 0 ? '' : after.slice(next);
    text = `${old.slice(0, start)}${section.trimEnd()}\n${rest ? `\n${rest}` : ''}`;
  }
  writeFileSync(file, text);
}

/** Replaces the section that starts with `heading` in bench/RESULTS-ops.md (see replaceSection). */
export function writeOpsSection(heading: string, section: string): void {
  replaceSection(RESULTS_OPS, '# Operations benchmark results', heading, section);
}

/** The positive number given as `name VALUE` on a bench script's command line, else `dflt`; anything else ends
 * the script with a message naming `tool` (exit 2). */
export function numOption(args: string[], tool: string, name: string, dflt: number, integer = false): number {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    process.stderr.write(`${tool}: ${name} needs a positive ${integer ? 'integer' : 'number'}\n`);
    process.exit(2);
  }
  return v;
}

/** Ends the script (exit 1) unless it runs as root: the benchmarks create network namespaces. */
export function requireRoot(tool: string): void {
  if (process.getuid?.() === 0) return;
  process.stderr.write(`${tool}: needs root (it creates network namespaces)\n`);
  process.exit(1);
}

/** The machine's 1-minute load average (other helpers and benchmarks share it). */
export function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

/** Busy and total jiffies of all CPUs together (the "cpu" line of /proc/stat); two readings give how busy the
 * machine was in between, whoever made it busy. */
export function cpuJiffies(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}
