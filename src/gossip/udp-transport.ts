// Real network transport: datagrams over node:dgram, request/response streams over node:net framed with a
// 4-byte big-endian length prefix (size-capped). UDP and TCP listen on the same port (memberlist's net_transport).

import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { GossipError } from './errors.js';
import { silentLogger, RateLimitedWarn, type GossipLogger } from './log.js';
import {
  DEFAULT_MAX_STREAM_BYTES,
  formatAddress,
  MAX_PACKET_SIZE,
  parseAddress,
  type PacketHandler,
  type StreamCallback,
  type StreamHandler,
  type Transport,
} from './transport.js';

/** Options of {@link UdpTransport.create}. */
export interface UdpTransportOptions {
  /** IP to bind (IPv4 or IPv6 literal). Default "0.0.0.0". */
  bindAddress?: string;
  /** Port for both UDP and TCP. 0 picks a free port (the same for both). Default 7946. */
  port?: number;
  /**
   * "host:port" advertised to other members. Default: the bind address and port, or — when binding a wildcard —
   * the first non-internal IPv4 address of this host (127.0.0.1 if none).
   */
  advertiseAddress?: string;
  /** Cap on one stream frame in bytes. Default 8 MiB. */
  maxStreamBytes?: number;
  /** Inbound stream connections are closed if idle this long. Default 10 s. */
  streamIdleTimeoutMs?: number;
  /** Inbound stream connections served at once; more are refused. Default 64. */
  maxConnections?: number;
  logger?: GossipLogger;
  /** Told of an unexpected exception in a socket handler (it costs that packet or stream; also logged). */
  onInternalError?: (what: string, err: unknown) => void;
}

/** Incremental reader of one length-prefixed frame. */
class FrameReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private need = -1;

  constructor(private readonly max: number) {}

  /** Feeds bytes. Returns the frame once complete, 'too-large' when the prefix exceeds the cap, else undefined. */
  push(chunk: Buffer): Uint8Array | 'too-large' | undefined {
    this.chunks.push(chunk);
    this.have += chunk.length;
    if (this.need < 0 && this.have >= 4) {
      const all = Buffer.concat(this.chunks);
      this.chunks = [all];
      this.need = all.readUInt32BE(0);
      if (this.need > this.max) return 'too-large';
    }
    if (this.need >= 0 && this.have >= 4 + this.need) {
      const all = Buffer.concat(this.chunks);
      return new Uint8Array(all.buffer, all.byteOffset + 4, this.need);
    }
    return undefined;
  }
}

function frame(buf: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + buf.length);
  out.writeUInt32BE(buf.length, 0);
  out.set(buf, 4);
  return out;
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

function defaultAdvertiseHost(bind: string): string {
  if (!isWildcard(bind)) return bind;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/**
 * {@link Transport} over real sockets. Create with {@link UdpTransport.create} (binding is asynchronous).
 * Datagrams larger than {@link MAX_PACKET_SIZE} are not sent (logged); socket errors never throw out of
 * `sendPacket`.
 */
export class UdpTransport implements Transport {
  readonly localAddress: string;
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  private packetHandler: PacketHandler | undefined;
  private streamHandler: StreamHandler | undefined;
  private closed = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly pending = new Set<() => void>();
  private readonly warn: RateLimitedWarn;
  private readonly maxStreamBytes: number;
  /** Datagrams handed to the socket whose send callback has not run yet. */
  private inFlight = 0;
  private onDrained: (() => void) | undefined;

  private constructor(
    private readonly udp: dgram.Socket,
    private readonly server: net.Server,
    port: number,
    advertise: string,
    private readonly opts: UdpTransportOptions,
  ) {
    this.port = port;
    this.localAddress = advertise;
    this.maxStreamBytes = opts.maxStreamBytes ?? DEFAULT_MAX_STREAM_BYTES;
    this.warn = new RateLimitedWarn(opts.logger ?? silentLogger, () => Date.now());
    udp.on('message', (msg, rinfo) => {
      if (this.closed) return;
      const h = this.packetHandler;
      try {
        if (h !== undefined) h(formatAddress(rinfo.address, rinfo.port), msg);
      } catch (e) {
        this.internalError('handling a packet', e);
      }
    });
    udp.on('error', (err) => this.warn.warn('udp', { err: err.message }, 'gossip: udp socket error'));
    server.on('connection', (s) => {
      try {
        this.serve(s);
      } catch (e) {
        this.internalError('serving a stream', e);
        s.destroy();
      }
    });
    server.on('error', (err) => this.warn.warn('tcp', { err: err.message }, 'gossip: tcp server error'));
  }

  /**
   * Binds UDP and TCP on the same address and port.
   * @throws GossipError ERR_GOSSIP_BAD_ADDRESS (bad bind/advertise address); socket errors (EADDRINUSE…) as is
   */
  static async create(opts: UdpTransportOptions = {}): Promise<UdpTransport> {
    const bind = opts.bindAddress ?? '0.0.0.0';
    if (net.isIP(bind) === 0) throw new GossipError('ERR_GOSSIP_BAD_ADDRESS', `bind address must be an IP: ${bind}`);
    const wanted = opts.port ?? 7946;
    if (!Number.isInteger(wanted) || wanted < 0 || wanted > 65535) {
      throw new GossipError('ERR_GOSSIP_BAD_ADDRESS', `bad port ${wanted}`);
    }
    if (opts.advertiseAddress !== undefined) parseAddress(opts.advertiseAddress);
    const type = net.isIPv6(bind) ? 'udp6' : 'udp4';
    let lastErr: unknown;
    for (let attempt = 0; attempt < (wanted === 0 ? 10 : 1); attempt++) {
      const udp = dgram.createSocket({ type, reuseAddr: false });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind(wanted, bind, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        udp.close();
        throw e;
      }
      const port = udp.address().port;
      const server = net.createServer({ pauseOnConnect: false });
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ port, host: bind, exclusive: true }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        lastErr = e;
        udp.close();
        server.close();
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' && wanted === 0) continue;
        throw e;
      }
      server.maxConnections = opts.maxConnections ?? 64;
      const advertise = opts.advertiseAddress ?? formatAddress(defaultAdvertiseHost(bind), port);
      return new UdpTransport(udp, server, port, advertise, opts);
    }
    throw lastErr;
  }

  sendPacket(addr: string, buf: Uint8Array): void {
    if (this.closed) return;
    if (buf.length > MAX_PACKET_SIZE) {
      this.warn.warn('big', { addr, bytes: buf.length }, 'gossip: refusing to send oversized datagram');
      return;
    }
    let host: string;
    let port: number;
    try {
      ({ host, port } = parseAddress(addr));
    } catch {
      this.warn.warn('addr', { addr }, 'gossip: bad destination address');
      return;
    }
    this.inFlight++;
    this.udp.send(buf, port, host, (err) => {
      if (err) this.warn.warn('send', { addr, err: err.message }, 'gossip: udp send failed');
      if (--this.inFlight === 0) this.onDrained?.();
    });
  }

  onPacket(cb: PacketHandler): void {
    this.packetHandler = cb;
  }

  onStream(cb: StreamHandler): void {
    this.streamHandler = cb;
  }

  request(addr: string, req: Uint8Array, timeoutMs: number, cb: StreamCallback): void {
    let done = false;
    let sock: net.Socket | undefined;
    const finish = (err: GossipError | undefined, resp: Uint8Array | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.pending.delete(abort);
      if (sock !== undefined) {
        this.sockets.delete(sock);
        sock.destroy();
      }
      cb(err, resp);
    };
    const abort = (): void => finish(new GossipError('ERR_GOSSIP_TRANSPORT_CLOSED', 'transport closed'), undefined);
    const timer = setTimeout(
      () => finish(new GossipError('ERR_GOSSIP_TIMEOUT', `stream to ${addr} timed out`), undefined),
      Math.max(1, timeoutMs),
    );
    timer.unref();
    if (this.closed) {
      setImmediate(abort);
      return;
    }
    if (req.length > this.maxStreamBytes) {
      setImmediate(() => finish(new GossipError('ERR_GOSSIP_FRAME_TOO_LARGE', 'request frame too large'), undefined));
      return;
    }
    let host: string;
    let port: number;
    try {
      ({ host, port } = parseAddress(addr));
    } catch (e) {
      setImmediate(() => finish(e as GossipError, undefined));
      return;
    }
    this.pending.add(abort);
    const s = net.connect({ host, port });
    sock = s;
    this.sockets.add(s);
    const reader = new FrameReader(this.maxStreamBytes);
    s.on('connect', () => s.write(frame(req)));
    s.on('data', (chunk: Buffer) => {
      const r = reader.push(chunk);
      if (r === 'too-large') finish(new GossipError('ERR_GOSSIP_FRAME_TOO_LARGE', 'response frame too large'), undefined);
      else if (r !== undefined) finish(undefined, r);
    });
    s.on('error', (err) =>
      finish(new GossipError('ERR_GOSSIP_UNREACHABLE', `stream to ${addr}: ${err.message}`, { cause: err }), undefined),
    );
    s.on('close', () => finish(new GossipError('ERR_GOSSIP_UNREACHABLE', `stream to ${addr} closed`), undefined));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const abort of [...this.pending]) abort();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.server.close();
    // Let datagrams already handed to the socket go out (a leave announcement, typically): closing the socket now
    // would cancel them. Bounded wait.
    const closeUdp = (): void => {
      this.onDrained = undefined;
      try {
        this.udp.close();
      } catch {
        // already closed
      }
    };
    if (this.inFlight === 0) {
      closeUdp();
      return;
    }
    const t = setTimeout(closeUdp, 1_000);
    t.unref();
    this.onDrained = (): void => {
      clearTimeout(t);
      closeUdp();
    };
  }

  /** Serves one inbound request on a connection. */
  private serve(s: net.Socket): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    this.sockets.add(s);
    s.setTimeout(this.opts.streamIdleTimeoutMs ?? 10_000, () => s.destroy());
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => s.destroy());
    const reader = new FrameReader(this.maxStreamBytes);
    let got = false;
    s.on('data', (chunk: Buffer) => {
      try {
        onData(chunk);
      } catch (e) {
        this.internalError('handling a stream', e);
        s.destroy();
      }
    });
    const onData = (chunk: Buffer): void => {
      if (got) return;
      const r = reader.push(chunk);
      if (r === undefined) return;
      got = true;
      if (r === 'too-large') {
        this.warn.warn('bigframe', { from: s.remoteAddress }, 'gossip: inbound stream frame too large');
        s.destroy();
        return;
      }
      const h = this.streamHandler;
      if (h === undefined) {
        s.destroy();
        return;
      }
      const from = formatAddress(s.remoteAddress ?? '0.0.0.0', s.remotePort ?? 0);
      let replied = false;
      h(from, r, (resp) => {
        if (replied) return;
        replied = true;
        if (resp === undefined || s.destroyed) {
          s.destroy();
          return;
        }
        s.end(frame(resp));
      });
    };
  }

  /** An unexpected exception in one of our handlers: logged (rate-limited), reported; the caller drops that event. */
  private internalError(what: string, err: unknown): void {
    try {
      this.warn.warn(`internal/${what}`, { err: err instanceof Error ? err.message : String(err) }, `gossip: internal error ${what}; dropped`);
      this.opts.onInternalError?.(what, err);
    } catch {
      // never out of a handler
    }
  }
}
