/** Errors with stable codes. `SyscallError` mirrors Node's errnoException; domain errors carry `ERR_*` codes
 * whose meaning never changes (tests assert them). */

/** A failed system call, as raised by the native binding: errno is negative, as in Node. */
export class SyscallError extends Error {
  constructor(
    message: string,
    readonly errno: number,
    readonly code: string,
    readonly syscall: string,
  ) {
    super(message);
    this.name = 'SyscallError';
  }
}

export type AppswitchErrorCode =
  | 'ERR_NATIVE_LOAD'
  | 'ERR_BAD_ARGUMENT'
  | 'ERR_DAEMON_UNREACHABLE'
  | 'ERR_DAEMON_REQUEST'
  | 'ERR_PROTOCOL'
  | 'ERR_CONFIG'
  | 'ERR_PERMISSION'
  /** Another daemon holds the state directory's lock (src/daemon/state-lock.ts). */
  | 'ERR_STATE_DIR_IN_USE'
  /** The daemon is out of a resource (its file descriptors): the request may succeed once it has recovered. */
  | 'ERR_RESOURCES';

/** A domain error: `code` is stable, `message` is for people. */
export class AppswitchError extends Error {
  constructor(
    readonly code: AppswitchErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'AppswitchError';
  }
}

/** Linux errno values the trap handler answers with (asm-generic/errno*.h). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EBADF: 9,
  EAGAIN: 11,
  EFAULT: 14,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  EPROTO: 71,
  ENOTSOCK: 88,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
} as const;
