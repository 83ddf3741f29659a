/** Forwarder faults, with an injected socket factory: the server's own sockets are real (127.0.0.1), each upstream
 * socket is a scripted fake that behaves as node:dgram / node:net do for one fault — no route (the connect callback
 * gets ENETUNREACH, and send on the unconnected socket throws ERR_SOCKET_BAD_PORT as Node's does), refused (ICMP:
 * 'error' ECONNREFUSED), black hole, garbage, a wrong id, a TCP connection closed in the middle of an answer. The
 * client always gets an answer (SERVFAIL, or the upstream's), and the server keeps serving. */
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { DnsServer, nodeSocketFactory, type DnsSocketFactory, type NameSource } from '../../src/dns/index.js';

type Fault = 'no-route' | 'refused' | 'black-hole' | 'garbage' | 'wrong-id' | 'wrong-id-then-right' | 'truncated' | 'throws';
type TcpFault = 'close-mid-answer' | 'garbage-frame' | 'answers';

function rcode(p: DecodedPacket): string {
  return (p as DecodedPacket & { rcode: string }).rcode;
}

function answerTo(query: Buffer, opts: { id?: number; tc?: boolean; ip?: string }): Buffer {
  const q = dnsPacket.decode(query);
  const name = q.questions?.[0]?.name ?? '';
  return dnsPacket.encode({
    type: 'response',
    id: opts.id ?? q.id,
    flags: dnsPacket.RECURSION_AVAILABLE | (opts.tc ? dnsPacket.TRUNCATED_RESPONSE : 0),
    questions: q.questions,
    answers: opts.ip ? [{ type: 'A', name, class: 'IN', ttl: 60, data: opts.ip }] : [],
  });
}

/** A stand-in for one upstream dgram.Socket, scripted by `fault`. */
class FakeUdp extends EventEmitter {
  private connected = false;
  closed = false;
  constructor(private readonly fault: Fault) {
    super();
  }
  connect(_port: number, _host: string, cb: (err?: Error) => void): void {
    setImmediate(() => {
      if (this.fault === 'no-route') return cb(Object.assign(new Error('connect ENETUNREACH'), { code: 'ENETUNREACH', syscall: 'connect' }));
      this.connected = true;
      cb();
    });
  }
  send(msg: Buffer, cb: (err: Error | null) => void): void {
    // node:dgram's send(msg, cb) on a socket that is not connected takes cb for the port and throws
    if (!this.connected) throw Object.assign(new RangeError('Port should be > 0 and < 65536. Received function .'), { code: 'ERR_SOCKET_BAD_PORT' });
    if (this.fault === 'throws') throw new Error('send exploded');
    setImmediate(() => {
      cb(null);
      const reply = (b: Buffer): void => void setImmediate(() => !this.closed && this.emit('message', b, { address: '192.0.2.53', port: 53 }));
      switch (this.fault) {
        case 'refused':
          setImmediate(() => this.emit('error', Object.assign(new Error('recv ECONNREFUSED'), { code: 'ECONNREFUSED' })));
          break;
        case 'garbage':
          reply(Buffer.from('\x12\x34 not a dns message at all'));
          reply(Buffer.alloc(0));
          reply(Buffer.from(answerTo(msg, {}).subarray(0, 15)));
          break;
        case 'wrong-id':
          reply(answerTo(msg, { id: (dnsPacket.decode(msg).id ?? 0) ^ 0x5a5a, ip: '203.0.113.66' }));
          break;
        case 'wrong-id-then-right':
          reply(answerTo(msg, { id: (dnsPacket.decode(msg).id ?? 0) ^ 0x5a5a, ip: '203.0.113.66' }));
          reply(answerTo(msg, { ip: '203.0.113.7' }));
          break;
        case 'truncated':
          reply(answerTo(msg, { tc: true }));
          break;
        default: // black-hole: nothing ever comes back
      }
    });
  }
  close(): void {
    if (this.closed) throw Object.assign(new Error('Not running'), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    this.closed = true;
  }
}

/** A stand-in for one upstream TCP connection (the retry after a truncated UDP answer). */
class FakeTcp extends EventEmitter {
  destroyed = false;
  constructor(private readonly fault: TcpFault) {
    super();
  }
  write(data: Buffer): boolean {
    const query = data.subarray(2);
    const answer = answerTo(query, { ip: '203.0.113.9' });
    const framed = Buffer.concat([Buffer.from([answer.length >> 8, answer.length & 0xff]), answer]);
    setImmediate(() => {
      if (this.destroyed) return;
      if (this.fault === 'close-mid-answer') {
        this.emit('data', framed.subarray(0, 9)); // the length and part of the header, then the peer goes away
        this.destroyed = true;
        this.emit('close');
      } else if (this.fault === 'garbage-frame') {
        this.emit('data', Buffer.from([0, 5, 1, 2, 3, 4, 5]));
        this.emit('data', Buffer.from([0, 0]));
      } else {
        this.emit('data', framed);
      }
    });
    return true;
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    setImmediate(() => this.emit('close'));
  }
}

/** Real sockets until the server has started (its own); after that every UDP socket is an upstream one: a fake with
 * the next fault of `faults`, in turn. */
function factory(faults: Fault[], tcpFault: TcpFault = 'answers'): DnsSocketFactory & { upstreamUdp: FakeUdp[]; started: boolean } {
  const upstreamUdp: FakeUdp[] = [];
  let next = 0;
  return {
    upstreamUdp,
    started: false,
    createUdpSocket(type) {
      if (!this.started) return nodeSocketFactory.createUdpSocket(type);
      const s = new FakeUdp(faults[next++ % faults.length] as Fault);
      upstreamUdp.push(s);
      return s as unknown as dgram.Socket;
    },
    createTcpServer: () => nodeSocketFactory.createTcpServer(),
    connectTcp: () => new FakeTcp(tcpFault) as unknown as net.Socket,
  };
}

const source: NameSource = { lookup: (name) => (name === 'web' ? { a: ['10.0.0.5'], aaaa: [] } : undefined) };

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function serve(sockets: DnsSocketFactory & { started: boolean }, forwarders: string[], upstreamTimeoutMs = 200): Promise<{ server: DnsServer; port: number; internal: string[] }> {
  const internal: string[] = [];
  const server = new DnsServer({ source, forwarders, port: 0, upstreamTimeoutMs, sockets, onInternalError: (what) => internal.push(what) });
  const { udpPort } = await server.start();
  sockets.started = true;
  cleanups.push(() => server.close());
  return { server, port: udpPort, internal };
}

function ask(port: number, name: string, id: number, ms = 5000): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error(`no answer for ${name}`));
    }, ms);
    s.on('message', (b) => {
      clearTimeout(t);
      s.close();
      resolve(dnsPacket.decode(b));
    });
    s.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] }), port, '127.0.0.1');
  });
}

describe('DNS forwarder faults (injected sockets)', () => {
  it('no route to the forwarder (connect fails): SERVFAIL, and the server keeps serving', async () => {
    const f = factory(['no-route']);
    const { server, port, internal } = await serve(f, ['192.0.2.1'], 60_000); /* failed at once, not by the timeout */
    const r = await ask(port, 'unknown.example', 11);
    expect(r.id).toBe(11);
    expect(rcode(r)).toBe('SERVFAIL');
    expect((await ask(port, 'web', 12)).answers?.[0]).toMatchObject({ data: '10.0.0.5' });
    expect(rcode(await ask(port, 'again.example', 13))).toBe('SERVFAIL');
    expect(server.stats()).toMatchObject({ servfail: 2, upstreamFailures: 2, internalErrors: 0 });
    expect(internal).toEqual([]);
    expect(f.upstreamUdp.every((s) => s.closed)).toBe(true);
  });

  it('a forwarder without a route is skipped for the next one', async () => {
    const f = factory(['no-route', 'wrong-id-then-right']);
    const { server, port } = await serve(f, ['192.0.2.1', '192.0.2.2']);
    const r = await ask(port, 'two.example', 21);
    expect(rcode(r)).toBe('NOERROR');
    expect(r.answers?.[0]).toMatchObject({ data: '203.0.113.7' });
    expect(server.stats()).toMatchObject({ upstreamFailures: 1, servfail: 0 });
  });

  it('refused (ICMP port unreachable) and a send that throws: SERVFAIL without waiting for the timeout', async () => {
    for (const fault of ['refused', 'throws'] as const) {
      const f = factory([fault]);
      const { server, port } = await serve(f, ['192.0.2.1'], 60_000); /* a timeout would fail the 5 s ask */
      expect(rcode(await ask(port, `${fault}.example`, 31))).toBe('SERVFAIL');
      expect(server.stats()).toMatchObject({ servfail: 1, upstreamFailures: 1 });
    }
  });

  it('black hole: SERVFAIL after the forward timeout; other queries are answered meanwhile', async () => {
    const f = factory(['black-hole']);
    const { server, port } = await serve(f, ['192.0.2.1'], 5000);
    const pending = ask(port, 'hole.example', 41, 30_000);
    expect((await ask(port, 'web', 42)).answers?.[0]).toMatchObject({ data: '10.0.0.5' }); /* answered while the forward waits */
    expect(server.stats().servfail).toBe(0);
    const r = await pending;
    expect(r.id).toBe(41);
    expect(rcode(r)).toBe('SERVFAIL');
    expect(server.stats()).toMatchObject({ servfail: 1, upstreamFailures: 1 });
  });

  it('garbage and answers with the wrong id are ignored: SERVFAIL after the timeout, or the right answer when it comes', async () => {
    const f = factory(['garbage']);
    const { server, port } = await serve(f, ['192.0.2.1']);
    expect(rcode(await ask(port, 'garbage.example', 51))).toBe('SERVFAIL');
    const g = factory(['wrong-id']);
    const s2 = await serve(g, ['192.0.2.1']);
    expect(rcode(await ask(s2.port, 'wrongid.example', 52))).toBe('SERVFAIL');
    const h = factory(['wrong-id-then-right']);
    const s3 = await serve(h, ['192.0.2.1']);
    const r = await ask(s3.port, 'late.example', 53);
    expect(r.id).toBe(53);
    expect(r.answers).toEqual([expect.objectContaining({ data: '203.0.113.7' })]);
    expect(server.stats().internalErrors + s2.server.stats().internalErrors + s3.server.stats().internalErrors).toBe(0);
  });

  it('TCP retry after a truncated answer: a connection closed mid-answer or a garbage frame fail that attempt; a whole answer is used', async () => {
    for (const tcp of ['close-mid-answer', 'garbage-frame'] as const) {
      const f = factory(['truncated'], tcp);
      const { server, port } = await serve(f, ['192.0.2.1']);
      const r = await ask(port, `${tcp}.example`, 61);
      // the truncated UDP answer is all there is: passed on (TC set), so the client retries over TCP itself
      expect(r.flag_tc).toBe(true);
      expect(server.stats()).toMatchObject({ upstreamFailures: 1, internalErrors: 0 });
      expect((await ask(port, 'web', 62)).answers?.[0]).toMatchObject({ data: '10.0.0.5' });
    }
    const ok = factory(['truncated'], 'answers');
    const { port } = await serve(ok, ['192.0.2.1']);
    expect((await ask(port, 'whole.example', 63)).answers?.[0]).toMatchObject({ data: '203.0.113.9' });
  });
});

describe('DNS server: an unexpected exception in a handler', () => {
  it('is logged, counted and reported; it drops that one query and the next is answered', async () => {
    const warnings: string[] = [];
    const internal: string[] = [];
    const server = new DnsServer({
      source,
      forwarders: [],
      port: 0,
      logger: { warn: (_o, m) => warnings.push(m), info: () => undefined, debug: () => undefined },
      onInternalError: (what) => internal.push(what),
    });
    const { udpPort } = await server.start();
    cleanups.push(() => server.close());
    // A 'message' event without its rinfo makes the handler throw a TypeError (no real input reaches it this way;
    // the point is what any throw inside the handler costs), and a 'connection' with a socket that is not one.
    const udp = (server as unknown as { udp: dgram.Socket }).udp;
    udp.emit('message', dnsPacket.encode({ type: 'query', id: 1, questions: [{ name: 'web', type: 'A' }] }), undefined);
    const tcp = (server as unknown as { tcp: net.Server }).tcp;
    tcp.emit('connection', { on: () => undefined, destroy: () => undefined, setNoDelay: () => { throw new Error('not a socket'); } });
    await new Promise((r) => setTimeout(r, 50));
    expect(server.stats().internalErrors).toBe(2);
    expect(internal).toEqual(['a UDP query', 'accepting a TCP connection']);
    expect(warnings.filter((w) => w.startsWith('dns: internal error'))).toHaveLength(2);
    expect((await ask(udpPort, 'web', 2)).answers?.[0]).toMatchObject({ data: '10.0.0.5' });
  });
});
