/** The scale benchmark (bench/scale.ts): 25 servers and 25 clients under appswitch at once on one host. Every fetch
 * must reach the server it named, the app list must show all 50 and then none once they exited, and the daemon must
 * give back the descriptors it took for them. The per-program figures are printed, not asserted (`npm run scale`). */
import { describe, expect, it } from 'vitest';
import { renderScale, scale } from '../../bench/scale.js';

const SERVERS = 25;

describe('scale', () => {
  it(`runs ${SERVERS} servers and ${SERVERS} clients under appswitch at once`, async () => {
    const r = await scale({ servers: SERVERS, idleSeconds: 2, log: (l) => console.log(l) });
    console.log(renderScale(r, `test run: ${2 * SERVERS} programs`));
    expect(r.startMs).toHaveLength(SERVERS); // every server's service appeared in the table
    expect(r.fetches).toHaveLength(SERVERS + 5); // each client its own server, the first five one more
    expect(r.fetches.filter((f) => !f.ok)).toEqual([]);
    expect(r.appsUp).toBe(2 * SERVERS);
    // all 50 generators were alive (and were appswitch-launcher processes) with everything up
    expect(r.generatorKb.filter((kb) => Number.isFinite(kb) && kb > 0)).toHaveLength(2 * SERVERS);
    expect(r.appsAfter).toBe(0);
    expect(r.daemonFdsUp).toBeGreaterThanOrEqual(r.daemonFdsBefore + 2 * SERVERS); // one trap connection per app
    expect(r.daemonFdsAfter).toBeLessThanOrEqual(r.daemonFdsBefore);
  }, 120_000);
});
