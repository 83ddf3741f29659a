/** The HTTP control API's routes (docs/api.md, docs/openapi.yaml) and the decoding of a request into a typed
 * ApiRequest, once, at the boundary: the path, the query and the JSON body are checked here against the control
 * protocol's schema (METHODS, REQUIRED), so the daemon behind sees the same calls as over the newline-JSON protocol.
 * Also the other direction, for the CLI: which route a control method is. Pure: no I/O. */
import { type ControlMethod, METHODS, MUTATING, type ParamType, REQUIRED } from '../daemon/control-protocol.js';
import { EVENT_TYPES, type EventType } from '../events/types.js';
import { ApiError } from './errors.js';

export type HttpMethod = 'GET' | 'POST' | 'DELETE';

type Missing = Exclude<EventType, (typeof EVENT_TYPES)[number]>;
/** true only when EVENT_TYPES names every EventType. */
export const EVENT_TYPES_COMPLETE: Missing extends never ? true : never = true;

/** What a route does: a control method, the edges or the event stream. */
export type RouteTarget = { control: ControlMethod } | { edges: true } | { events: true };

export interface Route {
  method: HttpMethod;
  /** `/v1/exposures/{vip}/{port}`: `{x}` is one path segment, the parameter x. */
  path: string;
  target: RouteTarget;
  /** Query parameters it takes (name -> type; `string[]` is a comma-separated list). */
  query: Readonly<Record<string, ParamType>>;
  /** It takes a JSON object body (the control method's parameters). */
  body: boolean;
  /** It changes the application network: root (or the TCP listener's token) only, never on a read-only listener. */
  mutating: boolean;
}

function control(method: HttpMethod, path: string, m: ControlMethod, query: Record<string, ParamType> = {}): Route {
  return { method, path, target: { control: m }, query, body: method === 'POST', mutating: MUTATING.has(m) };
}

/** The routes, in the order docs/openapi.yaml lists them. */
export const ROUTES: readonly Route[] = [
  control('GET', '/v1/info', 'info', { project: 'string' }),
  control('GET', '/v1/status', 'status'),
  control('GET', '/v1/apps', 'apps'),
  control('GET', '/v1/services', 'services'),
  control('GET', '/v1/members', 'members'),
  control('GET', '/v1/connections', 'connections'),
  control('GET', '/v1/exposures', 'exposures'),
  control('POST', '/v1/exposures', 'expose'),
  control('DELETE', '/v1/exposures/{vip}/{port}', 'unexpose'),
  control('GET', '/v1/vservices', 'vservices'),
  control('POST', '/v1/vservices', 'createVservice'),
  control('DELETE', '/v1/vservices/{name}', 'deleteVservice'),
  { method: 'GET', path: '/v1/edges', target: { edges: true }, query: { scope: 'string' }, body: false, mutating: false },
  { method: 'GET', path: '/v1/events', target: { events: true }, query: { app: 'string', type: 'string[]' }, body: false, mutating: false },
];

/** Longest path or query value the API looks at (a name, a vip, a list of event types). */
const MAX_PARAM_CHARS = 1024;

/** A route matched to a request line: the route, its path parameters (decoded text) and its query. */
export interface MatchedRoute {
  route: Route;
  pathParams: Record<string, string>;
  query: URLSearchParams;
}

function segments(p: string): string[] {
  return p.split('/').slice(1);
}

/** Finds the route of `method url`. Throws ApiError: ERR_BAD_REQUEST (not a path, bad percent-encoding),
 * ERR_NOT_FOUND (no route has this path), ERR_METHOD_NOT_ALLOWED (the path exists with other methods: `Allow`). */
export function matchRoute(method: string, url: string): MatchedRoute {
  let parsed: URL;
  try {
    if (url.startsWith('//') || (!url.startsWith('/') && !/^https?:\/\//i.test(url))) throw new Error('not a path');
    parsed = new URL(url, 'http://appswitch');
  } catch {
    throw new ApiError('ERR_BAD_REQUEST', `request target ${url.slice(0, 64)} is not a path`);
  }
  const raw = segments(parsed.pathname);
  let decoded: string[];
  try {
    decoded = raw.map((s) => decodeURIComponent(s));
  } catch {
    throw new ApiError('ERR_BAD_REQUEST', 'the path has a bad percent-encoding');
  }
  const allowed: HttpMethod[] = [];
  for (const route of ROUTES) {
    const pattern = segments(route.path);
    if (pattern.length !== decoded.length) continue;
    const params: Record<string, string> = {};
    const ok = pattern.every((p, i) => {
      const seg = decoded[i] as string;
      if (p.startsWith('{')) {
        if (seg === '' || seg.length > MAX_PARAM_CHARS) return false;
        params[p.slice(1, -1)] = seg;
        return true;
      }
      return p === raw[i];
    });
    if (!ok) continue;
    if (route.method === method) return { route, pathParams: params, query: parsed.searchParams };
    allowed.push(route.method);
  }
  if (allowed.length) {
    throw new ApiError('ERR_METHOD_NOT_ALLOWED', `${parsed.pathname} takes ${allowed.join(', ')}, not ${method.slice(0, 16)}`, { Allow: allowed.join(', ') });
  }
  throw new ApiError('ERR_NOT_FOUND', `no route ${parsed.pathname.slice(0, 128)}; the API's routes are in docs/openapi.yaml (GET /v1/status, /v1/apps, ...)`);
}

function typeOk(t: ParamType, v: unknown): boolean {
  if (t === 'string[]') return Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (t === 'number') return typeof v === 'number' && Number.isFinite(v);
  return typeof v === t;
}

/** Checks a control method's parameters as the newline-JSON protocol does (ERR_BAD_PARAMS: a parameter it does not
 * take, of the wrong type, or a required one missing). */
export function checkParams(method: ControlMethod, params: Record<string, unknown>): void {
  const schema: Readonly<Record<string, ParamType>> = METHODS[method];
  for (const [k, v] of Object.entries(params)) {
    const t = Object.hasOwn(schema, k) ? schema[k] : undefined;
    if (t === undefined) throw new ApiError('ERR_BAD_PARAMS', `${method} takes no parameter "${k.slice(0, 64)}"`);
    if (!typeOk(t, v)) throw new ApiError('ERR_BAD_PARAMS', `${method}: parameter "${k}" must be a ${t}`);
  }
  for (const k of REQUIRED[method] ?? []) {
    if (params[k] === undefined) throw new ApiError('ERR_BAD_PARAMS', `${method} needs the parameter "${k}"`);
  }
}

/** A path or query value as the schema's type: numbers are decimal integers (a port), text is kept as is. */
function textParam(where: string, name: string, t: ParamType, v: string): unknown {
  if (v.length > MAX_PARAM_CHARS) throw new ApiError('ERR_BAD_PARAMS', `${where} "${name}" is longer than ${MAX_PARAM_CHARS} characters`);
  if (t === 'number') {
    if (!/^\d{1,10}$/.test(v)) throw new ApiError('ERR_BAD_PARAMS', `${where} "${name}" must be a decimal integer`);
    return Number(v);
  }
  if (t === 'boolean') {
    if (v !== 'true' && v !== 'false') throw new ApiError('ERR_BAD_PARAMS', `${where} "${name}" must be true or false`);
    return v === 'true';
  }
  if (t === 'string[]') return v === '' ? [] : v.split(',');
  return v;
}

/** The query's parameters, each once, each one the route takes. */
function queryParams(route: Route, query: URLSearchParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of new Set(query.keys())) {
    const t = Object.hasOwn(route.query, k) ? route.query[k] : undefined;
    if (t === undefined) {
      const takes = Object.keys(route.query);
      throw new ApiError('ERR_BAD_PARAMS', `${route.method} ${route.path} takes no query parameter "${k.slice(0, 64)}"${takes.length ? ` (it takes ${takes.join(', ')})` : ''}`);
    }
    const all = query.getAll(k);
    if (all.length > 1) throw new ApiError('ERR_BAD_PARAMS', `query parameter "${k}" given ${all.length} times`);
    out[k] = textParam('query parameter', k, t, all[0] as string);
  }
  return out;
}

/** The decoded request: what the handler does, typed. */
export type ApiRequest =
  | { kind: 'control'; method: ControlMethod; params: Record<string, unknown>; mutating: boolean }
  | { kind: 'edges'; scope: 'node' | 'cluster' }
  | { kind: 'events'; format: 'sse' | 'ndjson'; app?: string; types?: EventType[] };

/** The body as a JSON object (ERR_BAD_JSON: not UTF-8 or not JSON; ERR_BAD_REQUEST: JSON but not an object). */
function bodyObject(body: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new ApiError('ERR_BAD_JSON', 'the body is not UTF-8 text');
  }
  if (text.trim() === '') throw new ApiError('ERR_BAD_REQUEST', 'this route needs a JSON object body');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ApiError('ERR_BAD_JSON', 'the body is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ApiError('ERR_BAD_REQUEST', 'the body must be a JSON object');
  return v as Record<string, unknown>;
}

/** Whether an Accept header asks for server-sent events (text/event-stream named, with a q other than 0). */
export function wantsSse(accept: string | undefined): boolean {
  if (!accept) return false;
  return accept.split(',').some((part) => {
    const [type, ...opts] = part.split(';').map((s) => s.trim().toLowerCase());
    return type === 'text/event-stream' && !opts.some((o) => /^q=0(\.0*)?$/.test(o));
  });
}

/** Decodes a matched request (and its body, for a route that takes one) into an ApiRequest. Throws ApiError
 * ERR_BAD_PARAMS / ERR_BAD_JSON / ERR_BAD_REQUEST. */
export function decodeRequest(m: MatchedRoute, body: Buffer | undefined, accept: string | undefined): ApiRequest {
  const { route } = m;
  const query = queryParams(route, m.query);
  const t = route.target;
  if ('edges' in t) {
    const scope = query.scope ?? 'cluster';
    if (scope !== 'node' && scope !== 'cluster') throw new ApiError('ERR_BAD_PARAMS', 'query parameter "scope" must be node or cluster');
    return { kind: 'edges', scope };
  }
  if ('events' in t) {
    const r: ApiRequest = { kind: 'events', format: wantsSse(accept) ? 'sse' : 'ndjson' };
    if (query.app !== undefined) {
      if (query.app === '') throw new ApiError('ERR_BAD_PARAMS', 'query parameter "app" is empty');
      r.app = query.app as string;
    }
    if (query.type !== undefined) {
      const types = query.type as string[];
      const known: readonly string[] = EVENT_TYPES;
      const bad = types.find((x) => !known.includes(x));
      if (bad !== undefined || types.length === 0) {
        throw new ApiError('ERR_BAD_PARAMS', `query parameter "type": ${bad === undefined ? 'empty' : `unknown event type "${bad.slice(0, 64)}"`}; types: ${EVENT_TYPES.join(', ')}`);
      }
      r.types = [...new Set(types)] as EventType[];
    }
    return r;
  }
  const method = t.control;
  const schema: Readonly<Record<string, ParamType>> = METHODS[method];
  const params: Record<string, unknown> = { ...query };
  if (route.body) {
    if (!body) throw new ApiError('ERR_BAD_REQUEST', 'this route needs a JSON object body');
    Object.assign(params, bodyObject(body));
  } else if (body && body.length > 0) {
    throw new ApiError('ERR_BAD_REQUEST', `${route.method} ${route.path} takes no body`);
  }
  for (const [k, v] of Object.entries(m.pathParams)) {
    const type = schema[k];
    if (type === undefined) throw new ApiError('ERR_INTERNAL', `route ${route.path}: ${method} takes no parameter ${k}`);
    params[k] = textParam('path parameter', k, type, v);
  }
  checkParams(method, params);
  return { kind: 'control', method, params, mutating: route.mutating };
}

/** How the CLI calls a control method over HTTP: the route's method, its path (path parameters filled in and
 * percent-encoded, query parameters appended), and the body (POST). */
export function routeFor(method: ControlMethod, params: Record<string, unknown> = {}): { method: HttpMethod; path: string; body?: string } {
  /* `edges` is a control method of the newline protocol too; over HTTP it is the edges route. (`events` is a stream:
   * streamEvents in src/cli/client.ts.) */
  const route = ROUTES.find((r) => ('control' in r.target && r.target.control === method) || (method === 'edges' && 'edges' in r.target));
  if (!route) throw new Error(`no route for control method ${method}`);
  const rest = { ...params };
  const path = route.path.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = rest[k];
    delete rest[k];
    return encodeURIComponent(String(v));
  });
  if (route.body) return { method: route.method, path, body: JSON.stringify(rest) };
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) q.set(k, Array.isArray(v) ? v.join(',') : String(v));
  const qs = q.toString();
  return { method: route.method, path: qs ? `${path}?${qs}` : path };
}
