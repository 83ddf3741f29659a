/** Finding or starting the daemon for an ordinary user (issue 14): the system daemon when the caller can use it, else
 * the user's own private daemon (`appswitch daemon --private`, docs/private-daemon.md), started detached when none
 * runs. `appswitch up` calls ensureDaemon; `appswitch run` finds the private daemon through resolveSocket. */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONTROL_SOCKET_NAME, type InfoResult } from '../daemon/control-protocol.js';
import { preparePrivateStateDir } from '../daemon/private-mode.js';
import { LOCK_FILE } from '../daemon/state-lock.js';
import { AppswitchError } from '../errors.js';
import { native } from '../native/binding.js';
import { request } from './client.js';
import { privateStateDir, SYSTEM_SOCKET, usable } from './socket-path.js';

export { privateStateDir };


/** The log file of a private daemon started by ensureDaemon. */
export const PRIVATE_LOG = 'daemon.log';

const START_TIMEOUT_MS = 15_000;



async function answers(socket: string): Promise<InfoResult | undefined> {
  try {
    return await request<InfoResult>(socket, 'info', undefined, 3000);
  } catch {
    return undefined;
  }
}

/** The CLI's entry script (bin/appswitch.js), to start the daemon with the same installation. */
function cliScript(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/appswitch.js');
}

/**
 * The daemon to use: `opts.socket` when given (it must answer); else the system daemon when reachable; else, for a
 * non-root user, the running private daemon, or one started now, detached (`setsid`, output to STATE/daemon.log),
 * once its control socket answers `info` (15 s, else an error naming the log). Root with no system daemon gets an
 * error saying how to start one: there is no private daemon for root.
 */
export async function ensureDaemon(opts: { socket?: string; log: (line: string) => void }): Promise<{ socket: string; started: boolean; private: boolean }> {
  const named = opts.socket ?? process.env.APPSWITCH_SOCKET;
  if (named !== undefined) {
    const info = await request<InfoResult>(named, 'info');
    return { socket: named, started: false, private: info.private === true };
  }
  if (existsSync(SYSTEM_SOCKET) && usable(SYSTEM_SOCKET)) {
    const info = await answers(SYSTEM_SOCKET);
    if (info) return { socket: SYSTEM_SOCKET, started: false, private: info.private === true };
  }
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) {
    throw new AppswitchError('ERR_DAEMON_UNREACHABLE', `no daemon answers at ${SYSTEM_SOCKET}: start one as root (\`appswitch daemon\`, or scripts/install.sh for a service); root gets no private daemon`);
  }
  const dir = privateStateDir();
  const socket = path.join(dir, CONTROL_SOCKET_NAME);
  if (existsSync(socket)) {
    const info = await answers(socket);
    if (info) return { socket, started: false, private: true };
  }
  preparePrivateStateDir(dir, uid);
  const logFile = path.join(dir, PRIVATE_LOG);
  const out = openSync(logFile, 'a', 0o600);
  let exited: string | undefined;
  try {
    const child = spawn(process.execPath, [cliScript(), 'daemon', '--private'], { detached: true, stdio: ['ignore', out, out], env: process.env, cwd: '/' });
    child.on('exit', (code, sig) => (exited = sig ?? `exit code ${code}`));
    child.on('error', (e) => (exited = e.message));
    child.unref();
    opts.log(`starting a private daemon for uid ${uid} (pid ${child.pid}; log ${logFile})`);
  } finally {
    closeSync(out);
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline && exited === undefined) {
    if (existsSync(socket) && (await answers(socket))) return { socket, started: true, private: true };
    await new Promise((r) => setTimeout(r, 100));
  }
  const why = exited !== undefined ? `it ended (${exited})` : `it did not answer within ${START_TIMEOUT_MS / 1000} s`;
  throw new AppswitchError('ERR_DAEMON_UNREACHABLE', `the private daemon did not start: ${why}; see ${logFile}`);
}

/** Stops the private daemon of stateDir (SIGTERM to the pid holding its lock, as `info` cannot say it), and waits
 * until it is gone (10 s). Returns whether one was running. */
export async function stopPrivateDaemon(stateDir: string = privateStateDir()): Promise<boolean> {
  const pid = lockHolder(stateDir);
  if (pid === undefined) return false;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return false;
  }
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new AppswitchError('ERR_DAEMON_UNREACHABLE', `the private daemon (pid ${pid}) did not stop within 10 s`);
}

/** The pid of the daemon holding stateDir's lock (state-lock.ts: the holder writes its pid in the file), when it is
 * this user's process (or the caller is root); undefined when no daemon holds it. */
function lockHolder(stateDir: string): number | undefined {
  const file = path.join(stateDir, LOCK_FILE);
  if (!existsSync(file)) return undefined;
  const r = native.lockFile(file);
  if (r.fd !== undefined) {
    native.close(r.fd); /* nobody held it: no daemon runs there */
    return undefined;
  }
  if (!(r.holder > 0)) return undefined;
  const uid = process.getuid?.();
  try {
    const owner = Number(/^Uid:\s*\d+\s+(\d+)/m.exec(readFileSync(`/proc/${r.holder}/status`, 'utf8'))?.[1]);
    return owner === uid || uid === 0 ? r.holder : undefined;
  } catch {
    return undefined; /* gone */
  }
}
