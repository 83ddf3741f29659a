/** The live view's HTTP server (`appswitch daemon --ui-address ADDR:PORT`): `GET /` answers the page built at install
 * time (dist/ui/page.html: one file, its script and style inlined, see build-page.ts), and `GET /v1/<route>` for the
 * read-only routes the page reads is passed to the API handler (mounted read-only, no auth). Nothing else is served.
 *
 * Defences (docs/live-view.md, "Security"): only GET (and HEAD of the page); a Host header that is not an IP literal or
 * `localhost` is refused (a web page elsewhere cannot read the view through DNS rebinding); no CORS headers (other
 * origins cannot read the answers); a Content-Security-Policy that allows only the page's own inline script and style
 * and requests to itself; bounded connections, header size and time to send a request. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { listenAddress } from '../net-listen.js';

/** The API routes the view reads (IFACE15.md); any other /v1 path is 404 here whatever the handler serves. */
export const UI_ROUTES: ReadonlySet<string> = new Set(['info', 'status', 'members', 'apps', 'services', 'exposures', 'vservices', 'edges', 'events']);

/** Connections served at once (each open page holds one event stream and a few short requests). */
const MAX_CONNECTIONS = 64;
/** Time a client has to send its request's headers. */
const HEADERS_TIMEOUT_MS = 10_000;
/** Largest request header block. */
const MAX_HEADER_BYTES = 16 * 1024;

/** The built page, its Content-Security-Policy (hashes of its inline script and style) and its ETag. */
export interface UiPage {
  html: string;
  csp: string;
  etag: string;
}

/** Where the build puts the page: dist/ui/page.html (this file runs from dist/src/ui). */
export const PAGE_FILE = new URL('../../ui/page.html', import.meta.url);

/** The Content-Security-Policy of a page: only its own inline <script> and <style> blocks (by hash), data: images,
 * and requests to the origin it came from. */
export function cspFor(html: string): string {
  const hashes = (tag: string): string[] =>
    [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => `'sha256-${createHash('sha256').update(m[1] ?? '').digest('base64')}'`);
  return [
    "default-src 'none'",
    `script-src ${hashes('script').join(' ') || "'none'"}`,
    `style-src ${hashes('style').join(' ') || "'none'"}`,
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** Reads the built page; undefined when it is not built (the server then answers / with 503 and says so). */
export function loadPage(file: URL | string = PAGE_FILE): UiPage | undefined {
  let html: string;
  try {
    html = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  return { html, csp: cspFor(html), etag: `"${createHash('sha256').update(html).digest('hex').slice(0, 32)}"` };
}

/** Whether a Host header names this server by an address (or localhost), not by a DNS name someone else controls. */
export function hostAllowed(host: string | undefined): boolean {
  if (host === undefined || host.length === 0 || host.length > 300) return false;
  let name = host;
  const v6 = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(host);
  if (v6) name = v6[1] as string;
  else {
    const m = /^([^:]+)(?::\d{1,5})?$/.exec(host);
    if (!m) return false;
    name = m[1] as string;
  }
  name = name.toLowerCase();
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  return v6 ? ipaddr.IPv6.isValid(name) : ipaddr.IPv4.isValidFourPartDecimal(name);
}

export type UiApiHandler = (req: IncomingMessage, res: ServerResponse) => void;

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
} as const;

function fail(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

export class UiServer {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  /** An unexpected exception while serving one request (that request gets a 500 or is closed). Default: logged. */
  onInternalError: (what: string, e: unknown) => void = (what, e) => this.log.error({ err: e }, `ui: ${what} failed`);
  /** Errors of the listening socket once it listens (EMFILE at accept...). Default: logged. */
  onError: (e: NodeJS.ErrnoException) => void = (e) => this.log.warn({ err: e }, 'ui socket error');

  constructor(
    private readonly api: UiApiHandler,
    private readonly log: Logger,
    private readonly page: UiPage | undefined = loadPage(),
  ) {}

  /** Serves one request (public for unit tests, which call it with fake requests). */
  handle(req: IncomingMessage, res: ServerResponse): void {
    try {
      if (!hostAllowed(req.headers.host)) {
        fail(res, 403, 'ERR_PERMISSION', 'the Host header must be an IP address or localhost (open the view by address; this refuses DNS rebinding)');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        fail(res, 405, 'ERR_BAD_REQUEST', 'the live view is read-only: GET only');
        return;
      }
      const path = (req.url ?? '/').split('?')[0] as string;
      if (path === '/' || path === '/index.html') {
        this.servePage(req, res);
        return;
      }
      const m = /^\/v1\/([a-z]+)$/.exec(path);
      if (!m || !UI_ROUTES.has(m[1] as string)) {
        fail(res, 404, 'ERR_NOT_FOUND', `no route ${path.slice(0, 100)}`);
        return;
      }
      if (req.method !== 'GET') { /* HEAD of an event stream would hold a subscription that sends nothing */
        res.setHeader('allow', 'GET');
        fail(res, 405, 'ERR_BAD_REQUEST', 'the API routes answer GET only');
        return;
      }
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      this.api(req, res);
    } catch (e) {
      this.onInternalError('serving a request', e);
      if (!res.headersSent) fail(res, 500, 'ERR_INTERNAL', 'internal error');
      else res.destroy();
    }
  }

  private servePage(req: IncomingMessage, res: ServerResponse): void {
    const page = this.page;
    if (!page) {
      fail(res, 503, 'ERR_INTERNAL', 'the live view page is not built (run npm install or npm run build)');
      return;
    }
    const headers = { ...SECURITY_HEADERS, 'content-security-policy': page.csp, etag: page.etag, 'cache-control': 'no-cache' };
    if (req.headers['if-none-match'] === page.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page.html) });
    res.end(req.method === 'HEAD' ? undefined : page.html);
  }

  /** Listens on host:port; resolves with "host:port" as bound (port 0 picks one). */
  listen(host: string, port: number): Promise<string> {
    const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: 30_000, keepAliveTimeout: 5_000 }, (req, res) =>
      this.handle(req, res),
    );
    server.maxConnections = MAX_CONNECTIONS;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('clientError', (_e, s: Socket) => {
      if (s.writable) s.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      s.destroy();
    });
    this.server = server;
    return listenAddress(server, host, port, (e) => this.onError(e));
  }

  /** Stops listening and closes every connection (event streams included). */
  close(): Promise<void> {
    const server = this.server;
    if (!server) return Promise.resolve();
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}
