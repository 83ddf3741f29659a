/** Node names (issue 11, item 5): netns hosts on one machine share the hostname, as cloned VMs and containers do. With
 * default flags — no --node-name — two daemons must still form one cluster (the default name is the hostname plus
 * the node address); two daemons given the same name must both say so loudly: an error line "conflicting address"
 * with both addresses, a `conflict` row in `get members`, and the other address in `status`. */
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import type { MemberView, ServiceView, StatusResult } from '../../src/daemon/control-protocol.js';
import { request } from '../../src/cli/client.js';
import { killTree, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const members = (h: TestHost): Promise<MemberView[]> => request<MemberView[]>(h.socket, 'members');
const alive = async (h: TestHost): Promise<string[]> =>
  (await members(h))
    .filter((m) => m.state === 'alive')
    .map((m) => m.name)
    .sort();

/** The daemon's log lines (JSON) at error level or above. */
function errorLines(h: TestHost): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of h.daemonLog.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (typeof o.level === 'number' && o.level >= 50) out.push(o);
    } catch {
      /* a partial line */
    }
  }
  return out;
}

describe('node names', () => {
  let bridge: TestBridge | undefined;
  afterEach(async () => {
    await bridge?.destroy();
    bridge = undefined;
  });

  it('two hosts with one hostname and default flags form one cluster and share services', async () => {
    bridge = new TestBridge('nn');
    const [a, b] = bridge.hostsOf('nn', 2) as [TestHost, TestHost];
    await a.startDaemon();
    await b.startDaemon(['--join', a.address]);
    const names = [`${os.hostname()}-${a.address}`, `${os.hostname()}-${b.address}`].sort();
    // before: both daemons took the hostname, and each saw only itself
    await waitFor(async () => JSON.stringify(await alive(a)) === JSON.stringify(names) && JSON.stringify(await alive(b)) === JSON.stringify(names), 30_000, 200).catch(
      async (e: unknown) => {
        throw new Error(`${String(e)}\na sees ${JSON.stringify(await members(a))}\nb sees ${JSON.stringify(await members(b))}`);
      },
    );
    const status = JSON.parse((await a.cli(['status', '--json'])).stdout) as StatusResult;
    expect(status.node).toBe(`${os.hostname()}-${a.address}`);
    expect(status.nameConflicts).toEqual([]);
    // a bound and listening socket is a service: it reaches b through gossip, named after a's node
    const py = a.run(['--ip', '10.77.0.2'], ['python3', '-c', 'import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",8080))\ns.listen()\ntime.sleep(300)']);
    try {
      await b.waitService('10.77.0.2', 8080, 30_000);
      const svc = (await request<ServiceView[]>(b.socket, 'services')).find((s) => s.vip === '10.77.0.2');
      expect(svc?.node).toBe(`${os.hostname()}-${a.address}`);
    } finally {
      killTree(py, 'SIGKILL');
    }
    expect(errorLines(a)).toEqual([]);
    expect(errorLines(b)).toEqual([]);
  }, 120_000);

  it('two daemons given the same --node-name: both log the conflict with both addresses, and get members and status show it', async () => {
    bridge = new TestBridge('nc');
    const [c, d] = bridge.hostsOf('nc', 2) as [TestHost, TestHost];
    await c.startDaemon(['--node-name', 'twin']);
    await d.startDaemon(['--node-name', 'twin', '--join', c.address]);
    const gossip = (h: TestHost): string => `${h.address}:7946`;
    for (const [self, other] of [
      [c, d],
      [d, c],
    ] as const) {
      await waitFor(() => errorLines(self).some((l) => /conflicting address/.test(String(l.msg))), 30_000, 200).catch((e: unknown) => {
        throw new Error(`${String(e)}\n${self.address} log:\n${self.daemonLog}`);
      });
      const line = errorLines(self).find((l) => /conflicting address/.test(String(l.msg)));
      expect(line).toMatchObject({ mine: gossip(self), theirs: gossip(other) });
      expect(String(line?.msg)).toContain(gossip(other));

      const ms = JSON.parse((await self.cli(['get', 'members', '--json'])).stdout) as MemberView[];
      expect(ms).toContainEqual({ name: 'twin', address: gossip(other), state: 'conflict', incarnation: null });
      const table = (await self.cli(['get', 'members'])).stdout;
      expect(table).toMatch(new RegExp(`twin\\s+${gossip(other).replace(/\./g, '\\.')}\\s+CONFLICT`));

      const s = JSON.parse((await self.cli(['status', '--json'])).stdout) as StatusResult;
      expect(s.nameConflicts.map((x) => x.address)).toEqual([gossip(other)]);
      expect(s.memberStates.conflict).toBe(1);
      const text = (await self.cli(['status'])).stdout;
      expect(text).toContain('NAME CONFLICT');
      expect(text).toContain(`${gossip(other)} also runs as node twin`);
    }
  }, 120_000);
});
