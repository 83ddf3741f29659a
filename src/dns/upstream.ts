// Forwarding to upstream servers: each query goes over UDP from a fresh connected socket with a random ID and
// source port; a truncated (TC) answer is fetched again over TCP (RFC 7766 §5); on timeout, socket error (a connect
// that fails for want of a route included), SERVFAIL or REFUSED the next forwarder is tried. Answers must match the
// ID and question or they are ignored. Nothing a forwarder does (or fails to do) throws out of a socket handler.

import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { DecodedPacket, Question } from 'dns-packet';
import type { DnsLogger } from './log.js';
import { formatForwarder, type Forwarder } from './names.js';
import type { DnsSocketFactory } from './sockets.js';
import { frame, FrameReader, Rcode, rcodeOf, withId } from './wire.js';

/** The result of forwarding one query. */
export type UpstreamOutcome =
  /** An answer to pass back (its ID is the upstream query's, not the client's); `failures` as below, for the
   * forwarders tried before. */
  | { kind: 'answer'; buf: Buffer; decoded: DecodedPacket; via: Forwarder; failures: string[] }
  /** Every forwarder failed; `failures` has one "ip:port reason" entry per failed attempt. */
  | { kind: 'failed'; failures: string[] };

type Attempt = { kind: 'ok'; buf: Buffer; decoded: DecodedPacket } | { kind: 'fail'; reason: string };

/** Forwards queries; one instance per server, so `close()` can abort everything in flight. */
export class Upstream {
  private readonly aborts = new Set<() => void>();
  private closed = false;

  constructor(
    private readonly sockets: DnsSocketFactory,
    private readonly timeoutMs: number,
    private readonly logger: DnsLogger,
    /** An unexpected exception in one of our socket handlers: it costs that attempt, never the server. */
    private readonly onInternalError: (what: string, err: unknown) => void,
  ) {}

  /**
   * Forwards `query` (the client's message as received; it is sent with a fresh ID) to each forwarder in turn
   * until one gives a usable answer. If none does, the last SERVFAIL/REFUSED or truncated answer received is
   * returned, else 'failed'. Never rejects.
   */
  async resolve(forwarders: readonly Forwarder[], query: Buffer, question: Question): Promise<UpstreamOutcome> {
    const failures: string[] = [];
    let fallback: { buf: Buffer; decoded: DecodedPacket; via: Forwarder } | undefined;
    for (const via of forwarders) {
      if (this.closed) break;
      const id = randomInt(0, 0x10000);
      const msg = withId(query, id);
      let r = await this.overUdp(via, msg, id, question);
      if (r.kind === 'ok' && r.decoded.flag_tc) {
        fallback = { buf: r.buf, decoded: r.decoded, via };
        r = await this.overTcp(via, msg, id, question);
        if (r.kind === 'fail') r = { kind: 'fail', reason: `tcp ${r.reason}` };
      }
      if (r.kind === 'fail') {
        failures.push(`${formatForwarder(via)} ${r.reason}`);
        continue;
      }
      const rcode = rcodeOf(r.decoded);
      if (rcode === Rcode.SERVFAIL || rcode === Rcode.REFUSED) {
        failures.push(`${formatForwarder(via)} rcode ${rcode}`);
        fallback = { buf: r.buf, decoded: r.decoded, via };
        continue;
      }
      return { kind: 'answer', buf: r.buf, decoded: r.decoded, via, failures };
    }
    if (fallback !== undefined && !this.closed) return { kind: 'answer', ...fallback, failures };
    return { kind: 'failed', failures };
  }

  /** Aborts every attempt in flight (they resolve as failed); later calls fail at once. */
  close(): void {
    this.closed = true;
    for (const abort of [...this.aborts]) abort();
  }

  private overUdp(via: Forwarder, msg: Buffer, id: number, question: Question): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      let sock: dgram.Socket | undefined;
      const finish = this.attempt(resolve, () => {
        try {
          sock?.close();
        } catch {
          // already closed
        }
      });
      try {
        const s = (sock = this.sockets.createUdpSocket(net.isIPv6(via.host) ? 'udp6' : 'udp4'));
        s.on('error', (err: NodeJS.ErrnoException) => finish({ kind: 'fail', reason: reasonOf(err) }));
        s.on('message', (buf: Buffer) => {
          try {
            const decoded = this.matching(buf, id, question, via);
            if (decoded !== undefined) finish({ kind: 'ok', buf, decoded });
          } catch (err) {
            this.onInternalError('upstream UDP answer', err);
            finish({ kind: 'fail', reason: 'internal error' });
          }
        });
        // A connected socket only receives datagrams from the forwarder and sees ICMP errors (ECONNREFUSED). The
        // connect can fail (no route: ENETUNREACH/EHOSTUNREACH, EACCES...); then the callback gets the error, and a
        // send on the unconnected socket would throw (ERR_SOCKET_BAD_PORT): this attempt fails instead.
        s.connect(via.port, via.host, (err?: Error) => {
          if (err) return finish({ kind: 'fail', reason: reasonOf(err) });
          try {
            s.send(msg, (e) => {
              if (e) finish({ kind: 'fail', reason: reasonOf(e) });
            });
          } catch (e) {
            finish({ kind: 'fail', reason: reasonOf(e) });
          }
        });
      } catch (err) {
        finish({ kind: 'fail', reason: reasonOf(err) });
      }
    });
  }

  private overTcp(via: Forwarder, msg: Buffer, id: number, question: Question): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      let sock: net.Socket | undefined;
      const finish = this.attempt(resolve, () => sock?.destroy());
      try {
        const s = (sock = this.sockets.connectTcp(via.host, via.port));
        const reader = new FrameReader();
        s.on('error', (err: NodeJS.ErrnoException) => finish({ kind: 'fail', reason: reasonOf(err) }));
        s.on('close', () => finish({ kind: 'fail', reason: 'closed before answering' }));
        s.on('data', (chunk: Buffer) => {
          try {
            const frames = reader.push(chunk);
            if (frames === 'empty-frame') return finish({ kind: 'fail', reason: 'empty frame' });
            for (const f of frames) {
              const decoded = this.matching(f, id, question, via);
              if (decoded !== undefined) return finish({ kind: 'ok', buf: f, decoded });
            }
          } catch (err) {
            this.onInternalError('upstream TCP answer', err);
            finish({ kind: 'fail', reason: 'internal error' });
          }
        });
        s.write(frame(msg));
      } catch (err) {
        finish({ kind: 'fail', reason: reasonOf(err) });
      }
    });
  }

  /** Wraps one attempt: timeout, abort on close, cleanup, and a `finish` that settles exactly once. */
  private attempt(resolve: (a: Attempt) => void, cleanup: () => void): (a: Attempt) => void {
    let done = false;
    const finish = (a: Attempt): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.aborts.delete(abort);
      cleanup();
      resolve(a);
    };
    const abort = (): void => finish({ kind: 'fail', reason: 'server closed' });
    const timer = setTimeout(() => finish({ kind: 'fail', reason: 'timeout' }), this.timeoutMs);
    if (this.closed) queueMicrotask(abort);
    else this.aborts.add(abort);
    return finish;
  }

  /** The decoded answer if `buf` is a well-formed response to our query; otherwise undefined (ignored). */
  private matching(buf: Buffer, id: number, question: Question, via: Forwarder): DecodedPacket | undefined {
    let d: DecodedPacket;
    try {
      d = dnsPacket.decode(buf);
    } catch (err) {
      this.logger.debug({ upstream: formatForwarder(via), err: String(err) }, 'dns: undecodable upstream answer ignored');
      return undefined;
    }
    const q = d.questions?.[0];
    const ok =
      d.type === 'response' &&
      d.id === id &&
      d.questions?.length === 1 &&
      q !== undefined &&
      q.name.toLowerCase() === question.name.toLowerCase() &&
      q.type === question.type &&
      (q.class ?? 'IN') === (question.class ?? 'IN');
    if (!ok) {
      this.logger.debug({ upstream: formatForwarder(via), id: d.id }, 'dns: upstream answer does not match the query, ignored');
    }
    return ok ? d : undefined;
  }
}

/** A short reason for a failed attempt: the errno code when there is one. */
function reasonOf(err: unknown): string {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.code ?? (e instanceof Error ? e.message : String(err));
}
