/** The daemon's side of UDP identities (src/trap/udp-identity.ts and its handler hooks), with fakes for the other
 * node's daemon: who sent from a real endpoint, the way back to it, what is unidentified, and the local-host
 * datagram connect of issue 11 item 9. The real programs are in test/integration/udp-identity.test.ts. */
import { describe, expect, it } from 'vitest';
import { Errno } from '../../src/errors.js';
import { ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { type PeerResolver, TrapHandler } from '../../src/trap/handler.js';
import { decodeSockaddr, encodeSockaddr, MsgFlag, MsgType, SOCK_DGRAM } from '../../src/trap/protocol.js';
import { request } from '../helpers/trap-request.js';
import { UdpIdentity } from '../../src/trap/udp-identity.js';
import { handlerConfig } from '../helpers/handler-config.js';


function setup(resolvePeer?: PeerResolver): { h: TrapHandler; a: AppRecord; b: AppRecord } {
  const h = new TrapHandler(handlerConfig(new ServiceTable(), resolvePeer ? { resolvePeer } : {}));
  const a = h.hello({ ip: '10.0.0.1', tags: {}, cmd: ['server'] }, 1, 0);
  const b = h.hello({ ip: '10.0.0.2', tags: { t: '1' }, cmd: ['client'] }, 2, 0);
  if (typeof a === 'string' || typeof b === 'string') throw new Error('hello failed');
  return { h, a, b };
}

const who = (h: TrapHandler, app: AppRecord, ip: string, port: number) =>
  h.udpWho(app, request('udpWho', { type: MsgType.UDP_WHO, seq: 0x80000001, addr: encodeSockaddr({ ip, port }), addr2: encodeSockaddr({ ip: '192.0.2.1', port: 40001 }) }));

const send = (h: TrapHandler, app: AppRecord, ip: string, port: number) =>
  h.connect(app, request('connect', { type: MsgType.CONNECT, seq: 5, arg: SOCK_DGRAM, addr: encodeSockaddr({ ip, port }) }));

describe('UDP senders on this node', () => {
  it('a reported socket is its app (real port); a bound one shows its virtual port; the sender gets a way back', async () => {
    const { h, a, b } = setup();
    h.udpFrom(b, request('udpFrom', { type: MsgType.UDP_FROM, addr: encodeSockaddr({ ip: '0.0.0.0', port: 51000 }), cookie: 77n }));
    const r = await who(h, a, '192.0.2.1', 51000);
    expect(r.result).toBe(0);
    expect(decodeSockaddr(r.addr as Buffer)).toEqual({ ip: '10.0.0.2', port: 51000 });
    /* the server's reply to 10.0.0.2:51000 goes to the real endpoint, marked as a sender's (not a service's) */
    const back = send(h, a, '10.0.0.2', 51000);
    expect(back.result).toBe(0);
    expect(decodeSockaddr(back.addr as Buffer)).toEqual({ ip: '192.0.2.1', port: 51000 });
    expect((back.flags ?? 0) & MsgFlag.UDP_PEER).toBe(MsgFlag.UDP_PEER);
    /* another app was told nothing: the identity is a vip without a service for it */
    const c = h.hello({ ip: '10.0.0.3', tags: {}, cmd: ['x'] }, 3, 0) as AppRecord;
    expect(send(h, c, '10.0.0.2', 51000).result).toBe(-Errno.ECONNREFUSED);

    const plan = h.bind(b, request('bind', { type: MsgType.BIND, seq: 9, arg: SOCK_DGRAM, addr: encodeSockaddr({ ip: '0.0.0.0', port: 6001 }) }));
    const real = decodeSockaddr(plan.addr as Buffer) as { ip: string; port: number };
    h.bound(b, request('bound', { type: MsgType.BOUND, addr: plan.addr as Buffer, cookie: 78n }));
    const rb = await who(h, a, real.ip, real.port);
    expect(decodeSockaddr(rb.addr as Buffer)).toEqual({ ip: '10.0.0.2', port: 6001 });
  });

  it('an unknown local sender is unidentified after a short wait, counted; a report that arrives meanwhile answers it', async () => {
    const { h, a, b } = setup();
    const t = Date.now();
    const r = await who(h, a, '192.0.2.1', 52000);
    expect(r.result).toBe(-Errno.ENOENT);
    expect(Date.now() - t).toBeGreaterThanOrEqual(50);
    expect(h.stats.udpUnidentified).toBe(1);
    const pending = who(h, a, '192.0.2.1', 52001);
    h.udpFrom(b, request('udpFrom', { type: MsgType.UDP_FROM, addr: encodeSockaddr({ ip: '192.0.2.1', port: 52001 }), cookie: 79n }));
    expect(decodeSockaddr((await pending).addr as Buffer)).toEqual({ ip: '10.0.0.2', port: 52001 });
  });

  it('reports of closed sockets and of ended apps are forgotten', () => {
    const ids = new UdpIdentity({ app: () => ({ identity: '10.0.0.2', tags: {} }), boundAt: () => undefined });
    ids.report('b', '192.0.2.1:1', '100');
    ids.report('b', '192.0.2.1:2', '101');
    ids.report('c', '192.0.2.1:3', '102');
    ids.sweep(new Set(['101', '102']), Date.now() + 1);
    expect(ids.local('192.0.2.1:1')).toBeUndefined();
    expect(ids.local('192.0.2.1:2')?.port).toBe(2);
    ids.sweep(new Set(), 0); /* reports newer than the snapshot stay */
    expect(ids.local('192.0.2.1:2')).toBeDefined();
    ids.learn('b', { ip: '10.0.0.9', port: 9 }, { ip: '192.0.2.7', port: 40009 });
    ids.forgetApp('b');
    expect(ids.local('192.0.2.1:2')).toBeUndefined();
    expect(ids.returnPath('b', { ip: '10.0.0.9', port: 9 })).toBeUndefined();
    expect(ids.local('192.0.2.1:3')).toBeDefined();
  });
});

describe('UDP senders on other nodes', () => {
  it('asks the sender\'s node (proto udp) and shows the port it answers; a node that does not know means unidentified', async () => {
    const asked: Array<[string, string, string | undefined, string | undefined]> = [];
    const resolver: PeerResolver = (ip, endpoint, dst, proto) => {
      asked.push([ip, endpoint, dst, proto]);
      return Promise.resolve(endpoint === '192.0.2.9:45000' ? { identity: '10.0.9.9', appId: 'x', tags: {}, port: 7000 } : undefined);
    };
    const { h, a } = setup(resolver);
    const r = await who(h, a, '192.0.2.9', 45000);
    expect(decodeSockaddr(r.addr as Buffer)).toEqual({ ip: '10.0.9.9', port: 7000 });
    expect(asked[0]).toEqual(['192.0.2.9', '192.0.2.9:45000', '192.0.2.1:40001', 'udp']);
    expect(decodeSockaddr(send(h, a, '10.0.9.9', 7000).addr as Buffer)).toEqual({ ip: '192.0.2.9', port: 45000 });
    expect((await who(h, a, '192.0.2.9', 45001)).result).toBe(-Errno.ENOENT);
  });
});

describe('datagrams to the local host (issue 11 item 9)', () => {
  it('a UDP connect to [::], 0.0.0.0 or 127.0.0.1 with no such service is answered NOWHERE (the generator: success, unconnected), not refused', () => {
    const { h, a } = setup();
    for (const ip of ['::', '0.0.0.0', '127.0.0.1', '::1']) {
      const r = send(h, a, ip, 8000);
      expect(r.result, ip).toBe(0);
      expect(r.flags, ip).toBe(MsgFlag.NOWHERE);
      expect(r.addr, ip).toBeUndefined();
    }
    expect(h.stats.refused).toBe(0);
    /* TCP is refused as before, and a vip without a UDP service too */
    expect(h.connect(a, request('connect', { type: MsgType.CONNECT, seq: 6, arg: 1, addr: encodeSockaddr({ ip: '::', port: 8000 }) })).result).toBe(-Errno.ECONNREFUSED);
    expect(send(h, a, '10.0.0.77', 8000).result).toBe(-Errno.ECONNREFUSED);
  });
});
