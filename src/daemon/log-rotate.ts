/** A private daemon's log is a plain file (STATE/daemon.log, its stdout and stderr, opened for appending by the CLI
 * that started it: src/cli/private-daemon.ts), with no journald or logrotate behind it. Left alone it grows for as long
 * as the daemon runs; a program that retries a connect in a tight loop writes a line per refusal. So the daemon keeps
 * it bounded itself: once a minute, past `maxBytes`, the file is copied to `previous` (daemon.log.1, replacing the one
 * before) and emptied in place (the descriptor appends, so the next line starts the new file). At most about twice
 * `maxBytes` on disk. Lines written between the copy and the emptying are lost, as with logrotate's copytruncate. */
import { copyFileSync, fstatSync, ftruncateSync, readFileSync, readlinkSync, renameSync } from 'node:fs';
import type { Logger } from 'pino';

/** The bound of a private daemon's log. */
export const PRIVATE_LOG_MAX_BYTES = 16 * 1024 * 1024;

export interface LogRotation {
  /** Rotates now if the file is past its bound; returns whether it did. */
  check(): boolean;
  stop(): void;
}

export interface LogRotationOptions {
  /** The log's descriptor (1: stdout). Nothing is done unless it is a regular file. */
  fd: number;
  previous: string;
  maxBytes: number;
  everyMs: number;
  onRotated?: (bytes: number) => void;
  onError?: (e: Error) => void;
}

export function startLogRotation(o: LogRotationOptions): LogRotation {
  const check = (): boolean => {
    try {
      const st = fstatSync(o.fd);
      if (!st.isFile() || st.size <= o.maxBytes) return false;
      const tmp = `${o.previous}.tmp`;
      copyFileSync(`/proc/self/fd/${o.fd}`, tmp);
      renameSync(tmp, o.previous);
      ftruncateSync(o.fd, 0);
      o.onRotated?.(st.size);
      return true;
    } catch (e) {
      o.onError?.(e as Error);
      return false;
    }
  };
  const timer = setInterval(check, o.everyMs);
  timer.unref();
  return { check, stop: () => clearInterval(timer) };
}

/** Whether descriptor fd was opened with O_APPEND: emptying a file that is written at an offset would leave a hole
 * as long as the old log, not a short file. */
function appends(fd: number): boolean {
  try {
    const m = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return m !== null && (parseInt(m[1] as string, 8) & 0o2000) !== 0;
  } catch {
    return false;
  }
}

/** A private daemon's own log: its stdout, when that is a file opened for appending (the CLI's STATE/daemon.log),
 * kept under PRIVATE_LOG_MAX_BYTES, checked now and once a minute. Started by hand with output to a terminal, a pipe
 * or a file it overwrites, nothing is done. */
export function boundPrivateLog(log: Logger): LogRotation | undefined {
  let file: string;
  try {
    file = readlinkSync('/proc/self/fd/1');
  } catch {
    return undefined;
  }
  if (!file.startsWith('/') || file.endsWith(' (deleted)') || !appends(1)) return undefined;
  const previous = `${file}.1`;
  let warned = false;
  const rotation = startLogRotation({
    fd: 1,
    previous,
    maxBytes: PRIVATE_LOG_MAX_BYTES,
    everyMs: 60_000,
    onRotated: (bytes) => log.info({ bytes, previous }, 'log rotated: the full one is kept as the previous log'),
    onError: (e) => {
      if (!warned) log.warn({ err: e.message, previous }, 'log rotation failed; the log keeps growing');
      warned = true;
    },
  });
  rotation.check();
  return rotation;
}
