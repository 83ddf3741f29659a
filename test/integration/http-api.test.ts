/** The HTTP control API of a real daemon against docs/openapi.yaml: every operation in the file is called with valid
 * inputs (and with wrong ones), with `curl --unix-socket` as users type it, and every answer's status and body must
 * be what the file says; every path answers other methods with 405 and the methods the file lists. Privilege: a
 * member of the daemon's group reads but gets 403 on every route that changes the network; a non-member cannot
 * connect (and through a world-writable socket file gets 403). Old newline-JSON requests still work on the same
 * socket. The TCP listener (--api-address) refuses without or with a wrong token and serves with it. Malformed HTTP
 * (bad request line, huge headers, a body over the limit, headers that never end) gets a 4xx or a close while the
 * daemon serves others, and costs no descriptor afterwards. /v1/events opens with the right content type (the
 * daemon's event source is still the stand-in: only keep-alives) and a client that goes releases its subscription.
 * The group is `nogroup` and the users are uid 65534 with gid 65534 (member) or 54321 (not): no account is made. */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, type Result, sleep, TestHost, waitFor } from '../helpers/hosts.js';
import { loadOpenApi, operations, responseSchema, validate } from '../helpers/openapi.js';

const doc = loadOpenApi();
const ops = operations(doc);
const API_PORT = 6463;
const MEMBER = ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups', '--'];
const OUTSIDER = ['setpriv', '--reuid', '65534', '--regid', '54321', '--clear-groups', '--'];

let h: TestHost;
let token = '';
let pid = 0;

interface CurlAnswer {
  /** curl's exit code (0, or e.g. 7: could not connect, 28: --max-time reached). */
  exit: number | null;
  status: number;
  contentType: string;
  body: string;
  json: unknown;
}

/** `curl --unix-socket SOCKET http://appswitch/PATH` (or `--tcp`: http://127.0.0.1:API_PORT/PATH) in the host's
 * namespace, as root or as `as`. */
async function curl(method: string, p: string, opts: { body?: unknown; as?: string[]; tcp?: boolean; headers?: string[] } = {}): Promise<CurlAnswer> {
  const target = opts.tcp ? ['http://127.0.0.1:' + API_PORT + p] : ['--unix-socket', h.socket, `http://appswitch${p}`];
  const args = ['curl', '-sS', '--max-time', '10', '-X', method, '-o', '-', '-w', '\n%{http_code} %{content_type}'];
  for (const x of opts.headers ?? []) args.push('-H', x);
  if (opts.body !== undefined) args.push('-H', 'Content-Type: application/json', '--data-binary', typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
  const r: Result = await h.exec([...(opts.as ?? []), ...args, ...target]);
  const cut = r.stdout.lastIndexOf('\n');
  const [code = '0', contentType = ''] = r.stdout.slice(cut + 1).split(' ');
  const body = r.stdout.slice(0, Math.max(cut, 0));
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { exit: r.code, status: Number(code), contentType, body, json };
}

/** The answer matches the file: its status is documented for the operation and its body matches that schema. */
function matchesFile(method: string, template: string, a: CurlAnswer): void {
  const op = ops.find((o) => o.method === method && o.path === template)?.op;
  expect(op, `${method} ${template} is in docs/openapi.yaml`).toBeDefined();
  if (!op) return;
  const schema = responseSchema(doc, op, a.status);
  expect(schema, `${method} ${template}: status ${a.status} (body ${a.body.slice(0, 300)}) is documented`).toBeDefined();
  expect(a.contentType).toBe('application/json');
  expect(validate(doc, schema ?? {}, a.json), `${method} ${template} ${a.status}: ${a.body.slice(0, 500)}`).toEqual([]);
}

/** Raw bytes on the control socket; what came back until the daemon closed or `waitMs` passed. */
function raw(chunks: Array<string | Buffer>, waitMs = 1000): Promise<{ out: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.createConnection(h.socket);
    let out = '';
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
    });
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', () => undefined);
    const t = setTimeout(() => {
      s.destroy();
      resolve({ out, closed: false });
    }, waitMs);
    s.on('close', () => {
      clearTimeout(t);
      resolve({ out, closed: true });
    });
  });
}

const fdCount = (): number => readdirSync(`/proc/${pid}/fd`).length;

beforeAll(async () => {
  h = TestHost.create('http');
  chmodSync(h.stateDir, 0o755); /* the state dir is traversable; the socket file and SO_PEERCRED decide */
  await h.startDaemon(['--group', 'nogroup', '--log-level', 'debug', '--api-address', `127.0.0.1:${API_PORT}`]);
  pid = h.daemon?.pid as number;
  token = readFileSync(path.join(h.stateDir, 'api.token'), 'utf8').trim();
  /* an app with a service, and a client holding a connection to it: apps, services and connections are not empty */
  h.run(['--ip', '10.0.0.5', '--name', 'web', '--tag', 'grp=1'], ['python3', '-m', 'http.server', '8000', '--bind', '0.0.0.0']);
  await h.waitService('10.0.0.5', 8000);
  h.run(['--tag', 'grp=1', '--name', 'holder'], ['bash', '-c', 'exec 3<>/dev/tcp/10.0.0.5/8000; sleep 120']);
  await waitFor(async () => ((await curl('GET', '/v1/connections')).json as unknown[]).length > 0, 15_000, 100);
});

afterAll(async () => {
  await h?.destroy();
});

describe('every operation of docs/openapi.yaml, with curl --unix-socket', () => {
  /** Valid calls, in an order that makes each list non-empty before it is read; then calls that must fail. */
  const steps: Array<{ method: string; template: string; path: string; body?: unknown; status: number; nonEmpty?: boolean }> = [
    { method: 'GET', template: '/v1/info', path: '/v1/info', status: 200 },
    { method: 'GET', template: '/v1/info', path: '/v1/info?project=shop', status: 200 },
    { method: 'GET', template: '/v1/status', path: '/v1/status', status: 200 },
    { method: 'GET', template: '/v1/apps', path: '/v1/apps', status: 200, nonEmpty: true },
    { method: 'GET', template: '/v1/services', path: '/v1/services', status: 200, nonEmpty: true },
    { method: 'GET', template: '/v1/members', path: '/v1/members', status: 200, nonEmpty: true },
    { method: 'GET', template: '/v1/connections', path: '/v1/connections', status: 200, nonEmpty: true },
    { method: 'POST', template: '/v1/exposures', path: '/v1/exposures', body: { vip: '10.0.0.5', port: 8000, hostPort: 18000 }, status: 200 },
    { method: 'GET', template: '/v1/exposures', path: '/v1/exposures', status: 200, nonEmpty: true },
    { method: 'DELETE', template: '/v1/exposures/{vip}/{port}', path: '/v1/exposures/10.0.0.5/8000', status: 200 },
    { method: 'POST', template: '/v1/vservices', path: '/v1/vservices', body: { name: 'db', ip: '10.9.0.1', port: 5432, backends: ['192.0.2.50:5432'], lb: 'round-robin', tags: ['grp=1'] }, status: 200 },
    { method: 'GET', template: '/v1/vservices', path: '/v1/vservices', status: 200, nonEmpty: true },
    { method: 'DELETE', template: '/v1/vservices/{name}', path: '/v1/vservices/db', status: 200 },
    { method: 'GET', template: '/v1/edges', path: '/v1/edges', status: 200 },
    { method: 'GET', template: '/v1/edges', path: '/v1/edges?scope=node', status: 200 },
    /* refusals, each with its documented status and the Error schema */
    { method: 'GET', template: '/v1/info', path: '/v1/info?verbose=1', status: 400 },
    { method: 'POST', template: '/v1/exposures', path: '/v1/exposures', body: { vip: '192.0.2.77', port: 8000 }, status: 400 },
    { method: 'POST', template: '/v1/exposures', path: '/v1/exposures', body: '{"vip":', status: 400 },
    { method: 'DELETE', template: '/v1/exposures/{vip}/{port}', path: '/v1/exposures/10.0.0.5/8000', status: 404 },
    { method: 'DELETE', template: '/v1/exposures/{vip}/{port}', path: '/v1/exposures/10.0.0.5/http', status: 400 },
    { method: 'POST', template: '/v1/vservices', path: '/v1/vservices', body: { name: 'web2', ip: '10.0.0.5', port: 80, backends: ['192.0.2.50:80'] }, status: 409 },
    { method: 'POST', template: '/v1/vservices', path: '/v1/vservices', body: { name: 'db', ip: '10.9.0.1', port: 5432 }, status: 400 },
    { method: 'DELETE', template: '/v1/vservices/{name}', path: '/v1/vservices/db', status: 404 },
    { method: 'GET', template: '/v1/edges', path: '/v1/edges?scope=world', status: 400 },
    { method: 'GET', template: '/v1/events', path: '/v1/events?type=connect.nope', status: 400 },
  ];

  it('the steps call every operation in the file', () => {
    const called = new Set(steps.filter((s) => s.status === 200).map((s) => `${s.method} ${s.template}`));
    called.add('GET /v1/events'); /* a stream: the next test */
    expect([...called].sort()).toEqual(ops.map((o) => `${o.method} ${o.path}`).sort());
  });

  for (const s of steps) {
    it(`${s.method} ${s.path}${s.body === undefined ? '' : ` ${typeof s.body === 'string' ? s.body : JSON.stringify(s.body)}`} -> ${s.status}`, async () => {
      const a = await curl(s.method, s.path, s.body === undefined ? {} : { body: s.body });
      expect(a.exit, a.body).toBe(0);
      expect(a.status, a.body).toBe(s.status);
      matchesFile(s.method, s.template, a);
      if (s.nonEmpty) expect((a.json as unknown[]).length, `${s.path} is not empty, so its items were checked`).toBeGreaterThan(0);
    });
  }

  it('GET /v1/events streams: SSE when asked (text/event-stream), else NDJSON; it stays open', async () => {
    for (const [accept, type] of [
      ['text/event-stream', 'text/event-stream; charset=utf-8'],
      ['*/*', 'application/x-ndjson'],
    ] as const) {
      const r = await h.exec(['curl', '-sS', '-N', '-i', '--max-time', '2', '-H', `Accept: ${accept}`, '--unix-socket', h.socket, 'http://appswitch/v1/events?app=web&type=app.started']);
      expect(r.code, `${r.stdout}${r.stderr}`).toBe(28); /* the stream never ends by itself: curl's --max-time ends it */
      expect(r.stdout).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(r.stdout.toLowerCase()).toContain(`content-type: ${type}`);
    }
  });

  it('the CLI speaks HTTP to the daemon (get apps, status)', async () => {
    const r = await h.cli(['get', 'apps', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ name?: string }>).some((a) => a.name === 'web')).toBe(true);
  });
});

describe('no undocumented route', () => {
  it('every path of the file answers other methods with 405 and Allow = the file methods', async () => {
    const paths = [...new Set(ops.map((o) => o.path))];
    for (const template of paths) {
      const p = template.replace('{vip}', '10.0.0.5').replace('{port}', '8000').replace('{name}', 'db');
      const documented = ops.filter((o) => o.path === template).map((o) => o.method);
      for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((x) => !documented.includes(x))) {
        const r = await h.exec(['curl', '-sS', '-i', '-X', m, '--max-time', '10', '--unix-socket', h.socket, `http://appswitch${p}`]);
        expect(r.stdout, `${m} ${p}`).toMatch(/^HTTP\/1\.1 405 /);
        expect(r.stdout, `${m} ${p}`).toContain(`Allow: ${documented.join(', ')}\r\n`);
        expect(r.stdout).toContain('"code":"ERR_METHOD_NOT_ALLOWED"');
      }
    }
  });

  it('paths outside the file are 404 with the Error body', async () => {
    for (const p of ['/', '/v1', '/v1/app', '/v2/apps', '/v1/apps/web', '/metrics', '/v1/exposures/10.0.0.5']) {
      const a = await curl('GET', p);
      expect(a.status, p).toBe(404);
      expect(validate(doc, { $ref: '#/components/schemas/Error' }, a.json), p).toEqual([]);
    }
  });
});

describe('privilege', () => {
  it("a member of the daemon's group reads, and gets 403 ERR_PERMISSION on every route that changes the network", async () => {
    const read = await curl('GET', '/v1/apps', { as: MEMBER });
    expect(read.status, read.body).toBe(200);
    const mutating: Array<[string, string, string, unknown]> = [
      ['POST', '/v1/exposures', '/v1/exposures', { vip: '10.0.0.5', port: 8000 }],
      ['DELETE', '/v1/exposures/{vip}/{port}', '/v1/exposures/10.0.0.5/8000', undefined],
      ['POST', '/v1/vservices', '/v1/vservices', { name: 'db2', ip: '10.9.0.2', port: 5432, backends: ['192.0.2.50:5432'] }],
      ['DELETE', '/v1/vservices/{name}', '/v1/vservices/db2', undefined],
    ];
    expect(mutating.map((m) => `${m[0]} ${m[1]}`).sort()).toEqual(ops.filter((o) => o.method !== 'GET').map((o) => `${o.method} ${o.path}`).sort());
    for (const [m, template, p, body] of mutating) {
      const a = await curl(m, p, body === undefined ? { as: MEMBER } : { as: MEMBER, body });
      expect(a.status, `${m} ${p}: ${a.body}`).toBe(403);
      matchesFile(m, template, a);
      expect((a.json as { error: { message: string } }).error.message).toContain('needs root');
    }
    expect(((await curl('GET', '/v1/vservices')).json as unknown[]).length).toBe(0); /* nothing was created */
  });

  it('a non-member cannot connect; through a world-writable socket file it gets 403 from the SO_PEERCRED check', async () => {
    const denied = await curl('GET', '/v1/status', { as: OUTSIDER });
    expect(denied.exit).toBe(7); /* EACCES on connect */
    chmodSync(h.socket, 0o666);
    try {
      const a = await curl('GET', '/v1/status', { as: OUTSIDER });
      expect(a.status, a.body).toBe(403);
      matchesFile('GET', '/v1/status', a);
      expect(a.body).toContain('permission denied: uid 65534 is not root and not in group nogroup');
    } finally {
      chmodSync(h.socket, 0o660);
    }
  });
});

describe('compatibility', () => {
  it('old newline-JSON requests are answered as before, on the same socket', async () => {
    const { out } = await raw(['{"id":5,"method":"status"}\n{"id":6,"method":"nope"}\n'], 1000);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { id: number; result?: { nodeAddress: string }; error?: { code: string } });
    expect(lines[0]).toMatchObject({ id: 5, result: { nodeAddress: h.address } });
    expect(lines[1]).toMatchObject({ id: 6, error: { code: 'ERR_UNKNOWN_METHOD' } });
  });
});

describe('the TCP listener (--api-address)', () => {
  it('refuses without a token or with a wrong one (401), serves with it, with root privilege', async () => {
    for (const headers of [[], [`Authorization: Bearer ${'0'.repeat(64)}`], [`Authorization: Basic ${token}`]]) {
      const a = await curl('GET', '/v1/status', { tcp: true, headers });
      expect(a.status, a.body).toBe(401);
      matchesFile('GET', '/v1/status', a);
    }
    const auth = [`Authorization: Bearer ${token}`];
    const ok = await curl('GET', '/v1/status', { tcp: true, headers: auth });
    expect(ok.status, ok.body).toBe(200);
    matchesFile('GET', '/v1/status', ok);
    const made = await curl('POST', '/v1/vservices', { tcp: true, headers: auth, body: { name: 'tcpdb', ip: '10.9.0.3', port: 5432, backends: ['192.0.2.50:5432'] } });
    expect(made.status, made.body).toBe(200);
    const gone = await curl('DELETE', '/v1/vservices/tcpdb', { tcp: true, headers: auth });
    expect(gone.status, gone.body).toBe(200);
  });

  it('a daemon refuses to start on a non-loopback --api-address without --api-token-file', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-api-'));
    try {
      const r = await h.exec(['node', CLI, 'daemon', '--state-dir', dir, '--node-address', h.address, '--api-address', `${h.address}:6464`]);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain('is not a loopback address: give the token with --api-token-file');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('malformed HTTP: a 4xx or a close, and the daemon keeps serving', () => {
  let startFds = 0;
  it('settles its descriptor count first', async () => {
    await sleep(300);
    const reads: number[] = [];
    for (let i = 0; i < 5; i++) {
      reads.push(fdCount());
      await sleep(60);
    }
    startFds = Math.min(...reads);
    expect(startFds).toBeGreaterThan(0);
  });

  it('a bad request line: 400 and close', async () => {
    const r = await raw(['GET /v1/apps HTTP/7\r\n\r\n']);
    expect(r.out).toMatch(/^HTTP\/1\.1 400 /);
    expect(r.out).toContain('ERR_BAD_REQUEST');
    expect(r.closed).toBe(true);
  });

  it('headers over 16 KiB: 431 and close', async () => {
    const r = await raw([`GET /v1/apps HTTP/1.1\r\nHost: a\r\nX-Pad: ${'p'.repeat(20_000)}\r\n\r\n`]);
    expect(r.out).toMatch(/^HTTP\/1\.1 431 /);
    expect(r.closed).toBe(true);
  });

  it('a body over 64 KiB: 413 and close (curl)', async () => {
    const a = await curl('POST', '/v1/vservices', { body: { name: 'big', ip: '10.9.0.9', port: 1, backends: ['x'.repeat(70_000)] } });
    expect(a.status).toBe(413);
    matchesFile('POST', '/v1/vservices', a);
  });

  it('headers that never end (slowloris): closed, while others are served', async () => {
    const slow = Array.from({ length: 20 }, () => raw(['GET /v1/apps HTTP/1.1\r\nHost: a\r\nX-A: '], 30_000));
    await sleep(500);
    const a = await curl('GET', '/v1/status');
    expect(a.status).toBe(200);
    for (const r of await Promise.all(slow)) expect(r.closed).toBe(true); /* the daemon ended them (headers timeout) */
  });

  it('a client that opens the event stream and goes releases its subscription', async () => {
    const mark = h.daemonLog.length;
    const req = http.request({ socketPath: h.socket, path: '/v1/events', agent: false });
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
      req.end();
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/x-ndjson');
    await waitFor(() => /"streams":1,[^\n]*"msg":"event stream opened"/.test(h.daemonLog.slice(mark)), 5000);
    const opened = h.daemonLog.length;
    req.destroy();
    await waitFor(() => /"streams":0,[^\n]*"msg":"event stream closed"/.test(h.daemonLog.slice(opened)), 5000);
  });

  it('afterwards the daemon answers, and its descriptors are back to the start', async () => {
    const r = await h.cli(['status', '--json']);
    expect(r.code, r.stderr).toBe(0);
    let seen = -1;
    await waitFor(() => (seen = fdCount()) === startFds, 10_000, 100).catch(() => undefined);
    expect(seen).toBe(startFds);
  });
});
