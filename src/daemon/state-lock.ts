/** One daemon per state directory: `STATE-DIR/lock` is flock(2)ed for the daemon's life (native/statelock.h), taken
 * before any socket or state file there is touched, so a second daemon on the same directory refuses to start —
 * naming the first one's pid — instead of taking over its sockets, overwriting its state and, on exit, deleting its
 * control socket. The lock goes with the process, however it ends: no stale lock survives a crash. */
import path from 'node:path';
import { AppswitchError } from '../errors.js';
import { native } from '../native/binding.js';

export const LOCK_FILE = 'lock';

/** The held lock; release() lets go (a daemon stopped in-process, so another may start on the directory). */
export interface StateDirLock {
  readonly file: string;
  release(): void;
}

/** Takes the state directory's lock (the directory must exist). Throws ERR_STATE_DIR_IN_USE when another daemon
 * holds it, with its pid in the message. */
export function lockStateDir(stateDir: string): StateDirLock {
  const file = path.join(stateDir, LOCK_FILE);
  const r = native.lockFile(file);
  if (r.fd === undefined) {
    const who = r.holder > 0 ? `daemon pid ${r.holder}` : 'another daemon (pid not known yet)';
    throw new AppswitchError('ERR_STATE_DIR_IN_USE', `state dir ${stateDir} is in use by ${who}`);
  }
  let fd: number | undefined = r.fd;
  return {
    file,
    release(): void {
      if (fd === undefined) return;
      native.close(fd);
      fd = undefined;
    },
  };
}
