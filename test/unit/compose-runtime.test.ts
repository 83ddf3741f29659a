/** The pieces of `appswitch up` that need no daemon: the project directory's checks, the log's line splitting,
 * rotation and prefixes, and how a `command:` string is run. */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { programArgv } from '../../src/compose/instance.js';
import { LineSplitter, LinePrinter, LogBook, MAX_LINE, readLog } from '../../src/compose/logbook.js';
import { baseRoot, ensurePrivateDir, projectsBase } from '../../src/compose/paths.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'appswitch-compose-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('project directories', () => {
  it('live under /run for root, $XDG_RUNTIME_DIR or /tmp for others', () => {
    expect(projectsBase(0, {})).toBe('/run/appswitch-projects');
    expect(projectsBase(1000, { XDG_RUNTIME_DIR: '/run/user/1000' })).toBe('/run/user/1000/appswitch/projects');
    expect(projectsBase(1000, { XDG_RUNTIME_DIR: 'relative' })).toBe('/tmp/appswitch-1000/projects');
    expect(baseRoot(1000, { XDG_RUNTIME_DIR: '/tmp/appswitch-x/xdg' })).toBe('/tmp/appswitch-x/xdg');
    expect(baseRoot(0, {})).toBe('/run');
  });

  it('are made 0700, level by level; a level owned by someone else, writable by others, or not a directory is refused', () => {
    const root = path.join(tmp, 'r1');
    mkdirSync(root);
    const uid = process.getuid?.() ?? 0;
    ensurePrivateDir(path.join(root, 'appswitch/projects/shop'), root, uid);
    for (const d of ['appswitch', 'appswitch/projects', 'appswitch/projects/shop']) expect(statSync(path.join(root, d)).mode & 0o777).toBe(0o700);
    ensurePrivateDir(path.join(root, 'appswitch/projects/shop'), root, uid); /* again: fine */
    expect(() => ensurePrivateDir(path.join(root, 'appswitch/projects/shop'), root, uid + 1)).toThrow(/belongs to uid/);
    chmodSync(path.join(root, 'appswitch/projects'), 0o777);
    expect(() => ensurePrivateDir(path.join(root, 'appswitch/projects/blog'), root, uid)).toThrow(/writable by others/);
    writeFileSync(path.join(root, 'file'), '');
    expect(() => ensurePrivateDir(path.join(root, 'file/x'), root, uid)).toThrow(/not a directory/);
    expect(() => ensurePrivateDir('/etc/x', root, uid)).toThrow(/is not below/);
    if (uid === 0) {
      const other = path.join(root, 'other');
      mkdirSync(other, { mode: 0o700 });
      chownSync(other, 12345, 12345);
      expect(() => ensurePrivateDir(path.join(other, 'p'), root, 0)).toThrow(/belongs to uid 12345/);
    }
  });
});

describe('the project log', () => {
  it('splits chunks into lines, across chunk boundaries, CRLF too, and cuts very long ones', () => {
    const out: string[] = [];
    const s = new LineSplitter((l) => out.push(l));
    s.push('one\r\ntw');
    s.push('o\nthree');
    expect(out).toEqual(['one', 'two']);
    s.flush();
    expect(out).toEqual(['one', 'two', 'three']);
    s.push('x'.repeat(MAX_LINE * 2 + 5));
    s.flush();
    expect(out.slice(3).map((l) => l.length)).toEqual([MAX_LINE, MAX_LINE, 5]);
  });

  it('keeps one rotated generation and reads both in order; skips lines that are not log lines', () => {
    const file = path.join(tmp, 'logs.jsonl');
    const book = new LogBook(file, 400);
    for (let i = 0; i < 20; i++) book.append({ t: i, who: 'api-1', stream: 'out', line: `line ${i}` });
    book.close();
    const lines = readLog(file);
    expect(lines.length).toBeGreaterThan(2);
    expect(lines.length).toBeLessThan(20); /* the oldest went with an older generation */
    expect(lines.map((l) => l.t)).toEqual([...lines.map((l) => l.t)].sort((a, b) => a - b));
    expect(lines[lines.length - 1]?.line).toBe('line 19');
    writeFileSync(file, '{"t":1}\nnot json\n{"t":2,"who":"a","stream":"out","line":"ok"}\n', { flag: 'a' });
    expect(readLog(file).at(-1)?.line).toBe('ok');
  });

  it('prefixes each line with its padded name, coloured only when asked', () => {
    const plain = new LinePrinter(5, false);
    expect(plain.format({ t: 0, who: 'web', stream: 'out', line: 'hi' })).toBe('web   | hi');
    const col = new LinePrinter(5, true);
    expect(col.format({ t: 0, who: 'web', stream: 'out', line: 'hi' })).toMatch(/^\x1b\[\d+mweb   \|\x1b\[0m hi$/);
    const a = col.format({ t: 0, who: 'api-1', stream: 'out', line: '' });
    const b = col.format({ t: 0, who: 'api-2', stream: 'out', line: '' });
    expect(a.slice(0, 5)).not.toBe(b.slice(0, 5)); /* two instances, two colours */
  });
});

describe('a command: string', () => {
  it('runs a simple command with exec (so a stop reaches the program), anything else through the shell as written', () => {
    expect(programArgv(['/bin/sh', '-c', 'python3 -m http.server 8080'])).toEqual(['/bin/sh', '-c', 'exec python3 -m http.server 8080']);
    expect(programArgv(['/bin/sh', '-c', 'redis-server --save ""'])).toEqual(['/bin/sh', '-c', 'exec redis-server --save ""']);
    for (const s of ['a; b', 'a && b', 'a | b', 'echo $HOME', 'while true; do x; done', 'FOO=1 app', 'exec app', 'a > f']) {
      expect(programArgv(['/bin/sh', '-c', s])).toEqual(['/bin/sh', '-c', s]);
    }
    expect(programArgv(['python3', 'app.py'])).toEqual(['python3', 'app.py']);
  });
});
