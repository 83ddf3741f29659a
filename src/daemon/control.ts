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

/** Answers a valid request; `peer` is who sent it (undefined when the server admits everyone, in unit tests). */
export type ControlHandler = (req: ControlRequest, peer?: PeerCredentials) => unknown;

/** Decides whether a peer may use the API: undefined = yes, else the reason (sent back as ERR_PERMISSION). */
export type ControlAdmit = (peer: PeerCredentials) => string | undefined;

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
    /* read and discard what the client sends until it closes: closing with its request unread would reset the
     * connection (unix(7)) before the client reads the answer */
    sock.resume();
    sock.end(JSON.stringify({ id: 0, error: err('ERR_PERMISSION', `permission denied: ${why}`) }) + '\n');
    setTimeout(() => sock.destroy(), 2000).unref();
    return false;
  }

  private serve(sock: net.Socket): void {
    sock.on('error', () => sock.destroy());
    const admitted = this.admitted(sock);
    if (admitted === false) return;
    const peer = admitted ?? undefined;
    const parts: Buffer[] = [];
    let size = 0;
    /** Skipping the rest of an over-long line. */
    let skipping = false;
    const send = (r: ControlResponse): void => {
      if (r.error) this.stats.errors++;
      if (sock.destroyed || !sock.writable) return;
      if (!sock.write(JSON.stringify(r) + '\n') && sock.writableLength > MAX_PENDING_OUTPUT) {
        sock.pause(); /* a client that does not read its answers stops being read */
        sock.once('drain', () => sock.resume());
      }
    };
    sock.on('data', (chunk: Buffer) => guard(this.onInternalError, 'reading a control request', () => onData(chunk), () => sock.destroy()));
    const onData = (chunk: Buffer): void => {
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
          if (line.some((b) => b !== 32 && b !== 9 && b !== 13)) send(this.answer(line, peer));
        }
        parts.length = 0;
        size = 0;
        skipping = false;
        start = nl + 1;
      }
    };
  }

  private answer(line: Buffer, peer: PeerCredentials | undefined): ControlResponse {
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
      if (result === undefined) return { id: req.id, error: err('ERR_UNKNOWN_METHOD', `method ${req.method} is not served by this daemon`) };
      return { id: req.id, result };
    } catch (e) {
      if (e instanceof ControlCallError) return { id: req.id, error: err(e.code, e.message) };
      this.onInternalError(`the ${req.method} request`, e);
      return { id: req.id, error: err('ERR_INTERNAL', (e as Error).message) };
    }
  }
}
