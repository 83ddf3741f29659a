/** Attack 7 of issue 10: a UDP sendmmsg with a destination reached the daemon with the socket type unset, so it was
 * judged as a TCP connect and an allowed UDP vip answered ECONNREFUSED. A real C program sends one sendmmsg vector to
 * a UDP service by its vip; the server (under appswitch too) must receive every datagram. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileHelper, finish, killTree, TestHost, waitFor } from '../helpers/hosts.js';

let ATTACK: string;
const hosts: TestHost[] = [];

beforeAll(() => {
  ATTACK = compileHelper('attack-dos');
});

afterAll(async () => {
  for (const h of hosts) await h.destroy();
});

/** Collects a process's stdout as it comes. */
function watch(p: ChildProcess): { text: () => string } {
  let out = '';
  p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  return { text: () => out };
}

describe('sendmmsg to a UDP vip', () => {
  it('delivers every datagram of the vector to the service (it was judged as TCP and refused)', async () => {
    const h = TestHost.create('smm', '192.0.2.71');
    hosts.push(h);
    await h.startDaemon();
    const srv = h.run(['--ip', '10.71.0.1'], [ATTACK, 'udpsink', '5300', '8', '30']);
    const srvOut = watch(srv);
    const srvDone = finish(srv, 40_000);
    try {
      await waitFor(() => srvOut.text().includes('listening 5300'), 30_000);
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.71.0.1' && s.port === 5300 && s.proto === 'udp'));
      const c = await h.runToEnd([], [ATTACK, 'sendmmsg', '10.71.0.1', '5300', '8']);
      console.log('client:', c.stdout.trim());
      expect(c.stdout.trim(), c.stderr).toBe('sendmmsg sent=8');
      await waitFor(() => srvOut.text().includes('received=8'), 30_000);
    } finally {
      killTree(srv, 'SIGKILL');
      await srvDone;
    }
  });
});
