/** Outside clients relayed across hosts (docs/ingress.md, "The external client's identity"): g1 is a gateway, h2 runs
 * the exposed instance, h3 is a plain member, and an outside host runs no appswitch. The gateway's relay opens each
 * connection to the instance with a preamble signed with the cluster key (native/preamble.h); h2's generator checks it
 * and takes it out of the stream, and the program sees the outside client's real address and port. A preamble that
 * does not check (another key, replayed onto another connection, from a host that is no gateway) is dropped with its
 * connection. */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { ExposureView, MemberView, ServiceView, StatusResult } from '../../src/daemon/control-protocol.js';
import { readKeyring } from '../../src/daemon/gossip-key.js';
import { preambleKeys } from '../../src/gateway/preamble-key.js';
import { native } from '../../src/native/binding.js';
import { ip16 } from '../../src/trap/decision-table.js';
import { ROOT, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';
import { connectionsOf, holdConnection } from '../helpers/outside-held.js';

const SERVER = path.join(ROOT, 'test/helpers/peer-http.py');
const PREAMBLE = path.join(ROOT, 'test/helpers/preamble-forge.py');
const VIP = '10.0.0.81';

let br: TestBridge;
let g1: TestHost;
let h2: TestHost;
let h3: TestHost;
let out: TestHost;
/** h2's instance endpoint of the exposed port 80. */
let exposedEp: string;

const members = (h: TestHost): Promise<MemberView[]> => request<MemberView[]>(h.socket, 'members');
const exposures = (h: TestHost): Promise<ExposureView[]> => request<ExposureView[]>(h.socket, 'exposures');
const services = (h: TestHost): Promise<ServiceView[]> => request<ServiceView[]>(h.socket, 'services');
const status = (h: TestHost): Promise<StatusResult> => request<StatusResult>(h.socket, 'status');

/** A GET from host `from` (not under appswitch) to url; stdout: the body, then the local port on a last line. */
async function get(from: TestHost, url: string, extra: string[] = []): Promise<{ code: number | null; body: string; localPort: number }> {
  const r = await from.exec(['curl', '-sS', '-m', '5', ...extra, '-w', '\n%{local_port}', url], 15_000);
  const lines = r.stdout.trim().split('\n');
  return { code: r.code, body: lines.length > 1 ? lines.slice(0, -1).join('\n') : '', localPort: Number(lines[lines.length - 1]) };
}

beforeAll(async () => {
  br = new TestBridge('xp');
  [g1, h2, h3] = br.hostsOf('xp', 3) as [TestHost, TestHost, TestHost];
  out = br.outside();
  await out.exec(['ip', 'addr', 'add', '192.0.2.200/24', 'dev', 'v0']);
  await g1.startDaemon(['--node-name', 'g1', '--gateway']);
  await Promise.all([h2.startDaemon(['--node-name', 'h2', '--join', g1.address]), h3.startDaemon(['--node-name', 'h3', '--join', g1.address])]);
  for (const h of [g1, h2, h3]) await waitFor(async () => (await members(h)).filter((m) => m.state === 'alive').length === 3, 15_000);
  h2.run(['--ip', VIP, '--name', 'web', '--expose', '8081:80'], ['python3', SERVER, 'h2', '80', '81']);
  await waitFor(async () => (await services(g1)).filter((s) => s.vip === VIP).length === 2, 30_000, 100);
  await waitFor(async () => (await exposures(g1)).some((e) => e.vip === VIP && e.port === 80 && e.state === 'active'), 10_000);
  await waitFor(async () => (await exposures(h2)).some((e) => e.vip === VIP && e.port === 80 && e.state === 'active'), 10_000);
  const svc = await services(h2);
  exposedEp = (svc.find((s) => s.vip === VIP && s.port === 80) as ServiceView).endpoint;
}, 60_000);

afterAll(async () => {
  await br?.destroy();
});

describe('outside clients relayed across hosts', () => {
  it('the program on another host sees the outside client\'s real address and port, from the relay\'s preamble', async () => {
    for (let i = 0; i < 6; i++) {
      const c = await get(out, `http://${g1.address}:8081/`);
      expect(c.code, c.body).toBe(0);
      const m = /^h2 ([\d.]+):(\d+)$/.exec(c.body.trim());
      expect(m, c.body).not.toBeNull();
      expect((m as RegExpExecArray)[1]).toBe('192.0.2.200');
      expect(Number((m as RegExpExecArray)[2])).toBe(c.localPort);
    }
    /* the instance's generator answered from the relay's preamble (native/preamble.h), not from the daemon */
    await waitFor(async () => ((await status(h2)).ingress?.preambleAnswered ?? 0) >= 1, 5_000, 100);
    /* an open one is in `get connections` of the instance's node, as the outside client's own endpoint (not the
     * relay's), until it is closed; then the sweep drops it */
    const held = await holdConnection(out, g1.address, 8081);
    try {
      await waitFor(async () => (await connectionsOf(h2, held.endpoint)).length > 0, 5_000, 50);
      expect(await connectionsOf(h2, held.endpoint)).toMatchObject([{ direction: 'in', client: '192.0.2.200', clientApp: 'external', accepted: true, serverName: 'web' }]);
      held.close();
      await waitFor(async () => (await connectionsOf(h2, held.endpoint)).length === 0, 15_000, 100);
    } finally {
      held.proc.kill('SIGKILL');
    }
  });

  it('a preamble that does not check is dropped: made without the cluster key, replayed onto another connection, or from a host that is no gateway; early or late', async () => {
    const key = preambleKeys(readKeyring(br.keyFile))[0] as Buffer;
    const [toIp, toPort] = [exposedEp.slice(0, exposedEp.lastIndexOf(':')), Number(exposedEp.slice(exposedEp.lastIndexOf(':') + 1))];
    /* from host `from`, local port `lport`: a preamble naming 203.0.113.50:1 made with `k` for the connection from
     * `macFrom` (default: this one), then a GET; what came back. The local ports are below the namespace's ephemeral
     * range (32768-60999) and the daemons' port range (40000-60000): 45572 once failed to bind, EADDRINUSE, held by
     * one of the relay's or the daemon's own sockets on g1 */
    const send = async (from: TestHost, k: Buffer, lport: number, macFrom = { ip: from.address, port: lport }, delay = 0): Promise<string> => {
      const pre = native.preambleMake(k, ip16('203.0.113.50'), 1, ip16(macFrom.ip), macFrom.port, ip16(toIp), toPort, Date.now());
      const r = await from.exec(['python3', PREAMBLE, exposedEp, String(lport), pre.toString('hex'), String(delay)], 15_000);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    /* the control: a holder of the cluster key on a gateway's host is believed (the key is the trust) */
    expect(await send(g1, key, 23580)).toMatch(/h2 203\.0\.113\.50:1/);
    /* its preamble late (the accept comes first, as on a loaded machine): h2's daemon asks g1, which says only that no
     * generator made that socket; h2's generator then waits for the preamble and checks it as above */
    expect(await send(g1, key, 23581, undefined, 0.6)).toMatch(/h2 203\.0\.113\.50:1/);
    expect(await send(g1, Buffer.alloc(16, 7), 23582, undefined, 0.6)).not.toMatch(/203\.0\.113\.50|h2 /);
    expect(await send(h3, key, 23583, undefined, 0.6)).not.toMatch(/203\.0\.113\.50|h2 /);
    const wrongKey = await send(g1, Buffer.alloc(16, 7), 23571);
    expect(wrongKey).not.toMatch(/203\.0\.113\.50|h2 /);
    const replayed = await send(g1, key, 23572, { ip: g1.address, port: 23573 });
    expect(replayed).not.toMatch(/203\.0\.113\.50|h2 /);
    const notGateway = await send(h3, key, 23574);
    expect(notGateway).not.toMatch(/203\.0\.113\.50|h2 /);
    /* and the real path still works (a late preamble that did not check once left the single-threaded server's
     * accept waiting on the dropped connection instead of its listener) */
    const c = await get(out, `http://${g1.address}:8081/`);
    expect(c.body.trim()).toMatch(/^h2 192\.0\.2\.200:\d+$/);
  });
});
