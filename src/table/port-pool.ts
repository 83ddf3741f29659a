/** The pool of real host ports that servers under appswitch bind to (`--ports`, default 40000-60000). */

export class PortPool {
  private readonly used = new Set<number>();
  /** Ports someone outside appswitch holds: skipped until the time stored here. */
  private readonly busyUntil = new Map<number, number>();
  private cursor: number;

  constructor(
    readonly low: number,
    readonly high: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isInteger(low) || !Number.isInteger(high) || low < 1 || high > 65535 || low > high) {
      throw new RangeError(`bad port range ${low}-${high}`);
    }
    this.cursor = low;
  }

  /** Takes a free port, or undefined when the pool is exhausted. */
  allocate(): number | undefined {
    const size = this.high - this.low + 1;
    const t = this.now();
    for (let i = 0; i < size; i++) {
      const p = this.cursor;
      this.cursor = p === this.high ? this.low : p + 1;
      if (this.used.has(p)) continue;
      const busy = this.busyUntil.get(p);
      if (busy !== undefined) {
        if (busy > t) continue;
        this.busyUntil.delete(p);
      }
      this.used.add(p);
      return p;
    }
    return undefined;
  }

  /** Marks a port as in use (a binding restored after a daemon restart). Returns false when it is outside the pool. */
  take(port: number): boolean {
    if (port < this.low || port > this.high) return false;
    this.used.add(port);
    return true;
  }

  release(port: number): void {
    this.used.delete(port);
  }

  /** A port we handed out was taken by someone else: give it back and avoid it for a while. */
  markBusy(port: number, forMs = 60_000): void {
    this.used.delete(port);
    this.busyUntil.set(port, this.now() + forMs);
  }

  get inUse(): number {
    return this.used.size;
  }
}

/** Parses "40000-60000". */
export function parsePortRange(s: string): { low: number; high: number } {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(s.trim());
  if (!m) throw new RangeError(`port range must look like 40000-60000, got "${s}"`);
  const low = Number(m[1]);
  const high = Number(m[2]);
  if (low < 1 || high > 65535 || low > high) throw new RangeError(`bad port range "${s}"`);
  return { low, high };
}
