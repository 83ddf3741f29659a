/** Issue 11 item 2: a listener closed and the same virtual port bound again at once (iperf3 -s closes its listening
 * socket after each test and opens a new one). The daemons here sweep only every 10 minutes, so nothing but the bind
 * itself can notice that the old listener is gone. Real programs under the real filter, on namespace hosts this file
 * creates and removes. */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const PROBE = path.join(ROOT, 'test/helpers/relisten.py');
let h: TestHost;

beforeAll(async () => {
  h = TestHost.create('relisten');
  await h.startDaemon(['--sweep-interval', '600000']);
});

afterAll(async () => {
  await h?.destroy();
});

/** Lines printed so far by a running process. */
function lines(p: ReturnType<TestHost['run']>): () => string {
  let out = '';
  p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return () => out;
}

describe('a listener closed and bound again', () => {
  for (const [mode, ip, served] of [['serve', '10.0.3.1', [0, 1, 2, 3]], ['quiet', '10.0.3.2', [3]]] as const) {
    it(mode === 'serve' ? 'binds the same port again at once with SO_REUSEADDR, serving a client each round' : 'binds the same port again at once without SO_REUSEADDR, four rounds', async () => {
      const srv = h.run(['--ip', ip], ['python3', PROBE, 'server', '7100', '4', mode]);
      const out = lines(srv);
      const done = finish(srv, 90_000);
      for (const i of served) {
        await waitFor(() => out().includes(`bound ${i}`) || out().includes('failed'), 20_000);
        expect(out()).not.toContain('failed');
        const c = await h.runToEnd([], ['nc', '-N', ip, '7100'], 20_000);
        expect(c.stdout.trim(), c.stderr).toBe(`round ${i}`);
      }
      const s = await done;
      expect(s.code, s.stdout + s.stderr).toBe(0);
      expect(s.stdout).toContain('done');
    });
  }

  it('iperf3 -s serves three tests in a row', async () => {
    const srv = h.run(['--name', 'perf'], ['iperf3', '-s', '-p', '5201']);
    await waitFor(async () => (await h.services()).some((s) => s.name === 'perf' && s.port === 5201), 20_000);
    for (let i = 0; i < 3; i++) {
      const c = await h.runToEnd([], ['iperf3', '-c', 'perf', '-p', '5201', '-t', '1', '-J'], 60_000);
      const report = JSON.parse(c.stdout) as { error?: string; end?: { sum_received?: { bytes: number } } };
      expect(report.error, `test ${i}: ${c.stderr}`).toBeUndefined();
      expect(report.end?.sum_received?.bytes ?? 0).toBeGreaterThan(0);
      // the server bound its port again for the next test (it exited on EADDRINUSE before)
      await waitFor(async () => (await h.services()).filter((s) => s.name === 'perf' && s.port === 5201).length === 1, 20_000);
    }
    expect(srv.exitCode).toBeNull();
  });
});
