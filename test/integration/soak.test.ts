/** The soak benchmark (bench/soak.ts) at smoke length: 5 s at 2,500 connections/s in each setup (same host with the
 * fast path, same host over TCP, cross host), client and server under `appswitch run`. Every scheduled connection
 * must succeed, nothing may hang (no one connection may take 20 s; a loaded machine may need longer than the 5 s to
 * work through the schedule, and up to a minute after it is not a hang), no fast-path offer may be left, and the
 * daemons' descriptor counts must come back to where they started. The rates and RSS figures are printed, not asserted (`npm run soak` measures a minute). */
import { describe, expect, it } from 'vitest';
import { FD_TOLERANCE, renderSoak, soak } from '../../bench/soak.js';

const SECONDS = 5;
const RATE = 2500;

describe('soak (smoke)', () => {
  it(`keeps every connection and the daemons' descriptors at ${RATE} connections/s for ${SECONDS} s per setup`, async () => {
    const rows = await soak({ seconds: SECONDS, rate: RATE, log: (l) => console.log(l) });
    console.log(renderSoak(rows, `smoke: ${SECONDS} s per setup`));
    expect(rows.map((r) => r.setup)).toEqual([
      'same host, fast path',
      'same host, client --no-fastpath (TCP)',
      'cross host (bridge, daemons a ← b)',
    ]);
    for (const r of rows) {
      expect(r.problem, r.setup).toBeUndefined();
      expect(r.stuck, `${r.setup}: client threads with a connection hung for 20 s`).toBe(0);
      expect(r.late, `${r.setup}: client threads still working through the schedule a minute after its end`).toBe(0);
      expect(r.failed, `${r.setup}: ${r.errors}`).toBe(0);
      // the client keeps to its schedule however late it runs: every one of the rate × seconds slots is a connection
      expect(r.connections, r.setup).toBe(RATE * SECONDS);
      expect(r.pendingOffers, r.setup).toBe(0);
      for (const d of r.daemons) {
        expect(Number.isFinite(d.fdsStart) && Number.isFinite(d.fdsEnd), `${r.setup}: daemon ${d.node} gone`).toBe(true);
        expect(d.fdsEnd, `${r.setup}: daemon ${d.node} fds ${d.fdsStart} → ${d.fdsEnd}`).toBeLessThanOrEqual(d.fdsStart + FD_TOLERANCE);
      }
    }
  }, 330_000);
});
