// The appswitch DNS server: answers appswitch names (and localhost) itself and forwards the rest, over UDP and
// TCP (RFC 1035 §4.2, RFC 7766). A bad packet is counted, logged (rate-limited) and dropped; nothing a client
// sends can throw out of a handler or stop the server.

import type dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { DecodedPacket, Packet, Question } from 'dns-packet';
import { DnsError } from './errors.js';
import { RateLimitedWarn, silentDnsLogger, type DnsLogger } from './log.js';
import { formatForwarder, parseForwarder, validateDomain, type Forwarder } from './names.js';
import { decide, type Decision, type NameSource } from './resolve.js';
import { nodeSocketFactory, type DnsSocketFactory } from './sockets.js';
import { Upstream, type UpstreamOutcome } from './upstream.js';
import {
  buildResponse,
  encodeTruncated,
  encodeWithin,
  frame,
  FrameReader,
  MAX_MESSAGE,
  Rcode,
  rcodeOf,
  udpLimitOf,
  withId,
} from './wire.js';

/** Default appswitch domain. */
export const DEFAULT_DOMAIN = 'appswitch.local';

/** Options of {@link DnsServer}. Everything but `source` and `forwarders` has a default. */
export interface DnsServerOptions {
  /** Which names appswitch owns. */
  source: NameSource;
  /** Upstream servers, "ip" or "ip:port" ("[v6]:port"), tried in order. Empty: unowned names get SERVFAIL. */
  forwarders: readonly string[];
  /** Domain under which apps are also reachable ("web.<domain>"). Default "appswitch.local". */
  domain?: string;
  /** IP literal to bind UDP and TCP on. Default "127.0.0.1". */
  bindAddress?: string;
  /** Port for both UDP and TCP; 0 picks a free port (the same one for both when possible). Default 53. */
  port?: number;
  /** TTL (seconds) of local answers and of local negative answers. Default 5. */
  ttl?: number;
  /** Time to wait for one forwarder (per UDP try, and again for the TCP retry after TC). Default 2000 ms. */
  upstreamTimeoutMs?: number;
  /** A TCP client connection with nothing in flight is closed after this long without traffic. Default 10 000 ms. */
  tcpIdleTimeoutMs?: number;
  /** TCP client connections served at once; further ones are closed at accept. Default 128. */
  maxTcpConnections?: number;
  /** Queries of one TCP connection processed at once; reading pauses beyond. Default 16. */
  maxTcpQueriesPerConnection?: number;
  /** Queries being forwarded at once; beyond, queries get SERVFAIL at once. Default 1024. */
  maxForwardsInFlight?: number;
  /** Default: discards everything. */
  logger?: DnsLogger;
  /** Default: node:dgram / node:net. */
  sockets?: DnsSocketFactory;
  /** Clock for log rate limiting (ms). Default Date.now. */
  now?: () => number;
  /** Called for every unexpected exception inside the server (a handler, the name source, encoding); it is also
   * logged (rate-limited) and counted in `internalErrors`, and costs only the query or connection it happened in.
   * The daemon counts these per module (appswitch_internal_errors_total). */
  onInternalError?: (what: string, err: unknown) => void;
}

/** Counters since construction. Every well-formed query lands in exactly one of the outcome counters. */
export interface DnsServerStats {
  /** Well-formed queries received (UDP and TCP), including FORMERR / NOTIMP ones. */
  queries: number;
  /** Queries answered from the NameSource, localhost or the domain's own data (including local NXDOMAIN). */
  answeredLocally: number;
  /** Queries sent upstream (once per client query, whatever the number of forwarders tried). */
  forwarded: number;
  /** Responses sent with NXDOMAIN, local or from upstream. */
  nxdomain: number;
  /** Responses sent with SERVFAIL: every forwarder failed, source threw, overload, or upstream's own SERVFAIL. */
  servfail: number;
  /** Responses sent with FORMERR (QDCOUNT != 1). */
  formerr: number;
  /** Responses sent with NOTIMP (opcode other than QUERY). */
  notimp: number;
  /** Messages dropped (UDP) or connections closed (TCP) because the message could not be decoded, was not a
   * query (QR set) or was framed badly. */
  malformed: number;
  /** UDP responses cut down to the question with TC set because they exceeded the client's limit. */
  truncated: number;
  /** Failed upstream attempts (timeout, ICMP error, TCP failure, SERVFAIL/REFUSED answer), per forwarder tried. */
  upstreamFailures: number;
  /** TCP connections closed at accept because `maxTcpConnections` were open. */
  tcpRejected: number;
  /** Unexpected exceptions caught in a handler (each dropped one query or closed one connection). */
  internalErrors: number;
}

/** Ports actually bound by {@link DnsServer.start}. */
export interface DnsServerPorts {
  udpPort: number;
  tcpPort: number;
}

type State = 'new' | 'starting' | 'running' | 'closed';
type Transport = 'udp' | 'tcp';
/** One TCP client connection: its framing and how many of its queries are being served. */
interface TcpConn {
  remote: string;
  reader: FrameReader;
  inFlight: number;
}

const MAX_TCP_WRITE_BACKLOG = 256 * 1024;

/**
 * The appswitch DNS server. Construct (options are validated at once), `start()`, and `close()` when done.
 *
 * Query handling:
 * - `localhost` / `*.localhost` → 127.0.0.1 and ::1, authoritative.
 * - Names the source owns (asked for the name, then for it without ".<domain>") → A / AAAA records, other types
 *   (or AAAA without IPv6 addresses) NOERROR without answers and the domain SOA (RFC 2308 NODATA).
 * - PTR for a full in-addr.arpa / ip6.arpa name whose address `source.reverse` knows → "<name>.<domain>".
 * - Other names inside the domain → NXDOMAIN with the SOA; everything else is forwarded.
 * - QDCOUNT != 1 → FORMERR; opcode other than QUERY → NOTIMP; undecodable or QR=1 messages are dropped.
 */
export class DnsServer {
  private readonly source: NameSource;
  private readonly domain: string;
  private readonly ttl: number;
  private readonly bindAddress: string;
  private readonly port: number;
  private readonly tcpIdleTimeoutMs: number;
  private readonly maxTcpConnections: number;
  private readonly maxTcpQueriesPerConnection: number;
  private readonly maxForwardsInFlight: number;
  private readonly logger: DnsLogger;
  private readonly sockets: DnsSocketFactory;
  private readonly warn: RateLimitedWarn;
  private readonly upstream: Upstream;
  private forwarders: Forwarder[];
  private state: State = 'new';
  private starting: Promise<DnsServerPorts> | undefined;
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private ports: DnsServerPorts | undefined;
  private readonly connections = new Set<net.Socket>();
  private forwardsInFlight = 0;
  private readonly counters: DnsServerStats = {
    queries: 0,
    answeredLocally: 0,
    forwarded: 0,
    nxdomain: 0,
    servfail: 0,
    formerr: 0,
    notimp: 0,
    malformed: 0,
    truncated: 0,
    upstreamFailures: 0,
    tcpRejected: 0,
    internalErrors: 0,
  };
  private readonly internalHook: ((what: string, err: unknown) => void) | undefined;

  /** @throws DnsError ERR_DNS_BAD_CONFIG (bad domain, number or source), ERR_DNS_BAD_ADDRESS (bad bind address or forwarder) */
  constructor(opts: DnsServerOptions) {
    if (typeof opts?.source?.lookup !== 'function') throw new DnsError('ERR_DNS_BAD_CONFIG', 'source.lookup must be a function');
    this.source = opts.source;
    this.domain = validateDomain(opts.domain ?? DEFAULT_DOMAIN);
    this.ttl = intOption('ttl', opts.ttl, 5, 0, 86_400);
    this.bindAddress = opts.bindAddress ?? '127.0.0.1';
    if (typeof this.bindAddress !== 'string' || net.isIP(this.bindAddress) === 0) {
      throw new DnsError('ERR_DNS_BAD_ADDRESS', `bind address ${JSON.stringify(opts.bindAddress)} is not an IP address`);
    }
    this.port = intOption('port', opts.port, 53, 0, 65_535);
    const upstreamTimeoutMs = intOption('upstreamTimeoutMs', opts.upstreamTimeoutMs, 2000, 1, 60_000);
    this.tcpIdleTimeoutMs = intOption('tcpIdleTimeoutMs', opts.tcpIdleTimeoutMs, 10_000, 1, 3_600_000);
    this.maxTcpConnections = intOption('maxTcpConnections', opts.maxTcpConnections, 128, 1, 65_536);
    this.maxTcpQueriesPerConnection = intOption('maxTcpQueriesPerConnection', opts.maxTcpQueriesPerConnection, 16, 1, 65_536);
    this.maxForwardsInFlight = intOption('maxForwardsInFlight', opts.maxForwardsInFlight, 1024, 1, 1_000_000);
    this.forwarders = parseForwarders(opts.forwarders);
    this.logger = opts.logger ?? silentDnsLogger;
    this.sockets = opts.sockets ?? nodeSocketFactory;
    this.warn = new RateLimitedWarn(this.logger, opts.now ?? Date.now);
    this.internalHook = opts.onInternalError;
    this.upstream = new Upstream(this.sockets, upstreamTimeoutMs, this.logger, (what, err) => this.internalError(what, err));
  }

  /**
   * Binds UDP and TCP on the bind address and port and starts serving.
   * @throws DnsError ERR_DNS_BAD_STATE (already started or closed), ERR_DNS_BIND_FAILED (cause: the socket error)
   */
  start(): Promise<DnsServerPorts> {
    if (this.state !== 'new') return Promise.reject(new DnsError('ERR_DNS_BAD_STATE', `DNS server is ${this.state}`));
    this.state = 'starting';
    this.starting = this.bind().then(
      (ports) => {
        if (this.state !== 'starting') throw new DnsError('ERR_DNS_BAD_STATE', 'DNS server closed while starting');
        this.state = 'running';
        this.ports = ports;
        this.forwarders = this.withoutSelf(this.forwarders);
        if (this.forwarders.length === 0) this.logger.warn({}, 'dns: no forwarders, names outside appswitch get SERVFAIL');
        const forwarders = this.forwarders.map(formatForwarder);
        this.logger.info({ address: this.bindAddress, ...ports, domain: this.domain, forwarders }, 'dns: serving');
        return ports;
      },
      (err: unknown) => {
        if (this.state === 'starting') this.state = 'new';
        throw err;
      },
    );
    return this.starting;
  }

  /** Stops serving: closes the sockets and every TCP connection, aborts forwards in flight. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasStarting = this.state === 'starting';
    this.state = 'closed';
    this.upstream.close();
    if (wasStarting) await this.starting?.catch(() => undefined);
    for (const c of this.connections) c.destroy();
    this.connections.clear();
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    await Promise.all([
      udp === undefined ? undefined : new Promise<void>((resolve) => udp.close(() => resolve())),
      tcp === undefined ? undefined : new Promise<void>((resolve) => tcp.close(() => resolve())),
    ]);
  }

  /** A snapshot of the counters. */
  stats(): DnsServerStats {
    return { ...this.counters };
  }

  /** The bound ports once started, else undefined. */
  get boundPorts(): DnsServerPorts | undefined {
    return this.ports === undefined ? undefined : { ...this.ports };
  }

  /**
   * Replaces the forwarders (e.g. after the host's resolv.conf changed); queries already in flight keep the old list.
   * @throws DnsError ERR_DNS_BAD_ADDRESS when an entry is malformed (the list is then left unchanged)
   */
  setForwarders(forwarders: readonly string[]): void {
    const parsed = parseForwarders(forwarders);
    this.forwarders = this.ports === undefined ? parsed : this.withoutSelf(parsed);
  }

  // ---- binding ----

  private async bind(): Promise<DnsServerPorts> {
    const type = net.isIPv6(this.bindAddress) ? 'udp6' : 'udp4';
    let lastErr: unknown;
    // With port 0, UDP picks a port and TCP must get the same one (clients retry TC answers on the same port);
    // if it is taken for TCP, try another.
    for (let attempt = 0; attempt < (this.port === 0 ? 10 : 1); attempt++) {
      const udp = this.sockets.createUdpSocket(type);
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind({ port: this.port, address: this.bindAddress, exclusive: true }, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        closeQuietly(udp);
        const msg = `cannot bind UDP ${this.bindAddress}:${this.port}: ${String(err)}`;
        throw new DnsError('ERR_DNS_BIND_FAILED', msg, { cause: err });
      }
      const udpPort = udp.address().port;
      const tcp = this.sockets.createTcpServer();
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen({ port: udpPort, host: this.bindAddress, exclusive: true }, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        closeQuietly(udp);
        tcp.close();
        lastErr = err;
        if (this.port === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        const msg = `cannot listen on TCP ${this.bindAddress}:${udpPort}: ${String(err)}`;
        throw new DnsError('ERR_DNS_BIND_FAILED', msg, { cause: err });
      }
      const addr = tcp.address();
      const tcpPort = typeof addr === 'object' && addr !== null ? addr.port : udpPort;
      this.udp = udp;
      this.tcp = tcp;
      udp.on('message', (msg, rinfo) => void this.onUdp(msg, rinfo));
      udp.on('error', (err) => this.warn.warn('udp-error', { err: err.message }, 'dns: UDP socket error'));
      tcp.on('connection', (sock) => {
        try {
          this.onConnection(sock);
        } catch (err) {
          this.internalError('accepting a TCP connection', err);
          destroyQuietly(sock);
        }
      });
      tcp.on('error', (err) => this.warn.warn('tcp-error', { err: err.message }, 'dns: TCP server error'));
      return { udpPort, tcpPort };
    }
    const msg = `cannot find a port free for both UDP and TCP on ${this.bindAddress}`;
    throw new DnsError('ERR_DNS_BIND_FAILED', msg, { cause: lastErr });
  }

  /** Drops forwarders that are this server itself (a forwarding loop). */
  private withoutSelf(list: Forwarder[]): Forwarder[] {
    const port = this.ports?.udpPort;
    const wildcard = this.bindAddress === '0.0.0.0' || this.bindAddress === '::';
    return list.filter((f) => {
      const self = f.port === port && (f.host === this.bindAddress || (wildcard && isLoopback(f.host)));
      if (self) this.logger.warn({ forwarder: formatForwarder(f) }, 'dns: forwarder is this server itself, ignored');
      return !self;
    });
  }

  // ---- transports ----

  private async onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    try {
      const out = await this.handle(msg, 'udp', `${rinfo.address}:${rinfo.port}`);
      const udp = this.udp;
      if (out === undefined || udp === undefined || this.state !== 'running') return;
      udp.send(out, rinfo.port, rinfo.address, (err) => {
        if (err) this.warn.warn('udp-send', { err: err.message, client: rinfo.address }, 'dns: cannot send UDP answer');
      });
    } catch (err) {
      this.internalError('a UDP query', err);
    }
  }

  private onConnection(sock: net.Socket): void {
    sock.on('error', (err) => this.logger.debug({ err: err.message }, 'dns: TCP client connection error'));
    if (this.state !== 'running' || this.connections.size >= this.maxTcpConnections) {
      this.counters.tcpRejected++;
      this.warn.warn('tcp-cap', { open: this.connections.size }, 'dns: too many TCP connections, closing a new one');
      sock.destroy();
      return;
    }
    this.connections.add(sock);
    sock.on('close', () => this.connections.delete(sock));
    sock.setNoDelay(true);
    const conn: TcpConn = { remote: `${sock.remoteAddress ?? '?'}:${sock.remotePort ?? 0}`, reader: new FrameReader(), inFlight: 0 };
    sock.setTimeout(this.tcpIdleTimeoutMs);
    sock.on('timeout', () => {
      // Idle means nothing received or sent for a while; a query still waiting for upstream keeps the connection
      // open (writing its answer re-arms the timer). A listener, not setTimeout's callback: that one fires once.
      if (conn.inFlight === 0) sock.destroy();
    });
    sock.on('data', (chunk: Buffer) => {
      try {
        this.onTcpData(sock, conn, chunk);
      } catch (err) {
        this.internalError('a TCP read', err);
        destroyQuietly(sock);
      }
    });
  }

  /** One chunk of a TCP client's stream: every whole query in it is served; reading pauses at the per-connection cap. */
  private onTcpData(sock: net.Socket, conn: TcpConn, chunk: Buffer): void {
    const frames = conn.reader.push(chunk);
    if (frames === 'empty-frame') {
      this.malformed('tcp', conn.remote, 0, 'zero-length frame');
      sock.destroy();
      return;
    }
    for (const f of frames) {
      conn.inFlight++;
      if (conn.inFlight >= this.maxTcpQueriesPerConnection) sock.pause();
      void this.serveTcp(sock, f, conn.remote).finally(() => {
        conn.inFlight--;
        if (conn.inFlight < this.maxTcpQueriesPerConnection && !sock.destroyed) sock.resume();
      });
    }
  }

  private async serveTcp(sock: net.Socket, msg: Buffer, remote: string): Promise<void> {
    try {
      const out = await this.handle(msg, 'tcp', remote);
      if (sock.destroyed) return;
      if (out === undefined) {
        sock.destroy(); // a malformed message desynchronises nothing, but a client sending one is not worth keeping
        return;
      }
      if (sock.writableLength > MAX_TCP_WRITE_BACKLOG) {
        this.warn.warn('tcp-backlog', { client: remote }, 'dns: TCP client does not read its answers, closing');
        sock.destroy();
        return;
      }
      sock.write(frame(out));
    } catch (err) {
      this.internalError('a TCP query', err);
      destroyQuietly(sock);
    }
  }

  // ---- one message ----

  /** The encoded response to `msg`, or undefined to drop it (UDP) / close the connection (TCP). Never rejects. */
  private async handle(msg: Buffer, transport: Transport, remote: string): Promise<Buffer | undefined> {
    if (this.state !== 'running') return undefined;
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch (err) {
      this.malformed(transport, remote, msg.length, String(err));
      return undefined;
    }
    if (query.type === 'response') {
      this.malformed(transport, remote, msg.length, 'QR set: not a query');
      return undefined;
    }
    this.counters.queries++;
    const limit = transport === 'udp' ? udpLimitOf(query) : MAX_MESSAGE;
    let decision: Decision;
    try {
      decision = decide(query, this.source, { domain: this.domain, ttl: this.ttl });
    } catch (err) {
      this.internalError('the name source', err);
      return this.servfail(query, limit);
    }
    switch (decision.kind) {
      case 'drop':
        this.malformed(transport, remote, msg.length, decision.reason);
        return undefined;
      case 'answer':
        if (decision.outcome === 'local') this.counters.answeredLocally++;
        else if (decision.outcome === 'formerr') this.counters.formerr++;
        else this.counters.notimp++;
        return this.encodeLocal(query, decision.response, limit);
      case 'forward':
        return this.forward(query, msg, decision.question, limit);
    }
  }

  private async forward(query: DecodedPacket, msg: Buffer, question: Question, limit: number): Promise<Buffer | undefined> {
    if (this.forwarders.length === 0) return this.servfail(query, limit);
    if (this.forwardsInFlight >= this.maxForwardsInFlight) {
      const inFlight = this.forwardsInFlight;
      this.warn.warn('overload', { inFlight }, 'dns: too many queries being forwarded, answering SERVFAIL');
      return this.servfail(query, limit);
    }
    this.counters.forwarded++;
    this.forwardsInFlight++;
    let outcome: UpstreamOutcome;
    try {
      outcome = await this.upstream.resolve(this.forwarders, msg, question);
    } finally {
      this.forwardsInFlight--;
    }
    if (this.state !== 'running') return undefined;
    this.counters.upstreamFailures += outcome.failures.length;
    if (outcome.kind === 'failed') {
      const info = { name: question.name, type: question.type, failures: outcome.failures };
      this.warn.warn('upstream', info, 'dns: every forwarder failed, answering SERVFAIL');
      return this.servfail(query, limit);
    }
    this.countRcode(rcodeOf(outcome.decoded));
    const id = query.id ?? 0;
    if (outcome.buf.length <= limit) return withId(outcome.buf, id);
    this.counters.truncated++;
    return encodeTruncated({ ...outcome.decoded, id });
  }

  private encodeLocal(query: DecodedPacket, response: Packet, limit: number): Buffer {
    try {
      const enc = encodeWithin(response, limit);
      if (enc.truncated) this.counters.truncated++;
      this.countRcode(rcodeOf(response));
      return enc.buf;
    } catch (err) {
      // e.g. a source handing out data dns-packet cannot encode
      this.internalError('encoding a local answer', err);
      return this.servfail(query, limit);
    }
  }

  private servfail(query: DecodedPacket, limit: number): Buffer {
    this.counters.servfail++;
    return encodeWithin(buildResponse(query, { rcode: Rcode.SERVFAIL, authoritative: false }), limit).buf;
  }

  private countRcode(rcode: number): void {
    if (rcode === Rcode.NXDOMAIN) this.counters.nxdomain++;
    else if (rcode === Rcode.SERVFAIL) this.counters.servfail++;
  }

  /** An unexpected exception: logged (rate-limited per place), counted, reported to the owner; the caller drops
   * the one query or connection it was serving. Never throws. */
  private internalError(what: string, err: unknown): void {
    this.counters.internalErrors++;
    try {
      this.warn.warn(`internal/${what}`, { err: errText(err) }, `dns: internal error in ${what}; that query is dropped`);
      this.internalHook?.(what, err);
    } catch {
      // a logger or hook that throws must not turn one lost query into a lost server
    }
  }

  private malformed(transport: Transport, remote: string, bytes: number, reason: string): void {
    this.counters.malformed++;
    this.warn.warn(`malformed-${transport}`, { client: remote, bytes, reason }, 'dns: malformed message dropped');
  }
}

function intOption(name: string, value: number | undefined, dflt: number, min: number, max: number): number {
  const v = value ?? dflt;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new DnsError('ERR_DNS_BAD_CONFIG', `${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return v;
}

function parseForwarders(list: readonly string[]): Forwarder[] {
  if (!Array.isArray(list)) throw new DnsError('ERR_DNS_BAD_ADDRESS', 'forwarders must be an array of "ip" or "ip:port"');
  return list.map(parseForwarder);
}

/** src/net-listen.ts has the daemon's; src/dns imports nothing outside itself (test/unit/dns-deps.test.ts). */
function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.');
}

function closeQuietly(sock: dgram.Socket): void {
  try {
    sock.close();
  } catch {
    // not bound / already closed
  }
}

function destroyQuietly(sock: net.Socket): void {
  try {
    sock.destroy();
  } catch {
    // not a socket we can close: nothing more to do
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
