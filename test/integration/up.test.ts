/** Issue 14, `appswitch up`: the examples/shop app (redis, a Python api with 2 replicas, a Node web app calling both
 * by name) brought up detached, an end-to-end request through it, its logs prefixed, one service restarted and one
 * stopped while the others keep serving, then `down` leaves no process and no network namespace behind. Also: a
 * dependency that never becomes ready keeps its dependents from starting (and `up -d` says so in its exit status);
 * a foreground `up` streams prefixed (and, on a terminal, coloured) logs and stops everything on Ctrl-C with an
 * exit status that tells whether a service failed; two projects with the same service names do not collide; a
 * malformed appswitch.yaml is one line of error with file and line. Real daemon in a namespace, real programs. */
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, finish, killTree, type Result, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const tag = (process.pid % 100000).toString();
const SHOP = path.join(ROOT, 'examples/shop');
let h: TestHost;
let work: string;

interface Row {
  service: string;
  name: string;
  state: string;
  pid: number | null;
  restarts: number;
}
interface App {
  pid: number | null;
  name: string | null;
  tags: Record<string, string>;
}

const up = (args: string[], cwd: string, timeoutMs = 90_000): Promise<Result> => h.exec(['node', CLI, ...args], timeoutMs, { cwd, env: { NO_COLOR: '1' } });

async function ps(project: string): Promise<Row[]> {
  const r = await h.cli(['ps', '-p', project, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Row[];
}

async function projectApps(project: string): Promise<App[]> {
  const r = await h.cli(['get', 'apps', '--json']);
  return (JSON.parse(r.stdout) as App[]).filter((a) => a.tags.project === project && a.name !== null);
}

/** The network namespace of a process ("net:[4026532...]"), or undefined once it is gone. */
function netnsOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** Holds the network namespace of `pid` open (its fd into `held`) and returns its name (net:[inode]): a namespace's
 * inode number is reused once the namespace is gone, and another test's new program may get it meanwhile. */
function holdNetns(pid: number, held: number[]): string | undefined {
  const n = netnsOf(pid);
  if (n === undefined) return undefined;
  try {
    held.push(openSync(`/proc/${pid}/ns/net`, 'r'));
  } catch {
    return undefined; /* gone meanwhile */
  }
  return netnsOf(pid) === n ? n : undefined;
}

/** Processes anywhere on the machine still in one of `namespaces`. */
function processesIn(namespaces: Set<string>): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const ns = netnsOf(Number(d));
    if (ns && namespaces.has(ns)) out.push(Number(d));
  }
  return out;
}

const alive = (pid: number): boolean => existsSync(`/proc/${pid}`);

/** "PID (comm) state S ppid P pgrp G: cmdline" for each pid still there, so that a process left behind says what
 * it is. */
function describeAll(pids: number[]): string[] {
  return pids.flatMap((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [, comm, rest] = /^\d+ \((.*)\) (.*)$/s.exec(stat) ?? [];
      const f = (rest ?? '').split(' ');
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      return [`${pid} (${comm}) state ${f[0]} ppid ${f[1]} pgrp ${f[2]}: ${cmd}`];
    } catch {
      return []; /* gone meanwhile */
    }
  });
}

/** A project directory under the test's work dir with an appswitch.yaml of `lines`; returns its path. */
function projectDir(name: string, lines: string[]): string {
  const dir = path.join(work, name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(path.join(dir, 'appswitch.yaml'), [...lines, ''].join('\n'));
  return dir;
}

async function shopGet(project: string): Promise<{ visits: number; api_instance: string }> {
  const r = await h.runToEnd(['--project', project], ['curl', '-s', '-m', '5', '-f', 'http://web:8080/']);
  expect(r.code, `curl: ${r.stdout} ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as { visits: number; api_instance: string };
}

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'appswitch-up-'));
  chmodSync(work, 0o755);
  h = TestHost.create(`up${tag}`, '192.0.2.1');
  await h.startDaemon([]);
}, 30_000);

afterAll(async () => {
  for (const p of [`shop${tag}`, `dep${tag}`, `fg${tag}`, `pa${tag}`, `pb${tag}`]) {
    await h?.cli(['down', '-p', p], 60_000).catch(() => undefined);
  }
  await h?.destroy();
  rmSync(work, { recursive: true, force: true });
});

describe('appswitch up, the shop example', () => {
  const P = `shop${tag}`;

  it('starts in dependency order, serves by name across replicas, restarts and stops one service, and down leaves nothing', async () => {
    const r = await up(['up', '-d', '-p', P], SHOP);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    /* web's `ports: ["18080:8080"]` cannot be reached: this daemon is no gateway; `up -d` says so, not only the logs */
    expect(r.stdout).toMatch(/^port 18080 -> [\d.]+:8080: no-gateway \(.*--gateway\)$/m);
    const rows = await ps(P);
    expect(rows.map((x) => x.name).sort()).toEqual(['api-1', 'api-2', 'cache', 'web']);
    for (const x of rows) expect(x.state, x.name).toBe('ready');

    /* the supervisor's notes: web started only after both of its dependencies were ready */
    const notes = (await h.cli(['logs', '-p', P])).stdout.split('\n');
    const at = (s: string): number => notes.findIndex((l) => l === `» ${s}`);
    expect(at('web: starting')).toBeGreaterThan(at('api: ready'));
    expect(at('web: starting')).toBeGreaterThan(at('cache: ready'));
    expect(at('api: ready')).toBeGreaterThan(-1);
    expect(at('cache: ready')).toBeGreaterThan(-1);

    /* end to end: a client of the project asks web (by its bare name), which asks api and cache by theirs */
    const seen = new Set<string>();
    let last = 0;
    for (let i = 0; i < 6; i++) {
      const g = await shopGet(P);
      expect(g.visits).toBe(last + 1);
      last = g.visits;
      seen.add(g.api_instance);
    }
    expect(seen.size).toBe(2); /* both replicas answered */

    /* logs: each line prefixed with its instance's name */
    const apiLogs = (await h.cli(['logs', '-p', P, 'api'])).stdout.trim().split('\n');
    expect(apiLogs.length).toBeGreaterThan(2);
    for (const l of apiLogs) expect(l).toMatch(/^(api-1|api-2|») /);
    expect(apiLogs.some((l) => l.startsWith('api-1 | '))).toBe(true);
    expect(apiLogs.some((l) => l.startsWith('api-2 | '))).toBe(true);

    const before = await projectApps(P);
    const held: number[] = []; /* the project's namespaces, held open until the end (holdNetns) */
    const namespaces = new Set(before.map((a) => holdNetns(a.pid as number, held)).filter((n): n is string => n !== undefined));
    expect(namespaces.size).toBe(4);
    const oldApi = rows.filter((x) => x.service === 'api').map((x) => x.pid as number);
    const oldWeb = rows.find((x) => x.service === 'web')?.pid as number;

    /* restart api: new processes, the old ones gone, web untouched and still serving */
    const rs = await h.cli(['restart', '-p', P, 'api'], 60_000);
    expect(rs.code, rs.stdout + rs.stderr).toBe(0);
    const afterRestart = await ps(P);
    for (const x of afterRestart.filter((y) => y.service === 'api')) {
      expect(x.state).toBe('ready');
      expect(x.restarts).toBe(1);
      expect(oldApi).not.toContain(x.pid);
    }
    for (const pid of oldApi) expect(alive(pid)).toBe(false);
    expect(afterRestart.find((x) => x.service === 'web')?.pid).toBe(oldWeb);
    expect((await shopGet(P)).visits).toBe(last + 1);

    /* stop cache: web answers 502 naming the cache, the rest keeps running; start it again */
    const st = await h.cli(['stop', '-p', P, 'cache'], 60_000);
    expect(st.code, st.stderr).toBe(0);
    expect((await ps(P)).find((x) => x.service === 'cache')?.state).toBe('stopped');
    const bad = await h.runToEnd(['--project', P], ['curl', '-s', '-m', '5', 'http://web:8080/']);
    expect(bad.stdout).toMatch(/cache/);
    expect((await ps(P)).filter((x) => x.state === 'ready').map((x) => x.name).sort()).toEqual(['api-1', 'api-2', 'web']);
    expect((await h.cli(['start', '-p', P, 'cache'], 60_000)).code).toBe(0);
    expect((await shopGet(P)).visits).toBe(1); /* a new redis, counting from 1 */

    const all = (await projectApps(P)).map((a) => a.pid as number);
    for (const a of await projectApps(P)) {
      const n = holdNetns(a.pid as number, held);
      if (n) namespaces.add(n);
    }
    const launchers = (await ps(P)).map((x) => x.pid as number);
    const d = await h.cli(['down', '-p', P], 60_000);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toContain(`project ${P} is down`);
    for (const pid of [...all, ...launchers, oldWeb]) expect(alive(pid), `pid ${pid}`).toBe(false);
    try {
      expect(describeAll(processesIn(namespaces))).toEqual([]);
    } finally {
      for (const fd of held) closeSync(fd);
    }
    expect(await projectApps(P)).toEqual([]);
    expect((await h.cli(['ps', '-p', P])).code).not.toBe(0);
  }, 180_000);
});

describe('appswitch up, readiness and failures', () => {
  it('does not start a service whose dependency is not ready, and says so in its exit status', async () => {
    const marker = path.join(work, `started-${tag}`);
    const dir = projectDir('dep', [
      `name: dep${tag}`,
      'services:',
      '  db:',
      '    command: sleep 300',
      '    ready: {tcp: 5432, timeout: 3s, interval: 200ms}',
      '  app:',
      `    command: touch ${marker}; sleep 300`,
      '    depends_on: [db]',
    ]);
    const r = await up(['up', '-d'], dir);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const rows = await ps(`dep${tag}`);
    expect(rows.find((x) => x.name === 'db')?.state).toBe('failed');
    const app = rows.find((x) => x.name === 'app');
    expect(app?.state).toBe('blocked');
    expect(app?.pid).toBeNull();
    expect(r.stdout).toMatch(/blocked: db is not ready/);
    expect(existsSync(marker)).toBe(false);
    expect((await h.cli(['down', '-p', `dep${tag}`], 60_000)).code).toBe(0);
    expect(existsSync(marker)).toBe(false);
  }, 90_000);

  it('runs in the foreground with prefixed logs; Ctrl-C stops every service, exit 1 when one failed', async () => {
    const dir = projectDir('fg', [
      `name: fg${tag}`,
      'services:',
      '  talker:',
      '    command: while true; do echo "tick $$"; sleep 0.3; done',
      '  quitter:',
      '    command: echo leaving; exit 3',
    ]);
    for (const color of [false, true]) {
      const p = h.spawn(['node', CLI, 'up'], { cwd: dir, env: color ? { FORCE_COLOR: '1' } : { NO_COLOR: '1' } });
      let out = '';
      p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
      p.stderr?.on('data', (b: Buffer) => (out += b.toString()));
      try {
        await waitFor(() => /tick/.test(out) && /quitter: exited with code 3/.test(out), 30_000, 100);
        const lines = out.split('\n');
        if (color) {
          expect(lines.some((l) => /^\x1b\[\d+mtalker  \|\x1b\[0m tick \d+$/.test(l))).toBe(true);
        } else {
          expect(lines).toContain('quitter | leaving');
          expect(lines.some((l) => /^talker {2}\| tick \d+$/.test(l))).toBe(true);
        }
        const talker = (await ps(`fg${tag}`)).find((x) => x.name === 'talker')?.pid as number;
        expect((await ps(`fg${tag}`)).find((x) => x.name === 'quitter')?.state).toBe('crashed');
        p.kill('SIGINT'); /* what a terminal's Ctrl-C sends to the foreground process */
        const res = await finish(p, 30_000);
        expect(res.code).toBe(1);
        expect(out + res.stdout).toMatch(/stopping project/);
        expect(alive(talker)).toBe(false);
      } finally {
        killTree(p, 'SIGKILL');
      }
    }
  }, 90_000);
});

describe('appswitch up, projects side by side', () => {
  it('scopes names per project: the bare name resolves inside its own project, NAME.PROJECT from anywhere', async () => {
    for (const p of ['pa', 'pb']) {
      const dir = projectDir(p, [`name: ${p}${tag}`, 'services:', '  api:', '    command: python3 -m http.server 8080', '    ready: {http: 8080}']);
      writeFileSync(path.join(dir, 'index.html'), `this is ${p}\n`);
      const r = await up(['up', '-d'], dir);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    }
    for (const p of ['pa', 'pb']) {
      const own = await h.runToEnd(['--project', `${p}${tag}`], ['curl', '-s', '-m', '5', 'http://api:8080/index.html']);
      expect(own.stdout).toBe(`this is ${p}\n`);
    }
    const other = await h.runToEnd(['--tag', `project=pb${tag}`], ['curl', '-s', '-m', '5', `http://api.pb${tag}:8080/index.html`]);
    expect(other.stdout).toBe('this is pb\n');
    /* another project's apps are not reachable: they share no tag */
    const denied = await h.runToEnd(['--project', `pa${tag}`], ['curl', '-s', '-m', '5', `http://api.pb${tag}:8080/index.html`]);
    expect(denied.code).not.toBe(0);
    expect((await h.cli(['down', '-p', `pa${tag}`], 60_000)).code).toBe(0);

    /* a supervisor killed with SIGKILL leaves its programs running: `down` finds them through the daemon and stops them */
    const sup = (await h.cli(['ps', '-p', `pb${tag}`, '--json'])).stdout;
    const launcher = (JSON.parse(sup) as Row[])[0]?.pid as number;
    const supervisorPid = Number(readFileSync(`/run/appswitch-projects/pb${tag}/supervisor.pid`, 'utf8'));
    process.kill(supervisorPid, 'SIGKILL');
    await waitFor(() => !alive(supervisorPid), 5000);
    expect(alive(launcher)).toBe(true);
    const d = await h.cli(['down', '-p', `pb${tag}`], 60_000);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/1 programs its supervisor left are stopped/);
    await waitFor(() => !alive(launcher), 5000);
    expect(await projectApps(`pb${tag}`)).toEqual([]);
    expect(existsSync(`/run/appswitch-projects/pb${tag}`)).toBe(false);
  }, 120_000);

  it('refuses a project name that is not a DNS label (it names a directory that down removes)', async () => {
    for (const bad of ['..', 'a/b', '../../tmp']) {
      const r = await h.cli(['down', '-p', bad]);
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(/must be one lower-case DNS label/);
    }
    expect(existsSync('/run/appswitch-projects')).toBe(true);
  });

  it('refuses a malformed appswitch.yaml with one line naming the file and line', async () => {
    const dir = projectDir('bad', ['services:', '  api:', '    command: python3 app.py', '    replicaz: 2']);
    const r = await up(['up', '-d'], dir);
    expect(r.code).toBe(125);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^appswitch: .*appswitch\.yaml:4: unknown key "replicaz"/);
  }, 30_000);
});
