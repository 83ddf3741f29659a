/** Which control socket the CLI talks to when none is named: the system daemon's, or the caller's private daemon's
 * (docs/private-daemon.md). No I/O beyond looking at the files. */
import { accessSync, constants, existsSync } from 'node:fs';
import path from 'node:path';
import { CONTROL_SOCKET_NAME, DEFAULT_STATE_DIR } from '../daemon/control-protocol.js';
import { privateStateDir as stateDirOf } from '../daemon/private-mode.js';

export const SYSTEM_SOCKET = path.join(DEFAULT_STATE_DIR, CONTROL_SOCKET_NAME);

/** The private daemon's state directory: `$XDG_RUNTIME_DIR/appswitch`, else `/tmp/appswitch-UID`. */
export function privateStateDir(): string {
  return stateDirOf(process.env, process.getuid?.() ?? 0);
}

/** Whether the caller may connect to the socket file at p (it exists and is writable for it). */
export function usable(p: string): boolean {
  try {
    accessSync(p, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The control socket when none is named (--socket, $APPSWITCH_SOCKET): the system daemon's when it exists and the
 * caller may use it, else the caller's private daemon's when that exists (not for root), else the system one (whose
 * error then says to start a daemon). */
export function defaultSocket(): string {
  if (usable(SYSTEM_SOCKET)) return SYSTEM_SOCKET;
  if (process.getuid?.() !== 0) {
    const own = path.join(privateStateDir(), CONTROL_SOCKET_NAME);
    if (existsSync(own)) return own;
  }
  return SYSTEM_SOCKET;
}
