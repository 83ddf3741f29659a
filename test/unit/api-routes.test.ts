/** The HTTP API's routing and decoding (src/api/routes.ts), its token (token.ts) and its error statuses: pure, no
 * sockets. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ApiError, STATUS_OF } from '../../src/api/errors.js';
import { checkParams, decodeRequest, EVENT_TYPES_COMPLETE, matchRoute, ROUTES, routeFor, wantsSse } from '../../src/api/routes.js';
import { bearerMatches, parseTokenText, resolveApiToken } from '../../src/api/token.js';
import { resolveApiListener } from '../../src/daemon/config.js';
import { type ControlMethod, METHODS } from '../../src/daemon/control-protocol.js';
import { AppswitchError } from '../../src/errors.js';

/** The ApiError a function throws (fails the test when it throws something else or nothing). */
function thrown(f: () => unknown): ApiError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    return e as ApiError;
  }
  throw new Error('did not throw');
}

const decode = (method: string, url: string, body?: string, accept?: string): ReturnType<typeof decodeRequest> =>
  decodeRequest(matchRoute(method, url), body === undefined ? undefined : Buffer.from(body), accept);

describe('matchRoute', () => {
  it('finds every route by its method and path, with path parameters decoded', () => {
    expect(matchRoute('GET', '/v1/apps').route.path).toBe('/v1/apps');
    const m = matchRoute('DELETE', '/v1/exposures/fd00%3A%3A5/8080');
    expect(m.route.target).toEqual({ control: 'unexpose' });
    expect(m.pathParams).toEqual({ vip: 'fd00::5', port: '8080' });
    expect(matchRoute('DELETE', '/v1/vservices/db').pathParams).toEqual({ name: 'db' });
    expect(matchRoute('GET', 'http://appswitch/v1/status').route.target).toEqual({ control: 'status' });
  });

  it('404 for an unknown path, 405 with Allow for a known path and another method', () => {
    for (const p of ['/', '/v1', '/v2/apps', '/v1/apps/', '/v1/APPS', '/v1/apps/x', '/v1/exposures/1.2.3.4', '/v1/vservices/']) {
      expect(thrown(() => matchRoute('GET', p)).code, p).toBe('ERR_NOT_FOUND');
    }
    const e = thrown(() => matchRoute('PUT', '/v1/exposures'));
    expect(e.code).toBe('ERR_METHOD_NOT_ALLOWED');
    expect(e.status).toBe(405);
    expect(e.headers.Allow).toBe('GET, POST');
    expect(thrown(() => matchRoute('GET', '/v1/vservices/x')).headers.Allow).toBe('DELETE');
  });

  it('400 for what is not a path: no leading slash, a host-relative //, bad percent-encoding', () => {
    for (const u of ['v1/apps', '*', '//v1/v1/apps', '/v1/vservices/%E0%A4%A']) expect(thrown(() => matchRoute('GET', u)).code, u).toBe('ERR_BAD_REQUEST');
  });
});

describe('decodeRequest', () => {
  it('GETs of the control methods, with the query info takes', () => {
    expect(decode('GET', '/v1/members')).toEqual({ kind: 'control', method: 'members', params: {}, mutating: false });
    expect(decode('GET', '/v1/info?project=shop')).toEqual({ kind: 'control', method: 'info', params: { project: 'shop' }, mutating: false });
  });

  it('refuses query parameters a route does not take, and a parameter given twice', () => {
    expect(thrown(() => decode('GET', '/v1/apps?verbose=1')).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => decode('GET', '/v1/info?project=a&project=b')).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => decode('GET', '/v1/info?__proto__=x')).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => decode('POST', '/v1/exposures?vip=10.0.0.1', '{"vip":"10.0.0.1","port":80}')).code).toBe('ERR_BAD_PARAMS');
  });

  it('POST bodies are the method parameters, checked as the newline protocol checks them', () => {
    expect(decode('POST', '/v1/exposures', '{"vip":"10.0.0.5","port":8080,"hostPort":80}')).toEqual({
      kind: 'control',
      method: 'expose',
      params: { vip: '10.0.0.5', port: 8080, hostPort: 80 },
      mutating: true,
    });
    expect(thrown(() => decode('POST', '/v1/exposures', '{"vip":"10.0.0.5"}')).message).toContain('needs the parameter "port"');
    expect(thrown(() => decode('POST', '/v1/exposures', '{"vip":"10.0.0.5","port":"80"}')).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => decode('POST', '/v1/vservices', '{"name":"db","ip":"10.9.0.1","port":5432,"backends":[1]}')).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => decode('POST', '/v1/vservices', '{"name":"db","ip":"10.9.0.1","port":5432,"backends":[],"x":1}')).code).toBe('ERR_BAD_PARAMS');
  });

  it('bodies that are not a JSON object: ERR_BAD_JSON or ERR_BAD_REQUEST', () => {
    expect(thrown(() => decode('POST', '/v1/exposures', '{')).code).toBe('ERR_BAD_JSON');
    expect(thrown(() => decode('POST', '/v1/exposures', '')).code).toBe('ERR_BAD_REQUEST');
    expect(thrown(() => decode('POST', '/v1/exposures', '[1]')).code).toBe('ERR_BAD_REQUEST');
    expect(thrown(() => decode('POST', '/v1/exposures', 'null')).code).toBe('ERR_BAD_REQUEST');
    expect(thrown(() => decodeRequest(matchRoute('POST', '/v1/exposures'), Buffer.from([0x7b, 0xff, 0x7d]), undefined)).code).toBe('ERR_BAD_JSON');
    expect(thrown(() => decode('POST', '/v1/exposures', '{"__proto__":{"vip":"x"}}')).code).toBe('ERR_BAD_PARAMS');
  });

  it('DELETE takes its parameters from the path: a port is a decimal integer', () => {
    expect(decode('DELETE', '/v1/exposures/10.0.0.5/8080')).toMatchObject({ method: 'unexpose', params: { vip: '10.0.0.5', port: 8080 } });
    for (const p of ['80x', '-1', '0x50', '1e3', '12345678901']) expect(thrown(() => decode('DELETE', `/v1/exposures/10.0.0.5/${p}`)).code, p).toBe('ERR_BAD_PARAMS');
    expect(decode('DELETE', '/v1/vservices/my%20db')).toMatchObject({ method: 'deleteVservice', params: { name: 'my db' } });
    expect(thrown(() => decode('DELETE', '/v1/vservices/db', '{"x":1}')).code).toBe('ERR_BAD_REQUEST');
  });

  it('edges: scope node or cluster, cluster by default', () => {
    expect(decode('GET', '/v1/edges')).toEqual({ kind: 'edges', scope: 'cluster' });
    expect(decode('GET', '/v1/edges?scope=node')).toEqual({ kind: 'edges', scope: 'node' });
    expect(thrown(() => decode('GET', '/v1/edges?scope=world')).code).toBe('ERR_BAD_PARAMS');
  });

  it('events: SSE when Accept names text/event-stream, else NDJSON; app and known types', () => {
    expect(decode('GET', '/v1/events')).toEqual({ kind: 'events', format: 'ndjson' });
    expect(decode('GET', '/v1/events', undefined, 'text/event-stream')).toMatchObject({ format: 'sse' });
    expect(decode('GET', '/v1/events?app=web&type=connect.denied,connect.refused,connect.denied')).toEqual({
      kind: 'events',
      format: 'ndjson',
      app: 'web',
      types: ['connect.denied', 'connect.refused'],
    });
    expect(thrown(() => decode('GET', '/v1/events?type=connect.nope')).message).toContain('unknown event type "connect.nope"');
    expect(thrown(() => decode('GET', '/v1/events?type=')).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => decode('GET', '/v1/events?app=')).code).toBe('ERR_BAD_PARAMS');
    expect(EVENT_TYPES_COMPLETE).toBe(true);
  });

  it('wantsSse reads Accept lists and q=0', () => {
    expect(wantsSse('application/json, text/event-stream;q=0.5')).toBe(true);
    expect(wantsSse('TEXT/EVENT-STREAM')).toBe(true);
    expect(wantsSse('text/event-stream;q=0')).toBe(false);
    expect(wantsSse('*/*')).toBe(false);
    expect(wantsSse(undefined)).toBe(false);
  });

  it('long path and query values are refused, not carried', () => {
    expect(thrown(() => decode('GET', `/v1/info?project=${'a'.repeat(2000)}`)).code).toBe('ERR_BAD_PARAMS');
    expect(thrown(() => matchRoute('DELETE', `/v1/vservices/${'a'.repeat(2000)}`)).code).toBe('ERR_NOT_FOUND');
  });
});

describe('routeFor (the CLI side) and the route table', () => {
  it('every control method has exactly one route, and routeFor finds the route matchRoute decodes back', () => {
    const methods = Object.keys(METHODS) as ControlMethod[];
    for (const m of methods) {
      if (m === 'events') continue; /* the newline protocol's stream; over HTTP, the events route (streamEvents) */
      const routes = ROUTES.filter((r) => ('control' in r.target && r.target.control === m) || (m === 'edges' && 'edges' in r.target));
      expect(routes, m).toHaveLength(1);
    }
    expect(routeFor('edges', { scope: 'node' })).toEqual({ method: 'GET', path: '/v1/edges?scope=node' });
    const samples: Array<[ControlMethod, Record<string, unknown>]> = [
      ['info', { project: 'a b' }],
      ['status', {}],
      ['expose', { vip: '10.0.0.5', port: 80, hostPort: 8080 }],
      ['unexpose', { vip: 'fd00::5', port: 80 }],
      ['createVservice', { name: 'db', ip: '10.9.0.1', port: 5432, backends: ['192.0.2.9:5432'], tags: ['a=b'] }],
      ['deleteVservice', { name: 'db/x' }],
    ];
    for (const [m, params] of samples) {
      const r = routeFor(m, params);
      const got = decode(r.method, r.path, r.body);
      expect(got, m).toMatchObject({ kind: 'control', method: m, params });
    }
  });

  it('mutating routes are exactly the control protocol MUTATING methods, and only POST/DELETE', () => {
    for (const r of ROUTES) expect(r.mutating, r.path).toBe(r.method !== 'GET');
  });

  it('checkParams refuses prototype names', () => {
    expect(() => checkParams('status', JSON.parse('{"constructor":1}') as Record<string, unknown>)).toThrow(ApiError);
  });

  it('every error code has a 4xx or 500 status', () => {
    for (const [code, s] of Object.entries(STATUS_OF)) expect(s === 500 || (s >= 400 && s < 500), code).toBe(true);
  });
});

describe('the API token', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-api-token-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is generated once into the state dir (0600, 64 hex digits) and kept on the next start', () => {
    const a = resolveApiToken({ stateDir: dir });
    expect(a.source).toBe('generated');
    expect(a.token).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(a.file).mode & 0o777).toBe(0o600);
    const b = resolveApiToken({ stateDir: dir });
    expect(b).toMatchObject({ source: 'state-dir', token: a.token });
  });

  it('from a file: the first line that is not a comment; short or spaced tokens are refused', () => {
    const f = path.join(dir, 'tok');
    writeFileSync(f, `# mine\n\n${'x'.repeat(40)}\n`, { mode: 0o644 });
    const t = resolveApiToken({ stateDir: dir, apiTokenFile: f });
    expect(t).toMatchObject({ source: 'flag', token: 'x'.repeat(40), looseMode: '0644' });
    expect(() => parseTokenText('short\n', f)).toThrow(/shorter than 32/);
    expect(() => parseTokenText(`${'a'.repeat(20)} ${'b'.repeat(20)}\n`, f)).toThrow(/printable ASCII without spaces/);
    expect(() => parseTokenText('# only a comment\n', f)).toThrow(/no token/);
    expect(() => resolveApiToken({ stateDir: dir, apiTokenFile: path.join(dir, 'none') })).toThrow(/ENOENT/);
    expect(readFileSync(f, 'utf8')).toContain('x'.repeat(40));
  });

  it('bearerMatches: only `Bearer TOKEN`, the whole token', () => {
    const tok = 'a'.repeat(64);
    expect(bearerMatches(`Bearer ${tok}`, tok)).toBe(true);
    expect(bearerMatches(`bearer  ${tok} `, tok)).toBe(true);
    for (const h of [undefined, '', tok, `Basic ${tok}`, `Bearer ${tok}x`, `Bearer ${tok.slice(1)}`, 'Bearer ', `Bearer ${tok} ${tok}`]) {
      expect(bearerMatches(h, tok), String(h)).toBe(false);
    }
  });
});

describe('--api-address and --api-token-file', () => {
  const err = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(AppswitchError);
      return (e as AppswitchError).message;
    }
    return '';
  };

  it('loopback without a token file; any address with one; the file needs the address', () => {
    expect(resolveApiListener({ apiAddress: '127.0.0.1:6463' })).toEqual({ apiAddress: { host: '127.0.0.1', port: 6463 } });
    expect(resolveApiListener({ apiAddress: '[::1]:6463' })).toEqual({ apiAddress: { host: '::1', port: 6463 } });
    expect(resolveApiListener({ apiAddress: '0.0.0.0:6463', apiTokenFile: 'tok' })).toMatchObject({ apiAddress: { host: '0.0.0.0', port: 6463 } });
    expect(err(() => resolveApiListener({ apiAddress: '192.0.2.1:6463' }))).toContain('is not a loopback address: give the token with --api-token-file');
    expect(err(() => resolveApiListener({ apiAddress: '0.0.0.0:6463' }))).toContain('--api-token-file');
    expect(err(() => resolveApiListener({ apiTokenFile: 'tok' }))).toContain('--api-token-file needs --api-address');
    for (const a of ['localhost:6463', '127.0.0.1', '::1:6463', '127.0.0.1:70000']) expect(err(() => resolveApiListener({ apiAddress: a })), a).toContain('is not ADDR:PORT');
    expect(resolveApiListener({})).toEqual({});
  });
});
