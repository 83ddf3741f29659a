/** Issue 11 item 1: dual-stack servers. A server that listens on 0.0.0.0:P and on [::]:P with IPV6_V6ONLY (redis'
 * default `bind * -::*`, nginx `listen 80; listen [::]:80;`) starts and serves, and a V6ONLY [::] socket alone
 * serves too: IPv4 clients by vip and by name, IPv6 clients by an IPv6 vip; each socket's name is what the program
 * bound. Real programs under the real filter, on a namespace host this file creates and removes. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const PROBE = path.join(ROOT, 'test/helpers/dualstack.py');
let h: TestHost;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-dualstack-'));
  h = TestHost.create('dual');
  await h.startDaemon(['--vip-cidr', '10.0.0.0/8', '--vip-cidr', 'fd00:a5::/64']);
});

afterAll(async () => {
  await h?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Waits until the app's service on `port` has `n` instances (one per listening socket); returns its vip. */
async function waitInstances(port: number, n: number, match: (s: { vip: string; name?: string }) => boolean): Promise<string> {
  const list = await waitFor(async () => {
    const l = (await h.services()).filter((s) => s.port === port && match(s));
    return l.length === n ? l : undefined;
  }, 20_000);
  return list?.[0]?.vip as string;
}

describe('dual-stack servers', () => {
  it('the python program (0.0.0.0:P, then V6ONLY [::]:P) starts; IPv4 clients by name and vip reach the AF_INET socket', async () => {
    const srv = h.run(['--name', 'dual'], ['python3', PROBE, 'server', '7000', 'both', '3']);
    const out = finish(srv, 90_000);
    const vip = await waitInstances(7000, 2, (s) => s.name === 'dual');
    for (const [args, host] of [[[], 'dual'], [[], vip], [['--no-fastpath'], vip]] as const) {
      const c = await h.runToEnd([...args], ['python3', PROBE, 'client', host, '7000']);
      expect(c.stdout, c.stderr).toMatch(/^got fam=4 peer=169\.254\.\d+\.\d+$/m);
    }
    const s = await out;
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain('v4 name=0.0.0.0:7000');
    expect(s.stdout).toContain('v6 ok name=[::]:7000 v6only=1'); /* getsockname and IPV6_V6ONLY as the program set them */
    expect(s.stdout.match(/accepted fam=4/g)).toHaveLength(3);
  });

  it('with an IPv6 vip, IPv6 clients reach the AF_INET6 socket (fast path and TCP)', async () => {
    const srv = h.run(['--ip', 'fd00:a5::6'], ['python3', PROBE, 'server', '7000', 'both', '2']);
    const out = finish(srv, 90_000);
    await waitInstances(7000, 2, (s) => s.vip === 'fd00:a5::6');
    for (const args of [[], ['--no-fastpath']]) {
      const c = await h.runToEnd(args, ['python3', PROBE, 'client', 'fd00:a5::6', '7000']);
      expect(c.stdout, c.stderr).toMatch(/^got fam=6 peer=::ffff:169\.254\.\d+\.\d+$/m);
    }
    const s = await out;
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout.match(/accepted fam=6/g)).toHaveLength(2);
  });

  it('a V6ONLY [::] socket alone binds (was EINVAL) and serves the IPv4 vip, its clients seen v4-mapped', async () => {
    const srv = h.run(['--ip', '10.0.0.7'], ['python3', PROBE, 'server', '7002', 'v6only', '2']);
    const out = finish(srv, 90_000);
    await waitInstances(7002, 1, (s) => s.vip === '10.0.0.7');
    for (const args of [[], ['--no-fastpath']]) {
      const c = await h.runToEnd(args, ['python3', PROBE, 'client', '10.0.0.7', '7002']);
      expect(c.stdout, c.stderr).toMatch(/^got fam=6 peer=::ffff:169\.254\.\d+\.\d+$/m);
    }
    const s = await out;
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain('v6 ok name=[::]:7002 v6only=1');
  });

  it('redis-server with its default `bind * -::*` starts and serves by name, by vip and by an IPv6 vip', async () => {
    const common = ['--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--dir', dir];
    const r4 = h.run(['--name', 'db'], ['redis-server', '--port', '6379', ...common]);
    const r6 = h.run(['--ip', 'fd00:a5::10'], ['redis-server', '--port', '6380', ...common]);
    const vip = await waitInstances(6379, 2, (s) => s.name === 'db');
    await waitInstances(6380, 2, (s) => s.vip === 'fd00:a5::10');
    expect((await h.runToEnd([], ['redis-cli', '-h', 'db', 'set', 'k', 'dual'])).stdout.trim()).toBe('OK');
    expect((await h.runToEnd([], ['redis-cli', '-h', vip, 'get', 'k'])).stdout.trim()).toBe('dual');
    expect((await h.runToEnd(['--no-fastpath'], ['redis-cli', '-h', 'db', 'get', 'k'])).stdout.trim()).toBe('dual');
    expect((await h.runToEnd([], ['redis-cli', '-h', 'fd00:a5::10', '-p', '6380', 'ping'])).stdout.trim()).toBe('PONG');
    expect(r4.exitCode).toBeNull(); /* still serving (it exited 1 with "Address already in use" before) */
    expect(r6.exitCode).toBeNull();
  });

  it('nginx with `listen 8080; listen [::]:8080;` starts and serves IPv4 by name and IPv6 by vip', async () => {
    const conf = (tag: string): string => {
      const f = path.join(dir, `nginx-${tag}.conf`);
      writeFileSync(
        f,
        `daemon off;\nworker_processes 2;\npid ${dir}/nginx-${tag}.pid;\nerror_log ${dir}/nginx-${tag}.err info;\n` +
          `events { worker_connections 64; }\nhttp {\n  access_log off;\n` +
          ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/tmp-${tag};\n`).join('') +
          `  server {\n    listen 8080;\n    listen [::]:8080;\n    location / { return 200 "hello from ${tag} at $server_addr\\n"; }\n  }\n}\n`,
      );
      return f;
    };
    h.run(['--name', 'web'], ['nginx', '-c', conf('web')]);
    h.run(['--ip', 'fd00:a5::20'], ['nginx', '-c', conf('web6')]);
    await waitInstances(8080, 2, (s) => s.name === 'web');
    await waitInstances(8080, 2, (s) => s.vip === 'fd00:a5::20');
    const a = await h.runToEnd([], ['curl', '-sS', '-m', '15', 'http://web:8080/']);
    expect(a.stdout, a.stderr).toMatch(/^hello from web at 10\.\d+\.\d+\.\d+$/m);
    const b = await h.runToEnd([], ['curl', '-sS', '-m', '15', '-g', 'http://[fd00:a5::20]:8080/']);
    expect(b.stdout, b.stderr).toContain('hello from web6 at fd00:a5::20');
  });
});
