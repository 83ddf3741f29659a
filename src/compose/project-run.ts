/** One `appswitch up`: the supervisor of a project in this process, until Ctrl-C, `appswitch down`, or every
 * service has ended. In the foreground it prints the project's log with name prefixes; detached (`up -d` starts
 * `up --supervise` in a new session) it only writes the log file. */
import { rmSync, writeFileSync } from 'node:fs';
import { request } from '../cli/client.js';
import type { ExposureView } from '../gateway/ingress.js';
import { type StatusView, serveSupervisor } from './control.js';
import type { CliRef } from './instance.js';
import { LinePrinter, LogBook, type LogLine } from './logbook.js';
import type { ProjectPaths } from './paths.js';
import { Supervisor } from './supervisor.js';
import type { ProjectSpec } from './types.js';

export interface RunProjectOptions {
  spec: ProjectSpec;
  cli: CliRef;
  paths: ProjectPaths;
  /** Print the log to stdout (foreground). */
  print?: { color: boolean; write: (s: string) => void };
}

/** How one printed log line looks: program lines prefixed with their instance's name; the supervisor's notes
 * prefixed with "»" and no name. */
export function printLine(p: LinePrinter, l: LogLine): string {
  return l.who === 'appswitch' ? `» ${l.line}` : p.format(l);
}

/** Runs the project; resolves with `up`'s exit status: 0, or 1 when a service failed. */
export async function runProject(o: RunProjectOptions): Promise<number> {
  const { spec, paths } = o;
  rmSync(paths.log, { force: true });
  rmSync(`${paths.log}.1`, { force: true });
  const logs = new LogBook(paths.log);
  const sup = new Supervisor(spec, o.cli, logs);
  if (o.print) {
    const printer = new LinePrinter(Math.max(...sup.labels().map((l) => l.length)), o.print.color);
    const write = o.print.write;
    logs.subscribe((l) => write(printLine(printer, l) + '\n'));
  }
  let phase: StatusView['phase'] = 'starting';
  let removeDir = false;
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));
  const down = (why: string, remove: boolean): void => {
    removeDir ||= remove;
    if (phase === 'down') return;
    phase = 'down';
    logs.note(`stopping project ${spec.name} (${why})`);
    void sup.down().then(finish, finish);
  };
  const server = await serveSupervisor(paths.socket, {
    status: () => ({ project: spec.name, file: spec.file, pid: process.pid, phase, failed: sup.failed, rows: sup.rows() }),
    restart: async (names) => {
      let ok = true;
      for (const n of names.length ? names : spec.services.map((s) => s.name)) ok = (await sup.restartService(n)) && ok;
      return ok;
    },
    stop: async (names) => {
      for (const n of names.length ? names : [...spec.services].reverse().map((s) => s.name)) await sup.stopService(n);
    },
    start: async (names) => {
      let ok = true;
      for (const n of names.length ? names : spec.services.map((s) => s.name)) ok = (await sup.startStopped(n)) && ok;
      return ok;
    },
    down: () => down('appswitch down', true),
  });
  writeFileSync(paths.pidFile, `${process.pid}\n`, { mode: 0o600 });
  let forced = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (phase === 'down') {
      if (forced) return;
      forced = true;
      logs.note(`${sig} again: killing every service now`);
      for (const r of sup.rows()) if (r.pid !== null) tryKill(-r.pid);
      return;
    }
    down(`${sig}${o.print ? '; press Ctrl-C again to kill at once' : ''}`, false);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  const ok = await sup.up();
  await noteExposures(spec, new Set(sup.rows().map((r) => r.vip)), o.cli.socket, logs);
  if (phase === 'starting') {
    phase = 'up';
    logs.note(ok ? `project ${spec.name} is up: ${spec.services.length} services ready` : `project ${spec.name}: some services did not start (appswitch ps)`);
  }
  /* every service ended on its own (and none restarts): nothing left to supervise */
  const poll = setInterval(() => {
    if (phase === 'up' && sup.allEnded()) down('every service has ended', false);
  }, 500);
  await finished;
  clearInterval(poll);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.off('SIGHUP', onSignal);
  logs.note(`project ${spec.name} is down`);
  await new Promise<void>((r) => server.close(() => r()));
  logs.close();
  rmSync(paths.socket, { force: true });
  rmSync(paths.pidFile, { force: true });
  if (removeDir) rmSync(paths.dir, { recursive: true, force: true });
  return sup.failed ? 1 : 0;
}

/** Where each `ports:` entry of the project's apps (their `vips`) is reached, or why it is not (no gateway node, a
 * host port in conflict...): one line each, and whether it is reachable now (`active`). */
export async function exposureLines(spec: ProjectSpec, vips: Set<string | null>, socket: string): Promise<Array<{ line: string; active: boolean }>> {
  if (!spec.services.some((s) => s.ports.length)) return [];
  try {
    const views = await request<ExposureView[]>(socket, 'exposures');
    return views
      .filter((x) => vips.has(x.vip))
      .map((v) => {
        const where = v.gateways.length ? ` at ${v.gateways.join(', ')}` : '';
        return { line: `port ${v.hostPort} -> ${v.vip}:${v.port}: ${v.state}${where}${v.detail ? ` (${v.detail})` : ''}`, active: v.state === 'active' };
      });
  } catch (e) {
    return [{ line: `ports: could not ask the daemon about exposures: ${(e as Error).message}`, active: false }];
  }
}

/** The supervisor's notes about the project's `ports:` (see exposureLines). */
async function noteExposures(spec: ProjectSpec, vips: Set<string | null>, socket: string, logs: LogBook): Promise<void> {
  for (const x of await exposureLines(spec, vips, socket)) logs.note(x.line);
}

function tryKill(pidOrGroup: number): void {
  try {
    process.kill(pidOrGroup, 'SIGKILL');
  } catch {
    /* gone */
  }
}
