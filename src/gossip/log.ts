// Logger interface (pino-compatible subset) and a per-reason rate limiter for noisy warnings.

/** The logging the gossip layer needs; a pino logger satisfies it. */
export interface GossipLogger {
  /** For what an operator must fix (a name conflict); loggers without it get a warning instead. */
  error?(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** Discards everything. */
export const silentLogger: GossipLogger = {
  warn(): void {},
  info(): void {},
  debug(): void {},
};

/**
 * Emits at most one warning per key per `intervalMs`; the next one carries how many were suppressed, so a flood of
 * bad packets costs one log line per interval.
 */
export class RateLimitedWarn {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: GossipLogger,
    private readonly now: () => number,
    private readonly intervalMs = 10_000,
  ) {}

  warn(key: string, obj: object, msg: string): void {
    const t = this.now();
    const e = this.last.get(key);
    if (e !== undefined && t - e.at < this.intervalMs) {
      e.suppressed++;
      return;
    }
    const suppressed = e?.suppressed ?? 0;
    this.last.set(key, { at: t, suppressed: 0 });
    this.logger.warn(suppressed > 0 ? { ...obj, suppressed } : obj, msg);
  }
}
