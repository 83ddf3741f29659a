/** STAND-IN for H13's `streamEvents` (src/cli/client.ts, over HTTP): the same signature, reading the daemon's event
 * stream through the control socket's newline-JSON `events` method instead (src/daemon/control.ts ControlStream).
 * At the merge, `appswitch events` imports H13's function and this file can go (the `events` method may stay: the
 * old protocol then streams too). */
import net from 'node:net';
import { AppswitchError } from '../errors.js';
import type { AppswitchEvent, EventType } from '../events/types.js';

export interface EventQuery {
  app?: string;
  types?: EventType[];
}

/** Follows the daemon's events, calling onEvent for each; resolves when the daemon ends the stream, rejects when it
 * cannot be reached or refuses the request. */
export function streamEvents(socket: string, query: EventQuery, onEvent: (e: AppswitchEvent) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socket);
    const params: Record<string, unknown> = {};
    if (query.app !== undefined) params.app = query.app;
    if (query.types?.length) params.types = query.types;
    let buf = '';
    let started = false;
    let failed = false;
    const fail = (e: AppswitchError): void => {
      failed = true;
      s.destroy();
      reject(e);
    };
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify({ id: 1, method: 'events', params }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue; /* keep-alive */
        let v: { result?: unknown; error?: { code: string; message: string } } & Partial<AppswitchEvent>;
        try {
          v = JSON.parse(line) as typeof v;
        } catch {
          return fail(new AppswitchError('ERR_PROTOCOL', 'the daemon sent a malformed event line'));
        }
        if (!started) {
          if (v.error) return fail(new AppswitchError(v.error.code === 'ERR_PERMISSION' ? 'ERR_PERMISSION' : 'ERR_DAEMON_REQUEST', `${v.error.code}: ${v.error.message}`));
          started = true;
          continue;
        }
        onEvent(v as AppswitchEvent);
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (!failed) fail(new AppswitchError(e.code === 'EACCES' ? 'ERR_PERMISSION' : 'ERR_DAEMON_UNREACHABLE', `cannot reach the daemon at ${socket}: ${e.code ?? e.message}`));
    });
    s.on('close', () => {
      if (!failed) resolve();
    });
  });
}
