/** The peer API: daemons ask each other who a client endpoint is, so that a server's accept() learns its client's
 * identity from the client's own daemon before it returns (no race with gossip). JSON lines over TCP on
 * `--peer-port` (default 7947) of the node address; one pooled connection per peer. With a gossip key, every
 * message carries an HMAC-SHA256 (first key signs, any key verifies) and a timestamp; others are dropped.
 *   request:  {"id":1,"t":<ms>,"who":"192.0.2.1:40312","dst":"192.0.2.2:40001","mac":"..."}   (dst: the server's real
 *             endpoint, so the client's daemon can find the socket in its kernel; optional, older daemons omit it)
 *   response: {"id":1,"t":<ms>,"identity":"10.0.0.9","appId":"..","tags":{..},"mac":".."}  or  {"id":1,"t":..,"unknown":true} */
import { createHmac, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Logger } from 'pino';
import type { ClientIdentity } from '../trap/handler.js';

const MAX_LINE = 4096;
const MAX_SKEW_MS = 60_000;
const MAX_CONNS = 256;

type Msg = Record<string, unknown>;

class Signer {
  constructor(private readonly keys: readonly Uint8Array[]) {}

  sign(m: Msg): string {
    const body = JSON.stringify(m);
    if (!this.keys.length) return body;
    return JSON.stringify({ ...m, mac: this.mac(this.keys[0] as Uint8Array, body) });
  }

  /** Parses and authenticates a line; undefined when malformed, stale or forged. */
  open(line: string): Msg | undefined {
    let m: Msg;
    try {
      m = JSON.parse(line) as Msg;
    } catch {
      return undefined;
    }
    if (typeof m !== 'object' || m === null || typeof m.id !== 'number' || typeof m.t !== 'number') return undefined;
    if (Math.abs(Date.now() - m.t) > MAX_SKEW_MS) return undefined;
    if (!this.keys.length) return m;
    const { mac, ...rest } = m;
    if (typeof mac !== 'string') return undefined;
    const body = JSON.stringify(rest);
    const got = Buffer.from(mac, 'hex');
    return this.keys.some((k) => {
      const want = Buffer.from(this.mac(k, body), 'hex');
      return want.length === got.length && timingSafeEqual(want, got);
    })
      ? rest
      : undefined;
  }

  private mac(key: Uint8Array, body: string): string {
    return createHmac('sha256', key).update(body).digest('hex');
  }
}

function lines(sock: net.Socket, onLine: (l: string) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    if (buf.length > MAX_LINE * 4 && !buf.includes('\n')) {
      sock.destroy();
      return;
    }
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (l.length <= MAX_LINE) onLine(l);
    }
  });
}

export class PeerApi {
  private server?: net.Server;
  /** Errors of the listening socket once it listens (a failed accept, e.g. EMFILE). Default: logged. */
  onError: (e: NodeJS.ErrnoException) => void = (e) => this.log.warn({ err: e }, 'peer API socket error');
  private readonly signer: Signer;
  private readonly clients = new Map<string, { sock: net.Socket; pending: Map<number, (m: Msg | undefined) => void> }>();
  private nextId = 1;
  private conns = 0;
  dropped = 0;

  constructor(
    private readonly port: number,
    keys: readonly Uint8Array[],
    private readonly lookup: (endpoint: string, dst?: string) => Promise<ClientIdentity | undefined>,
    private readonly log: Logger,
  ) {
    this.signer = new Signer(keys);
  }

  listen(address: string): Promise<void> {
    const server = net.createServer((sock) => this.serve(sock));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, address, () => {
        server.off('error', reject);
        server.on('error', (e: NodeJS.ErrnoException) => this.onError(e));
        resolve();
      });
    });
  }

  private serve(sock: net.Socket): void {
    if (this.conns >= MAX_CONNS) {
      sock.destroy();
      return;
    }
    this.conns++;
    sock.on('close', () => this.conns--);
    sock.on('error', () => sock.destroy());
    lines(sock, (l) => {
      const m = this.signer.open(l);
      if (!m || typeof m.who !== 'string') {
        this.dropped++;
        this.log.warn({ peer: sock.remoteAddress }, 'bad peer API request dropped');
        return;
      }
      void this.lookup(m.who, typeof m.dst === 'string' && m.dst.length <= 64 ? m.dst : undefined).then((c) => {
        const r: Msg = c ? { id: m.id, t: Date.now(), identity: c.identity, appId: c.appId, tags: c.tags } : { id: m.id, t: Date.now(), unknown: true };
        if (!sock.destroyed) sock.write(this.signer.sign(r) + '\n');
      });
    });
  }

  /** Asks the daemon at peerIp who `endpoint` (connected to our `dst`) is. Undefined when unknown, unreachable or too
   * slow. */
  whoIs(peerIp: string, endpoint: string, dst?: string, timeoutMs = 1500): Promise<ClientIdentity | undefined> {
    const c = this.client(peerIp);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        c.pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      c.pending.set(id, (m) => {
        clearTimeout(t);
        if (!m || m.unknown || typeof m.identity !== 'string' || typeof m.appId !== 'string') return resolve(undefined);
        const tags: Record<string, string> = {};
        if (m.tags && typeof m.tags === 'object') {
          for (const [k, v] of Object.entries(m.tags as Record<string, unknown>)) if (typeof v === 'string') tags[k] = v;
        }
        resolve({ identity: m.identity, appId: m.appId, tags });
      });
      c.sock.write(this.signer.sign(dst === undefined ? { id, t: Date.now(), who: endpoint } : { id, t: Date.now(), who: endpoint, dst }) + '\n');
    });
  }

  private client(peerIp: string): { sock: net.Socket; pending: Map<number, (m: Msg | undefined) => void> } {
    const have = this.clients.get(peerIp);
    if (have && !have.sock.destroyed) return have;
    const sock = net.createConnection({ host: peerIp, port: this.port });
    sock.setNoDelay(true);
    const entry = { sock, pending: new Map<number, (m: Msg | undefined) => void>() };
    this.clients.set(peerIp, entry);
    const fail = (): void => {
      if (this.clients.get(peerIp) === entry) this.clients.delete(peerIp);
      for (const cb of entry.pending.values()) cb(undefined);
      entry.pending.clear();
    };
    sock.on('error', () => sock.destroy());
    sock.on('close', fail);
    lines(sock, (l) => {
      const m = this.signer.open(l);
      if (!m) {
        this.dropped++;
        return;
      }
      const cb = entry.pending.get(m.id as number);
      if (cb) {
        entry.pending.delete(m.id as number);
        cb(m);
      }
    });
    return entry;
  }

  close(): Promise<void> {
    for (const c of this.clients.values()) c.sock.destroy();
    this.clients.clear();
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
