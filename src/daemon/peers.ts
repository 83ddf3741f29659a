/** The peer API: daemons ask each other who a client endpoint is, so that a server's accept() learns its client's
 * identity from the client's own daemon before it returns (no race with gossip). JSON lines over TCP on
 * `--peer-port` (default 7947) of the node address; one pooled connection per peer. Every message carries an
 * HMAC-SHA256 with the cluster key (first key signs, any key verifies) and a timestamp. A connection is served only
 * from the address of another current member; a request that is not from a member, malformed, stale or forged is
 * dropped (never looked up, so it claims no client's record), counted, logged (rate-limited), and its connection
 * closed. Without keys (--gossip-plaintext only) the membership check still applies.
 *   request:  {"id":1,"t":<ms>,"who":"192.0.2.1:40312","dst":"192.0.2.2:40001","mac":"..."}   (dst: the server's real
 *             endpoint, so the client's daemon can find the socket in its kernel; optional, older daemons omit it;
 *             "proto":"udp" asks about a datagram sender instead of a connection, and its answer carries "port")
 *   response: {"id":1,"t":<ms>,"identity":"10.0.0.9","appId":"..","tags":{..},"mac":".."}  or  {"id":1,"t":..,"unknown":true}
 *             (a socket of a gateway that no generator made, its relay's: "external":true,"relayed":true, identity and
 *             "port" that socket's own; the connection's preamble names the outside client, native/preamble.h)
 *             (+ "egress":"ip:port", the destination the app asked for, for a connection it sent through an egress
 *             gateway — only when the asker is that live egress gateway and dst its egress endpoint: docs/egress.md)
 *   push:     {"id":2,"t":<ms>,"push":[...],"mac":".."}   (sent by gateways before the relay's preamble said who the
 *             outside client is: ignored, so that such a gateway's connection stays up for its requests)
 *   edges:    {"id":3,"t":<ms>,"edges":1,"mac":".."}   (this node's edges, for `edges('cluster')`: src/events/edge-cluster.ts)
 *             answered by one or more lines {"id":3,"t":..,"edges":[[...],...],"more":true|false,"truncated":bool,"mac":..}
 *             (each under MAX_LINE; at most MAX_EDGES_PER_ANSWER edges in all; decoded by src/events/edge-wire.ts) */
import { createHmac, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Logger } from 'pino';
import { RateLimitedWarn } from '../gossip/index.js';
import type { ClientIdentity } from '../trap/handler.js';
import { guard, type InternalErrorReporter } from './internal-errors.js';
import { chunkEdges, EdgeAnswer, encodeEdge, MAX_EDGES_PER_ANSWER } from '../events/edge-wire.js';
import type { EdgeView } from '../events/types.js';

/** Why a peer API message was dropped (the keys of PeerApi.drops). */
export type PeerDropReason = 'not-a-member' | 'unauthenticated' | 'malformed' | 'too-many-connections';

const MAX_LINE = 4096;
const MAX_SKEW_MS = 60_000;
const MAX_CONNS = 256;
/** An edges answer line's edges take at most this many characters (the rest of the line, with its mac, stays under
 * MAX_LINE). */
const EDGES_BODY_MAX = 3600;
/** An edges answer is not written while this much output to that peer is still unsent (a member that asks and does
 * not read cannot make this daemon buffer without bound). */
const MAX_PENDING_ANSWER = 4 * 1024 * 1024;
/** A pending request's callback: true keeps it for the next line of a multi-line answer. */
type Pending = (m: Msg | undefined) => boolean | void;

type Msg = Record<string, unknown>;

class Signer {
  constructor(private readonly keys: readonly Uint8Array[]) {}

  sign(m: Msg): string {
    const body = JSON.stringify(m);
    if (!this.keys.length) return body;
    return JSON.stringify({ ...m, mac: this.mac(this.keys[0] as Uint8Array, body) });
  }

  /** Parses and authenticates a line: the message, or why it is dropped (malformed; stale or forged). */
  open(line: string): Msg | 'malformed' | 'unauthenticated' {
    let m: unknown;
    try {
      m = JSON.parse(line);
    } catch {
      return 'malformed';
    }
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return 'malformed';
    const o = m as Msg;
    if (typeof o.id !== 'number' || !Number.isSafeInteger(o.id) || typeof o.t !== 'number') return 'malformed';
    if (!(Math.abs(Date.now() - o.t) <= MAX_SKEW_MS)) return 'unauthenticated';
    if (!this.keys.length) return o;
    const { mac, ...rest } = o;
    if (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac)) return 'unauthenticated';
    const body = JSON.stringify(rest);
    const got = Buffer.from(mac, 'hex');
    return this.keys.some((k) => {
      const want = Buffer.from(this.mac(k, body), 'hex');
      return want.length === got.length && timingSafeEqual(want, got);
    })
      ? rest
      : 'unauthenticated';
  }

  private mac(key: Uint8Array, body: string): string {
    return createHmac('sha256', key).update(body).digest('hex');
  }
}

/** Calls onLine for every line read; a line over MAX_LINE (or that many bytes without a newline) calls onTooLong
 * instead, once, and nothing more is read. */
function lines(sock: net.Socket, report: InternalErrorReporter, onLine: (l: string) => void, onTooLong: () => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => guard(report, 'reading a peer message', () => onData(d), () => sock.destroy()));
  const onData = (d: string): void => {
    if (sock.destroyed) return;
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (l.length > MAX_LINE) return onTooLong();
      onLine(l);
      if (sock.destroyed) return;
    }
    if (buf.length > MAX_LINE) onTooLong();
  };
}

export class PeerApi {
  private server?: net.Server;
  /** Errors of the listening socket once it listens (a failed accept, e.g. EMFILE). Default: logged. */
  onError: (e: NodeJS.ErrnoException) => void = (e) => this.log.warn({ err: e }, 'peer API socket error');
  /** An unexpected exception in a handler (it costs that connection). Default: logged. */
  onInternalError: InternalErrorReporter = (what, e) => this.log.error({ err: e }, `peer API: ${what} failed`);
  private readonly signer: Signer;
  private readonly clients = new Map<string, { sock: net.Socket; pending: Map<number, Pending> }>();
  private nextId = 1;
  private conns = 0;
  /** Connections this server serves (closed by close()). */
  private readonly served = new Set<net.Socket>();
  /** Messages and connections dropped, by reason. */
  readonly drops: Record<PeerDropReason, number> = { 'not-a-member': 0, unauthenticated: 0, malformed: 0, 'too-many-connections': 0 };
  /** This node's edges for another node's `edges` request (at most MAX_EDGES_PER_ANSWER; see src/events). Default:
   * none. */
  onEdges: () => { edges: EdgeView[]; truncated: boolean } = () => ({ edges: [], truncated: false });
  /** Edges in other nodes' answers that did not decode (dropped), and answers that were not answers at all. */
  edgesMalformed = 0;
  private readonly warn: RateLimitedWarn;

  /**
   * @param keys the cluster key ring (empty only with --gossip-plaintext)
   * @param lookup who a local client endpoint is (claims the record: called only for authenticated member requests)
   * @param isPeer whether an address is another current member's (requests from anywhere else are dropped)
   */
  constructor(
    private readonly port: number,
    keys: readonly Uint8Array[],
    private readonly lookup: (endpoint: string, dst?: string, proto?: 'udp', asker?: string) => Promise<ClientIdentity | undefined>,
    private readonly log: Logger,
    private readonly isPeer: (ip: string) => boolean,
  ) {
    this.signer = new Signer(keys);
    this.warn = new RateLimitedWarn(log, () => Date.now(), 10_000);
  }

  /** Messages and connections dropped, all reasons. */
  get dropped(): number {
    return Object.values(this.drops).reduce((a, b) => a + b, 0);
  }

  private drop(reason: PeerDropReason, peer: string | undefined, sock?: net.Socket): void {
    this.drops[reason]++;
    this.warn.warn(`drop:${reason}`, { peer, reason, dropped: this.drops[reason] }, 'peer API request dropped');
    sock?.destroy();
  }

  listen(address: string): Promise<void> {
    const server = net.createServer((sock) => guard(this.onInternalError, 'serving a peer connection', () => this.serve(sock), () => sock.destroy()));
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
    sock.on('error', () => sock.destroy());
    const peer = sock.remoteAddress?.replace(/^::ffff:/, '');
    if (peer === undefined || !this.isPeer(peer)) return this.drop('not-a-member', peer, sock);
    if (this.conns >= MAX_CONNS) return this.drop('too-many-connections', peer, sock);
    this.conns++;
    this.served.add(sock);
    sock.on('close', () => {
      this.conns--;
      this.served.delete(sock);
    });
    lines(sock, this.onInternalError, (l) => {
      if (sock.destroyed) return;
      if (!this.isPeer(peer)) return this.drop('not-a-member', peer, sock); /* it left the cluster meanwhile */
      const m = this.signer.open(l);
      if (typeof m === 'string') return this.drop(m, peer, sock);
      if (m.push !== undefined) return; /* an earlier gateway's push (see above) */
      if (m.edges !== undefined) return this.answerEdges(sock, m.id as number);
      if (typeof m.who !== 'string' || m.who.length > 64) return this.drop('malformed', peer, sock);
      void this.lookup(m.who, typeof m.dst === 'string' && m.dst.length <= 64 ? m.dst : undefined, m.proto === 'udp' ? 'udp' : undefined, peer).then(
        (c) => {
          const r: Msg = c ? { id: m.id, t: Date.now(), identity: c.identity, appId: c.appId, tags: c.tags } : { id: m.id, t: Date.now(), unknown: true };
          if (c?.port !== undefined) r.port = c.port;
          if (c?.external) r.external = true; /* an exposure's outside client, seen by this node's gateway */
          if (c?.relayed) r.relayed = true; /* its preamble names the outside client (ClientIdentity.relayed) */
          if (c?.egress !== undefined) r.egress = c.egress; /* only when lookup let it through: an egress gateway asking */
          if (!sock.destroyed) sock.write(this.signer.sign(r) + '\n');
        },
        (e: unknown) => this.log.warn({ err: e, peer }, 'peer API lookup failed'),
      );
    }, () => this.drop('malformed', peer, sock));
  }

  /** Answers an `edges` request: this node's edges, in lines under MAX_LINE. */
  private answerEdges(sock: net.Socket, id: number): void {
    if (sock.destroyed || sock.writableLength > MAX_PENDING_ANSWER) return;
    const { edges, truncated } = this.onEdges();
    const kept = edges.length > MAX_EDGES_PER_ANSWER ? edges.slice(0, MAX_EDGES_PER_ANSWER) : edges;
    const chunks = chunkEdges(kept.map(encodeEdge), EDGES_BODY_MAX);
    if (!chunks.length) chunks.push([]);
    chunks.forEach((list, i) => {
      const last = i === chunks.length - 1;
      const cut = last && (truncated || kept.length < edges.length);
      sock.write(this.signer.sign({ id, t: Date.now(), edges: list, more: !last, truncated: cut }) + '\n');
    });
  }

  /** Asks the daemon at peerIp (the member `node`) for its edges: decoded (see src/events/edge-wire.ts), or undefined
   * when it does not answer in time, or answers something that is not an edges answer. */
  edges(peerIp: string, node: string, timeoutMs = 1000): Promise<EdgeAnswer | undefined> {
    const c = this.client(peerIp);
    const id = this.nextId++;
    const answer = new EdgeAnswer(node);
    return new Promise((resolve) => {
      const done = (a: EdgeAnswer | undefined): void => {
        clearTimeout(t);
        c.pending.delete(id);
        if (a) this.edgesMalformed += a.malformed;
        resolve(a);
      };
      const t = setTimeout(() => done(undefined), timeoutMs);
      c.pending.set(id, (m) => {
        if (!m) return done(undefined);
        if (!answer.add(m.edges)) {
          this.edgesMalformed++;
          return done(undefined);
        }
        if (m.more === true && !answer.truncated) return true; /* more lines to come (unless this side's cap is reached) */
        if (m.truncated === true) answer.truncated = true; /* the answering node cut its list */
        done(answer);
        return undefined;
      });
      c.sock.write(this.signer.sign({ id, t: Date.now(), edges: 1 }) + '\n');
    });
  }

  /** Asks the daemon at peerIp who `endpoint` (connected to our `dst`) is. Undefined when unknown, unreachable or too
   * slow. */
  whoIs(peerIp: string, endpoint: string, dst?: string, timeoutMs = 1500, proto?: 'udp'): Promise<ClientIdentity | undefined> {
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
        const who: ClientIdentity = { identity: m.identity, appId: m.appId, tags };
        if (typeof m.port === 'number' && Number.isInteger(m.port) && m.port > 0 && m.port <= 65535) who.port = m.port;
        if (m.external === true) who.external = true; /* judged by the accepting node (ClientIdentities.accept) */
        if (who.external && m.relayed === true) who.relayed = true;
        if (typeof m.egress === 'string' && m.egress.length <= 64) who.egress = m.egress; /* parsed by its user (gateway/egress.ts) */
        resolve(who);
      });
      const req: Msg = dst === undefined ? { id, t: Date.now(), who: endpoint } : { id, t: Date.now(), who: endpoint, dst };
      if (proto) req.proto = proto; /* a datagram sender, not a connection (see trap/udp-identity.ts) */
      c.sock.write(this.signer.sign(req) + '\n');
    });
  }

  private client(peerIp: string): { sock: net.Socket; pending: Map<number, Pending> } {
    const have = this.clients.get(peerIp);
    if (have && !have.sock.destroyed) return have;
    const sock = net.createConnection({ host: peerIp, port: this.port });
    sock.setNoDelay(true);
    const entry = { sock, pending: new Map<number, Pending>() };
    this.clients.set(peerIp, entry);
    const fail = (): void => {
      if (this.clients.get(peerIp) === entry) this.clients.delete(peerIp);
      for (const cb of entry.pending.values()) cb(undefined);
      entry.pending.clear();
    };
    sock.on('error', () => sock.destroy());
    sock.on('close', fail);
    lines(sock, this.onInternalError, (l) => {
      const m = this.signer.open(l);
      if (typeof m === 'string') return this.drop(m, peerIp);
      const cb = entry.pending.get(m.id as number);
      if (cb && cb(m) !== true) entry.pending.delete(m.id as number);
    }, () => {
      this.drop('malformed', peerIp);
      sock.destroy();
    });
    return entry;
  }

  close(): Promise<void> {
    for (const c of this.clients.values()) c.sock.destroy();
    this.clients.clear();
    for (const s of this.served) s.destroy();
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
