/** DNS server round trips over real sockets on 127.0.0.1: local answers, forwarding to a fake upstream, TCP, bad input. */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, Question, RecordType } from 'dns-packet';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DnsError,
  DnsServer,
  nodeSocketFactory,
  type DnsLogger,
  type DnsServerOptions,
  type DnsSocketFactory,
  type NameSource,
} from '../../src/dns/index.js';

// ---- helpers ----

/** dns-packet decodes the RCODE as a string at run time; its typings leave the field out. */
function rcode(p: DecodedPacket): string {
  return (p as DecodedPacket & { rcode: string }).rcode;
}

function query(name: string, type: RecordType | 'ANY', id = 0x1234, extra: Partial<Packet> = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as RecordType, class: 'IN' }],
    ...extra,
  });
}

/** Sends one datagram and resolves with the first decoded answer (rejects after `ms`). */
function udpAsk(port: number, msg: Buffer | Buffer[], ms = 3000): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error('no UDP answer'));
    }, ms);
    s.on('message', (buf) => {
      clearTimeout(timer);
      s.close();
      resolve(dnsPacket.decode(buf));
    });
    s.on('error', reject);
    for (const m of Array.isArray(msg) ? msg : [msg]) s.send(m, port, '127.0.0.1');
  });
}

/** Resolves with the raw size and decoded form of the first UDP answer. */
function udpAskRaw(port: number, msg: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error('no UDP answer'));
    }, 3000);
    s.on('message', (buf) => {
      clearTimeout(timer);
      s.close();
      resolve(buf);
    });
    s.send(msg, port, '127.0.0.1');
  });
}

function framed(msg: Buffer): Buffer {
  return Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]);
}

/** Opens one TCP connection, writes `bytes` at once, collects `count` framed answers. */
function tcpAsk(port: number, bytes: Buffer, count: number): Promise<DecodedPacket[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const out: DecodedPacket[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`only ${out.length} TCP answers`));
    }, 3000);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        out.push(dnsPacket.decode(buf.subarray(2, 2 + len)));
        buf = buf.subarray(2 + len);
      }
      if (out.length >= count) {
        clearTimeout(timer);
        sock.end();
        resolve(out);
      }
    });
    sock.on('error', reject);
    sock.write(bytes);
  });
}

/** Resolves when the server closes the connection (with the bytes received meanwhile), rejects after `ms`. */
function tcpUntilClosed(port: number, bytes: Buffer | undefined, ms: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let received = 0;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('connection still open'));
    }, ms);
    sock.on('data', (c: Buffer) => (received += c.length));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
    if (bytes !== undefined) sock.write(bytes);
  });
}

interface Seen {
  transport: 'udp' | 'tcp';
  id: number;
  name: string;
  type: string;
}

interface Fake {
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

type FakeAnswer = (q: Question, transport: 'udp' | 'tcp') => { rcode?: number; answers?: Answer[]; tc?: boolean } | 'ignore';

/** A fake upstream DNS server (UDP and TCP on the same 127.0.0.1 port). */
async function fakeUpstream(answer: FakeAnswer): Promise<Fake> {
  const seen: Seen[] = [];
  const reply = (buf: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined => {
    const q = dnsPacket.decode(buf);
    const question = q.questions?.[0];
    if (question === undefined) return undefined;
    seen.push({ transport, id: q.id ?? -1, name: question.name, type: question.type });
    const a = answer(question, transport);
    if (a === 'ignore') return undefined;
    let flags = dnsPacket.RECURSION_AVAILABLE | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | (a.rcode ?? 0);
    if (a.tc === true) flags |= dnsPacket.TRUNCATED_RESPONSE;
    return dnsPacket.encode({ type: 'response', id: q.id, flags, questions: q.questions, answers: a.answers ?? [] });
  };
  for (;;) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    const port = udp.address().port;
    const tcp = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      sock.on('error', () => undefined);
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const out = reply(msg, 'tcp');
          if (out !== undefined) sock.write(framed(out));
        }
      });
    });
    const ok = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false));
      tcp.listen(port, '127.0.0.1', () => r(true));
    });
    if (!ok) {
      udp.close();
      continue;
    }
    udp.on('message', (msg, rinfo) => {
      const out = reply(msg, 'udp');
      if (out !== undefined) udp.send(out, rinfo.port, rinfo.address);
    });
    return {
      port,
      seen,
      close: () =>
        Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]).then(() => undefined),
    };
  }
}

/** A UDP port that receives and never answers. */
async function blackHole(): Promise<{ port: number; received: () => number; close(): void }> {
  const s = dgram.createSocket('udp4');
  let n = 0;
  s.on('message', () => n++);
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return { port: s.address().port, received: () => n, close: () => s.close() };
}

const a = (name: string, ip: string): Answer => ({ type: 'A', name, class: 'IN', ttl: 60, data: ip });

const apps = new Map<string, { a: string[]; aaaa: string[] }>([
  ['web', { a: ['10.0.0.5'], aaaa: [] }],
  ['db', { a: ['10.0.0.6'], aaaa: ['fd00::6'] }],
]);
const lookups: string[] = [];
const source: NameSource = {
  lookup(name) {
    lookups.push(name);
    return apps.get(name);
  },
  reverse(ip) {
    for (const [name, v] of apps) if (v.a.includes(ip) || v.aaaa.includes(ip)) return name;
    return undefined;
  },
};

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  lookups.length = 0;
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function serve(opts: Partial<DnsServerOptions> = {}): Promise<{ server: DnsServer; port: number }> {
  const server = new DnsServer({ source, forwarders: [], bindAddress: '127.0.0.1', port: 0, upstreamTimeoutMs: 300, ...opts });
  const ports = await server.start();
  cleanups.push(() => server.close());
  expect(ports.tcpPort).toBe(ports.udpPort);
  return { server, port: ports.udpPort };
}

async function upstream(answer: FakeAnswer): Promise<Fake> {
  const f = await fakeUpstream(answer);
  cleanups.push(() => f.close());
  return f;
}

const example: FakeAnswer = (q) => {
  if (q.name === 'example.com' && q.type === 'A') return { answers: [a(q.name, '93.184.216.34')] };
  if (q.name === 'printer' && q.type === 'A') return { answers: [a(q.name, '192.168.1.9')] };
  return { rcode: 3 };
};

// ---- tests ----

describe('DnsServer: names appswitch owns', () => {
  it('answers A for "web" and "web.appswitch.local" authoritatively with the small TTL and the client id', async () => {
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    for (const [name, id] of [['web', 11], ['web.appswitch.local', 12], ['WEB.AppSwitch.Local.', 13]] as const) {
      const r = await udpAsk(port, query(name, 'A', id));
      expect(r.id).toBe(id);
      expect(rcode(r)).toBe('NOERROR');
      expect(r.flag_aa).toBe(true);
      expect(r.flag_qr).toBe(true);
      expect(r.answers).toEqual([expect.objectContaining({ type: 'A', name: name.replace(/\.$/, ''), ttl: 5, data: '10.0.0.5' })]);
    }
    expect(lookups).toContain('web.appswitch.local');
    expect(lookups).toContain('web');
    expect(up.seen).toEqual([]);
    expect(server.stats()).toMatchObject({ queries: 3, answeredLocally: 3, forwarded: 0 });
  });

  it('answers AAAA when the app has IPv6 and NODATA with the SOA when it has only IPv4', async () => {
    const { port } = await serve({ ttl: 7 });
    const db = await udpAsk(port, query('db.appswitch.local', 'AAAA'));
    expect(db.answers).toEqual([expect.objectContaining({ type: 'AAAA', data: 'fd00::6', ttl: 7 })]);

    const r = await udpAsk(port, query('web', 'AAAA'));
    expect(rcode(r)).toBe('NOERROR');
    expect(r.flag_aa).toBe(true);
    expect(r.answers).toEqual([]);
    expect(r.authorities).toEqual([
      expect.objectContaining({ type: 'SOA', name: 'appswitch.local', ttl: 7, data: expect.objectContaining({ minimum: 7 }) }),
    ]);

    const mx = await udpAsk(port, query('web.appswitch.local', 'MX'));
    expect(rcode(mx)).toBe('NOERROR');
    expect(mx.answers).toEqual([]);
    expect(mx.authorities?.[0]?.type).toBe('SOA');
  });

  it('answers NXDOMAIN with the SOA for unknown names inside the domain, without asking upstream', async () => {
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const r = await udpAsk(port, query('nope.appswitch.local', 'A'));
    expect(rcode(r)).toBe('NXDOMAIN');
    expect(r.flag_aa).toBe(true);
    expect(r.answers).toEqual([]);
    expect(r.authorities).toEqual([expect.objectContaining({ type: 'SOA', name: 'appswitch.local' })]);
    expect(up.seen).toEqual([]);
    expect(server.stats()).toMatchObject({ nxdomain: 1, answeredLocally: 1, forwarded: 0 });
  });

  it('uses a configured domain', async () => {
    const { port } = await serve({ domain: 'Apps.Internal' });
    const r = await udpAsk(port, query('web.apps.internal', 'A'));
    expect(r.answers?.[0]).toMatchObject({ type: 'A', data: '10.0.0.5' });
    const nx = await udpAsk(port, query('other.apps.internal', 'A'));
    expect(rcode(nx)).toBe('NXDOMAIN');
    expect(nx.authorities?.[0]).toMatchObject({ type: 'SOA', name: 'apps.internal' });
  });

  it('answers PTR for a vip with the app name in the domain', async () => {
    const { port } = await serve();
    const r = await udpAsk(port, query('5.0.0.10.in-addr.arpa', 'PTR'));
    expect(rcode(r)).toBe('NOERROR');
    expect(r.flag_aa).toBe(true);
    expect(r.answers).toEqual([expect.objectContaining({ type: 'PTR', name: '5.0.0.10.in-addr.arpa', data: 'web.appswitch.local', ttl: 5 })]);
    const v6 = await udpAsk(port, query('6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa', 'PTR'));
    expect(v6.answers?.[0]).toMatchObject({ type: 'PTR', data: 'db.appswitch.local' });
  });

  it('answers localhost locally with 127.0.0.1 and ::1', async () => {
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const v4 = await udpAsk(port, query('localhost', 'A'));
    expect(v4.answers).toEqual([expect.objectContaining({ type: 'A', name: 'localhost', data: '127.0.0.1' })]);
    const v6 = await udpAsk(port, query('localhost.', 'AAAA'));
    expect(v6.answers).toEqual([expect.objectContaining({ type: 'AAAA', data: '::1' })]);
    const ptr = await udpAsk(port, query('1.0.0.127.in-addr.arpa', 'PTR'));
    expect(ptr.answers?.[0]).toMatchObject({ type: 'PTR', data: 'localhost' });
    expect(up.seen).toEqual([]);
    expect(server.stats()).toMatchObject({ answeredLocally: 3, forwarded: 0 });
  });

  it('answers SERVFAIL when the source throws, and keeps serving', async () => {
    let fail = true;
    const flaky: NameSource = {
      lookup(name) {
        if (fail) throw new Error('table unavailable');
        return apps.get(name);
      },
    };
    const { server, port } = await serve({ source: flaky });
    expect(rcode(await udpAsk(port, query('web', 'A')))).toBe('SERVFAIL');
    fail = false;
    const ok = await udpAsk(port, query('web', 'A'));
    expect(ok.answers?.[0]).toMatchObject({ data: '10.0.0.5' });
    expect(server.stats()).toMatchObject({ servfail: 1, answeredLocally: 1 });
  });
});

describe('DnsServer: forwarding', () => {
  it('forwards an outside name and passes the answer back under the client id', async () => {
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const r = await udpAsk(port, query('example.com', 'A', 0xbeef));
    expect(r.id).toBe(0xbeef);
    expect(rcode(r)).toBe('NOERROR');
    expect(r.flag_aa).toBe(false);
    expect(r.answers).toEqual([expect.objectContaining({ type: 'A', name: 'example.com', data: '93.184.216.34', ttl: 60 })]);
    expect(up.seen).toEqual([expect.objectContaining({ transport: 'udp', name: 'example.com', type: 'A' })]);
    expect(server.stats()).toMatchObject({ queries: 1, forwarded: 1, answeredLocally: 0 });
  });

  it('forwards single-label names the source does not know', async () => {
    const up = await upstream(example);
    const { port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const r = await udpAsk(port, query('printer', 'A'));
    expect(r.answers?.[0]).toMatchObject({ data: '192.168.1.9' });
    expect(up.seen.map((s) => s.name)).toEqual(['printer']);
  });

  it('passes upstream NXDOMAIN through', async () => {
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const r = await udpAsk(port, query('missing.example', 'A', 77));
    expect(r.id).toBe(77);
    expect(rcode(r)).toBe('NXDOMAIN');
    expect(server.stats()).toMatchObject({ nxdomain: 1, forwarded: 1 });
  });

  it('answers SERVFAIL within the timeout when the upstream is dead', async () => {
    const hole = await blackHole();
    cleanups.push(() => hole.close());
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${hole.port}`], upstreamTimeoutMs: 300 });
    const t0 = Date.now();
    const r = await udpAsk(port, query('example.com', 'A', 99));
    const elapsed = Date.now() - t0;
    expect(r.id).toBe(99);
    expect(rcode(r)).toBe('SERVFAIL');
    expect(hole.received()).toBe(1);
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1500);
    expect(server.stats()).toMatchObject({ servfail: 1, upstreamFailures: 1 });
  });

  it('answers SERVFAIL at once when the upstream port is closed (ICMP port unreachable)', async () => {
    const hole = await blackHole();
    hole.close(); // nothing listens there any more
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${hole.port}`], upstreamTimeoutMs: 5000 });
    const t0 = Date.now();
    const r = await udpAsk(port, query('example.com', 'A'));
    expect(rcode(r)).toBe('SERVFAIL');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(server.stats().upstreamFailures).toBe(1);
  });

  it('uses the second forwarder when the first is dead', async () => {
    const hole = await blackHole();
    cleanups.push(() => hole.close());
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${hole.port}`, `127.0.0.1:${up.port}`], upstreamTimeoutMs: 300 });
    const t0 = Date.now();
    const r = await udpAsk(port, query('example.com', 'A', 5));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(r.id).toBe(5);
    expect(r.answers?.[0]).toMatchObject({ data: '93.184.216.34' });
    expect(hole.received()).toBe(1);
    expect(up.seen).toHaveLength(1);
    expect(server.stats()).toMatchObject({ forwarded: 1, upstreamFailures: 1, servfail: 0 });
  });

  it('tries the next forwarder after an upstream SERVFAIL', async () => {
    const bad = await upstream(() => ({ rcode: 2 }));
    const good = await upstream(example);
    const { port } = await serve({ forwarders: [`127.0.0.1:${bad.port}`, `127.0.0.1:${good.port}`] });
    const r = await udpAsk(port, query('example.com', 'A'));
    expect(rcode(r)).toBe('NOERROR');
    expect(r.answers?.[0]).toMatchObject({ data: '93.184.216.34' });
  });

  it('retries a truncated UDP answer over TCP', async () => {
    const ips = ['10.1.0.1', '10.1.0.2', '10.1.0.3'];
    const up = await upstream((q, transport) =>
      transport === 'udp' ? { tc: true } : { answers: ips.map((ip) => a(q.name, ip)) },
    );
    const { port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const r = await udpAsk(port, query('big.example', 'A', 4242));
    expect(r.id).toBe(4242);
    expect(r.flag_tc).toBe(false);
    expect(r.answers?.map((x) => (x.type === 'A' ? x.data : x.type))).toEqual(ips);
    expect(up.seen.map((s) => s.transport)).toEqual(['udp', 'tcp']);
  });

  it('truncates an answer too big for a UDP client (TC) and gives it whole over TCP', async () => {
    const ips = Array.from({ length: 60 }, (_, i) => `10.2.0.${i + 1}`);
    const up = await upstream((q, transport) =>
      transport === 'udp' ? { tc: true } : { answers: ips.map((ip) => a(q.name, ip)) },
    );
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const raw = await udpAskRaw(port, query('huge.example', 'A', 1));
    expect(raw.length).toBeLessThanOrEqual(512);
    const small = dnsPacket.decode(raw);
    expect(small.flag_tc).toBe(true);
    expect(small.id).toBe(1);
    expect(small.questions?.[0]?.name).toBe('huge.example');
    expect(small.answers).toEqual([]);
    expect(server.stats().truncated).toBe(1);

    // A client announcing a 4096-byte EDNS0 buffer gets it all over UDP (60 * 28 bytes is more than 512).
    const edns = query('huge.example', 'A', 2, {
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
    });
    const big = await udpAskRaw(port, edns);
    expect(big.length).toBeGreaterThan(512);
    expect(dnsPacket.decode(big).answers).toHaveLength(60);

    const [whole] = await tcpAsk(port, framed(query('huge.example', 'A', 3)), 1);
    expect(whole?.id).toBe(3);
    expect(whole?.flag_tc).toBe(false);
    expect(whole?.answers).toHaveLength(60);
  });
});

describe('DnsServer: TCP', () => {
  it('answers two queries sent on one connection', async () => {
    const up = await upstream(example);
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${up.port}`] });
    const bytes = Buffer.concat([framed(query('web', 'A', 101)), framed(query('example.com', 'A', 102))]);
    const answers = await tcpAsk(port, bytes, 2);
    const byId = new Map(answers.map((r) => [r.id, r]));
    expect(byId.get(101)?.answers?.[0]).toMatchObject({ type: 'A', data: '10.0.0.5' });
    expect(byId.get(102)?.answers?.[0]).toMatchObject({ type: 'A', data: '93.184.216.34' });
    expect(server.stats()).toMatchObject({ queries: 2, answeredLocally: 1, forwarded: 1 });
  });

  it('reassembles a query split across writes', async () => {
    const { port } = await serve();
    const sock = net.connect(port, '127.0.0.1');
    cleanups.push(() => void sock.destroy());
    const answer = new Promise<DecodedPacket>((resolve) => {
      let buf = Buffer.alloc(0);
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) resolve(dnsPacket.decode(buf.subarray(2)));
      });
    });
    const bytes = framed(query('web', 'A', 7));
    sock.write(bytes.subarray(0, 1));
    await new Promise((r) => setTimeout(r, 30));
    sock.write(bytes.subarray(1, 9));
    await new Promise((r) => setTimeout(r, 30));
    sock.write(bytes.subarray(9));
    const r = await answer;
    expect(r.id).toBe(7);
    expect(r.answers?.[0]).toMatchObject({ data: '10.0.0.5' });
  });

  it('closes a connection that sends a malformed message, and counts it', async () => {
    const { server, port } = await serve();
    const received = await tcpUntilClosed(port, framed(Buffer.from('not dns at all')), 2000);
    expect(received).toBe(0);
    expect(server.stats().malformed).toBe(1);
  });

  it('closes idle connections', async () => {
    const { port } = await serve({ tcpIdleTimeoutMs: 200 });
    const t0 = Date.now();
    await tcpUntilClosed(port, undefined, 2000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
  });

  it('keeps an idle connection open while a query is being forwarded, and closes it once idle after the answer', async () => {
    const hole = await blackHole();
    cleanups.push(() => hole.close());
    const { server, port } = await serve({ tcpIdleTimeoutMs: 200, upstreamTimeoutMs: 400, forwarders: [`127.0.0.1:${hole.port}`] });
    const t0 = Date.now();
    const received = await tcpUntilClosed(port, framed(query('example.com', 'A', 1)), 3000);
    const elapsed = Date.now() - t0;
    expect(received).toBeGreaterThan(2); // the SERVFAIL answer arrived (after 400 ms, past the 200 ms idle limit)
    expect(server.stats().servfail).toBe(1);
    expect(elapsed).toBeGreaterThanOrEqual(550); // ... and the connection was closed ~200 ms after it
    expect(elapsed).toBeLessThan(2000);
  });

  it('caps concurrent connections', async () => {
    const { server, port } = await serve({ maxTcpConnections: 1 });
    const first = net.connect(port, '127.0.0.1');
    cleanups.push(() => void first.destroy());
    await new Promise((r) => first.once('connect', r));
    await new Promise((r) => setTimeout(r, 50));
    await tcpUntilClosed(port, undefined, 2000);
    expect(server.stats().tcpRejected).toBe(1);
    // the first connection still works
    const answer = new Promise<DecodedPacket>((resolve) => first.once('data', (c: Buffer) => resolve(dnsPacket.decode(c.subarray(2)))));
    first.write(framed(query('web', 'A', 3)));
    expect((await answer).answers?.[0]).toMatchObject({ data: '10.0.0.5' });
  });
});

describe('DnsServer: bad input', () => {
  it('drops a malformed UDP packet, counts it, and still answers afterwards', async () => {
    const { server, port } = await serve();
    const garbage = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x77]);
    // both go from one socket: the only answer that comes back is the one for the good query
    const r = await udpAsk(port, [garbage, Buffer.from([1, 2, 3]), query('web', 'A', 0x5555)]);
    expect(r.id).toBe(0x5555);
    expect(r.answers?.[0]).toMatchObject({ data: '10.0.0.5' });
    expect(server.stats()).toMatchObject({ malformed: 2, queries: 1 });
  });

  it('drops responses sent to it (QR set)', async () => {
    const { server, port } = await serve();
    const resp = dnsPacket.encode({ type: 'response', id: 9, questions: [{ name: 'web', type: 'A' }] });
    const r = await udpAsk(port, [resp, query('web', 'A', 10)]);
    expect(r.id).toBe(10);
    expect(server.stats()).toMatchObject({ malformed: 1, queries: 1 });
  });

  it('answers FORMERR to a query with two questions', async () => {
    const { server, port } = await serve();
    const two = dnsPacket.encode({
      type: 'query',
      id: 321,
      questions: [
        { name: 'web', type: 'A' },
        { name: 'db', type: 'A' },
      ],
    });
    const r = await udpAsk(port, two);
    expect(r.id).toBe(321);
    expect(rcode(r)).toBe('FORMERR');
    expect(r.answers).toEqual([]);
    const none = await udpAsk(port, dnsPacket.encode({ type: 'query', id: 322, questions: [] }));
    expect(rcode(none)).toBe('FORMERR');
    expect(server.stats()).toMatchObject({ formerr: 2, queries: 2 });
  });

  it('answers NOTIMP to an opcode other than QUERY', async () => {
    const { server, port } = await serve();
    const notify = dnsPacket.encode({ type: 'query', id: 8, flags: 4 << 11, questions: [{ name: 'web', type: 'SOA' }] });
    const r = await udpAsk(port, notify);
    expect(r.id).toBe(8);
    expect(rcode(r)).toBe('NOTIMP');
    expect((r as DecodedPacket & { opcode: string }).opcode).toBe('NOTIFY');
    expect(server.stats().notimp).toBe(1);
  });

  it('logs malformed packets rate-limited', async () => {
    const warns: Array<{ obj: object; msg: string }> = [];
    const logger: DnsLogger = { warn: (obj, msg) => warns.push({ obj, msg }), info: () => undefined, debug: () => undefined };
    let now = 0;
    const { server, port } = await serve({ logger, now: () => now });
    await udpAsk(port, [...Array.from({ length: 20 }, () => Buffer.from([0xff])), query('web', 'A', 1)]);
    expect(server.stats().malformed).toBe(20);
    expect(warns.filter((w) => w.msg.includes('malformed'))).toHaveLength(1);
    now = 60_000;
    await udpAsk(port, [Buffer.from([0xff]), query('web', 'A', 2)]);
    const m = warns.filter((w) => w.msg.includes('malformed'));
    expect(m).toHaveLength(2);
    expect(m[1]?.obj).toMatchObject({ suppressed: 19 });
  });
});

describe('DnsServer: lifecycle and options', () => {
  it('refuses bad options with stable codes', () => {
    const make = (o: Partial<DnsServerOptions>): (() => DnsServer) => () => new DnsServer({ source, forwarders: [], ...o });
    expect(make({ forwarders: ['1.2.3.4:99999'] })).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_ADDRESS' }));
    expect(make({ forwarders: ['dns.google'] })).toThrow(DnsError);
    expect(make({ bindAddress: 'localhost' })).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_ADDRESS' }));
    expect(make({ domain: 'bad domain' })).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_CONFIG' }));
    expect(make({ ttl: -1 })).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_CONFIG' }));
    expect(make({ port: 70000 })).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_CONFIG' }));
  });

  it('cannot start twice, reports a busy port, and stops answering after close', async () => {
    const { server, port } = await serve();
    await expect(server.start()).rejects.toMatchObject({ code: 'ERR_DNS_BAD_STATE' });
    const clash = new DnsServer({ source, forwarders: [], bindAddress: '127.0.0.1', port });
    await expect(clash.start()).rejects.toMatchObject({ code: 'ERR_DNS_BIND_FAILED' });
    await server.close();
    await server.close();
    await expect(udpAsk(port, query('web', 'A'), 300)).rejects.toThrow('no UDP answer');
  });

  it('aborts forwards in flight on close and leaves no socket open', async () => {
    const hole = await blackHole();
    cleanups.push(() => hole.close());
    const open = new Set<string>();
    let n = 0;
    const track = <T extends NodeJS.EventEmitter>(kind: string, s: T): T => {
      const key = `${kind}#${n++}`;
      open.add(key);
      s.once('close', () => open.delete(key));
      return s;
    };
    const sockets: DnsSocketFactory = {
      createUdpSocket: (type) => track('udp', nodeSocketFactory.createUdpSocket(type)),
      createTcpServer: () => track('tcp-server', nodeSocketFactory.createTcpServer()),
      connectTcp: (host, port) => track('tcp', nodeSocketFactory.connectTcp(host, port)),
    };
    const { server, port } = await serve({ forwarders: [`127.0.0.1:${hole.port}`], upstreamTimeoutMs: 10_000, sockets });
    const pending = udpAsk(port, query('example.com', 'A'), 500).catch((e: Error) => e.message);
    await new Promise((r) => setTimeout(r, 50));
    expect(hole.received()).toBe(1);
    expect([...open].sort()).toEqual(['tcp-server#1', 'udp#0', 'udp#2']); // listener pair + the upstream query socket
    await server.close();
    await new Promise((r) => setImmediate(r));
    expect([...open]).toEqual([]);
    expect(await pending).toBe('no UDP answer');
    expect(server.stats()).toMatchObject({ forwarded: 1, servfail: 0 });
  });

  it('accepts a pino logger', () => {
    const logger: DnsLogger = pino({ level: 'silent' });
    expect(() => new DnsServer({ source, forwarders: [], logger })).not.toThrow();
  });
});
