/** The state directory lock (src/daemon/state-lock.ts over native/statelock.c): the holder's pid in the file, a second
 * taker refused with that pid (flock conflicts between two open files, even in one process), released on release(),
 * and the native entry point's bad arguments. */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockStateDir } from '../../src/daemon/state-lock.js';
import { AppswitchError, SyscallError } from '../../src/errors.js';
import { native } from '../../src/native/binding.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-lock-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function refusal(f: () => unknown): AppswitchError {
  try {
    f();
  } catch (e) {
    if (e instanceof AppswitchError) return e;
    throw e;
  }
  throw new Error('not refused');
}

describe('state dir lock', () => {
  it('writes the pid, refuses a second taker naming it, and lets go on release', () => {
    const first = lockStateDir(dir);
    expect(readFileSync(path.join(dir, 'lock'), 'utf8')).toBe(`${process.pid}\n`);
    const e = refusal(() => lockStateDir(dir));
    expect(e.code).toBe('ERR_STATE_DIR_IN_USE');
    expect(e.message).toBe(`state dir ${dir} is in use by daemon pid ${process.pid}`);
    first.release();
    first.release(); /* twice is harmless */
    const again = lockStateDir(dir);
    again.release();
  });

  it('says so when the holder has not written its pid yet', () => {
    const first = lockStateDir(dir);
    writeFileSync(path.join(dir, 'lock'), '');
    expect(refusal(() => lockStateDir(dir)).message).toBe(`state dir ${dir} is in use by another daemon (pid not known yet)`);
    first.release();
  });

  it('native lockFile: bad arguments get EINVAL/ENOENT/ELOOP or a TypeError, never a lock', () => {
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        if (e instanceof SyscallError) return e.code;
        if (e instanceof TypeError) return 'TypeError';
        throw e;
      }
      return 'no error';
    };
    expect(code(() => native.lockFile(''))).toBe('EINVAL');
    expect(code(() => native.lockFile(`${dir}/a\u0000b`))).toBe('EINVAL');
    expect(code(() => native.lockFile(`${dir}/missing/lock`))).toBe('ENOENT');
    symlinkSync('/etc/passwd', path.join(dir, 'link'));
    expect(code(() => native.lockFile(path.join(dir, 'link')))).toBe('ELOOP'); /* never follows a planted link */
    expect(code(() => (native.lockFile as (p: unknown) => unknown)(7))).toBe('TypeError');
    expect(code(() => (native.lockFile as (p?: unknown) => unknown)())).toBe('TypeError');
  });
});
