/** The HTTP control API's request handler (docs/api.md): authenticates, routes, decodes the request once into an
 * ApiRequest (routes.ts), checks privilege, and answers with JSON, or streams events (stream.ts). Mounted on the
 * control socket (auth 'peer': SO_PEERCRED, MUTATING for root only), on `--api-address` (auth 'token': a bearer
 * token, root's privilege) and, read-only, on the live view's port (auth 'none'). Nothing a client sends makes it
 * throw: every failure is an answer `{"error": {"code", "message"}}` with the status of its code (errors.ts). */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PeerCredentials } from '../daemon/access.js';
import { ControlCallError, type ControlMethod, MAX_REQUEST_BYTES } from '../daemon/control-protocol.js';
import type { EdgeSource, EventSource } from '../events/types.js';
import { ApiError, errorBody } from './errors.js';
import { type ApiRequest, decodeRequest, type MatchedRoute, matchRoute } from './routes.js';
import { type StreamHooks, streamEvents } from './stream.js';
import { bearerMatches } from './token.js';

/** Longest request body the API reads (bytes), as the newline-JSON protocol's longest line. */
export const MAX_BODY_BYTES = MAX_REQUEST_BYTES;

/** What the API serves: the daemon's control calls (today's onControl), its events and its edges. */
export interface ApiSources {
  /** Answers a valid control call (undefined: the daemon does not serve this method); throws ControlCallError for a
   * refusal with a stable code. `peer` is who asked on the control socket (undefined over TCP or in tests). */
  control: (method: ControlMethod, params: Record<string, unknown>, peer?: PeerCredentials) => unknown | Promise<unknown>;
  events: EventSource;
  edges: EdgeSource;
}

export interface ApiHandlerOptions {
  /** Serve only the routes that change nothing (GET); the others answer 403 ERR_PERMISSION. */
  readOnly: boolean;
  /** 'peer': the caller's SO_PEERCRED (given per request) decides, MUTATING calls for uid 0 only; 'token': every
   * request needs `Authorization: Bearer TOKEN` (401 otherwise) and then has root's privilege; 'none': anyone
   * (only with readOnly). */
  auth: 'peer' | 'token' | 'none';
  token?: string;
  /** With auth 'peer': a uid besides root that may make changes (a private daemon's own user). */
  adminUid?: number;
  /** Told when an event stream opens and closes (the count of open streams, the log). */
  streams?: StreamHooks;
  /** An unexpected exception answering a request (it answers ERR_INTERNAL). */
  onInternalError?: (what: string, e: unknown) => void;
}

export type ApiHandler = (req: IncomingMessage, res: ServerResponse, peer?: PeerCredentials) => void;

/** Sends a JSON answer (the connection closes after it when `close`: a body left unread). */
function sendJson(res: ServerResponse, status: number, body: string, headers: Readonly<Record<string, string>> = {}, close = false): void {
  if (res.headersSent || res.writableEnded) {
    res.destroy();
    return;
  }
  const h: Record<string, string | number> = {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body) + 1,
    'Cache-Control': 'no-store',
    ...headers,
  };
  if (close) h.Connection = 'close';
  res.writeHead(status, h);
  res.end(body + '\n');
}

function sendError(res: ServerResponse, e: ApiError, close = false): void {
  sendJson(res, e.status, errorBody(e.code, e.message), e.headers, close);
}

/** The request's body, at most MAX_BODY_BYTES (413 beyond: the rest is not read, the connection closes). A client
 * that waits for `100 Continue` (curl does, for bodies over 1 KiB) gets it only now, when the body will be read:
 * refused earlier, it never sends the body at all. */
function readBody(req: IncomingMessage, res: ServerResponse): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > MAX_BODY_BYTES) {
    return Promise.reject(new ApiError('ERR_TOO_LARGE', `the body is longer than ${MAX_BODY_BYTES} bytes`));
  }
  if (req.headers.expect?.toLowerCase() === '100-continue') res.writeContinue();
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.off('data', onData);
        req.pause();
        reject(new ApiError('ERR_TOO_LARGE', `the body is longer than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      parts.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
    req.on('close', () => reject(new ApiError('ERR_BAD_REQUEST', 'the client went away before the end of its body')));
  });
}

/** The code and message of what a control call threw. */
function callError(e: unknown): ApiError | undefined {
  return e instanceof ControlCallError ? new ApiError(e.code, e.message) : e instanceof ApiError ? e : undefined;
}

/** Makes the handler. Throws when asked for a listener anyone may change the network through (auth 'none' without
 * readOnly) or for token auth without a token. */
export function createApiHandler(src: ApiSources, opts: ApiHandlerOptions): ApiHandler {
  if (opts.auth === 'none' && !opts.readOnly) throw new Error("createApiHandler: auth 'none' serves read-only only");
  if (opts.auth === 'token' && !opts.token) throw new Error("createApiHandler: auth 'token' needs the token");
  const internal = opts.onInternalError ?? ((): void => undefined);

  const authenticate = (req: IncomingMessage): void => {
    if (opts.auth !== 'token') return;
    if (!bearerMatches(req.headers.authorization, opts.token as string)) {
      throw new ApiError('ERR_UNAUTHORIZED', 'this listener needs Authorization: Bearer TOKEN (the daemon\'s --api-token-file, or STATE-DIR/api.token)', {
        'WWW-Authenticate': 'Bearer realm="appswitch"',
      });
    }
  };

  const authorize = (m: MatchedRoute, peer: PeerCredentials | undefined): void => {
    if (!m.route.mutating) return;
    const what = `${m.route.method} ${m.route.path}`;
    if (opts.readOnly) throw new ApiError('ERR_PERMISSION', `${what} changes the application network: this listener is read-only (use the control socket, or --api-address with its token)`);
    if (opts.auth === 'peer' && peer && peer.uid !== 0 && peer.uid !== opts.adminUid) {
      const method = 'control' in m.route.target ? m.route.target.control : what;
      throw new ApiError('ERR_PERMISSION', `${method} changes the application network: it needs root, as \`appswitch run\` does`);
    }
  };

  const answer = async (r: ApiRequest, res: ServerResponse, peer: PeerCredentials | undefined): Promise<void> => {
    if (r.kind === 'edges') {
      sendJson(res, 200, JSON.stringify(await src.edges.edges(r.scope)));
      return;
    }
    if (r.kind === 'events') {
      const req: Parameters<typeof streamEvents>[2] = { format: r.format };
      if (r.app !== undefined) req.app = r.app;
      if (r.types !== undefined) req.types = r.types;
      await streamEvents(res, src.events, req, opts.streams);
      return;
    }
    let result: unknown;
    try {
      result = await src.control(r.method, r.params, opts.auth === 'peer' ? peer : undefined);
    } catch (e) {
      const known = callError(e);
      if (known) throw known;
      internal(`the ${r.method} request`, e);
      throw new ApiError('ERR_INTERNAL', (e as Error).message);
    }
    if (result === undefined) throw new ApiError('ERR_NOT_FOUND', `method ${r.method} is not served by this daemon`);
    sendJson(res, 200, JSON.stringify(result));
  };

  const serve = async (req: IncomingMessage, res: ServerResponse, peer: PeerCredentials | undefined): Promise<void> => {
    let bodyLeft = req.method !== 'GET' && req.method !== 'DELETE';
    try {
      authenticate(req);
      const m = matchRoute(req.method ?? '', req.url ?? '');
      authorize(m, peer);
      let body: Buffer | undefined;
      if (m.route.body) {
        body = await readBody(req, res);
        bodyLeft = false;
      }
      const r = decodeRequest(m, body, req.headers.accept);
      await answer(r, res, peer);
    } catch (e) {
      const err = e instanceof ApiError ? e : undefined;
      if (!err) {
        internal('serving an API request', e);
        sendError(res, new ApiError('ERR_INTERNAL', (e as Error).message), true);
        return;
      }
      /* a body we did not read (or stopped reading) is not skipped over: the connection ends after the answer */
      sendError(res, err, bodyLeft || err.code === 'ERR_TOO_LARGE');
    }
  };

  return (req, res, peer) => {
    try {
      serve(req, res, peer).catch((e: unknown) => {
        internal('serving an API request', e);
        res.destroy();
      });
    } catch (e) {
      internal('serving an API request', e);
      res.destroy();
    }
  };
}
