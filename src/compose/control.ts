/** The supervisor's control socket (PROJECT-DIR/supervisor.sock, in a 0700 directory of the user): newline-
 * delimited JSON, one request and one answer per line. `appswitch ps/restart/stop/start/down` use it, from any
 * terminal, whether `up` runs in the foreground or detached. */
import net from 'node:net';
import { chmodSync, rmSync } from 'node:fs';
import { AppswitchError } from '../errors.js';
import type { InstanceRow } from './supervisor.js';

export type SupervisorMethod = 'status' | 'ps' | 'restart' | 'stop' | 'start' | 'down';

export interface StatusView {
  project: string;
  file: string;
  pid: number;
  /** starting: `up` is still bringing services up; up: every service was started (or failed); down: stopping. */
  phase: 'starting' | 'up' | 'down';
  failed: boolean;
  rows: InstanceRow[];
}

export interface SupervisorHandlers {
  status(): StatusView;
  restart(services: string[]): Promise<boolean>;
  stop(services: string[]): Promise<void>;
  start(services: string[]): Promise<boolean>;
  /** Answered first, then the supervisor stops everything and exits. */
  down(): void;
}

const MAX_LINE = 64 * 1024;

export function serveSupervisor(socket: string, h: SupervisorHandlers): Promise<net.Server> {
  rmSync(socket, { force: true });
  const server = net.createServer((c) => {
    let buf = '';
    c.setEncoding('utf8');
    c.on('error', () => c.destroy());
    c.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE) return c.destroy();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        void answer(h, line).then((r) => {
          if (!c.destroyed) c.write(JSON.stringify(r) + '\n');
        });
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      chmodSync(socket, 0o600);
      resolve(server);
    });
  });
}

async function answer(h: SupervisorHandlers, line: string): Promise<{ result?: unknown; error?: string }> {
  let req: { method?: unknown; services?: unknown };
  try {
    req = JSON.parse(line) as typeof req;
  } catch {
    return { error: 'not JSON' };
  }
  const services = Array.isArray(req.services) ? req.services.filter((s): s is string => typeof s === 'string') : [];
  try {
    switch (req.method) {
      case 'status':
      case 'ps':
        return { result: h.status() };
      case 'restart':
        return { result: await h.restart(services) };
      case 'stop':
        await h.stop(services);
        return { result: true };
      case 'start':
        return { result: await h.start(services) };
      case 'down':
        setImmediate(() => h.down());
        return { result: true };
      default:
        return { error: `unknown method ${String(req.method)}` };
    }
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/** One call to a project's supervisor. ERR_DAEMON_UNREACHABLE when nothing listens (the project is not up). */
export function callSupervisor<T>(socket: string, method: SupervisorMethod, services: string[] = [], timeoutMs = 120000): Promise<T> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socket);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `the project's supervisor (${socket}) did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify({ method, services }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      clearTimeout(timer);
      s.end();
      try {
        const r = JSON.parse(buf.slice(0, i)) as { result?: T; error?: string };
        if (r.error !== undefined) reject(new AppswitchError('ERR_BAD_ARGUMENT', r.error));
        else resolve(r.result as T);
      } catch {
        reject(new AppswitchError('ERR_PROTOCOL', 'the supervisor sent a malformed answer'));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `no supervisor at ${socket} (${e.code ?? e.message})`));
    });
  });
}
