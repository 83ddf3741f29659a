/** The compatibility suite's harness (test/integration/compat/*): two test hosts on one bridge with joined daemons,
 * real Debian servers started under `appswitch run --name --ip` with their config and data in a temp dir, and stock
 * clients run under appswitch on the server's host (fast path on, the default) and on the other host, polled until
 * they give the expected payload. Everything started is killed, and every temp dir removed, in `Pair.destroy()`. */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from '../../src/cli/client.js';
import type { ServiceView, StatusResult } from '../../src/daemon/control-protocol.js';
import { finish, killTree, type Result, ROOT, sleep, TestBridge, type TestHost, waitFor } from './hosts.js';

/** Two hosts (192.0.2.1 `a`, 192.0.2.2 `b`) on one bridge, with joined daemons that see each other alive. */
export class Pair {
  private readonly dirs: string[] = [];
  private readonly servers: CompatServer[] = [];

  private constructor(
    readonly br: TestBridge,
    readonly a: TestHost,
    readonly b: TestHost,
  ) {}

  static async create(tag: string): Promise<Pair> {
    const br = new TestBridge(tag);
    const [a, b] = br.hostsOf(tag, 2) as [TestHost, TestHost];
    const pair = new Pair(br, a, b);
    try {
      await a.startDaemon(['--node-name', `${tag}-a`]);
      await b.startDaemon(['--node-name', `${tag}-b`, '--join', a.address]);
      for (const h of [a, b]) {
        await waitFor(async () => (await request<StatusResult>(h.socket, 'status')).memberStates['alive'] === 2, 30_000, 100);
      }
    } catch (e) {
      await pair.destroy();
      throw e;
    }
    return pair;
  }

  /** A fresh directory for one program's config and data, readable by the user a server drops to (mkdtemp makes
   * 0700 directories); owned by `owner` when given (a server that writes there as that user). */
  tempDir(tag: string, owner?: string): string {
    const dir = mkdtempSync(path.join(tmpdir(), `appswitch-compat-${tag}-`));
    this.dirs.push(dir);
    chmodSync(dir, 0o755);
    if (owner !== undefined) {
      const id = (flag: string): number => Number(execFileSync('id', [flag, owner]).toString().trim());
      chownSync(dir, id('-u'), id('-g'));
    }
    return dir;
  }

  /** Starts `cmd` on `host` under appswitch with `--name name --ip ip` (and `--user`), and waits until its service
   * `ip:port/proto` is in the tables of both hosts. Fails at once, with the program's output, if it exits first. */
  async start(host: TestHost, opts: ServerOptions): Promise<CompatServer> {
    const args = ['--name', opts.name, '--ip', opts.ip, ...(opts.user !== undefined ? ['--user', opts.user] : [])];
    const srv = new CompatServer(opts.name, host.run(args, opts.cmd), opts.logs ?? []);
    this.servers.push(srv);
    const proto = opts.proto ?? 'tcp';
    const listed = async (h: TestHost): Promise<boolean> =>
      (await request<ServiceView[]>(h.socket, 'services')).some((s) => s.vip === opts.ip && s.port === opts.port && s.proto === proto);
    await srv.until(() => `${opts.ip}:${opts.port}/${proto} listed on both hosts`, async () => (await listed(this.a)) && (await listed(this.b)), opts.readyMs ?? 30_000);
    return srv;
  }

  /** Runs a client under appswitch on `host` until `ok(result)` (see CompatServer.poll), and says which paths the
   * connections that `host`'s daemon set up meanwhile took. */
  async reach(srv: CompatServer, host: TestHost, appArgs: string[], cmd: string[], ok: (r: Result) => boolean, timeoutMs = 30_000): Promise<Reached> {
    const before = await status(host);
    const result = await srv.poll(host, appArgs, cmd, ok, timeoutMs);
    return { result, paths: await connectionsSince(host, before) };
  }

  async destroy(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
    await this.br.destroy();
    for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
  }
}

/** A client's good result, and the connections its host's daemon set up meanwhile, by path. */
export interface Reached {
  result: Result;
  paths: { tcp: number; fastpath: number };
}

export interface ServerOptions {
  name: string;
  ip: string;
  /** The port (and protocol, default tcp) whose service marks the program as started. */
  port: number;
  proto?: 'tcp' | 'udp';
  /** `appswitch run --user` */
  user?: string;
  cmd: string[];
  /** Log files the program writes instead of stderr: shown, with its output, when a test fails. */
  logs?: string[];
  /** How long the program may take to list its service (default 30 s). */
  readyMs?: number;
}

/** A server program under appswitch: its output, whether it still runs, and a way to stop it. */
export class CompatServer {
  private out = '';
  private ended: Result | undefined;
  private readonly done: Promise<Result>;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    private readonly logs: string[] = [],
  ) {
    proc.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.out += d.toString()));
    this.done = finish(proc, 3_600_000).then((r) => (this.ended = r));
  }

  /** What the program (and its launcher) wrote so far, stdout and stderr interleaved, then its log files. */
  get output(): string {
    let s = this.out;
    for (const f of this.logs) {
      try {
        s += `\n--- ${f}:\n${readFileSync(f, 'utf8')}`;
      } catch {
        /* not written */
      }
    }
    return s;
  }

  /** Polls `check` until it returns true; throws with the program's output when it exits first or time is up.
   * `what` is called for the message, so it can name the last attempt. */
  async until(what: () => string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (this.ended) {
        const r = this.ended;
        throw new Error(`${this.name} exited (code ${r.code}, signal ${r.signal}) while waiting for: ${what()}\n--- its output:\n${this.output}`);
      }
      try {
        if (await check()) return;
      } catch {
        /* not yet */
      }
      if (Date.now() > end) throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for: ${what()}\n--- its output:\n${this.output}`);
      await sleep(200);
    }
  }

  /** Runs a client (`host.runToEnd(appArgs, cmd)`) until `ok(result)` holds: a server that listens is not always
   * ready (a database still recovering, a name not yet gossiped). Returns the first good result; throws with the
   * last result and the server's output when the server exits or time is up. */
  async poll(host: TestHost, appArgs: string[], cmd: string[], ok: (r: Result) => boolean, timeoutMs = 30_000): Promise<Result> {
    let last: Result | undefined;
    const what = (): string =>
      `\`${cmd.join(' ')}\` on ${host.address} to succeed; last try: ${last ? `code ${last.code}, stdout ${JSON.stringify(last.stdout.slice(0, 2000))}, stderr ${JSON.stringify(last.stderr.slice(0, 2000))}` : 'none'}`;
    await this.until(what, async () => {
      last = await host.runToEnd(appArgs, cmd, 20_000);
      return ok(last);
    }, timeoutMs);
    return last as Result;
  }

  get running(): boolean {
    return this.ended === undefined;
  }

  /** SIGTERM to the program (appswitch run passes it on), SIGKILL to the group if it is still there after 10 s. */
  async stop(): Promise<void> {
    if (this.ended) return;
    killTree(this.proc, 'SIGTERM');
    const t = setTimeout(() => killTree(this.proc, 'SIGKILL'), 10_000);
    await this.done;
    clearTimeout(t);
  }
}

/** `fn` run on first use only: a server that several tests need is started by the first of them, and each test
 * awaits the same start, so each fails on its own, with the program's output, when the program cannot start. */
export function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= fn());
}

/** Connections set up by a host's daemon, by path, counted since `before`. */
export async function connectionsSince(h: TestHost, before: StatusResult): Promise<{ tcp: number; fastpath: number }> {
  const now = await request<StatusResult>(h.socket, 'status');
  return { tcp: now.connections.tcp - before.connections.tcp, fastpath: now.connections.fastpath - before.connections.fastpath };
}

export function status(h: TestHost): Promise<StatusResult> {
  return request<StatusResult>(h.socket, 'status');
}

/** Builds test/helpers/compat-go (a net/http server) with Debian's Go, CGO_ENABLED=0: a static binary. Cached by
 * the source's hash in node_modules/.cache/appswitch-compat; Go's build cache keeps the compiled standard library,
 * so only the first build on a machine pays for it (~30-60 s on two busy cores). */
export function buildGoServer(): string {
  const src = path.join(ROOT, 'test/helpers/compat-go');
  const hash = createHash('sha256');
  for (const f of ['go.mod', 'main.go']) hash.update(readFileSync(path.join(src, f)));
  const cache = path.join(ROOT, 'node_modules/.cache/appswitch-compat');
  const out = path.join(cache, `gohttp-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(out)) return out;
  mkdirSync(cache, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  execFileSync('go', ['build', '-trimpath', '-o', tmp, '.'], {
    cwd: src,
    stdio: 'pipe',
    env: {
      ...process.env,
      CGO_ENABLED: '0',
      GOPROXY: 'off',
      GOPATH: path.join(cache, 'gopath'),
      // Go's own build cache (~/.cache/go-build) outlives a fresh clone; without a home, one beside the binary
      ...(process.env['HOME'] || process.env['XDG_CACHE_HOME'] ? {} : { GOCACHE: path.join(cache, 'gocache') }),
    },
  });
  renameSync(tmp, out);
  return out;
}
