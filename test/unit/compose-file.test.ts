/** src/compose/file.ts: appswitch.yaml into a ProjectSpec, or one `FILE:LINE: message` error (the first in the
 * file), and never anything else — whatever the input (the fuzz at the end). */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ComposeFileError, findProjectFile, loadProject, MAX_FILE_BYTES, parseProject, projectNameFromDir, projectNameOk } from '../../src/compose/file.js';
import { parseDuration } from '../../src/compose/durations.js';
import type { ProjectSpec, ServiceSpec } from '../../src/compose/types.js';
import { AppswitchError } from '../../src/errors.js';

let root = '';
let dir = '';
let FILE = '';

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'compose-file-'));
  dir = join(root, 'My_Shop');
  mkdirSync(join(dir, 'api'), { recursive: true });
  writeFileSync(join(dir, 'README'), 'not a directory\n');
  FILE = join(dir, 'appswitch.yaml');
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

/** The message of the ComposeFileError `text` raises (asserting the class, the code and the one-line shape). */
function fails(text: string, opts: { projectName?: string } = {}): string {
  try {
    parseProject(text, FILE, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(ComposeFileError);
    expect((e as ComposeFileError).code).toBe('ERR_CONFIG');
    const msg = (e as Error).message;
    expect(msg).toMatch(/^.+:\d+: .+$/);
    expect(msg).not.toMatch(/[\n\r\u2028\u2029]/);
    return msg;
  }
  throw new Error(`no error for:\n${text}`);
}

/** `FILE:LINE: message` for this test's file. */
const at = (line: number, msg: string): string => `${FILE}:${line}: ${msg}`;

/** A file with one service `a` whose body is `body` (indented by the caller at 4 spaces). */
const one = (body: string): string => `services:\n  a:\n    command: x\n${body}`;

const svc = (text: string, name = 'a'): ServiceSpec => {
  const s = parseProject(text, FILE).services.find((x) => x.name === name);
  if (!s) throw new Error(`no service ${name}`);
  return s;
};

const FULL = `# the shop
name: shop
services:
  web:
    command: [node, server.js, 8080]
    depends_on:
      api: {condition: ready}
      cache: {condition: started}
    ports: ["18080:8080", 9000]
    replicas: 2
    env: {API: "http://api:8080/", PORT: 8080, DEBUG: true}
    restart: on-failure
  api:
    command: python3 app.py
    ip: 10.1.0.5
    tags: {tier: backend}
    env: [DEBUG=1, "EXTRA=a=b"]
    cwd: ./api
    ready:
      http: 8080
      path: /health
      interval: 250ms
      timeout: 30s
    depends_on: [cache]
    restart: no
    stop_timeout: 2.5
  cache:
    command: redis-server --port 6379
    tags: [role=cache, empty=]
    ready:
      command: redis-cli ping
  worker:
    command: ["./worker"]
    ready: {tcp: 7000}
    restart: always
    stop_timeout: 1m
`;

describe('a valid file', () => {
  it('becomes the expected ProjectSpec: defaults filled in, cwd resolved, dependencies first, ties in file order', () => {
    const p = parseProject(FULL, FILE);
    const base = { tags: {}, env: {}, cwd: dir, replicas: 1, ports: [], dependsOn: [], restart: 'no' as const, stopTimeoutMs: 10_000 };
    const expected: ProjectSpec = {
      name: 'shop',
      file: FILE,
      dir,
      services: [
        {
          ...base,
          name: 'cache',
          command: ['/bin/sh', '-c', 'redis-server --port 6379'],
          tags: { role: 'cache', empty: '' },
          ready: { check: { kind: 'command', command: ['/bin/sh', '-c', 'redis-cli ping'] }, intervalMs: 500, timeoutMs: 60_000 },
          line: 27,
        },
        {
          ...base,
          name: 'api',
          command: ['/bin/sh', '-c', 'python3 app.py'],
          ip: '10.1.0.5',
          tags: { tier: 'backend' },
          env: { DEBUG: '1', EXTRA: 'a=b' },
          cwd: join(dir, 'api'),
          ready: { check: { kind: 'http', port: 8080, path: '/health' }, intervalMs: 250, timeoutMs: 30_000 },
          dependsOn: ['cache'],
          stopTimeoutMs: 2500,
          line: 13,
        },
        {
          ...base,
          name: 'web',
          command: ['node', 'server.js', '8080'],
          env: { API: 'http://api:8080/', PORT: '8080', DEBUG: 'true' },
          replicas: 2,
          ports: [
            { hostPort: 18080, port: 8080 },
            { hostPort: 9000, port: 9000 },
          ],
          dependsOn: ['api', 'cache'],
          restart: 'on-failure',
          line: 4,
        },
        {
          ...base,
          name: 'worker',
          command: ['./worker'],
          ready: { check: { kind: 'tcp', port: 7000 }, intervalMs: 500, timeoutMs: 60_000 },
          restart: 'always',
          stopTimeoutMs: 60_000,
          line: 32,
        },
      ],
    };
    expect(p).toEqual(expected);
  });

  it('the example of docs/compose-file.md is valid and starts cache, api, web', () => {
    const doc = readFileSync(join(import.meta.dirname, '../../docs/compose-file.md'), 'utf8');
    const block = /## An example\n\n((?: {4}.*\n|\n)+)/.exec(doc)?.[1] ?? '';
    const text = block.replace(/^ {4}/gm, '');
    expect(text).toMatch(/^services:$/m);
    const p = parseProject(text, FILE);
    expect(p.name).toBe('shop');
    expect(p.services.map((s) => `${s.name}x${s.replicas}`)).toEqual(['cachex1', 'apix1', 'webx2']);
  });

  it('loadProject reads the same from disk', () => {
    writeFileSync(FILE, FULL);
    expect(loadProject(FILE)).toEqual(parseProject(FULL, FILE));
  });

  it('orders a long chain without recursion (dependencies first) and takes file order among free services', () => {
    const n = 5000;
    let text = 'services:\n';
    for (let i = 0; i < n; i++) text += `  s${i}:\n    command: x\n${i + 1 < n ? `    depends_on: [s${i + 1}]\n` : ''}`;
    const names = parseProject(text, FILE).services.map((s) => s.name);
    expect(names[0]).toBe(`s${n - 1}`);
    expect(names[n - 1]).toBe('s0');
    const free = parseProject('services:\n  c: {command: x, depends_on: [a]}\n  b: {command: x}\n  a: {command: x}\n', FILE);
    expect(free.services.map((s) => s.name)).toEqual(['b', 'a', 'c']);
  });

  it('numbers and booleans become strings as written; restart false is no; an anchor and alias share a map', () => {
    const s = svc(one('    env: {A: 0x10, B: 1.10, C: True}\n    restart: false\n'));
    expect(s.env).toEqual({ A: '0x10', B: '1.10', C: 'True' });
    expect(s.restart).toBe('no');
    const text = 'services:\n  a:\n    command: x\n    env: &common {LOG: debug}\n  b:\n    command: y\n    env: *common\n';
    expect(svc(text, 'b').env).toEqual({ LOG: 'debug' });
    /* the last anchor of a name before the alias wins (YAML's rule) */
    expect(svc('services:\n  a:\n    command: [&v a, &v b, *v]\n').command).toEqual(['a', 'b', 'b']);
    /* many aliases: resolved in one walk of the document */
    const argv = svc(`services:\n  a:\n    command: [&w echo${', *w'.repeat(30_000)}]\n`).command;
    expect(argv).toHaveLength(30_001);
    expect(new Set(argv)).toEqual(new Set(['echo']));
  });

  it('an IPv6 vip, an absolute cwd, empty env and tags, depends_on given as names with no condition', () => {
    const text = `services:\n  a:\n    command: x\n    ip: "fd00::5"\n    cwd: ${join(dir, 'api')}\n    env:\n    tags:\n    depends_on: {b: }\n  b:\n    command: y\n`;
    const a = svc(text);
    expect(a.ip).toBe('fd00::5');
    expect(a.cwd).toBe(join(dir, 'api'));
    expect(a.env).toEqual({});
    expect(a.dependsOn).toEqual(['b']);
  });
});

describe('the project name', () => {
  it('projectNameOk accepts DNS labels and says why otherwise', () => {
    expect(projectNameOk('shop')).toBeUndefined();
    expect(projectNameOk('my-shop-2')).toBeUndefined();
    expect(projectNameOk('a'.repeat(63))).toBeUndefined();
    expect(projectNameOk('')).toBe('is empty');
    expect(projectNameOk('a'.repeat(64))).toBe('is longer than 63 characters');
    expect(projectNameOk('Shop')).toMatch(/lower-case letters, digits/);
    expect(projectNameOk('a.b')).toMatch(/lower-case letters, digits/);
    expect(projectNameOk('-a')).toBe('must start and end with a letter or digit');
    expect(projectNameOk('a-')).toBe('must start and end with a letter or digit');
  });

  it('from the directory: lower-cased, other characters to -, trimmed', () => {
    expect(projectNameFromDir('/home/u/My_Shop')).toBe('my-shop');
    expect(projectNameFromDir('/x/__Blog.v2__')).toBe('blog-v2');
    expect(projectNameFromDir('/x/été')).toBe('t');
    expect(projectNameFromDir('/')).toBe('');
  });

  it('the file name wins, then opts.projectName, then the directory', () => {
    const body = 'services:\n  a:\n    command: x\n';
    expect(parseProject(`name: blog\n${body}`, FILE, { projectName: 'other' }).name).toBe('other'); /* -p wins, as compose's */
    expect(parseProject(`name: blog\n${body}`, FILE).name).toBe('blog');
    expect(parseProject(body, FILE, { projectName: 'other' }).name).toBe('other');
    expect(parseProject(body, FILE).name).toBe('my-shop');
  });

  it('a bad name in the file, in opts or from the directory is refused', () => {
    const body = 'services:\n  a:\n    command: x\n';
    expect(fails(`${body}name: My.Shop\n`)).toBe(at(4, `project name "My.Shop" may hold only lower-case letters, digits and '-'`));
    expect(fails(`name: [x]\n${body}`)).toBe(at(1, 'name must be the project name, a string, not a list'));
    let err: unknown;
    try {
      parseProject(body, FILE, { projectName: 'Bad Name' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AppswitchError);
    expect(err).not.toBeInstanceOf(ComposeFileError);
    expect((err as AppswitchError).code).toBe('ERR_BAD_ARGUMENT');
    const odd = join(root, '___');
    mkdirSync(odd, { recursive: true });
    expect(() => parseProject(body, join(odd, 'appswitch.yaml'))).toThrow(
      `${join(odd, 'appswitch.yaml')}:1: no project name: the one made from the directory "___" is empty; set name: in the file`,
    );
  });
});

describe('errors name the file and the line', () => {
  it('YAML syntax errors and duplicate keys, with the YAML message on one line', () => {
    expect(fails('services:\n  a:\n    command: x\n    command: y\n')).toBe(at(4, 'duplicate key "command" in service "a" (first on line 3)'));
    expect(fails('services:\n  a: {command: x, env: {A: 1, "A": 2}}\n')).toBe(at(2, 'duplicate key "A" in env of service "a" (first on line 2)'));
    expect(fails('services:\n  a: {command: x}\nservices:\n  b: {command: y}\n')).toBe(at(3, 'duplicate key "services" at the top level (first on line 1)'));
    /* found in one pass: the yaml package's own check is quadratic in the size of a map */
    let many = 'services:\n';
    for (let i = 0; i < 20_000; i++) many += `  s${i}: {command: x}\n`;
    expect(fails(`${many}  s0: {command: y}\n`)).toBe(at(20_002, 'duplicate key "s0" in services (first on line 2)'));
    expect(fails('services:\n  a:\n    command: [x\n')).toMatch(new RegExp(`^${FILE}:4: YAML: `));
    expect(fails('services:\n  a:\n\tcommand: x\n')).toBe(at(3, 'YAML: Tabs are not allowed as indentation'));
    expect(fails('services:\n  a:\n    command: "\\q"\n')).toBe(at(3, 'YAML: Invalid escape sequence \\q'));
    expect(fails('services:\n  a: {command: x}\n---\nb: 1\n')).toMatch(new RegExp(`^${FILE}:3: YAML: Source contains multiple documents`));
    expect(fails('services:\n  a:\n    command: !custom x\n')).toBe(at(3, 'YAML: Unresolved tag: !custom'));
    expect(fails('services:\n  a:\n    command: x\n    env: *nothing\n')).toBe(at(4, 'alias *nothing names no anchor defined before it'));
    expect(fails('services:\n  a:\n    command: *x\n    env: &x {A: 1}\n')).toBe(at(3, 'alias *x names no anchor defined before it'));
    expect(fails('services:\n  a:\n    command: &x [ls, *x]\n')).toBe(at(3, 'service "a": command: item 2 must be a string, not a list'));
    expect(fails('['.repeat(20_000))).toMatch(new RegExp(`^${FILE}:1: YAML: `));
  });

  it('unknown keys anywhere, with the closest known key when it is near', () => {
    const known = 'command, ip, tags, env, cwd, replicas, ports, ready, depends_on, restart, stop_timeout';
    expect(fails('services:\n  api:\n    comand: x\n')).toBe(at(3, `unknown key "comand" in service "api": did you mean "command"? (known: ${known})`));
    expect(fails('services:\n  api:\n    command: x\n    volumes: [a]\n')).toBe(at(4, `unknown key "volumes" in service "api" (known: ${known})`));
    expect(fails('version: "3"\nservices:\n  a:\n    command: x\n')).toBe(at(1, 'unknown key "version" at the top level (known: name, services)'));
    expect(fails('servics:\n  a:\n    command: x\n')).toBe(at(1, 'unknown key "servics" at the top level: did you mean "services"? (known: name, services)'));
    expect(fails(one('    ready:\n      tcp: 1\n      intervl: 1s\n'))).toBe(
      at(6, 'unknown key "intervl" in ready of service "a": did you mean "interval"? (known: tcp, http, path, command, interval, timeout)'),
    );
    expect(fails('services:\n  a:\n    command: x\n    depends_on: {b: {conditon: ready}}\n  b:\n    command: y\n')).toBe(
      at(4, 'unknown key "conditon" in depends_on "b" of service "a": did you mean "condition"? (known: condition)'),
    );
    expect(fails('services:\n  a:\n    command: x\n    "bad\\nkey": 1\n')).toBe(at(4, `unknown key "bad\\nkey" in service "a" (known: ${known})`));
    expect(fails('services:\n  a:\n    command: x\n    ? [1, 2]\n    : 3\n')).toBe(at(4, 'a key in service "a" must be a name, not a list'));
  });

  it('the shape of the file and of services', () => {
    expect(fails('')).toBe(at(1, 'the file is empty: it needs a services: map'));
    expect(fails('# nothing\n')).toBe(at(1, 'the file is empty: it needs a services: map'));
    expect(fails('- a\n- b\n')).toBe(at(1, 'the file must be a map with services: (and name:, if you like), not a list'));
    expect(fails('name: shop\n')).toBe(at(1, 'services: is missing: the file needs at least one service'));
    expect(fails('name: shop\nservices: {}\n')).toBe(at(2, 'services is empty: give at least one service'));
    expect(fails('services:\n')).toBe(at(1, 'services must be a map of service names to services, not nothing'));
    expect(fails('services: [a, b]\n')).toBe(at(1, 'services must be a map of service names to services, not a list'));
    expect(fails('services:\n  api: python3 app.py\n')).toBe(at(2, 'service "api" must be a map of keys (command: ..., and more), not a string ("python3 app.py")'));
    expect(fails('services:\n  api:\n')).toBe(at(2, 'service "api" must be a map of keys (command: ..., and more), not nothing'));
    expect(fails('services:\n  api:\n    replicas: 2\n')).toBe(at(2, 'service "api" has no command (command: a string run by /bin/sh -c, or a list of strings)'));
  });

  it('service names are DNS labels of at most 40 characters, without dots', () => {
    for (const bad of ['API', 'a.b', '-a', 'a-', 'a_b', 'x'.repeat(41), '""']) {
      expect(fails(`services:\n  x0:\n    command: x\n  ${bad}:\n    command: x\n`)).toMatch(new RegExp(`^${FILE}:4: service name .* is not valid: 1 to 40 lower-case`));
    }
    expect(svc(`services:\n  ${'x'.repeat(40)}:\n    command: x\n`, 'x'.repeat(40)).name).toHaveLength(40);
    expect(svc('services:\n  1:\n    command: x\n', '1').name).toBe('1');
  });

  it('command: a non-empty string or list of strings, no NUL', () => {
    expect(fails('services:\n  a:\n    command: []\n')).toMatch(new RegExp(`^${FILE}:3: service "a": command is an empty list`));
    expect(fails('services:\n  a:\n    command: "  "\n')).toBe(at(3, 'service "a": command is empty'));
    expect(fails('services:\n  a:\n    command: 42\n')).toBe(at(3, 'service "a": command must be a string (run by /bin/sh -c) or a non-empty list of strings, not a number (42)'));
    expect(fails('services:\n  a:\n    command:\n      - ls\n      - {x: 1}\n')).toBe(at(5, 'service "a": command: item 2 must be a string, not a map'));
    expect(fails('services:\n  a:\n    command: [ls, null]\n')).toBe(at(3, 'service "a": command: item 2 must be a string, not nothing'));
    expect(fails('services:\n  a:\n    command: ["", x]\n')).toBe(at(3, 'service "a": command: the program (item 1) is empty'));
    expect(fails('services:\n  a:\n    command: "ls\\0 -l"\n')).toBe(at(3, 'service "a": command holds a NUL character'));
    expect(fails('services:\n  a:\n    command: [ls, "a\\0b"]\n')).toBe(at(3, 'service "a": command: item 2 holds a NUL character'));
    expect(svc('services:\n  a:\n    command: [sleep, 10, true]\n').command).toEqual(['sleep', '10', 'true']);
  });

  it('replicas must be an integer from 1 to 32', () => {
    for (const v of ['0', '33', '1.5', '"2"', '-1', '[2]']) expect(fails(one(`    replicas: ${v}\n`))).toMatch(new RegExp(`^${FILE}:4: service "a": replicas must be an integer from 1 to 32, not `));
    expect(svc(one('    replicas: 32\n')).replicas).toBe(32);
  });

  it('ip: a vip literal without a zone, not shared by two services (however it is spelt)', () => {
    expect(fails(one('    ip: 10.1.0.300\n'))).toBe(at(4, 'service "a": ip must be an IPv4 or IPv6 address (a vip, without a zone), not a string ("10.1.0.300")'));
    expect(fails(one('    ip: fe80::1%eth0\n'))).toMatch(new RegExp(`^${FILE}:4: service "a": ip must be an IPv4 or IPv6 address`));
    expect(fails(one('    ip: 10\n'))).toMatch(new RegExp(`^${FILE}:4: service "a": ip must be`));
    const two = (x: string, y: string): string => `services:\n  a:\n    command: x\n    ip: "${x}"\n  b:\n    command: y\n    ip: "${y}"\n`;
    expect(fails(two('10.1.0.5', '10.1.0.5'))).toBe(at(7, 'service "b": ip 10.1.0.5 is already the ip of service "a"'));
    expect(fails(two('fd00::5', 'fd00:0::0005'))).toBe(at(7, 'service "b": ip fd00:0::0005 is already the ip of service "a"'));
  });

  it('tags: as appswitch run --tag accepts them; project is reserved', () => {
    expect(fails(one('    tags: {project: x}\n'))).toBe(at(4, 'service "a": tags: the tag "project" is reserved (appswitch up sets project=NAME on every service)'));
    expect(fails(one('    tags:\n      ok: 1\n      tier: "a b"\n'))).toBe(
      at(6, 'service "a": tags: bad tag "tier=a b" (a key of 1-63 letters, digits or _ . - /, a value of up to 63 of those or :)'),
    );
    expect(fails(one('    tags: ["a=b", "x=1=2"]\n'))).toMatch(new RegExp(`^${FILE}:4: service "a": tags: bad tag "x=1=2"`));
    expect(fails(one('    tags: [tier]\n'))).toBe(at(4, 'service "a": tags: each item must be a string "KEY=VALUE", not a string ("tier")'));
    expect(fails(one('    tags:\n      tier:\n'))).toBe(at(5, 'service "a": tags: tag "tier" has no value (write "" for an empty one)'));
    expect(fails(one('    tags: [a=1, a=2]\n'))).toBe(at(4, 'service "a": tags: the tag "a" is given twice'));
    expect(fails(one('    tags: "a=1"\n'))).toBe(at(4, 'service "a": tags must be a map (KEY: VALUE) or a list of "KEY=VALUE", not a string ("a=1")'));
    expect(fails(one(`    tags: {${'k'.repeat(64)}: v}\n`))).toMatch(/bad tag/);
    /* never dropped silently (it would set the prototype of a plain object): refused, as the daemon's parseTags does */
    expect(fails(one('    tags: {__proto__: x}\n'))).toMatch(/bad tag "__proto__=x"/);
    expect(svc(one('    tags: {a/b.c: "x:1", n: 5, e: ""}\n')).tags).toEqual({ 'a/b.c': 'x:1', n: '5', e: '' });
  });

  it('env: names [A-Za-z_][A-Za-z0-9_]*, scalar values, no null, no NUL', () => {
    expect(fails(one('    env: {1X: a}\n'))).toBe(at(4, 'service "a": env: "1X" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)'));
    expect(fails(one('    env:\n      A-B: 1\n'))).toBe(at(5, 'service "a": env: "A-B" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)'));
    expect(fails(one('    env:\n      1X: a\n      B:\n'))).toBe(at(5, 'service "a": env: "1X" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)'));
    expect(fails(one('    env:\n      A: 1\n      B:\n'))).toBe(at(6, 'service "a": env: variable "B" has no value (write "" for an empty one)'));
    expect(fails(one('    env: {A: [1]}\n'))).toBe(at(4, 'service "a": env: variable "A" must be a string, number or boolean, not a list'));
    expect(fails(one('    env: {A: "x\\0y"}\n'))).toBe(at(4, 'service "a": env: the value of A holds a NUL character'));
    expect(fails(one('    env: [A=1, A=2]\n'))).toBe(at(4, 'service "a": env: A is given twice'));
    expect(fails(one('    env: [=1]\n'))).toBe(at(4, 'service "a": env: "" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)'));
    expect(svc(one('    env: [A=, B=x y]\n')).env).toEqual({ A: '', B: 'x y' });
    /* a variable named like an Object.prototype property is an ordinary variable */
    const env = svc(one('    env: {__proto__: p, constructor: c}\n')).env;
    expect(Object.getPrototypeOf(env)).toBe(Object.prototype);
    expect(Object.entries(env)).toEqual([
      ['__proto__', 'p'],
      ['constructor', 'c'],
    ]);
    expect(svc(one('    env: [__proto__=p]\n')).env).toHaveProperty(['__proto__'], 'p');
  });

  it('cwd: must exist and be a directory, relative to the file', () => {
    expect(fails(one('    cwd: ./nope\n'))).toBe(at(4, `service "a": cwd ${join(dir, 'nope')} does not exist`));
    expect(fails(one('    cwd: README\n'))).toBe(at(4, `service "a": cwd ${join(dir, 'README')} is not a directory`));
    expect(fails(one('    cwd: ""\n'))).toMatch(new RegExp(`^${FILE}:4: service "a": cwd must be a directory`));
    expect(fails(one('    cwd: "a\\0b"\n'))).toBe(at(4, 'service "a": cwd holds a NUL character'));
    expect(svc(one('    cwd: api/../api\n')).cwd).toBe(join(dir, 'api'));
  });

  it('ports: [HOSTPORT:]PORT, 1..65535, no host port twice in the file', () => {
    const rule = 'each item must be [HOSTPORT:]PORT with ports from 1 to 65535 (a number or a string like "18080:8080")';
    expect(fails(one('    ports: [0]\n'))).toBe(at(4, `service "a": ports: ${rule}, not a number (0)`));
    expect(fails(one('    ports:\n      - 80\n      - 70000\n'))).toBe(at(6, `service "a": ports: ${rule}, not a number (70000)`));
    for (const bad of ['"a:80"', '"1:2:3"', '"80:"', '8.5', '{a: 1}']) expect(fails(one(`    ports: [${bad}]\n`))).toMatch(new RegExp(`^${FILE}:4: service "a": ports: each item`));
    expect(fails(one('    ports: "80"\n'))).toBe(at(4, 'service "a": ports must be a list of [HOSTPORT:]PORT, not a string ("80")'));
    expect(fails(one('    ports: [80, "80:8080"]\n'))).toBe(at(4, 'service "a": ports: host port 80 is given twice'));
    const text = 'services:\n  a:\n    command: x\n    ports: ["18080:8080"]\n  b:\n    command: y\n    ports:\n      - 9000\n      - 18080\n';
    expect(fails(text)).toBe(at(9, 'service "b": ports: host port 18080 is already taken by service "a"'));
    const many = `[${Array.from({ length: 33 }, (_, i) => 1000 + i).join(', ')}]`;
    expect(fails(one(`    ports: ${many}\n`))).toBe(at(4, 'service "a": ports: at most 32 ports per service'));
  });

  it('durations: seconds or ms|s|m, more than 0 and at most an hour', () => {
    expect(parseDuration(0.5)).toBe(500);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('1m')).toBe(60_000);
    expect(parseDuration('60m')).toBe(3_600_000);
    expect(parseDuration(3600)).toBe(3_600_000);
    for (const bad of [0, -1, 3601, '61m', '0s', '0.0001s', '5', '5x', '1.5 s', '1h', ' 1s', '', true, null, Infinity, NaN, '1e3s']) {
      expect(parseDuration(bad)).toBeUndefined();
    }
    const rule = 'must be a duration: a number of seconds or a string like "500ms", "2s", "1.5s" or "1m", more than 0 and at most 1 hour';
    expect(fails(one('    stop_timeout: 2h\n'))).toBe(at(4, `service "a": stop_timeout ${rule}, not a string ("2h")`));
    expect(fails(one('    ready:\n      tcp: 80\n      timeout: 0\n'))).toBe(at(6, `service "a": ready.timeout ${rule}, not a number (0)`));
  });

  it('ready: exactly one of tcp, http, command; path only with http, starting with / and no space or control character', () => {
    expect(fails(one('    ready:\n      tcp: 80\n      http: 80\n'))).toBe(at(6, 'service "a": ready has both tcp and http: give exactly one of tcp, http or command'));
    expect(fails(one('    ready: {interval: 1s}\n'))).toBe(at(4, 'service "a": ready needs one of tcp: PORT, http: PORT or command: COMMAND'));
    expect(fails(one('    ready: {tcp: 80, path: /x}\n'))).toBe(at(4, 'service "a": ready.path goes only with ready.http'));
    expect(fails(one('    ready: {http: 80, path: health}\n'))).toMatch(new RegExp(`^${FILE}:4: service "a": ready.path must be a URL path starting with "/"`));
    /* header injection through the request line */
    expect(fails(one('    ready: {http: 80, path: "/x HTTP/1.1\\r\\nHost: evil\\r\\n"}\n'))).toMatch(/ready\.path must be a URL path/);
    expect(fails(one('    ready: {http: 80, path: "/a b"}\n'))).toMatch(/ready\.path must be a URL path/);
    expect(fails(one('    ready: {http: 0}\n'))).toBe(at(4, 'service "a": ready.http must be a port from 1 to 65535, not a number (0)'));
    expect(fails(one('    ready: {tcp: "x"}\n'))).toBe(at(4, 'service "a": ready.tcp must be a port from 1 to 65535, not a string ("x")'));
    expect(fails(one('    ready: 8080\n'))).toMatch(new RegExp(`^${FILE}:4: service "a": ready must be a map with one of tcp, http or command`));
    expect(svc(one('    ready: {http: "8080"}\n')).ready).toEqual({ check: { kind: 'http', port: 8080, path: '/' }, intervalMs: 500, timeoutMs: 60_000 });
    expect(svc(one('    ready: {command: [redis-cli, ping]}\n')).ready?.check).toEqual({ kind: 'command', command: ['redis-cli', 'ping'] });
  });

  it('depends_on: known services, not itself, not twice, no cycle (named)', () => {
    const two = 'services:\n  web:\n    command: x\n    depends_on: [cach]\n  cache:\n    command: y\n';
    expect(fails(two)).toBe(at(4, 'service "web" depends on "cach", which is not a service in this file (did you mean "cache"?)'));
    expect(fails('services:\n  web:\n    command: x\n    depends_on:\n      - db\n')).toBe(at(5, 'service "web" depends on "db", which is not a service in this file'));
    expect(fails('services:\n  web:\n    command: x\n    depends_on: [web]\n')).toBe(at(4, 'service "web" depends on itself'));
    expect(fails('services:\n  web:\n    command: x\n    depends_on: [a, a]\n  a:\n    command: y\n')).toBe(at(4, 'service "web": depends_on: "a" is given twice'));
    const cycle = 'services:\n  web:\n    command: x\n    depends_on:\n      - api\n  api:\n    command: y\n    depends_on: [web]\n';
    expect(fails(cycle)).toBe(at(5, 'dependency cycle: web -> api -> web'));
    /* the walk starts outside the cycle; the message still starts at the cycle's first service in the file */
    const three =
      'services:\n  x:\n    command: x\n    depends_on: [c]\n  a:\n    command: x\n    depends_on: {b: {condition: ready}}\n' +
      '  b:\n    command: x\n    depends_on: [c]\n  c:\n    command: x\n    depends_on: [ok, a]\n  ok:\n    command: x\n';
    expect(fails(three)).toBe(at(7, 'dependency cycle: a -> b -> c -> a'));
    expect(fails('services:\n  a:\n    command: x\n    depends_on: {b: {condition: healthy}}\n  b:\n    command: y\n')).toBe(
      at(4, 'service "a": depends_on: the condition of "b" must be ready or started, not a string ("healthy")'),
    );
    expect(fails('services:\n  a:\n    command: x\n    depends_on: {b: ready}\n  b:\n    command: y\n')).toBe(
      at(4, 'service "a": depends_on: "b" must be {condition: ready} or {condition: started}, not a string ("ready")'),
    );
    expect(fails('services:\n  a:\n    command: x\n    depends_on: b\n  b:\n    command: y\n')).toMatch(/depends_on must be a list of service names or a map/);
    const big = 3000;
    let ring = 'services:\n';
    for (let i = 0; i < big; i++) ring += `  s${i}:\n    command: x\n    depends_on: [s${(i + 1) % big}]\n`;
    expect(fails(ring)).toMatch(new RegExp(`^${FILE}:4: dependency cycle: s0 -> s1 -> .* -> s${big - 1} -> s0$`));
  });

  it('restart: no, on-failure or always', () => {
    expect(fails(one('    restart: sometimes\n'))).toBe(at(4, 'service "a": restart must be no, on-failure or always, not a string ("sometimes")'));
    expect(fails(one('    restart: true\n'))).toBe(at(4, 'service "a": restart must be no, on-failure or always, not a boolean (true)'));
    expect(svc(one('    restart: "no"\n')).restart).toBe('no');
  });

  it('the first problem in the file wins', () => {
    const text = 'services:\n  a:\n    replicas: 0\n    comand: x\n  b:\n    command: y\n    depends_on: [zz]\n    ports: [0]\n';
    expect(fails(text)).toBe(at(3, 'service "a": replicas must be an integer from 1 to 32, not a number (0)'));
    const typo = 'services:\n  a:\n    comand: x\n    replicas: 0\n';
    expect(fails(typo)).toMatch(new RegExp(`^${FILE}:3: unknown key "comand"`));
    expect(fails('services:\n  a:\n    command: x\n    replicas: 0\n    command: y\n')).toMatch(new RegExp(`^${FILE}:4: service "a": replicas`));
    expect(fails('services:\n  a:\n    command: x\n    ip: nope\n    env: *undefined\n')).toMatch(new RegExp(`^${FILE}:4: service "a": ip`));
    /* per service, then across services: an unknown dependency is known only once every service is read */
    const deps = 'services:\n  a:\n    command: x\n    depends_on: [zz]\n  b:\n    command: y\n    ports: [0]\n';
    expect(fails(deps)).toMatch(new RegExp(`^${FILE}:7: service "b": ports`));
  });
});

describe('finding and reading the file', () => {
  it('findProjectFile: appswitch.yaml, else appswitch.yml, else a clear error', () => {
    const d = join(root, 'find');
    mkdirSync(d);
    let err: unknown;
    try {
      findProjectFile(d);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AppswitchError);
    expect((err as AppswitchError).code).toBe('ERR_CONFIG');
    expect((err as Error).message).toBe(`no appswitch.yaml in ${d} (or give -f FILE)`);
    writeFileSync(join(d, 'appswitch.yml'), 'x');
    expect(findProjectFile(d)).toBe(join(d, 'appswitch.yml'));
    writeFileSync(join(d, 'appswitch.yaml'), 'x');
    expect(findProjectFile(d)).toBe(join(d, 'appswitch.yaml'));
  });

  it('loadProject refuses what it cannot read, directories, FIFOs (without hanging) and oversized files', () => {
    const d = join(root, 'load');
    mkdirSync(d);
    const code = (f: string): string => {
      try {
        loadProject(f);
      } catch (e) {
        expect(e).toBeInstanceOf(AppswitchError);
        expect((e as AppswitchError).code).toBe('ERR_CONFIG');
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(code(join(d, 'missing.yaml'))).toBe(`cannot read ${join(d, 'missing.yaml')}: no such file`);
    expect(code(d)).toBe(`cannot read ${d}: not a regular file`);
    execFileSync('mkfifo', [join(d, 'fifo')]);
    expect(code(join(d, 'fifo'))).toBe(`cannot read ${join(d, 'fifo')}: not a regular file`);
    writeFileSync(join(d, 'big.yaml'), `# ${'x'.repeat(MAX_FILE_BYTES)}\n`);
    expect(code(join(d, 'big.yaml'))).toBe(`cannot read ${join(d, 'big.yaml')}: larger than ${MAX_FILE_BYTES} bytes`);
    writeFileSync(join(d, 'bad.yaml'), 'services:\n  a:\n    comand: x\n');
    expect(code(join(d, 'bad.yaml'))).toMatch(new RegExp(`^${join(d, 'bad.yaml')}:3: unknown key "comand"`));
  });
});

describe('fuzz: any input gives a ProjectSpec or one ComposeFileError line', () => {
  /** xorshift32, seeded: the same inputs on every run. */
  function rng(seed: number): () => number {
    let x = seed >>> 0 || 1;
    return () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 0x1_0000_0000;
    };
  }

  /** Parses `text`; returns 'ok' or 'error', failing the test on anything but a ProjectSpec or a well-formed error. */
  function outcome(text: string): 'ok' | 'error' {
    try {
      const p = parseProject(text, FILE);
      expect(p.services.length).toBeGreaterThan(0);
      return 'ok';
    } catch (e) {
      if (!(e instanceof ComposeFileError)) throw new Error(`not a ComposeFileError for ${JSON.stringify(text)}: ${String((e as Error)?.stack ?? e)}`);
      const msg = e.message;
      if (!/^.+:\d+: .+$/.test(msg) || /[\n\r\u2028\u2029]/.test(msg)) throw new Error(`bad message ${JSON.stringify(msg)} for ${JSON.stringify(text)}`);
      const line = Number(/:(\d+): /.exec(msg.slice(FILE.length))?.[1]);
      expect(line).toBeGreaterThanOrEqual(1);
      expect(line).toBeLessThanOrEqual(text.split(/\r\n|\r|\n/).length + 1);
      return 'error';
    }
  }

  it('random byte strings', () => {
    const r = rng(0xc0ffee);
    let errors = 0;
    for (let i = 0; i < 1500; i++) {
      const bytes = Buffer.alloc(Math.floor(r() * 200), 0);
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(r() * 256);
      if (outcome(bytes.toString(r() < 0.5 ? 'utf8' : 'latin1')) === 'error') errors++;
    }
    expect(errors).toBeGreaterThan(1400);
  });

  it('random mutations of a valid file', () => {
    const r = rng(0x5eed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
    const tokens = [':', '-', ' ', '  ', '\n', '\t', '[', ']', '{', '}', ',', '"', "'", '#', '&a', '*a', '!!str', '!x', '?', '|', '>', '0', '65536', '-1', '~', 'null', 'true', '\\0', '\u2028', '=', 'x'];
    const keys = ['command: x', 'ip: 10.1.0.5', 'replicas: 2', 'ports: [80]', 'ready: {tcp: 1}', 'depends_on: [web]', 'restart: always', 'cwd: ./api', 'env: {A: 1}', 'tags: {a: b}'];
    let ok = 0;
    let errors = 0;
    for (let i = 0; i < 2500; i++) {
      let text = FULL;
      const edits = 1 + Math.floor(r() * 4);
      for (let k = 0; k < edits; k++) {
        const pos = Math.floor(r() * text.length);
        const kind = r();
        if (kind < 0.3) text = text.slice(0, pos) + text.slice(pos + 1 + Math.floor(r() * 8));
        else if (kind < 0.6) text = text.slice(0, pos) + pick(tokens) + text.slice(pos);
        else if (kind < 0.75) {
          const lines = text.split('\n');
          const a = Math.floor(r() * lines.length);
          const b = Math.floor(r() * lines.length);
          [lines[a], lines[b]] = [lines[b] as string, lines[a] as string];
          text = lines.join('\n');
        } else if (kind < 0.9) {
          const lines = text.split('\n');
          lines.splice(Math.floor(r() * lines.length), 0, `    ${pick(keys)}`);
          text = lines.join('\n');
        } else text = text.slice(0, pos) + String.fromCharCode(Math.floor(r() * 0x3000)) + text.slice(pos + 1);
      }
      if (outcome(text) === 'ok') ok++;
      else errors++;
    }
    /* both ends are exercised: some mutations stay valid, most do not */
    expect(ok).toBeGreaterThan(50);
    expect(errors).toBeGreaterThan(500);
  });
});

describe('the loader\'s dependencies', () => {
  /** The loader only reads a file: it never reaches the daemon, the CLI or the native addon (the supervisor does). */
  const LOADER = ['types.ts', 'file.ts', 'file-error.ts', 'yaml-reader.ts', 'service-spec.ts', 'start-order.ts', 'durations.ts'];
  const ALLOWED = new RegExp(`^(node:[a-z_/]+|yaml|ipaddr\\.js|\\.\\./errors\\.js|\\.\\./edit-distance\\.js|\\.\\./trap/apps\\.js|\\.\\./gateway/exposures\\.js|\\./(${LOADER.map((f) => f.replace('.ts', '').replace('.', '\\.')).join('|')})\\.js)$`);

  it('imports only node built-ins, yaml, ipaddr.js, errors, the tag and port rules, and itself', () => {
    const bad: string[] = [];
    let seen = 0;
    for (const f of LOADER) {
      const text = readFileSync(join(import.meta.dirname, '../../src/compose', f), 'utf8');
      for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)) {
        seen++;
        if (!ALLOWED.test(m[1] ?? '')) bad.push(`${f}: ${m[1]}`);
      }
    }
    expect(seen).toBeGreaterThan(15);
    expect(bad).toEqual([]);
    expect(ALLOWED.test('../daemon/daemon.js')).toBe(false);
    expect(ALLOWED.test('./supervisor.js')).toBe(false);
  });
});
