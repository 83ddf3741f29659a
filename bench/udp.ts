/** UDP rows of `npm run bench` (bench/run.ts): what a datagram costs under appswitch now that receivers see their
 * senders' virtual identities (native/udp_recv.c). C programs (test/helpers/udp-probe.c) in one namespace host:
 *   - recvfrom() of a datagram already queued, each call timed: with a source buffer (trapped, emulated by the
 *     generator) and without (recv(): never trapped);
 *   - an echo round trip, C client and C server (recvfrom + sendto): the client unconnected (sendto + recvfrom) or
 *     connected (send + recv: its data path is untrapped, the server's is not). */
import { compileHelper, finish, killTree, type TestHost, waitFor } from '../test/helpers/hosts.js';

export interface UdpRow {
  name: string;
  unit: string;
  native: number;
  appswitch: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function field(out: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)`, 'm').exec(out);
  if (!m) throw new Error(`no ${key} in output:\n${out}`);
  return Number(m[1]);
}

/** Medians over `runs` runs of each measurement; `n` datagrams per run. Host h has a daemon running. */
export async function udpRows(h: TestHost, runs: number, n: number): Promise<UdpRow[]> {
  const bin = compileHelper('udp-probe');
  const rows: UdpRow[] = [];
  const us = (xs: number[]): number => median(xs) / 1000;

  for (const [label, extra] of [
    ['recvfrom() with a source buffer, datagram queued, median of each call', []],
    ['recvfrom(..., NULL, NULL) (recv), datagram queued, median of each call', ['nosrc']],
  ] as Array<[string, string[]]>) {
    const nat: number[] = [];
    const app: number[] = [];
    for (let i = 0; i < runs; i++) {
      nat.push(field((await h.exec([bin, 'recvcost', '127.0.0.1', '7400', String(n), ...extra])).stdout, 'recv'));
      app.push(field((await h.runToEnd(['--ip', '10.0.0.110'], [bin, 'recvcost', '10.0.0.110', '7401', String(n), ...extra])).stdout, 'recv'));
    }
    rows.push({ name: label, unit: 'µs/call', native: us(nat), appswitch: us(app) });
  }

  const natSrv = h.spawn([bin, 'echo', '7402']);
  const appSrv = h.run(['--ip', '10.0.0.111'], [bin, 'echo', '7403']);
  const appDone = finish(appSrv, 600_000);
  try {
    let up = '';
    natSrv.stdout?.on('data', (d: Buffer) => (up += d.toString()));
    await waitFor(() => up.includes('up'));
    await h.waitService('10.0.0.111', 7403);
    for (const [label, extra] of [
      ['UDP echo round trip, unconnected client (sendto + recvfrom)', []],
      ['UDP echo round trip, connected client (send + recv)', ['connected']],
    ] as Array<[string, string[]]>) {
      const nat: number[] = [];
      const app: number[] = [];
      for (let i = 0; i < runs; i++) {
        nat.push(field((await h.exec([bin, 'rtt', h.address, '7402', String(n), ...extra], 120_000)).stdout, 'rtt'));
        app.push(field((await h.runToEnd(['--ip', '10.0.0.112'], [bin, 'rtt', '10.0.0.111', '7403', String(n), ...extra], 120_000)).stdout, 'rtt'));
      }
      rows.push({ name: `${label}, median`, unit: 'µs', native: us(nat), appswitch: us(app) });
    }
  } finally {
    killTree(natSrv, 'SIGKILL');
    killTree(appSrv, 'SIGKILL');
    await appDone;
  }
  return rows;
}
