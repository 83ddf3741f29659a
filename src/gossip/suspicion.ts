// Lifeguard suspicion timer: starts at a maximum timeout and shrinks towards a minimum as independent members
// confirm the suspicion, so a lone (possibly slow) accuser cannot kill a member quickly.

import type { Clock, TimerHandle } from './clock.js';

/**
 * Minimum suspicion timeout: suspicionMult · max(1, log10(max(1, n))) · probeInterval (memberlist's formula).
 * `n` is the number of known members.
 */
export function suspicionTimeout(suspicionMult: number, n: number, probeIntervalMs: number): number {
  const nodeScale = Math.max(1, Math.log10(Math.max(1, n)));
  return Math.floor(suspicionMult * nodeScale * probeIntervalMs);
}

/**
 * Timeout after `confirmations` of `wanted` independent confirmations: interpolates from max to min on a log
 * scale (fast first drop, then slower), never below min.
 */
export function suspicionDeadline(confirmations: number, wanted: number, minMs: number, maxMs: number): number {
  if (wanted < 1) return minMs;
  const frac = Math.log(confirmations + 1) / Math.log(wanted + 1);
  const raw = maxMs - frac * (maxMs - minMs);
  return Math.max(minMs, Math.floor(raw));
}

/**
 * One running suspicion. Created when a member is first suspected; {@link confirm} registers a suspicion from
 * another accuser. The callback fires once, with the number of confirmations seen, unless {@link cancel} is
 * called first (refutation, death, shutdown).
 */
export class Suspicion {
  private readonly confirmed = new Set<string>();
  private n = 0;
  private readonly start: number;
  private timer: TimerHandle | undefined;
  private fired = false;

  /**
   * @param from the first accuser (excluded from confirmations: our own rumour may come back to us)
   * @param wanted confirmations needed to reach `minMs` (k); 0 means start at minMs
   */
  constructor(
    private readonly clock: Clock,
    from: string,
    private readonly wanted: number,
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly onTimeout: (confirmations: number) => void,
  ) {
    this.confirmed.add(from);
    this.start = clock.now();
    this.arm(wanted < 1 ? minMs : maxMs);
  }

  /** Registers an accusation from `from`. Returns true when it was new and shortened the timer. */
  confirm(from: string): boolean {
    if (this.fired || this.n >= this.wanted || this.confirmed.has(from)) return false;
    this.confirmed.add(from);
    this.n++;
    const total = suspicionDeadline(this.n, this.wanted, this.minMs, this.maxMs);
    const remaining = total - (this.clock.now() - this.start);
    this.arm(Math.max(0, remaining));
    return true;
  }

  /** Number of independent confirmations so far. */
  get confirmations(): number {
    return this.n;
  }

  /** Stops the timer for good. */
  cancel(): void {
    this.fired = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(() => {
      if (this.fired) return;
      this.fired = true;
      this.timer = undefined;
      this.onTimeout(this.n);
    }, ms);
  }
}
