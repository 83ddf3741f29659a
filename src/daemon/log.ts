/** The daemon's logger: pino JSON lines on stdout (for the journal and log shippers); when stdout is a terminal,
 * the same records rendered for people by pino-pretty. */
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

/** A logger at `level` whose every line carries `node`. `tty` defaults to whether stdout is a terminal. */
export function createLogger(level: string, node: string, tty = process.stdout.isTTY === true): Logger {
  const opts: pino.LoggerOptions = { level, base: { node } };
  if (!tty) return pino(opts);
  // In-process and synchronous (no worker thread): the last lines before process.exit() are never lost.
  return pino(opts, pretty({ colorize: true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'hostname' }));
}
