/** The egress proxy (gateway/egress.ts) on loopback, with its peer look-up injected: what it forwards (whole streams
 * both ways with backpressure, half close carried through), and what it resets before reading a byte (not a member,
 * not vouched for, denied by its policy, a forbidden destination, over its connection bound). */
import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EgressProxy, type EgressProxyDeps } from '../../src/gateway/egress.js';
import { EgressPolicy, parseEgressAllow } from '../../src/policy/egress.js';
import type { ClientIdentity } from '../../src/trap/client-reports.js';

const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** A loopback server: `onConn` per connection; returns its port and what it received in all. */
async function server(onConn: (s: net.Socket) => void): Promise<{ port: number; conns: () => number }> {
  let n = 0;
  const open = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    n++;
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => undefined);
    onConn(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  closers.push(() => {
    for (const s of open) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return { port: (srv.address() as net.AddressInfo).port, conns: () => n };
}

async function proxy(over: Partial<EgressProxyDeps> & { egress?: string }): Promise<{ p: EgressProxy; port: number }> {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const who: ClientIdentity = { identity: '169.254.1.2', appId: 'app1', tags: { grp: 'pay' } };
  if (over.egress) who.egress = over.egress;
  const p = new EgressProxy({
    address: '127.0.0.1',
    port,
    isMember: () => true,
    whoIs: () => Promise.resolve(who),
    policy: new EgressPolicy([]),
    forbidden: () => undefined,
    log: pino({ level: 'silent' }),
    ...over,
  });
  await p.listen();
  closers.push(() => p.close());
  return { p, port };
}

/** Connects, writes `send`, half-closes, and reads until the end: what came back, or the error code. */
function exchange(port: number, send: Buffer): Promise<{ got: Buffer; err?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end(send));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve({ got: Buffer.concat(chunks) }));
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ got: Buffer.concat(chunks), err: e.code ?? e.message }));
  });
}

describe('egress proxy: forwarding', () => {
  it('pipes a large stream both ways whole, and carries a half close through (the server answers after EOF)', async () => {
    /* the server reads everything until EOF, then answers with its SHA-less summary: length and a checksum */
    const dst = await server((s) => {
      let len = 0;
      let sum = 0;
      s.on('data', (d: Buffer) => {
        len += d.length;
        for (const b of d) sum = (sum + b) % 65521;
      });
      s.on('end', () => s.end(Buffer.concat([Buffer.from(`${len} ${sum}\n`), Buffer.alloc(4 << 20, 7)])));
    });
    const { p, port } = await proxy({ egress: `127.0.0.1:${dst.port}` });
    const data = Buffer.alloc(16 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    let sum = 0;
    for (const b of data) sum = (sum + b) % 65521;
    const r = await exchange(port, data);
    expect(r.err).toBeUndefined();
    const nl = r.got.indexOf(10);
    expect(r.got.subarray(0, nl).toString()).toBe(`${data.length} ${sum}`);
    expect(r.got.length - nl - 1).toBe(4 << 20);
    expect(p.stats.forwarded).toBe(1);
    expect(p.stats.refused).toBe(0);
  }, 30_000);
});

describe('egress proxy: never an open proxy', () => {
  const cases: Array<[string, Partial<EgressProxyDeps> & { egress?: string }, string]> = [
    ['a host that is not a member', { isMember: () => false }, 'not-a-member'],
    ['a connection its node does not vouch for', { whoIs: () => Promise.resolve(undefined) }, 'unidentified'],
    ['an identity without an asked destination', {}, 'unidentified'],
    ['a destination the gateway policy denies the app', { policy: new EgressPolicy([parseEgressAllow('grp=web=127.0.0.0/8')]) }, 'denied'],
    ['a forbidden destination', { forbidden: () => 'loopback address' }, 'forbidden'],
  ];
  for (const [what, over, reason] of cases) {
    it(`resets ${what}: nothing reaches the destination`, async () => {
      const dst = await server((s) => s.end('SECRET'));
      const withEgress = reason === 'unidentified' && !over.whoIs ? over : { egress: `127.0.0.1:${dst.port}`, ...over };
      const { p, port } = await proxy(withEgress);
      const r = await exchange(port, Buffer.from('GET / HTTP/1.0\r\n\r\n'));
      expect(r.got.toString()).not.toContain('SECRET');
      expect(dst.conns()).toBe(0);
      expect(p.stats.refusals[reason as keyof typeof p.stats.refusals]).toBe(1);
      expect(p.stats.forwarded).toBe(0);
    });
  }

  it('a destination that cannot be reached: the client is reset, counted', async () => {
    const dead = await server(() => undefined);
    const port0 = dead.port;
    closers.splice(0).forEach((c) => void c()); /* closes that server: nothing listens on its port now */
    await new Promise((r) => setTimeout(r, 50));
    const { p, port } = await proxy({ egress: `127.0.0.1:${port0}` });
    const r = await exchange(port, Buffer.from('x'));
    expect(r.got.length).toBe(0);
    await new Promise((res) => setTimeout(res, 50));
    expect(p.stats.refusals['connect-failed']).toBe(1);
  });

  it('is bounded: past maxConnections a new connection is reset', async () => {
    const dst = await server(() => undefined); /* holds every connection open */
    const { p, port } = await proxy({ egress: `127.0.0.1:${dst.port}`, maxConnections: 2 });
    const held = [net.connect(port, '127.0.0.1')];
    closers.push(() => held.forEach((s) => s.destroy()));
    for (const s of held) s.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 200)); /* one client + its outside connection: 2 open */
    expect(p.stats.active).toBe(2);
    const r = await exchange(port, Buffer.from('x'));
    expect(r.got.length).toBe(0);
    expect(p.stats.refusals['too-many-connections']).toBe(1);
  });
});
