/** Assertions shared by the compatibility suite's files: which path a client's connections took. */
import { expect } from 'vitest';
import type { Reached } from '../../helpers/compat.js';

/** A client on the server's host: every connection it made went over the fast path (a Unix socket pair). */
export function expectFastPath(r: Reached): void {
  expect(r.paths.tcp, 'same-host connections over TCP').toBe(0);
  expect(r.paths.fastpath, 'same-host connections over the fast path').toBeGreaterThan(0);
}

/** A client on the other host: its connections went over TCP between the hosts. */
export function expectCrossHost(r: Reached): void {
  expect(r.paths.fastpath, 'cross-host connections over the fast path').toBe(0);
  expect(r.paths.tcp, 'cross-host connections over TCP').toBeGreaterThan(0);
}
