/** Issue 11 item 3: stock apache2 (event MPM, `Listen 80`) and curl on the same host, with the fast path on. apache's
 * Linux default `AcceptFilter http data` sets TCP_DEFER_ACCEPT on its listener: the kernel then holds a connection
 * back until data arrives, and a fast-path placeholder never sends any (the data goes over the Unix socket pair), so
 * apache woke up only when the 30 s ran out, long after curl gave up. The generator now keeps TCP_DEFER_ACCEPT itself
 * (native/sockopt_emul.h). Real programs under the real filter, on a namespace host this file creates and removes. */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const PROBE = path.join(ROOT, 'test/helpers/defer_accept.py');
const CASES = path.join(ROOT, 'test/helpers/sockopt_cases.py');
let h: TestHost;
let dir: string;

interface Status {
  connections: { tcp: number; fastpath: number };
}

async function connections(): Promise<Status['connections']> {
  const r = await h.cli(['status', '--json']);
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as Status).connections;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-apache-'));
  chmodSync(dir, 0o755);
  h = TestHost.create('apache');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('same-host fast path and TCP_DEFER_ACCEPT', () => {
  it('a listener with TCP_DEFER_ACCEPT (apache\'s default) wakes up for a fast-path connection; the option reads back as the kernel\'s', async () => {
    const srv = h.run(['--ip', '10.0.4.1'], ['python3', PROBE, 'server', '7300', '2']);
    const out = finish(srv, 90_000);
    await h.waitService('10.0.4.1', 7300, 20_000);
    const before = await connections();
    for (const args of [[], ['--no-fastpath']]) {
      const c = await h.runToEnd(args, ['python3', PROBE, 'client', '10.0.4.1', '7300'], 30_000);
      expect(c.stdout.trim(), c.stderr).toBe('pong ping');
    }
    const after = await connections();
    expect([after.fastpath - before.fastpath, after.tcp - before.tcp]).toEqual([1, 1]);
    const s = await out;
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain('defer=31'); /* 30 s rounded to whole SYN-ACK retransmissions, as natively */
    expect(s.stdout.match(/defer on accepted=0/g)).toHaveLength(2);
  });

  it('the options the generator keeps (TCP_DEFER_ACCEPT, IPV6_V6ONLY after a bind) answer exactly as the kernel, errors included', async () => {
    const native = await h.exec(['python3', CASES]);
    expect(native.code, native.stderr).toBe(0);
    expect(native.stdout).toContain('set 30 ok get ok val=31 len=4');
    expect(native.stdout).toContain('v6only bound get ok val=1 len=4');
    expect(native.stdout).toContain('set bad pointer EFAULT');
    const trapped = await h.runToEnd(['--ip', '10.0.4.2'], ['python3', CASES]);
    expect(trapped.stderr).toBe('');
    expect(trapped.stdout).toBe(native.stdout);
  });

  it('stock apache2 (event MPM, Listen 80) answers curl on the same host over the fast path', async () => {
    const www = path.join(dir, 'www');
    const logs = path.join(dir, 'logs');
    const run = path.join(dir, 'run');
    for (const d of [www, logs, run]) {
      mkdirSync(d);
      chmodSync(d, 0o777);
    }
    writeFileSync(path.join(www, 'index.html'), 'hello from apache\n');
    chmodSync(path.join(www, 'index.html'), 0o644);
    const conf = path.join(dir, 'apache2.conf');
    writeFileSync(
      conf,
      [
        'ServerRoot /etc/apache2',
        'ServerName localhost',
        'LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so',
        'LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so',
        'LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so',
        'User www-data',
        'Group www-data',
        `PidFile ${run}/apache2.pid`,
        `Mutex file:${run} default`,
        `DefaultRuntimeDir ${run}`,
        `ErrorLog ${logs}/error.log`,
        'LogFormat "%h %>s %B \\"%r\\"" short',
        `CustomLog ${logs}/access.log short`,
        'Listen 80',
        `DocumentRoot ${www}`,
        `<Directory ${www}>`,
        '  Require all granted',
        '</Directory>',
        'DirectoryIndex index.html',
        '',
      ].join('\n'),
    );
    h.run(['--ip', '10.0.4.80'], ['apache2', '-f', conf, '-DFOREGROUND']);
    await h.waitService('10.0.4.80', 80, 30_000);
    const before = await connections();
    for (let i = 0; i < 3; i++) {
      const c = await h.runToEnd([], ['curl', '-sS', '-m', '15', 'http://10.0.4.80/'], 30_000);
      expect(c.stdout, `request ${i}: ${c.stderr}`).toBe('hello from apache\n');
    }
    const after = await connections();
    expect(after.fastpath - before.fastpath).toBe(3);
    const log = await waitFor(() => {
      const l = readFileSync(path.join(logs, 'access.log'), 'utf8').trim().split('\n').filter(Boolean);
      return l.length >= 3 ? l : undefined;
    }, 20_000);
    expect(log).toHaveLength(3);
    for (const line of log ?? []) expect(line).toMatch(/^169\.254\.\d+\.\d+ 200 18 "GET \/ HTTP\/1\.1"$/);
  });
});
