/** Compatibility suite, web servers: nginx, apache2, lighttpd, haproxy, python3's http.server, a Node.js http server
 * and a static Go binary, each with a stock or minimal config written here into a temp dir, started under
 * `appswitch run --name --ip` on host a and fetched by name with curl from host a (fast path) and host b. Each
 * serves a file (or a fixed text) whose bytes the test checks. The README's "Compatibility" table lists the results. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGoServer, type CompatServer, once, Pair, type ServerOptions } from '../../helpers/compat.js';
import type { Result } from '../../helpers/hosts.js';
import { expectCrossHost, expectFastPath } from './checks.js';

let pair: Pair;

beforeAll(async () => {
  pair = await Pair.create('cw');
});

afterAll(async () => {
  await pair?.destroy();
});

/** A document root in `dir` with one index.html holding `body`, readable by the user a server drops to. */
function docroot(dir: string, body: string): string {
  const www = path.join(dir, 'www');
  mkdirSync(www, { mode: 0o755 });
  writeFileSync(path.join(www, 'index.html'), body, { mode: 0o644 });
  return www;
}

interface WebCase {
  title: string;
  name: string;
  ip: string;
  port: number;
  /** Writes the config into `dir` and says how to run the server. */
  prepare: (dir: string) => Omit<ServerOptions, 'name' | 'ip' | 'port'> | Promise<Omit<ServerOptions, 'name' | 'ip' | 'port'>>;
  /** The exact body every client must get. */
  body: string;
  /** Extra check of a good answer (e.g. the client identity the server saw); the client ran with --ip `clientIp`. */
  check?: (r: Result, clientIp: string) => void;
  /** For the first test (which starts the server), when starting takes longer than vitest's 60 s. */
  startMs?: number;
}

const cases: WebCase[] = [
  {
    title: 'nginx 1.22 with `listen 80; listen [::]:80;` (the Debian default site)',
    name: 'nginx',
    ip: '10.2.0.1',
    port: 80,
    body: 'hello from nginx\n',
    prepare: (dir) => {
      const www = docroot(dir, 'hello from nginx\n');
      const conf = path.join(dir, 'nginx.conf');
      const tmp = (n: string): string => `${n}_temp_path ${path.join(dir, n)};`;
      writeFileSync(
        conf,
        [
          'daemon off;',
          'worker_processes 1;',
          `pid ${path.join(dir, 'nginx.pid')};`,
          'error_log stderr;',
          'events { worker_connections 64; }',
          'http {',
          '  access_log off;',
          `  ${tmp('client_body')} ${tmp('proxy')} ${tmp('fastcgi')} ${tmp('uwsgi')} ${tmp('scgi')}`,
          `  server { listen 80; listen [::]:80; root ${www}; }`,
          '}',
        ].join('\n') + '\n',
      );
      return { cmd: ['nginx', '-c', conf, '-e', 'stderr'] };
    },
  },
  {
    title: 'apache2 2.4 with `Listen 80` (mpm_event, as Debian ships it)',
    name: 'apache',
    ip: '10.2.0.2',
    port: 80,
    body: 'hello from apache2\n',
    prepare: (dir) => {
      const www = docroot(dir, 'hello from apache2\n');
      const conf = path.join(dir, 'apache2.conf');
      const mod = (m: string): string => `LoadModule ${m}_module /usr/lib/apache2/modules/mod_${m}.so`;
      writeFileSync(
        conf,
        [
          `ServerRoot ${dir}`,
          'ServerName apache',
          'Listen 80',
          mod('mpm_event'),
          mod('authz_core'),
          mod('dir'),
          mod('mime'),
          'TypesConfig /etc/mime.types',
          'User www-data',
          'Group www-data',
          `PidFile ${path.join(dir, 'apache2.pid')}`,
          `DefaultRuntimeDir ${dir}`,
          `ErrorLog ${path.join(dir, 'error.log')}`,
          `DocumentRoot ${www}`,
          `<Directory ${www}>`,
          '  Require all granted',
          '</Directory>',
        ].join('\n') + '\n',
      );
      return { cmd: ['apache2', '-DFOREGROUND', '-f', conf], logs: [path.join(dir, 'error.log')] };
    },
  },
  {
    title: 'lighttpd 1.4 with `server.port = 80`',
    name: 'lighttpd',
    ip: '10.2.0.3',
    port: 80,
    body: 'hello from lighttpd\n',
    prepare: (dir) => {
      const www = docroot(dir, 'hello from lighttpd\n');
      const conf = path.join(dir, 'lighttpd.conf');
      writeFileSync(
        conf,
        [
          `server.document-root = "${www}"`,
          'server.port = 80',
          'server.username = "www-data"',
          'server.groupname = "www-data"',
          'index-file.names = ( "index.html" )',
        ].join('\n') + '\n',
      );
      return { cmd: ['lighttpd', '-D', '-f', conf] };
    },
  },
  {
    title: 'haproxy 2.6 as an HTTP server (`bind :8080`, `http-request return`)',
    name: 'haproxy',
    ip: '10.2.0.4',
    port: 8080,
    body: 'hello from haproxy\n',
    prepare: (dir) => {
      const conf = path.join(dir, 'haproxy.cfg');
      writeFileSync(
        conf,
        [
          'global',
          '  log stderr format raw local0',
          'defaults',
          '  mode http',
          '  timeout connect 5s',
          '  timeout client 10s',
          '  timeout server 10s',
          'frontend web',
          '  bind :8080',
          '  http-request return status 200 content-type text/plain string "hello from haproxy\\n"',
        ].join('\n') + '\n',
      );
      return { cmd: ['haproxy', '-W', '-db', '-f', conf] };
    },
  },
  {
    title: "python3 -m http.server (Debian's Python 3.11; one dual-stack [::] socket)",
    name: 'pyweb',
    ip: '10.2.0.5',
    port: 8000,
    body: 'hello from python\n',
    prepare: (dir) => {
      const www = docroot(dir, 'hello from python\n');
      return { cmd: ['/usr/bin/python3', '-m', 'http.server', '8000', '--directory', www] };
    },
  },
  {
    title: 'a Node.js http server (`listen(8000)`: one dual-stack [::] socket)',
    name: 'nodeweb',
    ip: '10.2.0.6',
    port: 8000,
    body: '',
    prepare: (dir) => {
      const js = path.join(dir, 'server.js');
      writeFileSync(js, "require('http').createServer((q, r) => r.end(`hello from node, you are ${q.socket.remoteAddress}\\n`)).listen(8000);\n");
      return { cmd: ['/usr/bin/node', js] };
    },
    check: (r, clientIp) => expect(r.stdout).toBe(`hello from node, you are ::ffff:${clientIp}\n`),
  },
  {
    title: 'a static Go binary (net/http, CGO_ENABLED=0, `ListenAndServe(":8080")`)',
    name: 'goweb',
    ip: '10.2.0.7',
    port: 8080,
    body: '',
    // the first build on a machine compiles Go's standard library: minutes on two busy cores
    prepare: () => ({ cmd: [buildGoServer(), ':8080'] }),
    startMs: 300_000,
    check: (r, clientIp) => expect(r.stdout).toMatch(new RegExp(`^hello from go, you are ${clientIp.replace(/\./g, '\\.')}:\\d+\\n$`)),
  },
];

// the programs are independent (own vip, own config dir; every server on host a, so host a's daemon sets up
// only same-host connections and host b's only cross-host ones): they start and are checked side by side
describe.concurrent('compat: web servers', () => {
  cases.forEach((c, i) => {
    describe(c.title, () => {
      const server = once(async (): Promise<CompatServer> => {
        const dir = pair.tempDir(c.name);
        return pair.start(pair.a, { name: c.name, ip: c.ip, port: c.port, ...(await c.prepare(dir)) });
      });
      const url = `http://${c.name}${c.port === 80 ? '' : `:${c.port}`}/`;
      const good = (r: Result): boolean => r.code === 0 && (c.body ? r.stdout === c.body : r.stdout.startsWith('hello from'));

      it('same host (fast path): curl by name gets the payload', async () => {
        const srv = await server();
        const clientIp = `10.2.1.${2 * i + 1}`;
        const r = await pair.reach(srv, pair.a, ['--ip', clientIp], ['curl', '-sS', '--fail', '-m', '10', url], good);
        if (c.body) expect(r.result.stdout).toBe(c.body);
        c.check?.(r.result, clientIp);
        expectFastPath(r);
      }, c.startMs);

      it('other host: curl by name gets the payload', async () => {
        const srv = await server();
        const clientIp = `10.2.1.${2 * i + 2}`;
        const r = await pair.reach(srv, pair.b, ['--ip', clientIp], ['curl', '-sS', '--fail', '-m', '10', url], good);
        if (c.body) expect(r.result.stdout).toBe(c.body);
        c.check?.(r.result, clientIp);
        expectCrossHost(r);
      });
    });
  });
});
