/** The HTTP side of the control socket, and the TCP API listener (`--api-address`). Sockets are accepted elsewhere
 * (the control server admits them by SO_PEERCRED and tells HTTP from newline JSON by the first bytes) and handed to
 * one node:http server that never listens itself (`emit('connection')`). Its limits, which apply to every socket
 * handed over: request headers at most MAX_HEADER_BYTES (431), a body at most MAX_BODY_BYTES (413, handler.ts),
 * complete request headers within HEADERS_TIMEOUT_MS of the connection or of the last answer (so a keep-alive
 * connection idles that long at most, and a client sending its headers a byte at a time is cut off), a body within
 * BODY_TIMEOUT_MS, at most MAX_TCP_CONNECTIONS on the TCP listener. A request that cannot be parsed gets a 400 (431)
 * and the connection closes. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import net from 'node:net';
import type { Logger } from 'pino';
import type { PeerCredentials } from '../daemon/access.js';
import { type ApiErrorCode, rawErrorResponse } from './errors.js';
import type { ApiHandler } from './handler.js';
import { listenAddress } from '../net-listen.js';

export const MAX_HEADER_BYTES = 16 * 1024;
export const HEADERS_TIMEOUT_MS = 10_000;
export const BODY_TIMEOUT_MS = 10_000;
/** Connections the TCP listener serves at once; more are closed at accept. */
export const MAX_TCP_CONNECTIONS = 64;

/** How long a handed-over socket may go without complete request headers (tests shorten it). */
export interface ApiServerLimits {
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
}

/** Per socket: who it is, the requests not yet answered, and the timer that ends a connection that sends nothing. */
interface ConnState {
  peer?: PeerCredentials;
  inflight: number;
  timer?: NodeJS.Timeout;
}

export class ApiServer {
  private readonly http: Server;
  private readonly conns = new Map<net.Socket, ConnState>();
  private tcp?: net.Server;
  /** Errors of the TCP listening socket once it listens (a failed accept, e.g. EMFILE). Default: logged. */
  onError: (e: NodeJS.ErrnoException) => void = (e) => this.log.warn({ err: e }, 'API listener error');
  readonly stats = { requests: 0, badRequests: 0, timeouts: 0 };

  constructor(
    private readonly handle: ApiHandler,
    private readonly log: Logger,
    private readonly limits: ApiServerLimits = { headersTimeoutMs: HEADERS_TIMEOUT_MS, bodyTimeoutMs: BODY_TIMEOUT_MS },
  ) {
    this.http = createServer({ maxHeaderSize: MAX_HEADER_BYTES, keepAliveTimeout: limits.headersTimeoutMs, requireHostHeader: false });
    this.http.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
    /* `Expect: 100-continue`: the handler sends the 100 when it reads the body (handler.ts readBody) */
    this.http.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
    this.http.on('clientError', (e: NodeJS.ErrnoException, sock: net.Socket) => this.onClientError(e, sock));
  }

  /** Serves a socket that speaks HTTP. `head`: the bytes already read from it (they are read again by the parser);
   * `peer`: its SO_PEERCRED, handed to the handler with every request. */
  serve(sock: net.Socket, head: Buffer, peer?: PeerCredentials): void {
    const st: ConnState = { inflight: 0 };
    if (peer) st.peer = peer;
    this.conns.set(sock, st);
    sock.once('close', () => {
      clearTimeout(st.timer);
      this.conns.delete(sock);
    });
    this.arm(sock, st, this.limits.headersTimeoutMs);
    sock.pause();
    if (head.length) sock.unshift(head);
    this.http.emit('connection', sock);
    sock.resume();
  }

  /** Answers a refused peer in HTTP (403, the reason) and closes. */
  refuse(sock: net.Socket, why: string): void {
    sock.resume(); /* read and discard until it closes: closing with its request unread would reset the connection */
    sock.end(rawErrorResponse(403, 'Forbidden', 'ERR_PERMISSION', `permission denied: ${why}`));
    setTimeout(() => sock.destroy(), 2000).unref();
  }

  /** Listens on host:port for the TCP API; resolves with the address bound ("host:port", "[v6]:port"). */
  listenTcp(host: string, port: number): Promise<string> {
    const server = net.createServer((sock) => {
      sock.setKeepAlive(true, 60_000);
      sock.setNoDelay(true);
      this.serve(sock, Buffer.alloc(0));
    });
    server.maxConnections = MAX_TCP_CONNECTIONS;
    this.tcp = server;
    return listenAddress(server, host, port, (e) => this.onError(e));
  }

  /** Open HTTP connections (both kinds). */
  get connections(): number {
    return this.conns.size;
  }

  async close(): Promise<void> {
    for (const sock of this.conns.keys()) sock.destroy();
    const tcp = this.tcp;
    this.tcp = undefined;
    if (tcp) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  /** (Re)starts the connection's timer: when it fires, the connection ends. */
  private arm(sock: net.Socket, st: ConnState, ms: number): void {
    clearTimeout(st.timer);
    st.timer = setTimeout(() => {
      this.stats.timeouts++;
      sock.destroy();
    }, ms);
    st.timer.unref();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.stats.requests++;
    const sock = req.socket;
    const st = this.conns.get(sock);
    if (st) {
      st.inflight++;
      /* the headers are in: now the body has its own time (a request without one is complete at once) */
      clearTimeout(st.timer);
      st.timer = setTimeout(() => {
        if (req.complete) return;
        this.stats.timeouts++;
        sock.destroy();
      }, this.limits.bodyTimeoutMs);
      st.timer.unref();
      res.once('close', () => {
        st.inflight--;
        if (st.inflight === 0 && !sock.destroyed) this.arm(sock, st, this.limits.headersTimeoutMs);
      });
    }
    this.handle(req, res, st?.peer);
  }

  private onClientError(e: NodeJS.ErrnoException, sock: net.Socket): void {
    this.stats.badRequests++;
    const code = e.code ?? '';
    if (!sock.writable || code === 'ECONNRESET') {
      sock.destroy();
      return;
    }
    const [status, reason, errCode, message]: [number, string, ApiErrorCode, string] =
      code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'ERR_TOO_LARGE', `request headers longer than ${MAX_HEADER_BYTES} bytes`]
        : [400, 'Bad Request', 'ERR_BAD_REQUEST', `not an HTTP/1.1 request (${code || e.message})`];
    sock.end(rawErrorResponse(status, reason, errCode, message));
    setTimeout(() => sock.destroy(), 1000).unref();
  }
}
