/** Compatibility suite, tools and small servers: OpenSSH's sshd, an iperf3 server serving tests in a row, socat as a
 * TCP and a UDP echo server, and dnsmasq answering DNS over UDP; each with a stock or minimal config written here into
 * a temp dir, started under `appswitch run --name --ip` on host a and used by name with a stock client from host a
 * (fast path) and host b. The README's "Compatibility" table lists the results. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CompatServer, once, Pair } from '../../helpers/compat.js';
import type { TestHost } from '../../helpers/hosts.js';
import { expectCrossHost, expectFastPath } from './checks.js';

let pair: Pair;
/** sshd's compiled-in privilege separation directory, made here when the machine has none (removed at the end). */
const PRIVSEP = '/run/sshd';
let madePrivsep = false;

beforeAll(async () => {
  pair = await Pair.create('ct');
});

afterAll(async () => {
  await pair?.destroy();
  if (madePrivsep) rmSync(PRIVSEP, { recursive: true, force: true });
});

const sides: Array<{ title: string; host: () => TestHost; check: typeof expectFastPath; key: string }> = [
  { title: 'same host (fast path)', host: () => pair.a, check: expectFastPath, key: 'same-host' },
  { title: 'other host', host: () => pair.b, check: expectCrossHost, key: 'other-host' },
];

// the programs are independent (own vip, own config dir; every server on host a, so host a's daemon sets up
// only same-host connections and host b's only cross-host ones): they start and are checked side by side
describe.concurrent('compat: tools and small servers', () => {
  describe('OpenSSH 9.2 sshd -D, stock listening (every address), a throw-away host key and client key', () => {
    let clientKey = '';
    const server = once(async () => {
      const dir = pair.tempDir('sshd');
      const hostKey = path.join(dir, 'host_key');
      clientKey = path.join(dir, 'client_key');
      for (const k of [hostKey, clientKey]) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', k], { stdio: 'pipe' });
      execFileSync('cp', [`${clientKey}.pub`, path.join(dir, 'authorized_keys')]);
      if (!existsSync(PRIVSEP)) {
        mkdirSync(PRIVSEP, { mode: 0o755 });
        madePrivsep = true;
      }
      const conf = path.join(dir, 'sshd_config');
      writeFileSync(
        conf,
        [
          'Port 22',
          `HostKey ${hostKey}`,
          `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
          // the temp dir lies under /tmp (group- and world-writable), which StrictModes refuses
          'StrictModes no',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'UsePAM no',
          `PidFile ${path.join(dir, 'sshd.pid')}`,
          '',
        ].join('\n'),
      );
      return pair.start(pair.a, { name: 'ssh', ip: '10.4.0.1', port: 22, cmd: ['/usr/sbin/sshd', '-D', '-e', '-f', conf] });
    });
    for (const side of sides) {
      it(`${side.title}: ssh root@ssh echo`, async () => {
        const srv = await server();
        const ssh = ['ssh', '-F', '/dev/null', '-i', clientKey, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
        const r = await pair.reach(srv, side.host(), [], [...ssh, 'root@ssh', 'echo', `hello-${side.key}`], (x) => x.code === 0);
        expect(r.result.stdout).toBe(`hello-${side.key}\n`);
        side.check(r);
      });
    }
    it('listens on every address it asks for: 0.0.0.0 and ::', async () => {
      const srv = await server();
      // sshd reports each address it tried (the service is listed once the first listens; its output comes later)
      const reported = (): boolean => srv.output.includes('Server listening on 0.0.0.0 port 22.') && /Server listening on :: port 22\.|Bind to port 22 on :: failed/.test(srv.output);
      await srv.until(() => 'sshd to report both of its addresses', async () => reported(), 10_000);
      expect(srv.output).toContain('Server listening on 0.0.0.0 port 22.');
      expect(srv.output).not.toMatch(/Bind to port 22 on \S+ failed/);
      expect(srv.output).toContain('Server listening on :: port 22.');
    });
  });

  // iperf3 -s serves one test at a time: its tests run one after another
  describe.sequential('iperf3 3.12 -s: one server, three tests in a row from each host', () => {
    const server = once(() => pair.start(pair.a, { name: 'perf', ip: '10.4.0.2', port: 5201, cmd: ['iperf3', '-s', '-p', '5201'] }));
    interface Report {
      error?: string;
      start?: { connected?: Array<{ remote_port?: number }> };
      end?: { sum_sent?: { bytes?: number } };
    }
    const report = (stdout: string): Report => {
      try {
        return JSON.parse(stdout) as Report;
      } catch {
        return { error: `not JSON: ${stdout.slice(0, 200)}` };
      }
    };
    const accepted = (srv: CompatServer): number => srv.output.split('Accepted connection from ').length - 1;
    for (const side of sides) {
      it(`${side.title}: three 1 MiB tests, each sent whole and accepted by the same server`, async () => {
        const srv = await server();
        for (let i = 1; i <= 3; i++) {
          const before = accepted(srv);
          const r = await pair.reach(srv, side.host(), [], ['iperf3', '-c', 'perf', '-p', '5201', '-n', '1M', '-J'], (x) => x.code === 0);
          const rep = report(r.result.stdout);
          expect(rep.error, `test ${i}`).toBeUndefined();
          expect(rep.start?.connected?.[0]?.remote_port, `test ${i}`).toBe(5201);
          // the sender's count: what the receiver reports depends on when it read its socket at the end (natively
          // too: from 0 to 1 MiB on loopback), so it is no payload to assert. The sender stops at the first burst
          // that reaches 1 MiB, so it may send one 128 KiB block more (seen once over the fast path: 9 blocks)
          const sent = rep.end?.sum_sent?.bytes ?? 0;
          expect(sent, `test ${i}`).toBeGreaterThanOrEqual(1024 * 1024);
          expect(sent, `test ${i}`).toBeLessThanOrEqual(1024 * 1024 + 128 * 1024);
          side.check(r);
          await srv.until(() => `iperf3 -s to log test ${i}`, async () => accepted(srv) === before + 1, 10_000);
        }
      });
    }
  });

  describe('socat 1.7 TCP-LISTEN:7000,fork EXEC:cat (an echo server)', () => {
    const server = once(() => pair.start(pair.a, { name: 'echo', ip: '10.4.0.3', port: 7000, cmd: ['socat', 'TCP-LISTEN:7000,fork,reuseaddr', 'EXEC:cat'] }));
    for (const side of sides) {
      it(`${side.title}: socat sends a line and gets it back`, async () => {
        const srv = await server();
        const line = `echo-${side.key}`;
        const r = await pair.reach(srv, side.host(), [], ['sh', '-c', `echo ${line} | socat -t 5 - TCP:echo:7000`], (x) => x.stdout === `${line}\n`);
        expect(r.result.stdout).toBe(`${line}\n`);
        side.check(r);
      });
    }
  });

  describe('socat 1.7 UDP-RECVFROM:7001,fork EXEC:cat (a UDP echo server)', () => {
    const server = once(() => pair.start(pair.a, { name: 'uecho', ip: '10.4.0.4', port: 7001, proto: 'udp', cmd: ['socat', 'UDP-RECVFROM:7001,fork', 'EXEC:cat'] }));
    for (const side of sides) {
      it(`${side.title}: socat sends a datagram and gets it back`, async () => {
        const srv = await server();
        const line = `udp-${side.key}`;
        // UDP takes no fast path: the payload is the check
        const r = await srv.poll(side.host(), [], ['sh', '-c', `echo ${line} | socat -t 2 - UDP:uecho:7001`], (x) => x.stdout === `${line}\n`);
        expect(r.stdout).toBe(`${line}\n`);
      });
    }
  });

  describe('dnsmasq 2.90, stock listening (every address), answering for one domain', () => {
    const server = once(async () => {
      const dir = pair.tempDir('dnsmasq');
      const cmd = [
        'dnsmasq',
        '--keep-in-foreground',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        '--port=53',
        '--address=/compat.test/192.0.2.77',
        '--log-facility=-',
        '--log-queries',
        '--user=nobody',
        `--pid-file=${path.join(dir, 'dnsmasq.pid')}`,
      ];
      return pair.start(pair.a, { name: 'dnsmasq', ip: '10.4.0.5', port: 53, proto: 'udp', cmd });
    });
    sides.forEach((side, i) => {
      it(`${side.title}: dig @dnsmasq over UDP gets the answer`, async () => {
        const srv = await server();
        const r = await srv.poll(side.host(), [], ['dig', '+short', '+time=3', '+tries=1', '@dnsmasq', `${side.key}.compat.test`], (x) => x.code === 0 && x.stdout !== '');
        expect(r.stdout).toBe('192.0.2.77\n');
      });
      it(`${side.title}: dnsmasq sees the query come from the client's identity (its vip)`, async () => {
        const srv = await server();
        const clientIp = `10.4.1.${i + 1}`;
        const name = `id-${side.key}.compat.test`;
        const r = await srv.poll(side.host(), ['--ip', clientIp], ['dig', '+short', '+time=3', '+tries=1', '@dnsmasq', name], (x) => x.code === 0 && x.stdout !== '');
        expect(r.stdout).toBe('192.0.2.77\n');
        // --log-queries: "query[A] NAME from ADDRESS", the address recvfrom gave it: the client's vip, as accept gives
        // a TCP server, not the client host's real address
        await srv.until(() => `the query for ${name} in dnsmasq's log`, async () => srv.output.includes(`query[A] ${name} from `), 10_000);
        expect(srv.output).toContain(`query[A] ${name} from ${clientIp}\n`);
      });
    });
  });
});
