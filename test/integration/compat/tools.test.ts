/** Compatibility suite, tools and small servers: OpenSSH's sshd, an iperf3 server serving tests in a row, socat as a
 * TCP and a UDP echo server, and dnsmasq answering DNS over UDP; each with a stock or minimal config written here into
 * a temp dir, started under `appswitch run --name --ip` on host a and used by name with a stock client from host a
 * (fast path) and host b. The README's "Compatibility" table lists the results. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once, Pair } from '../../helpers/compat.js';
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
    expect(srv.output).toContain('Server listening on 0.0.0.0 port 22.');
    expect(srv.output).not.toMatch(/Bind to port 22 on \S+ failed/);
    expect(srv.output).toContain('Server listening on :: port 22.');
  });
});

describe('iperf3 3.12 -s: one server, three tests in a row from each host', () => {
  const server = once(() => pair.start(pair.a, { name: 'perf', ip: '10.4.0.2', port: 5201, cmd: ['iperf3', '-s', '-p', '5201'] }));
  /** What the client's JSON report says the server received. */
  const received = (stdout: string): number | undefined => {
    try {
      return (JSON.parse(stdout) as { end?: { sum_received?: { bytes?: number } } }).end?.sum_received?.bytes;
    } catch {
      return undefined;
    }
  };
  for (const side of sides) {
    it(`${side.title}: three 1 MiB tests, each fully received`, async () => {
      const srv = await server();
      for (let i = 1; i <= 3; i++) {
        const r = await pair.reach(srv, side.host(), [], ['iperf3', '-c', 'perf', '-p', '5201', '-n', '1M', '-J'], (x) => x.code === 0);
        expect(received(r.result.stdout), `test ${i}: ${r.result.stdout.slice(-500)}`).toBe(1024 * 1024);
        side.check(r);
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
      '--user=nobody',
      `--pid-file=${path.join(dir, 'dnsmasq.pid')}`,
    ];
    return pair.start(pair.a, { name: 'dnsmasq', ip: '10.4.0.5', port: 53, proto: 'udp', cmd });
  });
  for (const side of sides) {
    it(`${side.title}: dig @dnsmasq over UDP gets the answer`, async () => {
      const srv = await server();
      const r = await srv.poll(side.host(), [], ['dig', '+short', '+time=3', '+tries=1', '@dnsmasq', `${side.key}.compat.test`], (x) => x.code === 0 && x.stdout !== '');
      expect(r.stdout).toBe('192.0.2.77\n');
    });
  }
});
