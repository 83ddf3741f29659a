/** NodeForwarder: the ingress forwarder in Node (net.Server + pick + net.connect + pipe). The fallback when the C relay
 * (relay-process.ts) is missing or keeps crashing. Each route listens on address:hostPort; an external connection is
 * held paused while an instance is picked (pick.ts) and connected to, the next instance on a refusal (or a connect that
 * does not complete in CONNECT_TIMEOUT_MS: a host gone silent) up to MAX_TRIES, then both sockets are piped. Each
 * connection to an instance starts with a preamble that names the outside client (native/preamble.h). */
import net from 'node:net';
import { native } from '../native/binding.js';
import type { Endpoint } from '../table/endpoint.js';
import { VSERVICE_NODE } from '../table/service-table.js';
import { ip16 } from '../trap/decision-table.js';
import type { ForwarderStats, IngressForwarder, IngressRefusal, IngressRoute } from './forwarder.js';
import { type IngressPicker, MAX_TRIES } from './pick.js';

/** A connect to an instance that has not completed by then counts as a refusal (its host is gone or unreachable). */
export const CONNECT_TIMEOUT_MS = 3000;
/** How often a route whose listen failed (EADDRINUSE...) tries again. */
export const RELISTEN_MS = 5000;

export interface NodeForwarderOptions {
  /** External connections open at once, all routes; past it new ones are refused ('limit'). */
  maxActive?: number;
  connectTimeoutMs?: number;
}

interface Listening {
  route: IngressRoute;
  server?: net.Server;
  retry?: NodeJS.Timeout;
  sockets: Set<net.Socket>;
}

/** "::ffff:a.b.c.d" as "a.b.c.d" (the canonical form of the rest of appswitch). */
function plain(ip: string | undefined): string {
  return (ip ?? '').replace(/^::ffff:/i, '');
}

export class NodeForwarder implements IngressForwarder {
  onRefusal: (r: IngressRefusal) => void = () => undefined;
  onListenError: (id: number, code: string) => void = () => undefined;
  private readonly routes = new Map<number, Listening>();
  private readonly counts: ForwarderStats = { accepted: 0, forwarded: 0, refused: 0, active: 0, bytes: 0 };
  private readonly maxActive: number;
  private readonly connectTimeoutMs: number;
  private key: Buffer | undefined;
  private closed = false;

  constructor(
    private readonly picker: IngressPicker,
    opts: NodeForwarderOptions = {},
  ) {
    this.maxActive = opts.maxActive ?? 16384;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  }

  add(route: IngressRoute): void {
    if (this.closed) return;
    this.remove(route.id);
    const l: Listening = { route, sockets: new Set() };
    this.routes.set(route.id, l);
    this.listen(l);
  }

  private listen(l: Listening): void {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (sock) => this.accept(l, sock));
    l.server = server;
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (l.server !== server) return;
      l.server = undefined;
      server.close();
      this.onListenError(l.route.id, e.code ?? 'EIO');
      if (this.routes.get(l.route.id) === l && !this.closed) {
        l.retry = setTimeout(() => {
          l.retry = undefined;
          if (this.routes.get(l.route.id) === l && !this.closed) this.listen(l);
        }, RELISTEN_MS);
        l.retry.unref();
      }
    });
    server.listen({ host: l.route.address, port: l.route.hostPort, exclusive: true }, () => {
      server.on('error', () => undefined); /* a failed accept (EMFILE): that connection only */
    });
  }

  remove(id: number): void {
    const l = this.routes.get(id);
    if (!l) return;
    this.routes.delete(id);
    if (l.retry) clearTimeout(l.retry);
    l.server?.close();
    for (const s of l.sockets) s.destroy();
  }

  private accept(l: Listening, client: net.Socket): void {
    this.counts.accepted++;
    client.on('error', () => client.destroy());
    const who: Endpoint = { ip: plain(client.remoteAddress), port: client.remotePort ?? 0 };
    if (this.counts.active >= this.maxActive || this.routes.get(l.route.id) !== l) {
      this.refuse(l, who, 'limit', client);
      return;
    }
    this.counts.active++;
    l.sockets.add(client);
    client.once('close', () => {
      this.counts.active--;
      l.sockets.delete(client);
    });
    this.connect(l, client, who, new Set());
  }

  private refuse(l: Listening, client: Endpoint, reason: IngressRefusal['reason'], sock: net.Socket): void {
    this.counts.refused++;
    sock.destroy();
    this.onRefusal({ route: l.route.id, client, reason });
  }

  /** Connects the external client to the next instance (the ones in `tried` refused it). */
  private connect(l: Listening, client: net.Socket, who: Endpoint, tried: Set<string>): void {
    if (client.destroyed) return;
    const { vip, port } = l.route;
    const pick = tried.size < MAX_TRIES ? this.picker.pick(vip, port, who, tried) : undefined;
    if (!pick) {
      this.refuse(l, who, tried.size ? 'all-refused' : 'no-instance', client);
      return;
    }
    const to: Endpoint = { ...pick.endpoint };
    const external = pick.node === VSERVICE_NODE; /* a virtual service's backend runs no appswitch: no preamble */
    tried.add(`${to.ip}:${to.port}`);
    let up: net.Socket;
    try {
      up = net.connect({ host: to.ip, port: to.port, allowHalfOpen: true });
    } catch {
      this.connect(l, client, who, tried); /* an endpoint Node will not connect to: as a refusal */
      return;
    }
    up.setNoDelay(true);
    let connected = false;
    const timer = setTimeout(() => up.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), this.connectTimeoutMs);
    client.once('close', () => {
      if (!connected) up.destroy();
    });
    up.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (connected) {
        client.destroy();
        return;
      }
      up.destroy();
      this.connect(l, client, who, tried); /* ECONNREFUSED, unreachable, timed out: the next instance */
    });
    up.once('connect', () => {
      clearTimeout(timer);
      connected = true;
      this.counts.forwarded++;
      l.sockets.add(up);
      up.on('error', () => client.destroy());
      client.on('error', () => up.destroy());
      up.once('close', () => {
        l.sockets.delete(up);
        this.counts.bytes += up.bytesRead + up.bytesWritten;
        client.destroy();
      });
      client.once('close', () => up.destroy());
      if (this.key && !external && up.localAddress && up.localPort !== undefined) {
        /* first on the connection: who the outside client is (native/preamble.h), for the instance's generator */
        up.write(native.preambleMake(this.key, ip16(who.ip), who.port, ip16(plain(up.localAddress)), up.localPort, ip16(to.ip), to.port, Date.now()));
      }
      client.pipe(up);
      up.pipe(client);
      client.resume();
    });
  }

  setPreambleKey(key: Buffer): void {
    this.key = Buffer.from(key);
  }

  stats(): ForwarderStats {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    this.closed = true;
    const servers: net.Server[] = [];
    for (const [id, l] of this.routes) {
      if (l.server) servers.push(l.server);
      this.remove(id);
    }
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
