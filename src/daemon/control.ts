/** The control API server (see control-protocol.ts). Every connection's peer is checked (SO_PEERCRED) before
 * anything is read; every request line is validated against METHODS before it reaches the daemon. A bad request
 * gets an error response with a stable ERR_* code and the connection stays usable; nothing a client sends can
 * make the server throw, grow without bound or keep descriptors after the client is gone. */
import { unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { native } from '../native/binding.js';
import type { PeerCredentials } from './access.js';
import { guard, type InternalErrorReporter } from './internal-errors.js';
import {
  type ControlError,
  type ControlErrorCode,
  type ControlRequest,
  type ControlResponse,
  ControlCallError,
  MAX_REQUEST_BYTES,
  METHODS,
  MUTATING,
  type ParamType,
  REQUIRED,
} from './control-protocol.js';

/** Answers a valid request; `peer` is who sent it (undefined when the server admits everyone, in unit tests). The
 * result may be a Promise (answered when it settles), or a ControlStream (the connection then carries that stream). */
export type ControlHandler = (req: ControlRequest, peer?: PeerCredentials) => unknown;

/** A result that turns the connection into a one-way stream: the server answers {"id":N,"result":{"stream":KIND}},
 * reads no more requests from it, and hands the socket to `start` (which ends it, or is ended by the client). */
export class ControlStream {
  constructor(
    readonly kind: string,
    readonly start: (sock: net.Socket) => void,
  ) {}
}

/** Decides whether a peer may use the API: undefined = yes, else the reason (sent back as ERR_PERMISSION). */
export type ControlAdmit = (peer: PeerCredentials) => string | undefined;

/** Serves the connections that speak HTTP (src/api/server.ts ApiServer): `serve` once the first bytes showed an
 * HTTP request line (`head`: those bytes, read again by the parser), `refuse` for a peer admission refused. */
export interface HttpTakeover {
  serve(sock: net.Socket, head: Buffer, peer?: PeerCredentials): void;
  refuse(sock: net.Socket, why: string): void;
}

/** A connection that has sent nothing to tell its protocol by within this time is closed. */
export const FIRST_BYTES_TIMEOUT_MS = 30_000;
/** Request methods that make a connection HTTP (the first bytes `METHOD `); anything else is newline JSON. */
const HTTP_METHODS = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS', 'CONNECT', 'TRACE'].map((m) => Buffer.from(`${m} `));

/** What a connection's first bytes say, leading white space skipped: 'http' (an HTTP request line starts), 'json'
 * (anything else: today's protocol, which answers garbage with its errors), or undefined (too few bytes yet). */
export function sniffProtocol(head: Buffer): 'http' | 'json' | undefined {
  let i = 0;
  while (i < head.length && (head[i] === 32 || head[i] === 9 || head[i] === 10 || head[i] === 13)) i++;
  const rest = head.subarray(i);
  if (rest.length === 0) return undefined;
  for (const m of HTTP_METHODS) {
    const n = Math.min(m.length, rest.length);
    if (rest.subarray(0, n).equals(m.subarray(0, n))) return n === m.length ? 'http' : undefined;
  }
  return 'json';
}

/** Control connections served at once; more are closed at accept. */
const MAX_CONNECTIONS = 256;
/** Stop reading a client's requests while this much of our output to it is unread. */
const MAX_PENDING_OUTPUT = 1024 * 1024;

function err(code: ControlErrorCode, message: string): ControlError {
  return { code, message };
}

function typeOk(t: ParamType, v: unknown): boolean {
  if (t === 'string[]') return Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (t === 'number') return typeof v === 'number' && Number.isFinite(v);
  return typeof v === t;
}

/** Checks a parsed request against the schema: the request, or the error to answer with (and the id to echo). */
export function validateRequest(v: unknown): { req: ControlRequest } | { id: number; error: ControlError } {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { id: 0, error: err('ERR_BAD_REQUEST', 'a request is a JSON object') };
  const o = v as Record<string, unknown>;
  let id = 0;
  if (o.id !== undefined) {
    if (typeof o.id !== 'number' || !Number.isSafeInteger(o.id) || o.id < 0) {
      return { id: 0, error: err('ERR_BAD_REQUEST', '"id" must be a non-negative integer') };
    }
    id = o.id;
  }
  if (typeof o.method !== 'string') return { id, error: err('ERR_BAD_REQUEST', 'a request needs a string "method"') };
  const known = Object.hasOwn(METHODS, o.method);
  if (!known) {
    const shown = o.method.length > 64 ? `${o.method.slice(0, 64)}...` : o.method;
    return { id, error: err('ERR_UNKNOWN_METHOD', `unknown method "${shown}"; methods: ${Object.keys(METHODS).join(', ')}`) };
  }
  const method = o.method as keyof typeof METHODS;
  const schema: Record<string, ParamType> = METHODS[method];
  let params: Record<string, unknown> | undefined;
  if (o.params !== undefined && o.params !== null) {
    if (typeof o.params !== 'object' || Array.isArray(o.params)) return { id, error: err('ERR_BAD_REQUEST', '"params" must be an object') };
    params = o.params as Record<string, unknown>;
    for (const [k, val] of Object.entries(params)) {
      const t = Object.hasOwn(schema, k) ? schema[k] : undefined;
      if (t === undefined) return { id, error: err('ERR_BAD_PARAMS', `${method} takes no parameter "${k.slice(0, 64)}"`) };
      if (!typeOk(t, val)) return { id, error: err('ERR_BAD_PARAMS', `${method}: parameter "${k}" must be a ${t}`) };
    }
  }
  for (const k of REQUIRED[method] ?? []) {
    if (params?.[k] === undefined) return { id, error: err('ERR_BAD_PARAMS', `${method} needs the parameter "${k}"`) };
  }
  const req: ControlRequest = { id, method };
  if (params) req.params = params;
  return { req };
}

/** The fd behind a connected net.Socket (libuv's pipe handle), for SO_PEERCRED. */
function fdOf(sock: net.Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export class ControlServer {
  private server?: net.Server;
  /** Errors of the listening socket once it listens (Node emits a failed accept, e.g. EMFILE, as the server's
   * 'error'; unhandled, that would end the daemon). Default: logged. */
  onError: (e: NodeJS.ErrnoException) => void = (e) => this.log.warn({ err: e }, 'control socket error');
  /** An unexpected exception in a handler (a request answers ERR_INTERNAL; a read closes that connection). Default: logged. */
  onInternalError: InternalErrorReporter = (what, e) => this.log.error({ err: e }, `control: ${what} failed`);
  /** Requests answered and requests refused, since start. */
  readonly stats = { requests: 0, errors: 0, refusedPeers: 0 };
  /** Who serves the connections that speak HTTP; without it every connection is newline JSON (as before HTTP). */
  http?: HttpTakeover;

  constructor(
    private readonly handle: ControlHandler,
    private readonly log: Logger,
    private readonly admit?: ControlAdmit,
    /** A uid besides root that may make changes (MUTATING methods): a private daemon's own user. */
    private readonly adminUid?: number,
  ) {}

  /** Listens at path; `secure` then sets the file's owner and mode (see AccessControl.secure). */
  listen(path: string, secure: (path: string) => void): Promise<void> {
    try {
      unlinkSync(path);
    } catch {
      /* not there */
    }
    const server = net.createServer((sock) => guard(this.onInternalError, 'serving a control connection', () => this.serve(sock), () => sock.destroy()));
    server.maxConnections = MAX_CONNECTIONS;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        server.on('error', (e: NodeJS.ErrnoException) => this.onError(e));
        try {
          secure(path);
          resolve();
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
    });
  }

  /** Whether this peer may use the API (its credentials; null when there is no admission check); answers
   * ERR_PERMISSION and closes when not (false). */
  private admitted(sock: net.Socket): PeerCredentials | null | false {
    if (!this.admit) return null;
    const fd = fdOf(sock);
    let why: string | undefined;
    let peer: PeerCredentials | undefined;
    if (fd === undefined) why = 'cannot identify the peer (no descriptor)';
    else {
      try {
        peer = native.peerCred(fd);
        why = this.admit(peer);
      } catch (e) {
        why = `cannot identify the peer: ${(e as Error).message}`;
      }
    }
    if (why === undefined && peer) return peer;
    this.stats.refusedPeers++;
    const http = this.http;
    const refuseJson = (): void => {
      /* read and discard what the client sends until it closes: closing with its request unread would reset the
       * connection (unix(7)) before the client reads the answer */
      sock.resume();
      sock.end(JSON.stringify({ id: 0, error: err('ERR_PERMISSION', `permission denied: ${why}`) }) + '\n');
      setTimeout(() => sock.destroy(), 2000).unref();
    };
    /* the answer in the client's protocol: HTTP once its first bytes say so; newline JSON for anything else, and
     * for a client that says nothing within 2 s (as before HTTP, when the answer went out at once) */
    if (!http) refuseJson();
    else this.sniff(sock, (proto) => (proto === 'http' ? http.refuse(sock, why ?? 'refused') : refuseJson()), 2000, refuseJson);
    return false;
  }

  /** Reads until the first bytes tell the protocol (see sniffProtocol), then hands them back (unshifted, paused)
   * and calls `then`; a connection silent for `timeoutMs` is closed (or given to `silent`). */
  private sniff(sock: net.Socket, then: (proto: 'http' | 'json', head: Buffer) => void, timeoutMs = FIRST_BYTES_TIMEOUT_MS, silent?: () => void): void {
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      done();
      if (silent) silent();
      else sock.destroy();
    }, timeoutMs);
    timer.unref();
    const done = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
    };
    const onClose = (): void => done();
    const onData = (chunk: Buffer): void => {
      head = head.length ? Buffer.concat([head, chunk]) : chunk;
      const proto = sniffProtocol(head);
      if (proto === undefined && head.length < 64 * 1024) return; /* only white space (or a method's first letters) yet */
      done();
      sock.pause();
      then(proto ?? 'json', head);
    };
    sock.on('data', onData);
    sock.on('close', onClose);
  }

  private serve(sock: net.Socket): void {
    sock.on('error', () => sock.destroy());
    const admitted = this.admitted(sock);
    if (admitted === false) return;
    const peer = admitted ?? undefined;
    const http = this.http;
    if (!http) {
      this.serveJson(sock, peer, undefined);
      return;
    }
    this.sniff(sock, (proto, head) => {
      if (proto === 'http') http.serve(sock, head, peer);
      else this.serveJson(sock, peer, head);
    });
  }

  /** Today's protocol: newline-delimited JSON requests, one answer per line. `head`: bytes already read. */
  private serveJson(sock: net.Socket, peer: PeerCredentials | undefined, head: Buffer | undefined): void {
    const parts: Buffer[] = [];
    let size = 0;
    /** Skipping the rest of an over-long line. */
    let skipping = false;
    /** The connection carries a stream now (ControlStream): nothing more is read as requests. */
    let streaming = false;
    const send = (r: ControlResponse): void => {
      if (r.error) this.stats.errors++;
      if (sock.destroyed || !sock.writable) return;
      if (!sock.write(JSON.stringify(r) + '\n') && sock.writableLength > MAX_PENDING_OUTPUT) {
        sock.pause(); /* a client that does not read its answers stops being read */
        sock.once('drain', () => sock.resume());
      }
    };
    /* Answers go out in the order of the requests (a client may pipeline them and read the answers by position):
     * while an answer that settles later (a Promise: edges of the cluster) is pending, the ones after it wait. */
    let inFlight = 0;
    let tail: Promise<void> = Promise.resolve();
    const inOrder = (r: ControlResponse | Promise<ControlResponse>, after?: () => void): void => {
      if (inFlight === 0 && !(r instanceof Promise)) {
        send(r);
        after?.();
        return;
      }
      inFlight++;
      tail = tail
        .then(() => r)
        .then(
          (x) => {
            send(x);
            after?.();
          },
          (e: unknown) => this.onInternalError('answering a control request', e),
        )
        .finally(() => inFlight--);
    };
    sock.on('data', (chunk: Buffer) => guard(this.onInternalError, 'reading a control request', () => onData(chunk), () => sock.destroy()));
    const onData = (chunk: Buffer): void => {
      if (streaming) return;
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(10, start);
        const piece = chunk.subarray(start, nl < 0 ? chunk.length : nl);
        if (!skipping) {
          if (size + piece.length > MAX_REQUEST_BYTES) {
            send({ id: 0, error: err('ERR_TOO_LARGE', `request longer than ${MAX_REQUEST_BYTES} bytes; skipped`) });
            parts.length = 0;
            size = 0;
            skipping = true;
          } else {
            parts.push(piece);
            size += piece.length;
          }
        }
        if (nl < 0) return;
        if (!skipping) {
          const line = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
          if (line.some((b) => b !== 32 && b !== 9 && b !== 13)) {
            const out = this.answer(line, peer);
            if (!(out instanceof Promise) && 'stream' in out) {
              streaming = true;
              inOrder({ id: out.id, result: { stream: out.stream.kind } }, () => out.stream.start(sock));
              return;
            }
            inOrder(out);
          }
        }
        parts.length = 0;
        size = 0;
        skipping = false;
        start = nl + 1;
      }
    };
    if (head) {
      guard(this.onInternalError, 'reading a control request', () => onData(head), () => sock.destroy());
      sock.resume();
    }
  }

  private answer(line: Buffer, peer: PeerCredentials | undefined): ControlResponse | Promise<ControlResponse> | { id: number; stream: ControlStream } {
    this.stats.requests++;
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(line);
    } catch {
      return { id: 0, error: err('ERR_BAD_JSON', 'request is not UTF-8 text') };
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return { id: 0, error: err('ERR_BAD_JSON', 'request is not JSON') };
    }
    const v = validateRequest(parsed);
    if ('error' in v) return { id: v.id, error: v.error };
    const req = v.req;
    if (MUTATING.has(req.method) && peer && peer.uid !== 0 && peer.uid !== this.adminUid) {
      return { id: req.id, error: err('ERR_PERMISSION', `${req.method} changes the application network: it needs root, as \`appswitch run\` does`) };
    }
    try {
      const result = this.handle(req, peer);
      if (result instanceof ControlStream) return { id: req.id, stream: result };
      if (result instanceof Promise) return result.then((r: unknown) => this.resultOf(req, r), (e: unknown) => this.failure(req, e));
      return this.resultOf(req, result);
    } catch (e) {
      return this.failure(req, e);
    }
  }

  private resultOf(req: ControlRequest, result: unknown): ControlResponse {
    if (result === undefined) return { id: req.id, error: err('ERR_UNKNOWN_METHOD', `method ${req.method} is not served by this daemon`) };
    return { id: req.id, result };
  }

  private failure(req: ControlRequest, e: unknown): ControlResponse {
    if (e instanceof ControlCallError) return { id: req.id, error: err(e.code, e.message) };
    this.onInternalError(`the ${req.method} request`, e);
    return { id: req.id, error: err('ERR_INTERNAL', (e as Error).message) };
  }
}
