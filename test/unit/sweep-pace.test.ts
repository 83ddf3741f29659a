import { describe, expect, it } from 'vitest';
import { SWEEP_COST_FACTOR, SWEEP_MAX_PAUSE_MS, sweepPause } from '../../src/daemon/sweep-pace.js';

describe('sweep pace', () => {
  it('a cheap sweep keeps the configured interval', () => {
    expect(sweepPause(500, 2)).toBe(500);
    expect(sweepPause(500, 0)).toBe(500);
    expect(sweepPause(500, Number.NaN)).toBe(500);
  });

  it('a costly sweep waits COST_FACTOR times what it took', () => {
    expect(sweepPause(500, 40)).toBe(40 * SWEEP_COST_FACTOR);
  });

  it('never waits longer than the cap, nor less than the interval', () => {
    expect(sweepPause(500, 60_000)).toBe(SWEEP_MAX_PAUSE_MS);
    expect(sweepPause(20_000, 60_000)).toBe(20_000);
  });
});
