/** One running copy of a service: an `appswitch run --project P --name NAME ...` child in its own process group,
 * its output split into lines for the project's log. */
import { type ChildProcess, spawn } from 'node:child_process';
import type { LogBook } from './logbook.js';
import { LineSplitter } from './logbook.js';
import type { ServiceSpec } from './types.js';

/** How the supervisor starts the CLI again (`node bin/appswitch.js`), and which daemon it talks to. */
export interface CliRef {
  node: string;
  script: string;
  socket: string;
}

/** How long a stop waits for the killed rest of an instance's process group to exit. */
const GROUP_EXIT_WAIT_MS = 3000;

export type InstanceState = 'created' | 'starting' | 'running' | 'ready' | 'restarting' | 'exited' | 'crashed' | 'stopping' | 'stopped';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The argv of `appswitch run` for a service of a project (also used for probes, with no name). */
export function runArgs(cli: CliRef, project: string, s: Pick<ServiceSpec, 'tags'> & Partial<Pick<ServiceSpec, 'name' | 'ip' | 'ports'>>, cmd: string[]): string[] {
  const a = [cli.script, 'run', '--socket', cli.socket, '--project', project];
  if (s.name !== undefined) a.push('--name', s.name);
  if (s.ip !== undefined) a.push('--ip', s.ip);
  for (const [k, v] of Object.entries(s.tags)) a.push('--tag', `${k}=${v}`);
  for (const p of s.ports ?? []) a.push('--expose', `${p.hostPort}:${p.port}`);
  a.push('--', ...cmd);
  return a;
}

/** A `command:` string runs as `/bin/sh -c STRING`; when it is one simple command, as `exec STRING`, so that the
 * program itself (not a shell waiting for it) gets the SIGTERM of a stop. */
export function programArgv(cmd: string[]): string[] {
  const [sh, c, text] = cmd;
  if (cmd.length === 3 && sh === '/bin/sh' && c === '-c' && text !== undefined && !/[;&|<>()`$\n]|^\s*(exec|while|for|if|until|case)\b|^\s*[^\s=]*=/.test(text)) {
    return [sh, c, `exec ${text}`];
  }
  return cmd;
}

export class Instance {
  state: InstanceState = 'created';
  pid?: number;
  startedAt?: number;
  restarts = 0;
  last?: ExitInfo;
  /** The app's identity (its vip) once the daemon lists it. */
  vip?: string;
  private child?: ChildProcess;
  private exited?: Promise<ExitInfo>;

  constructor(
    readonly label: string,
    readonly spec: ServiceSpec,
    private readonly project: string,
    private readonly cli: CliRef,
    private readonly logs: LogBook,
    private readonly onExit: (i: Instance, e: ExitInfo) => void,
  ) {}

  get alive(): boolean {
    return this.child !== undefined && this.last === undefined;
  }

  start(): void {
    this.last = undefined;
    this.vip = undefined;
    this.state = 'starting';
    const child = spawn(this.cli.node, runArgs(this.cli, this.project, this.spec, programArgv(this.spec.command)), {
      cwd: this.spec.cwd,
      env: { ...process.env, ...this.spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true /* its own process group: a terminal's Ctrl-C reaches the supervisor, which stops it in order */,
    });
    this.child = child;
    this.pid = child.pid;
    this.startedAt = Date.now();
    for (const [stream, src] of [['out', child.stdout], ['err', child.stderr]] as const) {
      src?.setEncoding('utf8');
      const split = new LineSplitter((line) => this.logs.append({ t: Date.now(), who: this.label, stream, line }));
      src?.on('data', (d: string) => split.push(d));
      src?.on('end', () => split.flush());
    }
    this.exited = new Promise((resolve) => {
      child.on('error', (e) => {
        this.logs.note(`${this.label}: could not start: ${e.message}`);
        resolve(this.finish({ code: 125, signal: null }));
      });
      child.on('exit', (code, signal) => resolve(this.finish({ code, signal })));
    });
  }

  private finish(e: ExitInfo): ExitInfo {
    if (this.last) return this.last;
    this.last = e;
    this.onExit(this, e);
    return e;
  }

  /** SIGTERM (the launcher passes it to the program), then after `timeoutMs` SIGKILL to the whole process group. */
  async stop(timeoutMs: number): Promise<void> {
    const child = this.child;
    if (!child || !this.exited || this.last) return;
    this.state = 'stopping';
    this.signal('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.logs.note(`${this.label}: did not stop within ${timeoutMs} ms of SIGTERM: SIGKILL`);
        this.signal('SIGKILL', true);
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.exited, killed]);
    await this.exited;
    clearTimeout(timer);
    /* what the program left in its group (children that ignored SIGTERM) goes with it, and is gone before stop()
     * returns: a killed process takes a moment to exit (all its threads), and `down` promises no process left */
    this.signal('SIGKILL', true);
    await this.groupGone(GROUP_EXIT_WAIT_MS);
  }

  /** Waits until no process of the instance's process group is left, up to `ms`. */
  private async groupGone(ms: number): Promise<void> {
    if (this.pid === undefined) return;
    const until = Date.now() + ms;
    while (Date.now() < until) {
      try {
        process.kill(-this.pid, 0);
      } catch {
        return; /* ESRCH: the group is empty */
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private signal(sig: NodeJS.Signals, group = false): void {
    if (this.pid === undefined) return;
    try {
      process.kill(group ? -this.pid : this.pid, sig);
    } catch {
      /* already gone */
    }
  }
}
