/** Compatibility suite, databases, caches and brokers: redis, memcached, PostgreSQL, MariaDB and mosquitto, each with
 * its stock listening config (every address) and data in a temp dir, started under `appswitch run --name --ip` on
 * host a, and used by name with its own stock client from host a (fast path) and host b: a value written and read
 * back. The README's "Compatibility" table lists the results. */
import { execFileSync } from 'node:child_process';
import { appendFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once, Pair } from '../../helpers/compat.js';
import type { TestHost } from '../../helpers/hosts.js';
import { expectCrossHost, expectFastPath } from './checks.js';

let pair: Pair;

beforeAll(async () => {
  pair = await Pair.create('cd');
});

afterAll(async () => {
  await pair?.destroy();
});

/** The two clients of every program: on the server's host (fast path) and on the other one. */
const sides: Array<{ title: string; host: () => TestHost; check: typeof expectFastPath; key: string }> = [
  { title: 'same host (fast path)', host: () => pair.a, check: expectFastPath, key: 'same-host' },
  { title: 'other host', host: () => pair.b, check: expectCrossHost, key: 'other-host' },
];

// the programs are independent (own vip, own config dir; every server on host a, so host a's daemon sets up
// only same-host connections and host b's only cross-host ones): they start and are checked side by side
describe.concurrent('compat: databases, caches and brokers', () => {
  describe('redis-server 7.0, stock bind (`* -::*`), protected-mode off, as user redis', () => {
    const server = once(async () => {
      const dir = pair.tempDir('redis', 'redis');
      const conf = path.join(dir, 'redis.conf');
      // no `bind`: redis's own default, every IPv4 and IPv6 address
      writeFileSync(conf, ['port 6379', `dir ${dir}`, 'save ""', 'appendonly no', 'protected-mode no', 'logfile ""', ''].join('\n'));
      return pair.start(pair.a, { name: 'redis', ip: '10.3.0.1', port: 6379, user: 'redis', cmd: ['redis-server', conf] });
    });
    for (const side of sides) {
      it(`${side.title}: redis-cli SET then GET by name`, async () => {
        const srv = await server();
        const set = await pair.reach(srv, side.host(), [], ['redis-cli', '-h', 'redis', 'SET', `compat:${side.key}`, `value-${side.key}`], (r) => r.stdout === 'OK\n');
        side.check(set);
        const get = await side.host().runToEnd([], ['redis-cli', '-h', 'redis', 'GET', `compat:${side.key}`]);
        expect(get.stdout, get.stderr).toBe(`value-${side.key}\n`);
      });
    }
  });

  describe('memcached 1.6, stock listen (every address), -u memcache', () => {
    const server = once(() => pair.start(pair.a, { name: 'memcached', ip: '10.3.0.2', port: 11211, cmd: ['memcached', '-u', 'memcache', '-p', '11211', '-m', '16'] }));
    for (const side of sides) {
      it(`${side.title}: set and get over the text protocol (nc)`, async () => {
        const srv = await server();
        const v = `value-${side.key}`;
        const script = `printf 'set ${side.key} 0 0 ${v.length}\\r\\n${v}\\r\\nget ${side.key}\\r\\nquit\\r\\n' | nc -N memcached 11211`;
        const want = `STORED\r\nVALUE ${side.key} 0 ${v.length}\r\n${v}\r\nEND\r\n`;
        const r = await pair.reach(srv, side.host(), [], ['sh', '-c', script], (x) => x.stdout === want);
        expect(r.result.stdout).toBe(want);
        side.check(r);
      });
    }
  });

  /** The newest PostgreSQL server binaries Debian installed (/usr/lib/postgresql/N/bin). */
  function pgBin(): string {
    const versions = readdirSync('/usr/lib/postgresql').sort((x, y) => Number(y) - Number(x));
    if (!versions[0]) throw new Error('no PostgreSQL server in /usr/lib/postgresql (scripts/test.sh installs postgresql)');
    return path.join('/usr/lib/postgresql', versions[0], 'bin');
  }

  describe("PostgreSQL 15, listen_addresses = '*', initdb into a temp dir, as user postgres", () => {
    const server = once(async () => {
      const dir = pair.tempDir('pg', 'postgres');
      const data = path.join(dir, 'data');
      execFileSync('runuser', ['-u', 'postgres', '--', path.join(pgBin(), 'initdb'), '-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync'], { stdio: 'pipe' });
      appendFileSync(path.join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n');
      const cmd = [path.join(pgBin(), 'postgres'), '-D', data, '-c', 'listen_addresses=*', '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=off'];
      return pair.start(pair.a, { name: 'pg', ip: '10.3.0.3', port: 5432, user: 'postgres', cmd });
    });
    for (const side of sides) {
      it(`${side.title}: psql writes a row and reads it back`, async () => {
        const srv = await server();
        const sql = [
          'CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text)',
          `INSERT INTO kv VALUES ('${side.key}', 'value-${side.key}') ON CONFLICT (k) DO UPDATE SET v = excluded.v`,
          `SELECT v FROM kv WHERE k = '${side.key}'`,
        ];
        const r = await pair.reach(srv, side.host(), [], ['psql', '-h', 'pg', '-U', 'postgres', '-qtA', ...sql.flatMap((s) => ['-c', s])], (x) => x.code === 0);
        expect(r.result.stdout).toBe(`value-${side.key}\n`);
        side.check(r);
      });
    }
    it("listens on every address it asks for: IPv4 and IPv6 (listen_addresses = '*')", async () => {
      const srv = await server();
      await srv.until(() => 'database system is ready', async () => srv.output.includes('database system is ready to accept connections'));
      expect(srv.output).toContain('listening on IPv4 address "0.0.0.0", port 5432');
      expect(srv.output).not.toContain('could not bind');
      expect(srv.output).toContain('listening on IPv6 address "::", port 5432');
    });
  });

  describe('MariaDB 10.11, stock bind-address (every address), mariadb-install-db into a temp dir, --user=mysql', () => {
    const server = once(async () => {
      const dir = pair.tempDir('mariadb', 'mysql');
      const data = path.join(dir, 'data');
      execFileSync('mariadb-install-db', ['--no-defaults', `--datadir=${data}`, '--user=mysql', '--auth-root-authentication-method=normal', '--skip-test-db'], { stdio: 'pipe' });
      const init = path.join(dir, 'init.sql');
      writeFileSync(init, "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'pw';\nGRANT ALL ON *.* TO 'app'@'%';\n", { mode: 0o644 });
      const cmd = [
        'mariadbd',
        '--no-defaults',
        `--datadir=${data}`,
        '--user=mysql',
        `--socket=${path.join(dir, 'mysqld.sock')}`,
        `--pid-file=${path.join(dir, 'mysqld.pid')}`,
        '--port=3306',
        '--skip-log-bin',
        '--skip-name-resolve',
        '--innodb-buffer-pool-size=16M',
        `--init-file=${init}`,
      ];
      return pair.start(pair.a, { name: 'mariadb', ip: '10.3.0.4', port: 3306, cmd });
    });
    for (const side of sides) {
      it(`${side.title}: the mariadb client writes a row and reads it back`, async () => {
        const srv = await server();
        const sql = [
          'CREATE DATABASE IF NOT EXISTS compat',
          'CREATE TABLE IF NOT EXISTS compat.kv (k VARCHAR(16) PRIMARY KEY, v TEXT)',
          `REPLACE INTO compat.kv VALUES ('${side.key}', 'value-${side.key}')`,
          `SELECT v FROM compat.kv WHERE k = '${side.key}'`,
        ].join('; ');
        const r = await pair.reach(srv, side.host(), [], ['mariadb', '-h', 'mariadb', '-u', 'app', '-ppw', '-N', '-B', '-e', sql], (x) => x.code === 0);
        expect(r.result.stdout).toBe(`value-${side.key}\n`);
        side.check(r);
      });
    }
  });

  describe('mosquitto 2.0 with `listener 1883` (every address), allow_anonymous', () => {
    const server = once(async () => {
      const dir = pair.tempDir('mosquitto');
      const conf = path.join(dir, 'mosquitto.conf');
      writeFileSync(conf, ['listener 1883', 'allow_anonymous true', 'persistence false', 'log_dest stderr', ''].join('\n'));
      return pair.start(pair.a, { name: 'mqtt', ip: '10.3.0.5', port: 1883, cmd: ['mosquitto', '-c', conf] });
    });
    for (const side of sides) {
      it(`${side.title}: mosquitto_pub a retained message, mosquitto_sub receives it`, async () => {
        const srv = await server();
        const topic = `compat/${side.key}`;
        const pub = await pair.reach(srv, side.host(), [], ['mosquitto_pub', '-h', 'mqtt', '-t', topic, '-m', `value-${side.key}`, '-r'], (x) => x.code === 0);
        side.check(pub);
        const sub = await side.host().runToEnd([], ['mosquitto_sub', '-h', 'mqtt', '-t', topic, '-C', '1', '-W', '20']);
        expect(sub.stdout, sub.stderr).toBe(`value-${side.key}\n`);
      });
    }
  });
});
