/** How long the daemon waits between two sweeps (the sweep reads the namespace's TCP table: closed listeners, ended
 * connections, in-flight counts for least-connections). To dump one namespace's table the kernel walks every TCP
 * socket of the machine, TIME_WAIT ones and other namespaces' included: on a host that makes thousands of
 * connections a second a sweep takes tens of milliseconds, and at a fixed interval that was a third of a core of each
 * daemon (bench/RESULTS.md, "Ingress"). The pause after a sweep is the configured interval, or COST_FACTOR times what
 * the sweep took when that is longer: sweeping then costs at most about 1/(1 + COST_FACTOR) of the daemon's thread,
 * and what it notices comes later (never more than MAX_PAUSE_MS). */
export const SWEEP_COST_FACTOR = 20;
export const SWEEP_MAX_PAUSE_MS = 10_000;

export function sweepPause(intervalMs: number, tookMs: number): number {
  if (!Number.isFinite(tookMs) || tookMs <= 0) return intervalMs;
  return Math.max(intervalMs, Math.min(SWEEP_MAX_PAUSE_MS, Math.round(tookMs * SWEEP_COST_FACTOR)));
}
