// Logger interface (pino-compatible subset) and a per-reason rate limiter so a flood of bad packets costs a few lines.

/** The logging the DNS server needs; a pino logger satisfies it. */
export interface DnsLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** Discards everything. */
export const silentDnsLogger: DnsLogger = {
  warn(): void {},
  info(): void {},
  debug(): void {},
};

/**
 * Emits at most one warning per key per `intervalMs`; the next one emitted carries how many were suppressed.
 */
export class RateLimitedWarn {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: DnsLogger,
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
