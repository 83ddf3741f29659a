/** Per-app limits of the trap handler: how much of the daemon one program may hold (bound sockets and services,
 * fast-path offers, client records awaiting an accept), the counting behind them, and the rate-limited line logged
 * when a limit is reached. Pure: no I/O. */
import type { Logger } from 'pino';

/** The limits (daemon flags `--max-services-per-app`, `--max-pending-per-app`). */
export interface AppLimits {
  /** Bound sockets (TCP or UDP, so also services) one app may hold; past it bind() gets ENOBUFS. */
  servicesPerApp: number;
  /** Connections one app may have set up and not yet accepted, counted separately for fast-path offers (as client and
   * as server) and for client records; past it a connect goes over TCP (offers) or gets ECONNREFUSED (records). */
  pendingPerApp: number;
}

export const DEFAULT_LIMITS: AppLimits = { servicesPerApp: 256, pendingPerApp: 1024 };

/** A Map that keeps, for each owner key its values name (see `owners`), how many entries it holds. The owners of a
 * value are read when it is set and when it is deleted, so they must not change while it is in the map (delete and
 * set it again instead). */
export class CountedMap<K, V> extends Map<K, V> {
  private readonly counts = new Map<string, number>();

  constructor(private readonly owners: (v: V) => readonly string[]) {
    super();
  }

  override set(k: K, v: V): this {
    const old = super.get(k);
    if (old !== undefined || super.has(k)) this.uncount(old as V);
    super.set(k, v);
    for (const o of this.owners(v)) this.counts.set(o, (this.counts.get(o) ?? 0) + 1);
    return this;
  }

  override delete(k: K): boolean {
    if (!super.has(k)) return false;
    this.uncount(super.get(k) as V);
    return super.delete(k);
  }

  override clear(): void {
    super.clear();
    this.counts.clear();
  }

  /** Entries owned by `owner`. */
  count(owner: string): number {
    return this.counts.get(owner) ?? 0;
  }

  private uncount(v: V): void {
    for (const o of this.owners(v)) {
      const n = (this.counts.get(o) ?? 0) - 1;
      if (n > 0) this.counts.set(o, n);
      else this.counts.delete(o);
    }
  }
}

/** At most one line per key per `intervalMs`; the next carries how many were suppressed meanwhile. For what a program
 * can make happen as often as it likes (a refused or denied connect per call): each is counted and sent to the event
 * stream in full, and logged this way, so that one program cannot flood the log (or journald's rate limit, which would
 * then drop everyone else's lines). */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, obj: Record<string, unknown>, msg: string): void {
    this.emit('warn', key, obj, msg);
  }

  info(key: string, obj: Record<string, unknown>, msg: string): void {
    this.emit('info', key, obj, msg);
  }

  private emit(level: 'info' | 'warn', key: string, obj: Record<string, unknown>, msg: string): void {
    const t = this.now();
    const e = this.last.get(key);
    if (e && t - e.at < this.intervalMs) {
      e.suppressed++;
      return;
    }
    if (this.last.size > 4096) this.last.clear(); /* keys are per app: bounded by forgetting */
    this.last.set(key, { at: t, suppressed: 0 });
    this.log[level](e?.suppressed ? { ...obj, suppressed: e.suppressed } : obj, msg);
  }
}
