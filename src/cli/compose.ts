/** `appswitch up` and the commands around it (`ps`, `logs`, `restart`, `stop`, `start`, `down`): a whole app from
 * one appswitch.yaml, like docker compose, with appswitch's names and vips instead of a network. The supervisor is
 * src/compose/; this file is its command line. */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import type { AppView, InfoResult } from '../daemon/control-protocol.js';
import { AppswitchError } from '../errors.js';
import { callSupervisor, type StatusView } from '../compose/control.js';
import { findProjectFile, loadProject } from '../compose/file.js';
import { decodeLogLine, LinePrinter, type LogLine, readLog, useColor } from '../compose/logbook.js';
import { baseRoot, ensurePrivateDir, type ProjectPaths, projectPaths, projectsBase } from '../compose/paths.js';
import { exposureLines, printLine, runProject } from '../compose/project-run.js';
import type { InstanceRow } from '../compose/supervisor.js';
import { parentOf } from '../compose/readiness.js';
import type { ProjectSpec } from '../compose/types.js';
import { projectLabelProblem } from '../daemon/project-resolv.js';
import { request, resolveSocket } from './client.js';
import { ensureDaemon } from './private-daemon.js';
import { age, table } from './format.js';

interface ProjectOpts {
  file?: string;
  projectName?: string;
  socket?: string;
}

function withProject(c: Command, shortFile = true): Command {
  return c
    .option(shortFile ? '-f, --file <file>' : '--file <file>', 'the project file (default: appswitch.yaml in this directory)')
    .option('-p, --project-name <name>', "the project's name (default: the file's name:, else its directory's name)");
}

function loadSpec(o: ProjectOpts): ProjectSpec {
  const file = o.file ?? findProjectFile(process.cwd());
  return loadProject(file, o.projectName === undefined ? {} : { projectName: o.projectName });
}

/** Projects with a supervisor directory for this user. */
function knownProjects(): string[] {
  try {
    return readdirSync(projectsBase()).filter((n) => existsSync(projectPaths(n).socket));
  } catch {
    return [];
  }
}

/** The project a command other than `up` means: -p NAME; else the file's (-f, or appswitch.yaml here); else the
 * only project that is up. */
function projectName(o: ProjectOpts): string {
  if (o.projectName !== undefined && o.file === undefined) {
    const why = projectLabelProblem(o.projectName); /* it names a directory that `down` removes */
    if (why) throw new AppswitchError('ERR_BAD_ARGUMENT', `-p: ${why}`);
    return o.projectName;
  }
  try {
    return loadSpec(o).name;
  } catch (e) {
    if (o.file !== undefined) throw e;
    const up = knownProjects();
    if (up.length === 1 && up[0] !== undefined) return up[0];
    const which = up.length ? `projects up: ${up.join(', ')}` : 'no project is up';
    throw new AppswitchError('ERR_BAD_ARGUMENT', `${(e as Error).message}; give -p NAME (${which})`);
  }
}

async function supervisorUp(p: ProjectPaths): Promise<StatusView | undefined> {
  if (!existsSync(p.socket)) return undefined;
  try {
    return await callSupervisor<StatusView>(p.socket, 'status', [], 3000);
  } catch {
    return undefined;
  }
}

/** The daemon `up` runs the project on: the one named (--socket, APPSWITCH_SOCKET), else the system daemon, else,
 * for an ordinary user, a private daemon of the user's own, started now if none runs (docs/private-daemon.md). */
async function daemonSocket(o: ProjectOpts): Promise<{ socket: string; info: InfoResult }> {
  const { socket } = await ensureDaemon({ ...(o.socket === undefined ? {} : { socket: o.socket }), log: (l) => void process.stderr.write(`appswitch: ${l}\n`) });
  return { socket, info: await request<InfoResult>(socket, 'info') };
}

/** `ports:` become exposures (`run --expose`), which change the cluster: a system daemon takes them from root only
 * (README, "Privilege"). For anyone else they are left out, with a warning, rather than failing every service. */
function portsAllowed(spec: ProjectSpec, info: InfoResult, warn: (s: string) => void): ProjectSpec {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0 || (info as InfoResult & { private?: boolean }).private === true) return spec;
  const with_ = spec.services.filter((s) => s.ports.length > 0).map((s) => s.name);
  if (with_.length === 0) return spec;
  warn(`appswitch: ports of ${with_.join(', ')} are not exposed: on a system daemon only root may expose a port (sudo appswitch expose VIP:PORT --port HOSTPORT)\n`);
  return { ...spec, services: spec.services.map((s) => ({ ...s, ports: [] })) };
}

function stateText(r: InstanceRow): string {
  if (r.state === 'crashed' || r.state === 'exited') {
    /* `appswitch run` exits 128+N when its program was killed by signal N */
    const sig = r.exitCode !== null && r.exitCode > 128 && r.exitCode < 160 ? os.constants.signals : undefined;
    const name = sig ? Object.entries(sig).find(([, n]) => n === (r.exitCode as number) - 128)?.[0] : undefined;
    return `${r.state} (${r.signal ?? `code ${r.exitCode}${name ? `: killed by ${name}` : ''}`})`;
  }
  if ((r.state === 'failed' || r.state === 'blocked') && r.detail) return `${r.state}: ${r.detail}`;
  return r.state;
}

export function psTable(rows: InstanceRow[], width = process.stdout.columns ?? 100): string {
  return table(
    ['NAME', 'STATE', 'PID', 'VIP', 'RESTARTS', 'UPTIME', 'PORTS'],
    rows.map((r) => [r.name, stateText(r), r.pid === null ? '-' : String(r.pid), r.vip ?? '-', String(r.restarts), r.uptimeSeconds === null ? '-' : age(r.uptimeSeconds), r.ports.join(',') || '-']),
    { width: Math.max(width, 80), elastic: [1, 6] },
  );
}

async function up(o: ProjectOpts & { detach?: boolean; supervise?: boolean }): Promise<number> {
  const loaded = loadSpec(o);
  const { socket, info } = await daemonSocket(o);
  const spec = portsAllowed(loaded, info, (t) => void process.stderr.write(t));
  const base = projectsBase();
  const paths = projectPaths(spec.name, base);
  ensurePrivateDir(paths.dir, baseRoot());
  const running = await supervisorUp(paths);
  if (running && running.pid !== process.pid) {
    throw new AppswitchError('ERR_BAD_ARGUMENT', `project ${spec.name} is already up (supervisor pid ${running.pid}); appswitch down -p ${spec.name} first`);
  }
  const cli = { node: process.execPath, script: path.resolve(process.argv[1] ?? 'bin/appswitch.js'), socket };
  if (o.detach) return detach(spec, cli, paths);
  const print = o.supervise ? undefined : { color: useColor(process.stdout), write: (s: string) => void process.stdout.write(s) };
  return runProject({ spec, cli, paths, ...(print ? { print } : {}) });
}

/** `up -d`: the supervisor in a new session, its own output in PROJECT-DIR/supervisor.log; returns once every
 * service was started (or failed), with `up`'s exit status. */
async function detach(spec: ProjectSpec, cli: { node: string; script: string; socket: string }, paths: ProjectPaths): Promise<number> {
  const out = openSync(paths.supervisorLog, 'w', 0o600);
  const child = spawn(cli.node, [cli.script, 'up', '--supervise', '-f', spec.file, '-p', spec.name, '--socket', cli.socket], {
    cwd: spec.dir,
    detached: true,
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  child.unref();
  for (;;) {
    await sleep(200);
    if (exited !== undefined) {
      const tail = readFileSync(paths.supervisorLog, 'utf8').trim().split('\n').slice(-5).join('\n');
      throw new AppswitchError('ERR_CONFIG', `the supervisor of ${spec.name} exited (${exited}) while starting:\n${tail}`);
    }
    const s = await supervisorUp(paths);
    if (!s || s.phase === 'starting') continue;
    process.stdout.write(`project ${spec.name} is up (supervisor pid ${s.pid}; appswitch logs -f -p ${spec.name}, appswitch down -p ${spec.name})\n${psTable(s.rows)}\n`);
    /* a `ports:` entry nobody can reach yet (no gateway node, a host port taken) is said here, not only in the logs */
    for (const x of await exposureLines(spec, new Set(s.rows.map((r) => r.vip)), cli.socket)) if (!x.active) process.stdout.write(`${x.line}\n`);
    return s.failed ? 1 : 0;
  }
}

async function ps(o: ProjectOpts & { json?: boolean }): Promise<void> {
  const name = projectName(o);
  const s = await supervisorUp(projectPaths(name));
  if (!s) throw new AppswitchError('ERR_BAD_ARGUMENT', `project ${name} is not up`);
  process.stdout.write(o.json ? JSON.stringify(s.rows, null, 2) + '\n' : psTable(s.rows) + '\n');
}

function wants(names: string[], who: string): boolean {
  if (names.length === 0 || who === 'appswitch') return names.length === 0;
  return names.some((n) => who === n || (who.startsWith(`${n}-`) && /^\d+$/.test(who.slice(n.length + 1))));
}

async function logs(names: string[], o: ProjectOpts & { follow?: boolean; tail?: string }): Promise<void> {
  const name = projectName(o);
  const p = projectPaths(name);
  if (!existsSync(p.log)) throw new AppswitchError('ERR_BAD_ARGUMENT', `project ${name} has no logs (it is not up, or was taken down)`);
  const lines = readLog(p.log).filter((l) => wants(names, l.who));
  const tail = o.tail === undefined ? lines.length : Number(o.tail);
  if (!Number.isInteger(tail) || tail < 0) throw new AppswitchError('ERR_BAD_ARGUMENT', '--tail must be a number of lines');
  const printer = new LinePrinter(0, useColor(process.stdout));
  const shown = lines.slice(lines.length - tail);
  for (const l of lines) if (l.who !== 'appswitch') printer.widen(l.who);
  const print = (l: LogLine): void => void process.stdout.write(printLine(printer, l) + '\n');
  for (const l of shown) print(l);
  if (!o.follow) return;
  let pos = statSync(p.log).size;
  let rest = '';
  for (;;) {
    await sleep(200);
    let size: number;
    try {
      size = statSync(p.log).size;
    } catch {
      return; /* taken down: the project's directory is gone */
    }
    if (size < pos) pos = 0; /* rotated */
    if (size > pos) {
      const fd = openSync(p.log, 'r');
      const buf = Buffer.alloc(size - pos);
      readSync(fd, buf, 0, buf.length, pos);
      closeSync(fd);
      pos = size;
      const parts = (rest + buf.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const raw of parts) {
        const l = decodeLogLine(raw);
        if (l && wants(names, l.who)) {
          if (l.who !== 'appswitch') printer.widen(l.who);
          print(l);
        }
      }
    }
    if (!existsSync(p.socket) && size === pos) return; /* the supervisor ended and everything is printed */
  }
}

async function control(method: 'restart' | 'stop' | 'start', names: string[], o: ProjectOpts): Promise<number> {
  const name = projectName(o);
  const p = projectPaths(name);
  if (!(await supervisorUp(p))) throw new AppswitchError('ERR_BAD_ARGUMENT', `project ${name} is not up`);
  const ok = await callSupervisor<boolean>(p.socket, method, names, 30 * 60 * 1000);
  const s = await supervisorUp(p);
  if (s) process.stdout.write(psTable(s.rows.filter((r) => names.length === 0 || names.includes(r.service))) + '\n');
  return method === 'stop' || ok ? 0 : 1;
}

async function down(o: ProjectOpts): Promise<void> {
  const name = projectName(o);
  const p = projectPaths(name);
  const s = await supervisorUp(p);
  if (!s) {
    /* what a stopped (Ctrl-C) or killed supervisor left: its logs, a stale socket, and (killed) its programs */
    const orphans = await killOrphans(name, o);
    const left = existsSync(p.dir);
    rmSync(p.dir, { recursive: true, force: true });
    const what = [orphans ? `${orphans} programs its supervisor left are stopped` : '', left ? 'its logs are removed' : ''].filter(Boolean);
    process.stdout.write(`project ${name} is not up${what.length ? ` (${what.join('; ')})` : ''}\n`);
    return;
  }
  await callSupervisor(p.socket, 'down');
  for (;;) {
    await sleep(100);
    if (!existsSync(p.dir)) break;
    try {
      process.kill(s.pid, 0);
    } catch {
      break;
    }
  }
  process.stdout.write(`project ${name} is down\n`);
}

/** Programs of the project that the daemon still knows, owned by the caller, with no supervisor (it was killed):
 * their launchers get SIGTERM, then SIGKILL after 10 s. Returns how many there were. */
async function killOrphans(project: string, o: ProjectOpts): Promise<number> {
  let apps: AppView[];
  try {
    apps = await request<AppView[]>(resolveSocket(o.socket), 'apps');
  } catch {
    return 0; /* no daemon: its programs are gone with it, or it cannot tell */
  }
  const uid = process.getuid?.() ?? 0;
  const launchers = apps
    .filter((a) => a.tags.project === project && (uid === 0 || a.owner === uid) && a.pid !== undefined)
    .map((a) => parentOf(a.pid as number))
    .filter((p): p is number => p !== undefined && p > 1);
  const signal = (sig: NodeJS.Signals): number =>
    launchers.filter((pid) => {
      try {
        process.kill(pid, sig);
        return true;
      } catch {
        return false;
      }
    }).length;
  if (signal('SIGTERM') === 0) return 0;
  for (let i = 0; i < 100 && signal(0 as unknown as NodeJS.Signals) > 0; i++) await sleep(100);
  signal('SIGKILL');
  return launchers.length;
}

function collectNames(c: Command): string[] {
  return c.args;
}

export function addComposeCommands(program: Command, done: (p: Promise<number | void>) => void): void {
  withProject(program.command('up'))
    .description('start the services of appswitch.yaml in dependency order and stream their logs (Ctrl-C stops them)')
    .option('-d, --detach', 'start them in the background and return once they are ready')
    .option('--supervise', 'internal: be the detached supervisor')
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .action((o: ProjectOpts & { detach?: boolean; supervise?: boolean }) => done(up(o)));
  withProject(program.command('ps'))
    .description("the project's services: state, pid, vip, restarts")
    .option('--json', 'JSON rows')
    .action((o: ProjectOpts & { json?: boolean }) => done(ps(o)));
  withProject(program.command('logs'), false)
    .description("the project's logs, prefixed with each service's name (all services, or the NAMEs given)")
    .argument('[name...]', 'services (or instances, api-2)')
    .option('-f, --follow', 'keep printing new lines until the project is down')
    .option('-n, --tail <n>', 'only the last N lines')
    .action((names: string[], o: ProjectOpts & { follow?: boolean; tail?: string }) => done(logs(names, o)));
  for (const [m, what] of [
    ['restart', 'stop and start services again (all, or the NAMEs given); the others keep running'],
    ['stop', 'stop services (SIGTERM, then SIGKILL after stop_timeout); the others keep running'],
    ['start', 'start stopped services again'],
  ] as const) {
    withProject(program.command(m))
      .description(what)
      .argument('[name...]', 'services')
      .action((_names: string[], o: ProjectOpts, c: Command) => done(control(m, collectNames(c), o)));
  }
  withProject(program.command('down'))
    .description('stop every service of the project (dependents first) and remove its logs')
    .action((o: ProjectOpts) => done(down(o)));
}
