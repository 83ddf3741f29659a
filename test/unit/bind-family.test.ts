/** Issue 11 items 1-2 on the trap handler, with no sockets: the kernel's bind conflict rules across address families
 * (port-space.ts), each client family reaching the app's socket of its family (table/family.ts), and a closed
 * listener's port bound again at once (HandlerConfig.listenerGone). */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { handlerConfig } from '../helpers/handler-config.js';
import { Errno } from '../../src/errors.js';
import { listenerGone } from '../../src/daemon/listener-diag.js';
import { decodeRemoteEntry } from '../../src/daemon/gossip-records.js';
import { VirtualRanges } from '../../src/table/addresses.js';
import { preferFamily } from '../../src/table/family.js';
import { type ServiceEntry, ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { type HandlerConfig, TrapHandler } from '../../src/trap/handler.js';
import { collides } from '../../src/trap/port-space.js';
import { AF_INET6, decodeSockaddr, encodeSockaddr, MsgFlag, MsgType, SOCK_DGRAM, SOCK_STREAM } from '../../src/trap/protocol.js';
import { request } from '../helpers/trap-request.js';

function setup(over: Partial<HandlerConfig> = {}, ip = '10.0.0.5'): { h: TrapHandler; table: ServiceTable; app: AppRecord } {
  const table = new ServiceTable();
  const h = new TrapHandler(handlerConfig(table, { ranges: new VirtualRanges(['10.0.0.0/8', 'fd00:a5::/64']), ...over }));
  const app = h.hello({ ip, tags: {}, cmd: ['x'] }, 1, 0);
  if (typeof app === 'string') throw new Error(app);
  return { h, table, app };
}

let seq = 0;
let ino = 100;

/** bind + bound (+ listen for TCP) as the generator sends them; returns the bind's result and the real endpoint. */
function serve(h: TrapHandler, app: AppRecord, opts: { v6?: boolean; v6only?: boolean; port?: number; type?: number; listen?: boolean }): { result: number; real?: { ip: string; port: number }; ino: string } {
  const v6 = opts.v6 ?? false;
  const addr = encodeSockaddr({ ip: v6 ? '::' : '0.0.0.0', port: opts.port ?? 6379 }, v6 ? AF_INET6 : undefined);
  const m = request('bind', { type: MsgType.BIND, seq: ++seq, arg: opts.type ?? SOCK_STREAM, addr, flags: opts.v6only ? MsgFlag.V6ONLY : 0 });
  const r = h.bind(app, m);
  const myIno = String(++ino);
  if (r.result < 0 || !r.addr) return { result: r.result, ino: myIno };
  const real = decodeSockaddr(r.addr)!;
  h.bound(app, request('bound', { type: MsgType.BOUND, seq: 0, cookie: BigInt(myIno), addr: r.addr }));
  if (opts.listen !== false && (opts.type ?? SOCK_STREAM) === SOCK_STREAM) {
    expect(h.listen(app, request('listen', { type: MsgType.LISTEN, seq: ++seq, cookie: BigInt(myIno), addr: r.addr })).result).toBe(0);
  }
  return { result: r.result, real, ino: myIno };
}

function connect(h: TrapHandler, app: AppRecord, ip: string, port: number): { ip: string; port: number } | undefined {
  const m = request('connect', { type: MsgType.CONNECT, seq: ++seq, arg: SOCK_STREAM, addr: encodeSockaddr({ ip, port }, ip.includes(':') ? AF_INET6 : undefined) });
  const r = h.connect(app, m);
  return r.addr ? decodeSockaddr(r.addr) : undefined;
}

describe('port space across address families (the kernel\'s bind conflicts)', () => {
  it('AF_INET and AF_INET6 with IPV6_V6ONLY share a port; any other pair of one protocol collides', () => {
    const tcp4 = { proto: 'tcp' as const, port: 80, family: 4 as const };
    expect(collides(tcp4, { proto: 'tcp', port: 80, family: 6, v6only: true })).toBe(false);
    expect(collides(tcp4, { proto: 'tcp', port: 80, family: 6, v6only: false })).toBe(true);
    expect(collides(tcp4, tcp4)).toBe(true);
    expect(collides({ proto: 'tcp', port: 80, family: 6, v6only: true }, { proto: 'tcp', port: 80, family: 6, v6only: true })).toBe(true);
    expect(collides(tcp4, { proto: 'udp', port: 80, family: 4 })).toBe(false);
    expect(collides(tcp4, { proto: 'tcp', port: 81, family: 4 })).toBe(false);
    expect(collides({ proto: 'tcp', port: 80 }, { proto: 'tcp', port: 80, family: 6, v6only: true })).toBe(true); /* saved by an older daemon */
  });

  it('a dual-stack server binds both sockets (redis `bind * -::*`), a second socket of one family gets EADDRINUSE', () => {
    const { h, app } = setup();
    expect(serve(h, app, { v6: false }).result).toBe(0);
    expect(serve(h, app, { v6: true, v6only: true }).result).toBe(0);
    expect(serve(h, app, { v6: true, v6only: true }).result).toBe(-Errno.EADDRINUSE);
    expect(serve(h, app, { v6: false }).result).toBe(-Errno.EADDRINUSE);
    const { h: h2, app: app2 } = setup();
    expect(serve(h2, app2, { v6: false }).result).toBe(0);
    expect(serve(h2, app2, { v6: true, v6only: false }).result).toBe(-Errno.EADDRINUSE); /* dual-stack [::] takes IPv4 too */
    const { h: h3, app: app3 } = setup();
    expect(serve(h3, app3, { v6: false, type: SOCK_DGRAM }).result).toBe(0);
    expect(serve(h3, app3, { v6: true, v6only: true, type: SOCK_DGRAM }).result).toBe(0);
  });

  it('each client reaches the socket of its own family; a V6ONLY socket alone serves the IPv4 vip', () => {
    const { h, app } = setup();
    const v4 = serve(h, app, { v6: false });
    const v6 = serve(h, app, { v6: true, v6only: true });
    for (let i = 0; i < 6; i++) expect(connect(h, app, '10.0.0.5', 6379)).toEqual(v4.real);
    expect(connect(h, app, '::1', 6379)).toEqual(v6.real); /* its own port space over IPv6 loopback */
    expect(connect(h, app, '127.0.0.1', 6379)).toEqual(v4.real);
    const { h: h6, app: app6 } = setup({}, 'fd00:a5::6');
    const a = serve(h6, app6, { v6: false });
    const b = serve(h6, app6, { v6: true, v6only: true });
    for (let i = 0; i < 6; i++) expect(connect(h6, app6, 'fd00:a5::6', 6379)).toEqual(b.real);
    expect(a.real).toBeDefined();
    const { h: only, app: appOnly } = setup({}, '10.0.0.7');
    const o = serve(only, appOnly, { v6: true, v6only: true });
    expect(connect(only, appOnly, '10.0.0.7', 6379)).toEqual(o.real);
  });

  it('preferFamily keeps every instance of apps that listen on one family only, and entries of unknown family', () => {
    const e = (app: string, port: number, family?: 4 | 6): ServiceEntry => ({
      id: `n/${app}/${port}`, vip: '10.0.0.5', port: 80, proto: 'tcp', node: 'n', endpoint: { ip: '192.0.2.1', port }, appId: app, tags: {}, version: 1, ...(family ? { family } : {}),
    });
    const list = [e('a', 1, 4), e('a', 2, 6), e('b', 3, 6), e('c', 4)];
    expect(preferFamily(list, 4).map((x) => x.endpoint.port)).toEqual([1, 3, 4]);
    expect(preferFamily(list, 6).map((x) => x.endpoint.port)).toEqual([2, 3, 4]);
    const one = [e('a', 1, 4)];
    expect(preferFamily(one, 6)).toBe(one);
  });

  it('a service entry\'s family travels in gossip and is validated', () => {
    const ctx = { address: '192.0.2.8', record: { ports: { low: 40000, high: 60000 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53, metricsPort: 0 }, ranges: new VirtualRanges(['10.0.0.0/8']) };
    const base = { id: 'n2/a/1', vip: '10.0.0.5', port: 80, proto: 'tcp', appId: 'a', endpoint: { ip: '192.0.2.8', port: 40001 }, tags: {}, version: 1 };
    const ok = decodeRemoteEntry('n2', 'n2/a/1', Buffer.from(JSON.stringify({ ...base, family: 6 })), ctx as never);
    expect(ok.ok && ok.value.family).toBe(6);
    const odd = decodeRemoteEntry('n2', 'n2/a/1', Buffer.from(JSON.stringify({ ...base, family: 'x' })), ctx as never);
    expect(odd.ok && odd.value.family).toBeUndefined();
  });
});

describe('a listener closed and its port bound again (iperf3 -s)', () => {
  it('binds again at once when the kernel has no listener at the old real endpoint, and not while it has', () => {
    const live = new Set<string>();
    const { h, app, table } = setup({ listenerGone: (real) => !live.has(`${real.ip}:${real.port}`) });
    const first = serve(h, app, { v6: false, port: 5201 });
    live.add(`${first.real!.ip}:${first.real!.port}`);
    expect(serve(h, app, { v6: false, port: 5201 }).result).toBe(-Errno.EADDRINUSE); /* still listening */
    live.clear(); /* the program closed it; no sweep has run */
    const second = serve(h, app, { v6: false, port: 5201 });
    expect(second.result).toBe(0);
    const instances = table.lookup({ vip: '10.0.0.5', port: 5201, proto: 'tcp' });
    expect(instances.map((e) => e.endpoint)).toEqual([second.real]); /* the old entry is gone, not shadowing */
    expect(h.bindingCount()).toBe(1);
  });

  it('without a kernel answer (lookup failed) the port stays taken', () => {
    const { h, app } = setup({ listenerGone: listenerGone(pino({ level: 'silent' }), () => { throw Object.assign(new Error('x'), { code: 'EMFILE' }); }) });
    expect(serve(h, app, { v6: false, port: 5202 }).result).toBe(0);
    expect(serve(h, app, { v6: false, port: 5202 }).result).toBe(-Errno.EADDRINUSE);
  });

  it('listenerGone asks for the listener at the real endpoint, IPv4 then v4-mapped', () => {
    const asked: string[] = [];
    const gone = listenerGone(pino({ level: 'silent' }), (src, sport, dst, dport) => {
      asked.push(`${src}:${sport}>${dst}:${dport}`);
      return src.startsWith('::ffff:') ? { state: 10 } : null;
    });
    expect(gone({ ip: '192.0.2.1', port: 40001 })).toBe(false);
    expect(asked).toEqual(['192.0.2.1:40001>0.0.0.0:0', '::ffff:192.0.2.1:40001>:::0']);
    expect(listenerGone(pino({ level: 'silent' }), () => null)({ ip: '192.0.2.1', port: 1 })).toBe(true);
    expect(listenerGone(pino({ level: 'silent' }), () => ({ state: 1 }))({ ip: '192.0.2.1', port: 1 })).toBe(true); /* not a listener */
  });
});
