/** Control API client used by the CLI. */
import net from 'node:net';
import { AppswitchError } from '../errors.js';
import type { ControlMethod, ControlResponse } from '../daemon/control-protocol.js';
import { defaultSocket } from './private-daemon.js';

/** --socket, else $APPSWITCH_SOCKET, else the system daemon's control socket when it exists and the caller may use
 * it, else the caller's private daemon's when there is one (private-daemon.ts), else the system daemon's. */
export function resolveSocket(flag?: string): string {
  return flag ?? process.env.APPSWITCH_SOCKET ?? defaultSocket();
}

const LOOK = ' (out of file descriptors? see its log)';

export function request<T>(socket: string, method: ControlMethod, params?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
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
      /* accepted and closed at once: what a daemon out of file descriptors does (libuv's EMFILE handling) */
      clearTimeout(timer);
      reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `the daemon at ${socket} closed the connection without answering${LOOK}`));
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      answered = true;
      clearTimeout(timer);
      if (e.code === 'EACCES') {
        const hint = "only root and members of the daemon's group may use it (sudo usermod -aG appswitch $USER, then log in again)";
        reject(new AppswitchError('ERR_PERMISSION', `permission denied on ${socket}: ${hint}`));
        return;
      }
      const hint =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? ' (is `appswitch daemon` running? set --socket or APPSWITCH_SOCKET)'
          : e.code === 'EPIPE' || e.code === 'ECONNRESET'
            ? LOOK /* it accepted and closed at once */
            : '';
      reject(new AppswitchError('ERR_DAEMON_UNREACHABLE', `cannot reach the daemon at ${socket}: ${e.code ?? e.message}${hint}`));
    });
  });
}
