/** A private daemon's log stays bounded (src/daemon/log-rotate.ts): real files and descriptors. */
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startLogRotation } from '../../src/daemon/log-rotate.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function logFile(): { file: string; fd: number } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'appswitch-logrot-'));
  dirs.push(dir);
  const file = path.join(dir, 'daemon.log');
  return { file, fd: openSync(file, 'a', 0o600) };
}

describe('log rotation', () => {
  it('past the bound: the log becomes the previous one (replacing the one before), and the next line starts the file', () => {
    const { file, fd } = logFile();
    const rotated: number[] = [];
    const r = startLogRotation({ fd, previous: `${file}.1`, maxBytes: 1000, everyMs: 3_600_000, onRotated: (b) => rotated.push(b) });
    try {
      writeSync(fd, 'a'.repeat(600));
      expect(r.check()).toBe(false); /* under the bound */
      expect(existsSync(`${file}.1`)).toBe(false);
      writeSync(fd, 'b'.repeat(600));
      expect(r.check()).toBe(true);
      expect(rotated).toEqual([1200]);
      expect(readFileSync(`${file}.1`, 'utf8')).toBe('a'.repeat(600) + 'b'.repeat(600));
      expect(statSync(file).size).toBe(0);
      writeSync(fd, 'next line\n'); /* appended: at the start of the emptied file, no hole */
      expect(readFileSync(file, 'utf8')).toBe('next line\n');
      writeSync(fd, 'c'.repeat(1200));
      expect(r.check()).toBe(true);
      expect(readFileSync(`${file}.1`, 'utf8')).toBe(`next line\n${'c'.repeat(1200)}`); /* one previous log only */
      expect(existsSync(`${file}.1.tmp`)).toBe(false);
    } finally {
      r.stop();
      closeSync(fd);
    }
  });

  it('leaves a descriptor that is no file alone, and says why a copy failed without throwing', () => {
    const dev = openSync('/dev/null', 'a'); /* a character device, as a terminal is */
    const errors: Error[] = [];
    const p = startLogRotation({ fd: dev, previous: '/nonexistent/x.1', maxBytes: 0, everyMs: 3_600_000, onError: (e) => errors.push(e) });
    writeSync(dev, 'x'.repeat(10));
    expect(p.check()).toBe(false);
    expect(errors).toEqual([]);
    p.stop();
    closeSync(dev);
    const { fd } = logFile();
    writeSync(fd, 'y'.repeat(10));
    const f = startLogRotation({ fd, previous: '/nonexistent/dir/daemon.log.1', maxBytes: 1, everyMs: 3_600_000, onError: (e) => errors.push(e) });
    expect(f.check()).toBe(false);
    expect(errors).toHaveLength(1);
    expect(fstatSync(fd).size).toBe(10); /* nothing lost */
    f.stop();
    closeSync(fd);
  });
});
