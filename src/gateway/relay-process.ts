/** RelayForwarder: the IngressForwarder that runs the C relay (native/relay_main.c, docs/relay.md) as its own process,
 * so that no bug in the forwarding can end the daemon. The relay gets a SOCK_SEQPACKET control socket on fd 3 and
 * the decision table's memfds on fds 4 and 5 (it picks instances from the table itself); it exits when fd 3 hangs
 * up. A relay that dies is restarted with backoff and given every route again. */
import { type ChildProcess, spawn } from 'node:child_process';
import { isIP } from 'node:net';
import { AppswitchError } from '../errors.js';
import { native, type Poller, relayPath } from '../native/binding.js';
import type { ForwarderStats, IngressForwarder, IngressRefusal, IngressRoute } from './forwarder.js';
import { decodeRelay, encodeKey, encodeListen, encodeUnlisten, type RelayStats } from './relay-wire.js';

export interface RelayLog {
  (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

export interface RelayOptions {
  /** The decision table's descriptors for one child (DecisionTable.fdsForHello: table, shared counters); the
   * forwarder closes them once the child has them. */
  tables: { fdsForHello(): number[] };
  log?: RelayLog;
  /** The relay executable (default: build/Release/appswitch-relay). */
  binary?: string;
  /** A command to run it under (the bench: `ip netns exec NAME`). */
  prefix?: string[];
  /** Arguments for the relay (`--workers N`). */
  args?: string[];
  /** Restart backoff: the first delay, doubled after each quick death up to max (ms). */
  backoffMs?: { min: number; max: number };
  /** false: the relay starts at begin(), not in the constructor (the daemon starts it once its state directory is
   * its own); routes added before are sent then. Default true. */
  start?: boolean;
}

const ZERO: ForwarderStats = { accepted: 0, forwarded: 0, refused: 0, active: 0, bytes: 0 };
/** A relay that ran this long before dying restarts after the first delay again. */
const STABLE_MS = 10_000;

function checkRoute(r: IngressRoute): void {
  const port = (p: number): boolean => Number.isInteger(p) && p >= 1 && p <= 65535;
  if (!Number.isInteger(r.id) || r.id < 0 || r.id > 0xffffffff) throw new AppswitchError('ERR_BAD_ARGUMENT', `ingress route: bad id ${String(r.id)}`);
  if (!isIP(r.address) || !isIP(r.vip)) throw new AppswitchError('ERR_BAD_ARGUMENT', `ingress route ${r.id}: address and vip must be IP addresses`);
  if (!port(r.hostPort) || !port(r.port)) throw new AppswitchError('ERR_BAD_ARGUMENT', `ingress route ${r.id}: ports must be 1-65535`);
}

export class RelayForwarder implements IngressForwarder {
  onRefusal: (r: IngressRefusal) => void = () => {};
  onListenError: (id: number, code: string) => void = () => {};
  /** A route's socket listens (after each start of the relay). */
  onListening: (id: number) => void = () => {};
  /** Times the relay was restarted after dying. */
  restarts = 0;
  /** Records from the relay that did not decode (counted, not trusted). */
  badRecords = 0;

  private readonly binary: string;
  private readonly routes = new Map<number, IngressRoute>();
  private child: ChildProcess | undefined;
  private ctl = -1;
  private poller: Poller | undefined;
  private last: RelayStats | undefined;
  private base: ForwarderStats = { ...ZERO };
  private closing = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private delay: number;
  private startedAt = 0;
  private exited: Promise<void> = Promise.resolve();
  private key: Buffer | undefined;

  constructor(private readonly opts: RelayOptions) {
    const bin = opts.binary ?? relayPath();
    if (!bin) throw new AppswitchError('ERR_NATIVE_LOAD', 'appswitch-relay not found (build it with `npx node-gyp rebuild`); ingress falls back to the Node forwarder');
    this.binary = bin;
    this.delay = opts.backoffMs?.min ?? 100;
    if (opts.start !== false) this.start();
  }

  /** Starts the relay when the constructor was told not to (options.start false); once. */
  begin(): void {
    if (this.child || this.startedAt || this.closing) return;
    this.start();
  }

  /** The relay's own figures from its last STATS (connection cap, paused workers, dropped records). */
  relayStats(): RelayStats | undefined {
    return this.last;
  }

  /** The relay's pid (undefined while it is being restarted). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  setPreambleKey(key: Buffer): void {
    this.key = Buffer.from(key);
    this.send(encodeKey(this.key));
  }

  add(route: IngressRoute): void {
    checkRoute(route);
    this.routes.set(route.id, { ...route });
    this.send(encodeListen(route));
  }

  remove(id: number): void {
    if (!this.routes.delete(id)) return;
    this.send(encodeUnlisten(id));
  }

  stats(): ForwarderStats {
    const l = this.last ?? ZERO;
    return {
      accepted: this.base.accepted + l.accepted,
      forwarded: this.base.forwarded + l.forwarded,
      refused: this.base.refused + l.refused,
      active: l.active,
      bytes: this.base.bytes + l.bytes,
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const child = this.child;
    this.closeCtl(); /* the relay sees fd 3 hang up and exits */
    if (!child) return;
    const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
    await this.exited;
    clearTimeout(kill);
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }

  private send(msg: Buffer): void {
    if (this.ctl < 0) return; /* not running: start() sends every route */
    try {
      native.send(this.ctl, msg);
    } catch (e) {
      this.log('warn', 'relay control socket: send failed', { err: e instanceof Error ? e.message : String(e) });
    }
  }

  private start(): void {
    this.restartTimer = undefined;
    if (this.closing) return;
    const [mine, theirs] = native.seqpacketPair();
    let fds: number[] = [];
    let child: ChildProcess;
    try {
      fds = this.opts.tables.fdsForHello();
      const cmd = [...(this.opts.prefix ?? []), this.binary, ...(this.opts.args ?? [])];
      child = spawn(cmd[0] as string, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe', theirs, fds[0] ?? 'ignore', fds[1] ?? 'ignore'] });
    } catch (e) {
      native.close(mine);
      this.log('error', 'relay: cannot start', { err: e instanceof Error ? e.message : String(e) });
      this.scheduleRestart();
      return;
    } finally {
      native.close(theirs);
      for (const fd of fds) native.close(fd);
    }
    this.child = child;
    this.ctl = mine;
    this.startedAt = Date.now();
    let done!: () => void;
    this.exited = new Promise((r) => (done = r));
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    let ended = false;
    const end = (how: string): void => {
      if (ended) return;
      ended = true;
      this.onExit(child, how, stderr.trim());
      done();
    };
    child.on('error', (e) => end(`failed: ${e.message}`));
    child.on('exit', (code, sig) => end(sig ? `killed by ${sig}` : `exited with ${String(code)}`));
    this.poller = native.poller(mine, () => this.readable(mine));
    this.poller.start(1);
    if (this.key) this.send(encodeKey(this.key)); /* before any route: every relayed connection has its preamble */
    for (const r of this.routes.values()) this.send(encodeListen(r));
  }

  private readable(fd: number): void {
    if (fd !== this.ctl) return;
    for (let i = 0; i < 256; i++) {
      let m;
      try {
        m = native.recv(fd);
      } catch {
        m = { data: Buffer.alloc(0) };
      }
      if (!m) return;
      if (m.data.length === 0) {
        this.poller?.stop(); /* the relay is gone: its exit event follows */
        return;
      }
      const { events, bad } = decodeRelay(m.data);
      this.badRecords += bad;
      for (const ev of events) {
        try {
          switch (ev.type) {
            case 'refused':
              this.onRefusal({ route: ev.route, client: ev.client, reason: ev.reason });
              break;
            case 'listen-error':
              this.onListenError(ev.id, ev.code);
              break;
            case 'listening':
              this.onListening(ev.id);
              break;
            case 'stats':
              if (ev.stats.dropped > (this.last?.dropped ?? 0)) this.log('warn', 'relay: records dropped (the daemon did not read them in time)', { dropped: ev.stats.dropped });
              this.last = ev.stats;
          }
        } catch (e) {
          this.log('error', 'relay: a handler threw', { err: e instanceof Error ? e.message : String(e), event: ev.type });
        }
      }
    }
  }

  private closeCtl(): void {
    this.poller?.stop();
    this.poller = undefined;
    if (this.ctl >= 0) native.close(this.ctl);
    this.ctl = -1;
  }

  private onExit(child: ChildProcess, how: string, stderr: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.closeCtl();
    const l = this.last ?? ZERO;
    this.base = { accepted: this.base.accepted + l.accepted, forwarded: this.base.forwarded + l.forwarded, refused: this.base.refused + l.refused, active: 0, bytes: this.base.bytes + l.bytes };
    this.last = undefined;
    if (this.closing) return;
    if (Date.now() - this.startedAt >= STABLE_MS) this.delay = this.opts.backoffMs?.min ?? 100;
    this.log('error', `relay ${how}; restarting in ${this.delay} ms`, { stderr: stderr || undefined });
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (this.closing) return;
    const d = this.delay;
    this.delay = Math.min(this.delay * 2, this.opts.backoffMs?.max ?? 10_000);
    this.restartTimer = setTimeout(() => {
      this.restarts++;
      this.start();
    }, d);
    this.restartTimer.unref();
  }
}
