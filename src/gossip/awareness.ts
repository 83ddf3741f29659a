// Lifeguard local health ("awareness"): a saturating score that grows when this node misses acks/nacks or has to
// refute suspicions about itself, and scales its own probe interval and timeouts.

/**
 * Local health score in [0, max − 1]. 0 is healthy. {@link scale} multiplies a duration by (score + 1), so a node
 * that is itself slow (blocked event loop, overloaded NIC) probes less often and waits longer before accusing
 * others — the main defence of Lifeguard against false positives caused by the accuser.
 */
export class Awareness {
  private score = 0;

  /** @param max the multiplier ceiling (memberlist's AwarenessMaxMultiplier); ≥ 1. */
  constructor(private readonly max: number) {}

  /** Adds `delta` (may be negative) and clamps. */
  apply(delta: number): void {
    this.score = Math.min(this.max - 1, Math.max(0, this.score + delta));
  }

  /** Current score (0 = healthy). */
  get health(): number {
    return this.score;
  }

  /** Scales a duration by the current multiplier (score + 1). */
  scale(ms: number): number {
    return ms * (this.score + 1);
  }
}
