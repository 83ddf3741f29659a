/** Test hosts: network namespaces that a test creates and removes, each with its own appswitch daemon.
 * Every namespace has only lo and one veth end with a TEST-NET-1 address; nothing routes off the machine.
 * A route for the virtual range points at a static neighbour on the host's own veth, so that a vip leaking to
 * the wire would be visible to a capture on that interface (and go nowhere). Everything a host starts is killed,
 * and the namespace deleted, on destroy() and again at process exit. */
import { type ChildProcess, execFileSync, spawn, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from test/helpers or, compiled for bench/, from dist/test/helpers). */
export const ROOT = ((): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'binding.gyp')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
export const CLI = path.join(ROOT, 'bin/appswitch.js');

const live = new Set<TestHost>();
process.on('exit', () => {
  for (const h of live) h.destroySync();
});

let counter = 0;

function ip(...a: string[]): void {
  execFileSync('ip', a, { stdio: 'pipe' });
}

/** A network segment: a namespace holding a Linux bridge that test hosts plug into. No route leaves it. */
export class TestBridge {
  readonly ns: string;
  private ports = 0;
  private readonly hosts: TestHost[] = [];
  /** The cluster key of this segment: every host on it gets a copy at STATE-DIR/gossip.key (see startDaemon). */
  readonly keyFile: string;

  constructor(tag: string) {
    this.ns = `as-${tag}-br-${process.pid}-${++counter}`;
    this.keyFile = path.join(mkdtempSync(path.join(tmpdir(), 'appswitch-key-')), 'gossip.key');
    writeFileSync(this.keyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    ip('netns', 'add', this.ns);
    liveBridges.add(this);
    ip('-n', this.ns, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', this.ns, 'link', 'set', 'br0', 'up');
  }

  nextPort(): string {
    return `p${++this.ports}`;
  }

  /** Creates n more hosts on this bridge, numbered on from the last (192.0.2.1, .2, ...); returns the new ones. */
  hostsOf(tag: string, n: number): TestHost[] {
    const made: TestHost[] = [];
    for (let i = 1; i <= n; i++) {
      const h = TestHost.create(`${tag}${i}`, `192.0.2.${this.hosts.length + 1}`, this);
      this.hosts.push(h);
      made.push(h);
    }
    return made;
  }

  /** A host of the world outside the application network: a namespace on this segment that runs no appswitch, at
   * `address`/24 (default 198.51.100.<n>, a subnet no appswitch host has an address in: give a gateway one with
   * TestHost.addAddress). Tests start plain servers and clients in it (spawn, exec); it is removed with the bridge. */
  outside(tag = 'out', address?: string): TestHost {
    const h = TestHost.create(tag, address ?? `198.51.100.${10 + this.outsides++}`, this);
    this.hosts.push(h);
    return h;
  }

  private outsides = 0;

  /** Cuts (or heals) a host's link to the segment. */
  setLink(h: TestHost, up: boolean): void {
    if (!h.bridgePort) throw new Error('host is not on a bridge');
    ip('-n', this.ns, 'link', 'set', h.bridgePort, up ? 'up' : 'down');
  }

  async destroy(): Promise<void> {
    for (const h of this.hosts) await h.destroy();
    this.destroySync();
  }

  destroySync(): void {
    for (const h of this.hosts) h.destroySync();
    try {
      ip('netns', 'del', this.ns);
    } catch {
      /* gone */
    }
    liveBridges.delete(this);
    rmSync(path.dirname(this.keyFile), { recursive: true, force: true });
  }
}

const liveBridges = new Set<TestBridge>();
process.on('exit', () => {
  for (const b of liveBridges) b.destroySync();
});

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects a process's output and resolves when it ends (or kills it after timeoutMs). */
export function finish(p: ChildProcess, timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => {
      stderr += `\n[killed after ${timeoutMs} ms]`;
      killTree(p, 'SIGKILL');
    }, timeoutMs);
    p.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export function killTree(p: ChildProcess, sig: NodeJS.Signals = 'SIGTERM'): void {
  if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
  try {
    process.kill(-p.pid, sig);
  } catch {
    try {
      p.kill(sig);
    } catch {
      /* gone */
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls fn until it returns a truthy value or the time is up. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
    await sleep(stepMs);
  }
}

export class TestHost {
  readonly ns: string;
  readonly stateDir: string;
  readonly socket: string;
  private readonly procs = new Set<ChildProcess>();
  daemon?: ChildProcess;
  daemonLog = '';

  /** Waits until the daemon's log shows `pattern` (its output reaches the test through a pipe, so a line can arrive a
   * little after the event that caused it); throws with the log's tail when it does not within `timeoutMs`. */
  async waitForLog(pattern: string | RegExp, timeoutMs = 5000): Promise<void> {
    const seen = (): boolean => (typeof pattern === 'string' ? this.daemonLog.includes(pattern) : pattern.test(this.daemonLog));
    const end = Date.now() + timeoutMs;
    while (!seen()) {
      if (Date.now() > end) throw new Error(`the daemon's log does not show ${String(pattern)} after ${timeoutMs} ms; its end:\n${this.daemonLog.slice(-2000)}`);
      await sleep(25);
    }
  }

  private constructor(
    readonly address: string,
    tag: string,
  ) {
    this.ns = `as-${tag}-${process.pid}-${++counter}`;
    this.stateDir = mkdtempSync(path.join(tmpdir(), 'appswitch-test-'));
    this.socket = path.join(this.stateDir, 'appswitch.sock');
  }

  /** Creates the namespace with lo and a veth carrying `address`/24. With `bridge`, the veth's other end is a port
   * of that bridge (several hosts on one segment); without, both ends stay inside the namespace. */
  static create(tag: string, address = '192.0.2.1', bridge?: TestBridge): TestHost {
    const h = new TestHost(address, tag);
    live.add(h);
    ip('netns', 'add', h.ns);
    ip('-n', h.ns, 'link', 'set', 'lo', 'up');
    if (bridge) {
      const port = bridge.nextPort();
      ip('-n', bridge.ns, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'v0', 'netns', h.ns);
      ip('-n', bridge.ns, 'link', 'set', port, 'master', 'br0', 'up');
      h.bridgePort = port;
      h.bridge = bridge;
    } else {
      ip('-n', h.ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
      ip('-n', h.ns, 'link', 'set', 'v1', 'up');
    }
    ip('-n', h.ns, 'addr', 'add', `${address}/24`, 'dev', 'v0');
    ip('-n', h.ns, 'link', 'set', 'v0', 'up');
    if (address.startsWith('192.0.2.')) {
      ip('-n', h.ns, 'neigh', 'add', '192.0.2.254', 'lladdr', '02:00:00:00:00:fe', 'dev', 'v0', 'nud', 'permanent');
      ip('-n', h.ns, 'route', 'add', '10.0.0.0/8', 'via', '192.0.2.254', 'dev', 'v0');
    }
    return h;
  }

  /** Adds another address (`cidr`, e.g. 198.51.100.2/24) to the host's link: how a gateway host gets a foot in the
   * outside subnet (see TestBridge.outside) while the other hosts have none, and so no route there. */
  addAddress(cidr: string): void {
    ip('-n', this.ns, 'addr', 'add', cidr, 'dev', 'v0');
  }

  /** The bridge port of this host, when it was created on a bridge. */
  bridgePort?: string;
  /** The bridge of this host, when it was created on one. */
  bridge?: TestBridge;

  /** Spawns a command inside the namespace, in its own process group; tracked for cleanup. */
  spawn(cmd: string[], opts: SpawnOptions = {}): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', this.ns, ...cmd], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      ...opts,
      env: { ...process.env, APPSWITCH_SOCKET: this.socket, ...(opts.env ?? {}) },
    });
    this.procs.add(p);
    p.on('close', () => this.procs.delete(p));
    return p;
  }

  exec(cmd: string[], timeoutMs = 30_000, opts: SpawnOptions = {}): Promise<Result> {
    return finish(this.spawn(cmd, opts), timeoutMs);
  }

  /** Starts `appswitch daemon` in the namespace and waits until its control socket answers. A host on a bridge
   * joins its cluster the documented way: unless the flags name a key (or plaintext), the bridge's key is copied to
   * STATE-DIR/gossip.key before the first start. `nodeOptions` go to node itself (e.g. --cpu-prof). */
  async startDaemon(extra: string[] = [], nodeOptions: string[] = []): Promise<void> {
    const own = path.join(this.stateDir, 'gossip.key');
    if (this.bridge && !extra.includes('--gossip-key') && !extra.includes('--gossip-plaintext') && !existsSync(own)) {
      copyFileSync(this.bridge.keyFile, own);
    }
    const d = this.spawn(['node', ...nodeOptions, CLI, 'daemon', '--state-dir', this.stateDir, '--node-address', this.address, '--log-level', 'info', ...extra]);
    this.daemon = d;
    d.stdout?.on('data', (b: Buffer) => (this.daemonLog += b.toString()));
    d.stderr?.on('data', (b: Buffer) => (this.daemonLog += b.toString()));
    await waitFor(async () => (await this.cli(['status', '--json'])).code === 0, 15_000, 100);
  }

  /** Runs an appswitch CLI command (not `run`) to completion. */
  cli(args: string[], timeoutMs = 15_000): Promise<Result> {
    return this.exec(['node', CLI, ...args], timeoutMs);
  }

  /** Starts a program under appswitch; returns its process (the launcher, after exec). */
  run(appArgs: string[], cmd: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.spawn(['node', CLI, 'run', ...appArgs, '--', ...cmd], opts);
  }

  runToEnd(appArgs: string[], cmd: string[], timeoutMs = 30_000): Promise<Result> {
    return finish(this.run(appArgs, cmd), timeoutMs);
  }

  async services(): Promise<Array<{ vip: string; port: number; proto: string; endpoint: string; name?: string; app: string }>> {
    const r = await this.cli(['get', 'services', '--json']);
    if (r.code !== 0) throw new Error(`get services failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Array<{ vip: string; port: number; proto: string; endpoint: string; app: string }>;
  }

  async waitService(vip: string, port: number, timeoutMs = 10_000): Promise<void> {
    await waitFor(async () => (await this.services()).some((s) => s.vip === vip && s.port === port), timeoutMs);
  }

  async destroy(): Promise<void> {
    for (const p of this.procs) killTree(p, 'SIGKILL');
    await sleep(50);
    this.destroySync();
  }

  destroySync(): void {
    for (const p of this.procs) killTree(p, 'SIGKILL');
    // processes that left their group (a daemonizing program) still live in the namespace: kill them all
    try {
      const pids = execFileSync('ip', ['netns', 'pids', this.ns], { stdio: 'pipe' }).toString().split(/\s+/).filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    } catch {
      /* namespace gone */
    }
    try {
      execFileSync('ip', ['netns', 'del', this.ns], { stdio: 'pipe' });
    } catch {
      /* already gone */
    }
    if (existsSync(this.stateDir)) rmSync(this.stateDir, { recursive: true, force: true });
    live.delete(this);
  }
}

/** Compiles test/helpers/probe.c once per run (into a temp dir, removed at exit). */
const compiled = new Map<string, string>();
process.on('exit', () => {
  for (const bin of compiled.values()) rmSync(path.dirname(bin), { recursive: true, force: true });
});

/** Compiles test/helpers/<name>.c once per test process; returns the binary's path. */
export function compileHelper(name: string): string {
  const done = compiled.get(name);
  if (done) return done;
  const out = path.join(mkdtempSync(path.join(tmpdir(), `appswitch-${name}-`)), name);
  execFileSync('gcc', ['-O1', '-Wall', '-o', out, path.join(ROOT, `test/helpers/${name}.c`), '-lpthread'], { stdio: 'pipe' });
  compiled.set(name, out);
  return out;
}

export function probe(): string {
  return compileHelper('probe');
}
