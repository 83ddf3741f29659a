/** The live view's HTTP server with a fake API handler, on loopback: what it serves, what it refuses (other Hosts:
 * DNS rebinding; other methods; other routes; huge headers), its headers (CSP, nosniff, frames), and the start-up
 * check of --ui-address (loopback unless --ui-allow-remote). */
import { request } from 'node:http';
import net from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseUiAddress } from '../../src/daemon/config.js';
import { decodeNodeRecord } from '../../src/daemon/gossip-records.js';
import { nodeDoors } from '../../src/policy/daemon-ports.js';
import { AppswitchError } from '../../src/errors.js';
import { isLoopbackHost } from '../../src/net-listen.js';
import { startLiveView } from '../../src/ui/mount.js';
import { cspFor, hostAllowed, UI_ROUTES, UiServer, type UiPage } from '../../src/ui/server.js';
import { unavailableEvents } from '../../src/api/unavailable.js';

const log = pino({ level: 'silent' });
const HTML = '<!doctype html><html><head><style>body{color:red}</style></head><body><script>window.x=1</script></body></html>';
const PAGE: UiPage = { html: HTML, csp: cspFor(HTML), etag: '"abc"' };

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(port: number, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('UiServer', () => {
  const seen: string[] = [];
  let server: UiServer;
  let port = 0;
  beforeAll(async () => {
    server = new UiServer(
      (req, res) => {
        seen.push(req.url ?? '');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('[]');
      },
      log,
      PAGE,
    );
    port = Number((await server.listen('127.0.0.1', 0)).split(':').pop());
  });
  afterAll(() => server.close());

  it('serves the page with a CSP that allows only its own inline script and style', async () => {
    const r = await get(port, '/');
    expect(r.status).toBe(200);
    expect(r.body).toBe(HTML);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
    const csp = String(r.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain('unsafe-inline');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['x-frame-options']).toBe('DENY');
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    expect((await get(port, '/', { headers: { 'if-none-match': '"abc"' } })).status).toBe(304);
    expect((await get(port, '/', { method: 'HEAD' })).body).toBe('');
  });

  it('passes the read-only routes to the API handler, and no others', async () => {
    for (const route of UI_ROUTES) expect((await get(port, `/v1/${route}?x=1`)).status).toBe(200);
    expect(seen).toContain('/v1/edges?x=1');
    for (const path of ['/v1/connections', '/v1/exposures/10.0.0.1/80', '/v2/apps', '/etc/passwd', '/../dist/ui/page.html', '/v1/']) {
      const r = await get(port, path);
      expect(r.status, path).toBe(404);
      expect(JSON.parse(r.body).error.code).toBe('ERR_NOT_FOUND');
    }
    expect(seen.some((u) => u.startsWith('/v1/connections'))).toBe(false);
  });

  it('refuses every method but GET and HEAD (405), before the API handler sees it', async () => {
    const before = seen.length;
    for (const method of ['POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS']) {
      const r = await get(port, '/v1/vservices', { method });
      expect(r.status, method).toBe(405);
      expect(r.headers.allow).toBe('GET, HEAD');
    }
    expect((await get(port, '/v1/events', { method: 'HEAD' })).status).toBe(405);
    expect(seen.length).toBe(before);
  });

  it('refuses a Host header that is a DNS name (DNS rebinding), serves IP literals and localhost', async () => {
    for (const host of ['evil.example', 'evil.example:6664', 'attacker.com.', '127.0.0.1.nip.io']) {
      const r = await get(port, '/v1/apps', { headers: { host } });
      expect(r.status, host).toBe(403);
      expect(JSON.parse(r.body).error.code).toBe('ERR_PERMISSION');
    }
    for (const host of ['127.0.0.1', `127.0.0.1:${port}`, 'localhost:6664', '[::1]:6664', '192.0.2.1:6664']) expect((await get(port, '/', { headers: { host } })).status, host).toBe(200);
  });

  it('answers huge headers with an error and keeps serving', async () => {
    const r = await get(port, '/', { headers: { 'x-big': 'a'.repeat(40_000) } }).catch((e: Error) => ({ status: -1, body: e.message }));
    expect([431, 400, -1]).toContain(r.status);
    expect((await get(port, '/')).status).toBe(200);
  });

  it('closes a connection that sends nothing when it closes, and every open one', async () => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined); /* reset by the close below */
    await new Promise((r) => s.once('connect', r));
    const closed = new Promise((r) => s.once('close', r));
    const other = new UiServer(() => undefined, log, PAGE);
    await other.close(); /* never listened: nothing to do */
    s.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n'); /* unfinished */
    await server.close();
    await closed;
    server = new UiServer(() => undefined, log, PAGE);
    port = Number((await server.listen('127.0.0.1', 0)).split(':').pop());
  });

  it('says so when the page is not built', async () => {
    const bare = new UiServer(() => undefined, log, undefined);
    const p = Number((await bare.listen('127.0.0.1', 0)).split(':').pop());
    const r = await get(p, '/');
    expect(r.status).toBe(503);
    expect(r.body).toContain('npm');
    await bare.close();
  });
});

describe('hostAllowed', () => {
  it('takes IP literals (with a port) and localhost only', () => {
    for (const h of ['127.0.0.1', '127.0.0.1:80', '10.1.2.3:6664', '[::1]', '[::1]:6664', '[fe80::1]:1', 'localhost', 'LOCALHOST:1', 'a.localhost']) expect(hostAllowed(h), h).toBe(true);
    for (const h of [undefined, '', 'example.com', 'example.com:80', '127.1', '0x7f.0.0.1', '127.0.0.1.example', '[::1', '::1', '1.2.3.4:99999999', 'x'.repeat(400)]) expect(hostAllowed(h), String(h)).toBe(false);
  });
});

describe('--ui-address', () => {
  it('is an ADDR:PORT with an IP address', () => {
    expect(parseUiAddress('127.0.0.1:6664')).toEqual({ host: '127.0.0.1', port: 6664 });
    expect(parseUiAddress('[::1]:6664')).toEqual({ host: '::1', port: 6664 });
    for (const bad of ['localhost:6664', '127.0.0.1', 'x:1', '']) expect(() => parseUiAddress(bad), bad).toThrow(AppswitchError);
  });

  it('must be loopback unless --ui-allow-remote', async () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('::1')).toBe(true);
    expect(isLoopbackHost('192.0.2.1')).toBe(false);
    expect(isLoopbackHost('0.0.0.0')).toBe(false);
    expect(isLoopbackHost('::ffff:127.0.0.1')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(false);
    const sources = { control: () => [], events: unavailableEvents(), edges: { edges: () => Promise.reject(new Error('unused')) } };
    const err = await startLiveView({ address: { host: '0.0.0.0', port: 0 }, allowRemote: false, sources, log }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppswitchError);
    expect((err as AppswitchError).code).toBe('ERR_CONFIG');
    expect((err as Error).message).toMatch(/not a loopback address.*--ui-allow-remote/);
    const v = await startLiveView({ address: { host: '127.0.0.1', port: 0 }, allowRemote: false, sources, log });
    expect(v.address).toMatch(/^127\.0\.0\.1:\d+$/);
    await v.close();
  });
});

describe("the live view's port on other nodes", () => {
  const enc = (o: unknown): Uint8Array => Buffer.from(JSON.stringify(o));
  const base = { ports: { low: 40000, high: 60000 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53 };

  it('travels in the @node record, checked', () => {
    expect(decodeNodeRecord(enc({ ...base, uiPort: 6664 }))).toEqual({ ok: true, value: { ...base, uiPort: 6664 } });
    for (const uiPort of [0, 70000, '6664', -1]) expect(decodeNodeRecord(enc({ ...base, uiPort })).ok, String(uiPort)).toBe(false);
  });

  it('is a closed door of that node, TCP', () => {
    const doors = nodeDoors('192.0.2.7', { gossip: 7946, peer: 7947, dns: 53, pool: { low: 40000, high: 60000 }, ui: 6664 }, false);
    expect(doors).toContainEqual({ address: '192.0.2.7', proto: 'tcp', low: 6664, high: 6664, kind: 'ui' });
    expect(nodeDoors('192.0.2.7', { gossip: 7946, peer: 7947, dns: 53, pool: { low: 40000, high: 60000 } }, false).some((d) => d.kind === 'ui')).toBe(false);
  });
});
