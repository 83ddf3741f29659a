/** STAND-IN for H13's `createApiHandler` (src/api/handler.ts), with its exact signature, so that the live view can be
 * served and tested before the HTTP API is merged: the lead replaces every import of this file with
 * `../api/handler.js` and deletes it. It answers only what the live view reads, and only GETs:
 *   GET /v1/{info,status,apps,services,members,connections,exposures,vservices}  -> the control method's result
 *   GET /v1/edges?scope=node|cluster                                              -> EdgesView
 *   GET /v1/events?app=NAME&type=T1,T2                                            -> SSE or NDJSON, never ends
 * Errors are `{"error": {"code", "message"}}` as in IFACE15.md. Does no I/O of its own beyond the response. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PeerCredentials } from '../daemon/access.js';
import type { ControlMethod } from '../daemon/control-protocol.js';
import type { AppswitchEvent, EdgeSource, EventSource, EventType, Subscription } from '../events/types.js';

/** What the handler reads: the daemon's control calls, its events and its edges (IFACE15.md). */
export interface ApiSources {
  control: (method: ControlMethod, params: Record<string, unknown>, peer?: PeerCredentials) => unknown | Promise<unknown>;
  events: EventSource;
  edges: EdgeSource;
}

export interface ApiHandlerOptions {
  readOnly: boolean;
  auth: 'peer' | 'token' | 'none';
  token?: string;
  /** An unexpected exception answering a request (it answers ERR_INTERNAL), as H13's handler takes it. */
  onInternalError?: (what: string, e: unknown) => void;
}

export type ApiHandler = (req: IncomingMessage, res: ServerResponse, peer?: PeerCredentials) => void;

/** The list routes: path segment -> control method. */
const LISTS: Readonly<Record<string, ControlMethod>> = {
  info: 'info',
  status: 'status',
  apps: 'apps',
  services: 'services',
  members: 'members',
  connections: 'connections',
  exposures: 'exposures',
  vservices: 'vservices',
};

const EVENT_TYPES: ReadonlySet<string> = new Set<EventType>([
  'app.started', 'app.ended', 'service.up', 'service.down', 'member.state',
  'connect.allowed', 'connect.refused', 'connect.denied', 'accept.unidentified', 'exposure.changed', 'events.lost',
]);

/** A stream's keep-alive period (IFACE15.md: 15 s). */
const KEEPALIVE_MS = 15_000;
/** A subscriber's queue (IFACE15.md). */
const MAX_BUFFERED = 1000;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { error: { code, message } });
}

/** The stand-in handler (see the file comment); `opts.auth` other than 'none' is not implemented here. */
export function createApiHandler(src: ApiSources, opts: ApiHandlerOptions): ApiHandler {
  if (!opts.readOnly || opts.auth !== 'none') throw new Error('api-standin serves only { readOnly: true, auth: "none" } (the live view)');
  return (req, res, peer) => {
    const url = new URL(req.url ?? '/', 'http://appswitch');
    const m = /^\/v1\/([a-z]+)$/.exec(url.pathname);
    const route = m?.[1];
    if (route === undefined || (route !== 'edges' && route !== 'events' && !Object.hasOwn(LISTS, route))) {
      sendError(res, 404, 'ERR_NOT_FOUND', `no route ${url.pathname}`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      sendError(res, 405, 'ERR_BAD_REQUEST', `${route} is read-only here: GET only`);
      return;
    }
    if (route === 'events') {
      serveEvents(src.events, url, req, res);
      return;
    }
    let answer: Promise<unknown>;
    if (route === 'edges') {
      const scope = url.searchParams.get('scope') ?? 'cluster';
      if (scope !== 'node' && scope !== 'cluster') {
        sendError(res, 400, 'ERR_BAD_PARAMS', 'scope must be node or cluster');
        return;
      }
      answer = src.edges.edges(scope);
    } else {
      answer = Promise.resolve().then(() => src.control(LISTS[route] as ControlMethod, {}, peer));
    }
    answer.then(
      (v) => sendJson(res, 200, v ?? null),
      (e: unknown) => {
        opts.onInternalError?.(`the ${route} request`, e);
        sendError(res, 500, 'ERR_INTERNAL', e instanceof Error ? e.message : String(e));
      },
    );
  };
}

/** GET /v1/events: one subscription for the life of the request, released when the client goes; output waits for
 * the socket to drain, so a slow reader only ever costs its bounded queue. */
function serveEvents(events: EventSource, url: URL, req: IncomingMessage, res: ServerResponse): void {
  const types = (url.searchParams.get('type') ?? '').split(',').filter(Boolean);
  const bad = types.find((t) => !EVENT_TYPES.has(t));
  if (bad !== undefined) {
    sendError(res, 400, 'ERR_BAD_PARAMS', `unknown event type "${bad.slice(0, 64)}"`);
    return;
  }
  const app = url.searchParams.get('app') ?? undefined;
  const sse = (req.headers.accept ?? '').includes('text/event-stream');
  const sub: Subscription = events.subscribe({ maxBuffered: MAX_BUFFERED, ...(app ? { app } : {}), ...(types.length ? { types: types as EventType[] } : {}) });
  res.writeHead(200, {
    'content-type': sse ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  if (sse) res.write(': connected\n\n');
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(ping);
    sub.close();
  };
  const ping = setInterval(() => res.write(sse ? ': ping\n\n' : '\n'), KEEPALIVE_MS);
  ping.unref();
  req.on('close', close);
  res.on('close', close);
  res.on('error', close);
  const render = (e: AppswitchEvent): string => (sse ? `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n` : `${JSON.stringify(e)}\n`);
  const pump = (): void => {
    if (closed) return;
    sub.next().then(
      (batch) => {
        if (closed) return;
        const ok = res.write(batch.map(render).join(''));
        if (ok) pump();
        else res.once('drain', pump);
      },
      () => {
        if (!closed) res.end();
        close();
      },
    );
  };
  pump();
}
