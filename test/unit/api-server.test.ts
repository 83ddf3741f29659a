/** The HTTP API over real sockets, without a daemon: the control server telling HTTP from newline JSON by the
 * first bytes, the handler's privilege, token and read-only checks, the limits (body, headers, slow headers), the
 * event stream (SSE, NDJSON, release on disconnect, a reader that does not read), and the CLI's client (HTTP, and
 * the newline-JSON fallback for an old daemon). Sources are fakes; sockets live in a temporary directory. */
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiSources, createApiHandler } from '../../src/api/handler.js';
import { ApiServer } from '../../src/api/server.js';
import { unavailableEdges, unavailableEvents } from '../../src/api/unavailable.js';
import { legacyRequest, request, streamEvents } from '../../src/cli/client.js';
import type { PeerCredentials } from '../../src/daemon/access.js';
import { ControlServer, sniffProtocol } from '../../src/daemon/control.js';
import { ControlCallError, type ControlMethod } from '../../src/daemon/control-protocol.js';
import type { AppswitchEvent, EventSource, SubscribeOptions, Subscription } from '../../src/events/types.js';
import { AppswitchError } from '../../src/errors.js';

const log = pino({ level: 'silent' });
const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-api-unit-'));
const sockPath = (name: string): string => path.join(dir, name);

/** An event source the test feeds: each subscription's queue, and whether it was closed. */
class FakeEvents implements EventSource {
  readonly subs: Array<{ opts?: SubscribeOptions; queue: AppswitchEvent[]; closed: boolean; nexts: number; wake?: () => void }> = [];
  subscribe(opts?: SubscribeOptions): Subscription {
    const s: (typeof this.subs)[number] = { queue: [], closed: false, nexts: 0 };
    if (opts) s.opts = opts;
    this.subs.push(s);
    return {
      next: async (): Promise<AppswitchEvent[]> => {
        s.nexts++;
        while (s.queue.length === 0) {
          if (s.closed) throw new Error('closed');
          await new Promise<void>((r) => (s.wake = r));
        }
        return s.queue.splice(0);
      },
      close: (): void => {
        s.closed = true;
        s.wake?.();
      },
    };
  }
  push(i: number, e: AppswitchEvent): void {
    const s = this.subs[i];
    if (!s) throw new Error(`no subscription ${i}`);
    s.queue.push(e);
    s.wake?.();
  }
}

const calls: Array<{ method: ControlMethod; params: Record<string, unknown>; peer?: PeerCredentials }> = [];
const events = new FakeEvents();
const sources: ApiSources = {
  control: (method, params, peer) => {
    calls.push(peer ? { method, params, peer } : { method, params });
    if (method === 'status') return { node: 'n1', uptimeSeconds: 1 };
    if (method === 'apps') return [];
    if (method === 'info') return { node: 'n1', project: params.project ?? null };
    if (method === 'deleteVservice') throw new ControlCallError('ERR_NOT_FOUND', `no virtual service named ${String(params.name)}`);
    if (method === 'expose') return Promise.resolve({ exposure: null });
    if (method === 'members') throw new Error('boom');
    return undefined;
  },
  events,
  edges: unavailableEdges('n1'),
};

function ev(seq: number, type: AppswitchEvent['type'] = 'app.started'): AppswitchEvent {
  return { seq, time: new Date(0).toISOString(), node: 'n1', type, client: { app: 'a1', name: 'web', identity: '10.0.0.5', node: 'n1' } };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request on a Unix socket (or TCP port), the whole answer. */
function call(target: { socketPath: string } | { port: number }, method: string, p: string, opts: { body?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, host: 'socketPath' in target ? 'appswitch' : '127.0.0.1', method, path: p, agent: false, headers: opts.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Raw bytes in; what came back until the server closed or `waitMs` passed, and whether the server closed. */
function raw(p: string, chunks: Array<string | Buffer>, waitMs = 500): Promise<{ out: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.createConnection(p);
    let out = '';
    let closed = false;
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
    });
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => {
      closed = true;
      clearTimeout(t);
      resolve({ out, closed });
    });
    const t = setTimeout(() => {
      s.destroy();
      resolve({ out, closed });
    }, waitMs);
  });
}

const ROOT: PeerCredentials = { pid: 1, uid: 0, gid: 0 };
const MEMBER: PeerCredentials = { pid: 1, uid: 1000, gid: 1000 };

let control: ControlServer;
let refusing: ControlServer;
const apis: ApiServer[] = [];
const servers: net.Server[] = [];
let tcpPort = 0;
const TOKEN = 'f'.repeat(64);

/** A Unix socket whose every connection is HTTP for `peer` (what the control server does after admission). */
function httpSocket(name: string, api: ApiServer, peer?: PeerCredentials): Promise<string> {
  const p = sockPath(name);
  const s = net.createServer((sock) => api.serve(sock, Buffer.alloc(0), peer));
  servers.push(s);
  return new Promise((resolve) => s.listen(p, () => resolve(p)));
}

function newApi(opts: Parameters<typeof createApiHandler>[1], limits?: ConstructorParameters<typeof ApiServer>[2]): ApiServer {
  const a = new ApiServer(createApiHandler(sources, opts), log, limits);
  apis.push(a);
  return a;
}

beforeAll(async () => {
  control = new ControlServer((req) => sources.control(req.method, req.params ?? {}), log);
  control.http = newApi({ readOnly: false, auth: 'peer' }, { headersTimeoutMs: 400, bodyTimeoutMs: 400 });
  await control.listen(sockPath('control.sock'), () => undefined);
  refusing = new ControlServer(() => undefined, log, () => 'uid 1000 is not root and not in group appswitch');
  refusing.http = newApi({ readOnly: false, auth: 'peer' });
  await refusing.listen(sockPath('refusing.sock'), () => undefined);
  const tcp = newApi({ readOnly: false, auth: 'token', token: TOKEN });
  tcpPort = Number(/:(\d+)$/.exec(await tcp.listenTcp('127.0.0.1', 0))?.[1]);
});

afterAll(async () => {
  await control.close();
  await refusing.close();
  for (const a of apis) await a.close();
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sniffProtocol', () => {
  it('an HTTP method and a space is HTTP; `{`, garbage and other words are newline JSON; a prefix waits', () => {
    const s = (t: string): string | undefined => sniffProtocol(Buffer.from(t));
    expect(s('GET / HTTP/1.1\r\n')).toBe('http');
    expect(s('\r\nDELETE /v1/x')).toBe('http');
    expect(s('{"method":"status"}\n')).toBe('json');
    expect(s('  \n{')).toBe('json');
    expect(s('GETX')).toBe('json');
    expect(s('Get / HTTP/1.1')).toBe('json');
    expect(s('\x00\xff')).toBe('json');
    expect(s('GE')).toBeUndefined();
    expect(s('POST')).toBeUndefined();
    expect(s(' \n\t')).toBeUndefined();
  });
});

describe('the control socket speaks both protocols', () => {
  it('HTTP: GET /v1/status answers the control result as JSON', async () => {
    const r = await call({ socketPath: sockPath('control.sock') }, 'GET', '/v1/status');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r.body)).toEqual({ node: 'n1', uptimeSeconds: 1 });
  });

  it('newline JSON: requests still get their answers, also after leading blank lines', async () => {
    const { out } = await raw(sockPath('control.sock'), ['\n  \r\n', '{"id":3,"method":"status"}\n{"id":4,"method":"nope"}\n'], 300);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { id: number; result?: unknown; error?: { code: string } });
    expect(lines[0]).toEqual({ id: 3, result: { node: 'n1', uptimeSeconds: 1 } });
    expect(lines[1]?.error?.code).toBe('ERR_UNKNOWN_METHOD');
  });

  it('garbage that starts like a word is newline JSON (ERR_BAD_JSON), and a method split over writes is still HTTP', async () => {
    const g = await raw(sockPath('control.sock'), ['GETS /x\n'], 300);
    expect(JSON.parse(g.out)).toMatchObject({ error: { code: 'ERR_BAD_JSON' } });
    const h = await raw(sockPath('control.sock'), ['G', 'ET /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], 500);
    expect(h.out).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(h.out).toContain('\r\n\r\n[]\n');
  });

  it('keep-alive: several requests on one connection, pipelined, each answered in order', async () => {
    const req = (p: string): string => `GET ${p} HTTP/1.1\r\nHost: appswitch\r\n\r\n`;
    const { out } = await raw(sockPath('control.sock'), [req('/v1/apps') + req('/v1/info?project=p') + req('/v1/nope')], 300);
    const statuses = [...out.matchAll(/^HTTP\/1\.1 (\d+)/gm)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '200', '404']);
    expect(out).toContain('"project":"p"');
  });

  it('errors: 404 with a JSON body, 405 with Allow, ERR_NOT_FOUND from the daemon, 500 for an exception', async () => {
    const s = { socketPath: sockPath('control.sock') };
    const nf = await call(s, 'GET', '/v1/nothing');
    expect(nf.status).toBe(404);
    expect(JSON.parse(nf.body)).toMatchObject({ error: { code: 'ERR_NOT_FOUND' } });
    const na = await call(s, 'PATCH', '/v1/apps');
    expect(na.status).toBe(405);
    expect(na.headers.allow).toBe('GET');
    const d = await call(s, 'DELETE', '/v1/vservices/db');
    expect(d.status).toBe(404);
    expect(JSON.parse(d.body)).toEqual({ error: { code: 'ERR_NOT_FOUND', message: 'no virtual service named db' } });
    const boom = await call(s, 'GET', '/v1/members');
    expect(boom.status).toBe(500);
    expect(JSON.parse(boom.body)).toMatchObject({ error: { code: 'ERR_INTERNAL', message: 'boom' } });
    const unserved = await call(s, 'GET', '/v1/vservices');
    expect(unserved.status).toBe(404);
    expect(JSON.parse(unserved.body).error.message).toContain('not served by this daemon');
    const post = await call(s, 'POST', '/v1/exposures', { body: '{"vip":"10.0.0.5","port":80}', headers: { 'Content-Type': 'application/json' } });
    expect(post.status).toBe(200);
    expect(JSON.parse(post.body)).toEqual({ exposure: null });
  });

  it('a refused peer gets 403 ERR_PERMISSION in HTTP, and the newline answer in newline JSON', async () => {
    const r = await call({ socketPath: sockPath('refusing.sock') }, 'GET', '/v1/status');
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ error: { code: 'ERR_PERMISSION', message: 'permission denied: uid 1000 is not root and not in group appswitch' } });
    const j = await raw(sockPath('refusing.sock'), ['{"id":1,"method":"status"}\n'], 300);
    expect(JSON.parse(j.out)).toMatchObject({ id: 0, error: { code: 'ERR_PERMISSION' } });
    await expect(request(sockPath('refusing.sock'), 'status')).rejects.toMatchObject({ code: 'ERR_PERMISSION', message: expect.stringContaining('ERR_PERMISSION: permission denied: uid 1000') as unknown });
  });
});

describe('limits: nothing a client sends stops the server serving others', () => {
  it('a body over 64 KiB: 413 and the connection closes (declared, or streamed chunked)', async () => {
    const big = `{"vip":"${'x'.repeat(70_000)}","port":1}`;
    const r = await call({ socketPath: sockPath('control.sock') }, 'POST', '/v1/exposures', { body: big });
    expect(r.status).toBe(413);
    expect(r.headers.connection).toBe('close');
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'ERR_TOO_LARGE' } });
    const chunked = await raw(sockPath('control.sock'), ['POST /v1/exposures HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', `11170\r\n${'y'.repeat(70_000)}\r\n`], 1000);
    expect(chunked.out).toMatch(/^HTTP\/1\.1 413/);
    expect(chunked.closed).toBe(true);
  });

  it('Expect: 100-continue: a body over the limit is refused before it is sent; a good one is asked for', async () => {
    const big = await raw(sockPath('control.sock'), ['POST /v1/exposures HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n'], 1000);
    expect(big.out).toMatch(/^HTTP\/1\.1 413 /);
    expect(big.out).not.toContain('100 Continue');
    expect(big.closed).toBe(true);
    const body = '{"vip":"10.0.0.5","port":80}';
    const s = net.createConnection(sockPath('control.sock'));
    let out = '';
    s.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('100 Continue') && !out.includes('200 OK') && !s.writableEnded) s.end(body);
    });
    s.write(`POST /v1/exposures HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
    await new Promise((r) => s.on('close', r));
    expect(out).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/);
  });

  it('headers over 16 KiB: 431 and close; a bad request line: 400 and close', async () => {
    const huge = await raw(sockPath('control.sock'), [`GET /v1/apps HTTP/1.1\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`], 1000);
    expect(huge.out).toMatch(/^HTTP\/1\.1 431/);
    expect(huge.out).toContain('ERR_TOO_LARGE');
    expect(huge.closed).toBe(true);
    const bad = await raw(sockPath('control.sock'), ['GET /v1/apps HTTP/9.9 nonsense\r\n\r\n'], 1000);
    expect(bad.out).toMatch(/^HTTP\/1\.1 400/);
    expect(bad.out).toContain('ERR_BAD_REQUEST');
    expect(bad.closed).toBe(true);
  });

  it('headers sent a byte at a time, or a body that never ends, are cut off (timeouts shortened to 400 ms here)', async () => {
    const sl = raw(sockPath('control.sock'), ['GET /v1/apps HTTP/1.1\r\nHo'], 3000);
    const body = raw(sockPath('control.sock'), ['POST /v1/exposures HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{"vip"'], 3000);
    const idle = raw(sockPath('control.sock'), ['GET /v1/apps HTTP/1.1\r\nHost: a\r\n\r\n'], 3000);
    for (const r of await Promise.all([sl, body, idle])) expect(r.closed).toBe(true);
    expect((await idle).out).toMatch(/^HTTP\/1\.1 200/);
    expect((await call({ socketPath: sockPath('control.sock') }, 'GET', '/v1/apps')).status).toBe(200);
  });
});

describe('privilege', () => {
  it('on the control socket a non-root peer may read but not change (403 ERR_PERMISSION); root may', async () => {
    const member = await httpSocket('member.sock', newApi({ readOnly: false, auth: 'peer' }), MEMBER);
    const root = await httpSocket('root.sock', newApi({ readOnly: false, auth: 'peer' }), ROOT);
    expect((await call({ socketPath: member }, 'GET', '/v1/apps')).status).toBe(200);
    const body = '{"vip":"10.0.0.5","port":80}';
    const m = await call({ socketPath: member }, 'POST', '/v1/exposures', { body });
    expect(m.status).toBe(403);
    expect(JSON.parse(m.body).error).toEqual({ code: 'ERR_PERMISSION', message: 'expose changes the application network: it needs root, as `appswitch run` does' });
    expect((await call({ socketPath: member }, 'DELETE', '/v1/vservices/db')).status).toBe(403);
    const n = calls.length;
    expect((await call({ socketPath: root }, 'POST', '/v1/exposures', { body })).status).toBe(200);
    expect(calls.slice(n)).toEqual([{ method: 'expose', params: { vip: '10.0.0.5', port: 80 }, peer: ROOT }]);
    const own = await httpSocket('private.sock', newApi({ readOnly: false, auth: 'peer', adminUid: MEMBER.uid }), MEMBER);
    expect((await call({ socketPath: own }, 'POST', '/v1/exposures', { body })).status).toBe(200); /* a private daemon's own user */
  });

  it('a read-only listener refuses every mutating route with 403 and serves the rest', async () => {
    const ro = await httpSocket('ro.sock', newApi({ readOnly: true, auth: 'none' }));
    expect((await call({ socketPath: ro }, 'GET', '/v1/status')).status).toBe(200);
    for (const [m, p] of [
      ['POST', '/v1/exposures'],
      ['DELETE', '/v1/exposures/10.0.0.5/80'],
      ['POST', '/v1/vservices'],
      ['DELETE', '/v1/vservices/db'],
    ] as const) {
      const r = await call({ socketPath: ro }, m, p, { body: m === 'POST' ? '{}' : undefined });
      expect(r.status, `${m} ${p}`).toBe(403);
      expect(JSON.parse(r.body).error.message).toContain('read-only');
    }
    expect(() => createApiHandler(sources, { readOnly: false, auth: 'none' })).toThrow(/read-only/);
    expect(() => createApiHandler(sources, { readOnly: false, auth: 'token' })).toThrow(/token/);
  });

  it('the TCP listener: 401 without the token or with a wrong one (before routing), served with it', async () => {
    const t = { port: tcpPort };
    const tries: Array<Record<string, string>> = [{}, { Authorization: `Bearer ${'e'.repeat(64)}` }, { Authorization: `Basic ${TOKEN}` }];
    for (const headers of tries) {
      const r = await call(t, 'GET', '/v1/status', { headers });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toContain('Bearer');
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'ERR_UNAUTHORIZED' } });
    }
    expect((await call(t, 'GET', '/v1/nothing')).status).toBe(401);
    const ok = await call(t, 'GET', '/v1/status', { headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).toBe(200);
    const n = calls.length;
    const post = await call(t, 'POST', '/v1/exposures', { body: '{"vip":"10.0.0.5","port":81}', headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(post.status).toBe(200);
    expect(calls[n]).toEqual({ method: 'expose', params: { vip: '10.0.0.5', port: 81 } });
  });
});

describe('GET /v1/events', () => {
  /** Opens a stream; resolves with the response once the headers are in. */
  function open(p: string, accept?: string): Promise<{ req: http.ClientRequest; res: http.IncomingMessage; text: () => string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: sockPath('control.sock'), path: p, agent: false, headers: accept ? { Accept: accept } : {} }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        resolve({ req, res, text: () => text });
      });
      req.on('error', reject);
      req.end();
    });
  }
  const until = async (f: () => boolean, ms = 3000): Promise<void> => {
    const end = Date.now() + ms;
    while (!f()) {
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('SSE: id, event and data per event; the filter goes to the subscription; closing releases it', async () => {
    const i = events.subs.length;
    const s = await open('/v1/events?app=web&type=app.started,connect.denied', 'text/event-stream');
    expect(s.res.statusCode).toBe(200);
    expect(s.res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    await until(() => events.subs.length > i);
    expect(events.subs[i]?.opts).toEqual({ maxBuffered: 1000, app: 'web', types: ['app.started', 'connect.denied'] });
    events.push(i, ev(1));
    events.push(i, ev(2, 'connect.denied'));
    await until(() => s.text().includes('id: 2'));
    expect(s.text()).toContain(`id: 1\nevent: app.started\ndata: ${JSON.stringify(ev(1))}\n\n`);
    expect(s.text()).toContain('event: connect.denied\n');
    s.req.destroy();
    await until(() => events.subs[i]?.closed === true);
  });

  it('NDJSON by default: one event per line', async () => {
    const i = events.subs.length;
    const s = await open('/v1/events');
    expect(s.res.headers['content-type']).toBe('application/x-ndjson');
    await until(() => events.subs.length > i);
    events.push(i, ev(7));
    await until(() => s.text().includes('\n'));
    expect(JSON.parse(s.text().trim())).toEqual(ev(7));
    s.req.destroy();
    await until(() => events.subs[i]?.closed === true);
  });

  it('a client that does not read: the stream stops taking events (they wait in the bounded queue); its close releases it', async () => {
    const i = events.subs.length;
    const sock = net.createConnection(sockPath('control.sock'));
    sock.write('GET /v1/events HTTP/1.1\r\nHost: a\r\n\r\n');
    sock.pause();
    await until(() => events.subs.length > i);
    const sub = events.subs[i] as (typeof events.subs)[number];
    const big = { ...ev(1), detail: 'z'.repeat(60_000) };
    for (let k = 0; k < 200 && sub.queue.length === 0; k++) {
      events.push(i, { ...big, seq: k });
      await new Promise((r) => setTimeout(r, 5));
    }
    /* our output filled: the stream waits for drain instead of taking more */
    await until(() => sub.queue.length > 0);
    const taken = sub.nexts;
    events.push(i, big);
    await new Promise((r) => setTimeout(r, 100));
    expect(sub.nexts).toBe(taken);
    expect(sub.closed).toBe(false);
    sock.destroy();
    await until(() => sub.closed);
  });

  it('the stand-in source: a stream that only stays open, and a count back to zero when the client goes', async () => {
    const stand = unavailableEvents();
    const api2 = new ApiServer(createApiHandler({ ...sources, events: stand }, { readOnly: true, auth: 'none' }), log);
    apis.push(api2);
    const p = await httpSocket('stand.sock', api2);
    const s = await new Promise<http.ClientRequest>((resolve) => {
      const req = http.request({ socketPath: p, path: '/v1/events', agent: false }, (res) => {
        expect(res.headers['content-type']).toBe('application/x-ndjson');
        resolve(req);
      });
      req.end();
    });
    expect(stand.open).toBe(1);
    s.destroy();
    await until(() => stand.open === 0);
    const e = await call({ socketPath: p }, 'GET', '/v1/edges?scope=cluster');
    expect(JSON.parse(e.body)).toEqual({ scope: 'node', node: 'n1', edges: [], missing: [], truncated: [] });
  });
});

describe('the CLI client', () => {
  it('request() speaks HTTP: results, and errors with the daemon code in the message', async () => {
    const s = sockPath('control.sock');
    await expect(request(s, 'status')).resolves.toEqual({ node: 'n1', uptimeSeconds: 1 });
    await expect(request(s, 'info', { project: 'x y' })).resolves.toEqual({ node: 'n1', project: 'x y' });
    const e = await request(s, 'deleteVservice', { name: 'db' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AppswitchError);
    expect(e).toMatchObject({ code: 'ERR_DAEMON_REQUEST', message: 'ERR_NOT_FOUND: no virtual service named db' });
    await expect(request(sockPath('none.sock'), 'status')).rejects.toMatchObject({ code: 'ERR_DAEMON_UNREACHABLE', message: expect.stringContaining('ENOENT') as unknown });
  });

  it('an old daemon (newline JSON only) is asked again in its protocol', async () => {
    const p = sockPath('old.sock');
    const old = net.createServer((sock) => {
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (!line) continue;
          try {
            const r = JSON.parse(line) as { id: number; method: string };
            sock.write(JSON.stringify({ id: r.id, result: { old: true, method: r.method } }) + '\n');
          } catch {
            sock.write(JSON.stringify({ id: 0, error: { code: 'ERR_BAD_JSON', message: 'request is not JSON' } }) + '\n');
          }
        }
      });
    });
    servers.push(old);
    await new Promise<void>((r) => old.listen(p, r));
    await expect(request(p, 'apps')).resolves.toEqual({ old: true, method: 'apps' });
    await expect(legacyRequest(p, 'status')).resolves.toEqual({ old: true, method: 'status' });
  });

  it('a daemon that accepts and closes at once: "closed the connection without answering"', async () => {
    const p = sockPath('closing.sock');
    const s = net.createServer((sock) => sock.destroy());
    servers.push(s);
    await new Promise<void>((r) => s.listen(p, r));
    await expect(request(p, 'status')).rejects.toMatchObject({ code: 'ERR_DAEMON_UNREACHABLE' });
  });

  it('streamEvents() calls back per event, skips keep-alives, and ends on abort', async () => {
    const i = events.subs.length;
    const got: AppswitchEvent[] = [];
    const ac = new AbortController();
    const done = streamEvents(sockPath('control.sock'), { app: 'web', types: ['connect.denied'] }, (e) => got.push(e), ac.signal);
    const until = async (f: () => boolean): Promise<void> => {
      for (let k = 0; k < 300 && !f(); k++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(() => events.subs.length > i);
    expect(events.subs[i]?.opts).toMatchObject({ app: 'web', types: ['connect.denied'] });
    events.push(i, ev(1, 'connect.denied'));
    events.push(i, ev(2, 'connect.denied'));
    await until(() => got.length === 2);
    expect(got.map((e) => e.seq)).toEqual([1, 2]);
    ac.abort();
    await done;
    await until(() => events.subs[i]?.closed === true);
    expect(events.subs[i]?.closed).toBe(true);
    await expect(streamEvents(sockPath('control.sock'), { types: ['nope' as AppswitchEvent['type']] }, () => undefined)).rejects.toMatchObject({
      code: 'ERR_DAEMON_REQUEST',
      message: expect.stringContaining('ERR_BAD_PARAMS') as unknown,
    });
  });
});
