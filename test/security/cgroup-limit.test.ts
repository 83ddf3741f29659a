/** The socket guard fails closed (native/sockguard.h): when the program's cgroup cannot be made, the launcher — root,
 * admitted by the daemon — refuses to start the program rather than run it unguarded; and only root may opt out.
 *
 * This test changes a host-wide setting (appswitch/apps/cgroup.max.descendants, shared by every appswitch run on the
 * machine) for a moment, so scripts/test.sh runs it alone, after both lanes: run beside other tests, it made their
 * `appswitch run` fail with 125 ("creating the program's cgroup"). */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroup2Mount } from '../helpers/cgroup.js';
import { launcherPath } from '../../src/native/binding.js';
import { finish, TestHost } from '../helpers/hosts.js';

const AS_NOBODY = ['setpriv', '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', '--'];

let h: TestHost;


beforeAll(async () => {
  h = TestHost.create('cglimit');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

describe('without the guard', () => {
  it('appswitch run fails closed (125, says which step) when the guard cannot be set up; only root may opt out', async () => {
    // the program's cgroup cannot be made (appswitch/apps allows no more descendants): the launcher, root and
    // admitted by the daemon, must refuse to start the program rather than run it unguarded
    const limit = path.join(cgroup2Mount(), 'appswitch/apps/cgroup.max.descendants');
    const before = readFileSync(limit, 'utf8').trim();
    writeFileSync(limit, '0');
    try {
      const r = await finish(h.run([], ['true']), 15_000);
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(/socket guard: creating the program's cgroup: /);
    } finally {
      writeFileSync(limit, before);
    }
    const q = spawn('setpriv', [...AS_NOBODY.slice(0, -1), '--', launcherPath(), '--socket', path.join(h.stateDir, 'trap.sock'), '--no-sockguard', '--', 'true'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const r2 = await finish(q, 15_000);
    expect(r2.code).toBe(125);
    expect(r2.stderr).toContain('only root may run a program without the socket guard');
  });

});
