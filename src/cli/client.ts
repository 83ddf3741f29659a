/** Control API client used by the CLI: HTTP/1.1 on the control socket (docs/api.md), one connection per call. A
 * daemon from before the HTTP API answers an HTTP request with a newline-JSON error line; then the call is made
 * again in that protocol, so a new CLI works with a daemon that has not been restarted yet. */
import http from 'node:http';
import net from 'node:net';
import { AppswitchError } from '../errors.js';
import type { ControlMethod, ControlResponse } from '../daemon/control-protocol.js';
import type { AppswitchEvent, EventType } from '../events/types.js';
import { routeFor } from '../api/routes.js';
import { defaultSocket } from './socket-path.js';

/** --socket, else $APPSWITCH_SOCKET, else the system daemon's control socket when it exists and the caller may use
 * it, else the caller's private daemon's when there is one (private-daemon.ts), else the system daemon's. */
export function resolveSocket(flag?: string): string {
  return flag ?? process.env.APPSWITCH_SOCKET ?? defaultSocket();
}

const LOOK = ' (out of file descriptors? see its log)';
/** Longest answer the CLI reads (a cluster's service table fits many times over). */
const MAX_ANSWER_BYTES = 256 * 1024 * 1024;

/** The error of a connection that failed before an answer. */
function connectError(socket: string, e: NodeJS.ErrnoException): AppswitchError {
  if (e.code === 'EACCES') {
    const hint = "only root and members of the daemon's group may use it (sudo usermod -aG appswitch $USER, then log in again)";
    return new AppswitchError('ERR_PERMISSION', `permission denied on ${socket}: ${hint}`);
  }
  if (e.code === 'ECONNRESET' && e.message === 'socket hang up') {
    /* accepted and closed at once: what a daemon out of file descriptors does (libuv's EMFILE handling) */
    return new AppswitchError('ERR_DAEMON_UNREACHABLE', `the daemon at ${socket} closed the connection without answering${LOOK}`);
  }
  const hint =
    e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
      ? ' (is `appswitch daemon` running? set --socket or APPSWITCH_SOCKET)'
      : e.code === 'EPIPE' || e.code === 'ECONNRESET'
        ? LOOK /* it accepted and closed at once */
        : '';
  return new AppswitchError('ERR_DAEMON_UNREACHABLE', `cannot reach the daemon at ${socket}: ${e.code ?? e.message}${hint}`);
}

/** The error an API error answer stands for (ERR_PERMISSION keeps its code; the others are ERR_DAEMON_REQUEST). */
function answerError(status: number, text: string): AppswitchError {
  let e: { code?: unknown; message?: unknown } | undefined;
  try {
    e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
  } catch {
    /* below */
  }
  if (!e || typeof e.code !== 'string') return new AppswitchError('ERR_PROTOCOL', `the daemon answered HTTP ${status} without an error body`);
  const msg = `${e.code}: ${String(e.message)}`;
  return new AppswitchError(e.code === 'ERR_PERMISSION' ? 'ERR_PERMISSION' : 'ERR_DAEMON_REQUEST', msg);
}

/** Whether a failed HTTP exchange means the daemon speaks only newline JSON (its answer is not HTTP). */
function notHttp(e: NodeJS.ErrnoException): boolean {
  return typeof e.code === 'string' && e.code.startsWith('HPE_');
}

/** Calls a control method (see control-protocol.ts METHODS) and resolves with its result. */
export function request<T>(socket: string, method: ControlMethod, params?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
  const route = routeFor(method, params);
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      f();
    };
    const headers: Record<string, string | number> = { Accept: 'application/json' };
    if (route.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(route.body);
    }
    const req = http.request({ socketPath: socket, method: route.method, path: route.path, headers, agent: false, host: 'appswitch' });
    const timer = setTimeout(() => {
      req.destroy();
      settle(() => reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `the daemon at ${socket} did not answer within ${timeoutMs} ms${LOOK}`)));
    }, timeoutMs);
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_ANSWER_BYTES) {
          req.destroy();
          settle(() => reject(new AppswitchError('ERR_PROTOCOL', `the daemon's answer is longer than ${MAX_ANSWER_BYTES} bytes`)));
          return;
        }
        parts.push(d);
      });
      res.on('error', (e) => settle(() => reject(connectError(socket, e))));
      res.on('end', () =>
        settle(() => {
          const text = Buffer.concat(parts).toString('utf8');
          if (res.statusCode !== 200) {
            reject(answerError(res.statusCode ?? 0, text));
            return;
          }
          try {
            resolve(JSON.parse(text) as T);
          } catch {
            reject(new AppswitchError('ERR_PROTOCOL', 'the daemon sent a malformed response'));
          }
        }),
      );
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (settled) return;
      if (notHttp(e)) {
        settle(() => legacyRequest<T>(socket, method, params, timeoutMs).then(resolve, reject));
        return;
      }
      settle(() => reject(connectError(socket, e)));
    });
    req.end(route.body);
  });
}

/** The same call in the newline-JSON protocol (a daemon from before the HTTP API). */
export function legacyRequest<T>(socket: string, method: ControlMethod, params?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socket);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `the daemon at ${socket} did not answer within ${timeoutMs} ms${LOOK}`));
    }, timeoutMs);
    let answered = false;
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify({ id: 1, method, params }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      clearTimeout(timer);
      answered = true;
      s.end();
      let r: ControlResponse;
      try {
        r = JSON.parse(buf.slice(0, i)) as ControlResponse;
      } catch {
        reject(new AppswitchError('ERR_PROTOCOL', 'the daemon sent a malformed response'));
        return;
      }
      if (r.error) reject(new AppswitchError(r.error.code === 'ERR_PERMISSION' ? 'ERR_PERMISSION' : 'ERR_DAEMON_REQUEST', `${r.error.code}: ${r.error.message}`));
      else resolve(r.result as T);
    });
    s.on('close', () => {
      if (answered) return;
      clearTimeout(timer);
      reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `the daemon at ${socket} closed the connection without answering${LOOK}`));
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      answered = true;
      clearTimeout(timer);
      reject(connectError(socket, e));
    });
  });
}

/** Which events `streamEvents` asks for: one app's (by name or id), of some types; absent: all. */
export interface EventQuery {
  app?: string;
  types?: EventType[];
}

/** Longest line of the event stream the CLI accepts (an event is well under it). */
const MAX_EVENT_LINE = 1024 * 1024;

/**
 * Follows the daemon's event stream (GET /v1/events, NDJSON): calls `onEvent` for each event, in order, until the
 * daemon ends the stream (resolves), `signal` aborts (resolves), or the connection fails (rejects AppswitchError:
 * ERR_DAEMON_UNREACHABLE, ERR_PERMISSION, ERR_DAEMON_REQUEST for a refused query such as an unknown type).
 */
export function streamEvents(socket: string, query: EventQuery, onEvent: (e: AppswitchEvent) => void, signal?: AbortSignal): Promise<void> {
  const q = new URLSearchParams();
  if (query.app !== undefined) q.set('app', query.app);
  if (query.types?.length) q.set('type', query.types.join(','));
  const qs = q.toString();
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      f();
    };
    const req = http.request({
      socketPath: socket,
      method: 'GET',
      path: `/v1/events${qs ? `?${qs}` : ''}`,
      headers: { Accept: 'application/x-ndjson' },
      agent: false,
      host: 'appswitch',
    });
    const onAbort = (): void => {
      req.destroy();
      settle(resolve);
    };
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text = (text + d).slice(0, 64 * 1024)));
        res.on('end', () => settle(() => reject(answerError(res.statusCode ?? 0, text))));
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line === '') continue; /* a keep-alive */
          let e: AppswitchEvent;
          try {
            e = JSON.parse(line) as AppswitchEvent;
          } catch {
            req.destroy();
            settle(() => reject(new AppswitchError('ERR_PROTOCOL', 'the daemon sent a malformed event')));
            return;
          }
          onEvent(e);
        }
        if (buf.length > MAX_EVENT_LINE) {
          req.destroy();
          settle(() => reject(new AppswitchError('ERR_PROTOCOL', `an event longer than ${MAX_EVENT_LINE} bytes`)));
        }
      });
      res.on('end', () => settle(resolve));
      res.on('error', (e) => settle(() => reject(connectError(socket, e))));
    });
    req.on('error', (e: NodeJS.ErrnoException) => settle(() => reject(connectError(socket, e))));
    req.end();
  });
}
