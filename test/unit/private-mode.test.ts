/** src/daemon/private-mode.ts: where a private daemon keeps its state and which directories it refuses, its ports,
 * the flags it fills in, and the host ports it refuses to expose. (The daemon itself: test/integration/private-daemon.) */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/daemon/config.js';
import { pickFreePorts, preparePrivateStateDir, privateFlags, privateHandlerDeps, PRIVATE_PORT_RANGE, privateStateDir, unprivilegedPortStart } from '../../src/daemon/private-mode.js';

const base = mkdtempSync(path.join(tmpdir(), 'appswitch-private-unit-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const self = process.getuid?.() ?? 0;

describe('privateStateDir', () => {
  it('is $XDG_RUNTIME_DIR/appswitch, else /tmp/appswitch-UID (also for a relative XDG_RUNTIME_DIR)', () => {
    expect(privateStateDir({ XDG_RUNTIME_DIR: '/run/user/1000' }, 1000)).toBe('/run/user/1000/appswitch');
    expect(privateStateDir({}, 1000)).toBe('/tmp/appswitch-1000');
    expect(privateStateDir({ XDG_RUNTIME_DIR: 'run/user' }, 1000)).toBe('/tmp/appswitch-1000');
  });
});

describe('preparePrivateStateDir', () => {
  it('creates the directory 0700, and accepts it again', () => {
    const d = path.join(base, 'fresh');
    preparePrivateStateDir(d, self);
    expect(statSync(d).mode & 0o777).toBe(0o700);
    expect(() => preparePrivateStateDir(d, self)).not.toThrow();
  });

  it('refuses one of another owner, with a loose mode, or a symlink (someone else made the name first)', () => {
    const other = path.join(base, 'other');
    mkdirSync(other, { mode: 0o700 });
    chownSync(other, 4242, 4242);
    expect(() => preparePrivateStateDir(other, self)).toThrow(/belongs to uid 4242/);
    const loose = path.join(base, 'loose');
    mkdirSync(loose);
    chmodSync(loose, 0o777);
    expect(() => preparePrivateStateDir(loose, self)).toThrow(/mode is 0777, not 0700/);
    const link = path.join(base, 'link');
    symlinkSync(path.join(base, 'fresh'), link);
    expect(() => preparePrivateStateDir(link, self)).toThrow(/not a directory \(or is a symbolic link\)/);
  });
});

describe('pickFreePorts', () => {
  it('gives distinct ports of the private range, skipping one that is taken', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(PRIVATE_PORT_RANGE.low, '127.0.0.1', r));
    try {
      const seq = [0, 0, 0.5, 0.5, 0.25]; /* low (taken), low again, mid, mid again (already given), quarter */
      let i = 0;
      const ports = await pickFreePorts('127.0.0.1', [true, false, true], () => seq[i++] ?? Math.random());
      const span = PRIVATE_PORT_RANGE.high - PRIVATE_PORT_RANGE.low + 1;
      expect(ports).toEqual([PRIVATE_PORT_RANGE.low + Math.floor(0.5 * span), PRIVATE_PORT_RANGE.low + Math.floor(0.25 * span), expect.any(Number)]);
      expect(new Set(ports).size).toBe(3);
      for (const p of ports) expect(p >= PRIVATE_PORT_RANGE.low && p <= PRIVATE_PORT_RANGE.high).toBe(true);
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });
});

describe('privateFlags and resolveConfig', () => {
  it('refuses root (the system daemon is root\'s)', async () => {
    if (self !== 0) return expect(self).not.toBe(0); /* only meaningful as root, where the tests run */
    await expect(privateFlags({}, () => false)).rejects.toThrow(/--private is for an ordinary user/);
  });

  it('a private config refuses joins and the socket guard', () => {
    expect(() => resolveConfig({ private: true, insecureNoSockguard: true, join: ['127.0.0.1:7946'] })).toThrow(/--join is refused/);
    expect(() => resolveConfig({ private: true })).toThrow(/no socket guard/);
    expect(resolveConfig({ private: true, insecureNoSockguard: true }).private).toBe(true);
    expect(resolveConfig({}).private).toBe(false);
  });
});

describe('privateHandlerDeps and unprivilegedPortStart', () => {
  it('lets the user expose; the lowest port an ordinary user may bind is read from the kernel', () => {
    expect(privateHandlerDeps(1000)).toEqual({ adminUid: 1000 });
    const start = unprivilegedPortStart();
    expect(Number.isInteger(start) && start >= 0 && start <= 65536).toBe(true);
  });
});
