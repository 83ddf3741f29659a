/** Whether a service is ready: its instances are known to the daemon, and its `ready` check passes.
 * - tcp: every instance holds a listening service on the port (the daemon's service table);
 * - http: a GET to http://NAME:PORT/PATH, made by a probe program under appswitch in the project, answers 2xx/3xx;
 * - command: the command, under appswitch in the project (so it reaches services by name), exits 0.
 * A probe is a real app of the project, so readiness also proves that names resolve and policy admits it. */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from '../cli/client.js';
import type { AppView, ServiceView } from '../daemon/control-protocol.js';
import { type CliRef, type Instance, runArgs } from './instance.js';
import type { ReadyCheck, ServiceSpec } from './types.js';

const PROBE_HTTP = path.join(path.dirname(fileURLToPath(import.meta.url)), 'probe-http.js');
/** A probe that has not answered by then counts as a failed attempt. */
const PROBE_TIMEOUT_MS = 5000;

export interface ProbeResult {
  ok: boolean;
  /** Why not, for the message when the service never becomes ready. */
  detail: string;
}

/** The parent of `pid`, from /proc (the daemon knows a program by its own pid; the supervisor started its
 * launcher, the program's parent). */
export function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(after[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** The daemon's view of the project's instances: app by launcher pid, and the services each holds. */
export async function daemonView(socket: string): Promise<{ apps: Map<number, AppView>; services: ServiceView[] }> {
  const [apps, services] = await Promise.all([request<AppView[]>(socket, 'apps'), request<ServiceView[]>(socket, 'services')]);
  const byLauncher = new Map<number, AppView>();
  for (const a of apps) {
    const launcher = a.pid === undefined ? undefined : parentOf(a.pid);
    if (launcher !== undefined) byLauncher.set(launcher, a);
  }
  return { apps: byLauncher, services };
}

/** Registered: every live instance is an app of the daemon (records its vip). */
export async function registered(cli: CliRef, instances: Instance[]): Promise<ProbeResult> {
  const v = await daemonView(cli.socket);
  const missing: string[] = [];
  for (const i of instances) {
    const a = i.pid === undefined ? undefined : v.apps.get(i.pid);
    if (a) i.vip = a.ip ?? a.identity;
    else missing.push(i.label);
  }
  return missing.length ? { ok: false, detail: `not yet registered with the daemon: ${missing.join(', ')}` } : { ok: true, detail: '' };
}

export async function probe(cli: CliRef, project: string, s: ServiceSpec, instances: Instance[], check: ReadyCheck): Promise<ProbeResult> {
  if (check.kind === 'tcp') {
    const v = await daemonView(cli.socket);
    const missing = instances.filter((i) => {
      const a = i.pid === undefined ? undefined : v.apps.get(i.pid);
      return !a || !v.services.some((e) => e.app === a.id && e.port === check.port && e.proto === 'tcp');
    });
    return missing.length ? { ok: false, detail: `not listening on port ${check.port}: ${missing.map((i) => i.label).join(', ')}` } : { ok: true, detail: '' };
  }
  const cmd = check.kind === 'http' ? [cli.node, PROBE_HTTP, `http://${s.name}:${check.port}${check.path}`] : check.command;
  return runProbe(cli, project, s, cmd);
}

function runProbe(cli: CliRef, project: string, s: ServiceSpec, cmd: string[]): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const child = spawn(cli.node, runArgs(cli, project, { tags: s.tags }, cmd), {
      cwd: s.cwd,
      env: { ...process.env, ...s.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    const keep = (d: Buffer): void => {
      out = (out + d.toString('utf8')).slice(-2000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const timer = setTimeout(() => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, PROBE_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ ok: false, detail: `probe ${cmd[0]}: ${e.message}` });
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').slice(-1)[0] ?? '';
      resolve({ ok: code === 0, detail: `probe \`${cmd.join(' ')}\` ${signal ? `killed (${signal}) after ${PROBE_TIMEOUT_MS} ms` : `exited ${code}`}${last ? `: ${last}` : ''}` });
    });
  });
}
