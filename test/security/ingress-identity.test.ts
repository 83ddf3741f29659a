/** Attacks on the external client identity (docs/ingress.md): an accept takes a client as "external" only when the
 * service it reached is exposed now and the node that answered for the client is a live gateway — this node's own
 * gateway, or another member marked `gateway` through the peer API. A member that is no gateway, a gateway that is
 * dead, a service that is not exposed, a node that is no gateway recording an external client for itself: each is
 * refused as unidentified, counted (externalRefused) and logged. Gossip records that would make a node a gateway or
 * expose a port are decoded strictly. */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { APP_PREFIX, decodeNodeRecord, decodeRemoteApp } from '../../src/daemon/gossip-records.js';
import { type GatewayNode, Ingress } from '../../src/gateway/ingress.js';
import { VirtualRanges } from '../../src/table/addresses.js';
import { AppDirectory } from '../../src/table/directory.js';
import { ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import type { ClientIdentity, ClientSocketOrigin } from '../../src/trap/client-reports.js';
import { TrapHandler } from '../../src/trap/handler.js';
import { decodeSockaddr, MsgFlag } from '../../src/trap/protocol.js';
import { handlerConfig } from '../helpers/handler-config.js';

const OUTSIDE: ClientIdentity = { identity: '203.0.113.7', port: 5555, appId: 'external', tags: {}, external: true };

function setup(opts: { selfGateway?: boolean; gateways?: GatewayNode[]; answer?: ClientIdentity; origin?: ClientSocketOrigin } = {}) {
  const table = new ServiceTable();
  const directory = new AppDirectory();
  const gateways = opts.gateways ?? [{ node: 'gw', address: '192.0.2.9', alive: true }];
  let ingress: Ingress | undefined;
  const h = new TrapHandler(
    handlerConfig(table, {
      directory,
      resolvePeer: () => Promise.resolve(opts.answer ?? OUTSIDE),
      externalCheck: (_app, listener, via) => ingress?.checkExternal(listener, via),
      identityWaitMs: 20,
      relayHere: opts.selfGateway ?? false,
      clientSocketOrigin: () => opts.origin,
    }),
  );
  ingress = new Ingress({
    nodeName: 'self',
    gateway: opts.selfGateway ?? false,
    listenAddress: '0.0.0.0',
    directory,
    table,
    gateways: () => gateways,
    reserved: () => ({ pool: { low: 40000, high: 40010 }, daemon: [7946, 7947, 53] }),
    log: pino({ level: 'silent' }),
  });
  const app = h.hello({ ip: '10.0.0.80', tags: {}, cmd: ['web'], expose: [{ port: 80, hostPort: 8080 }] }, 1, 0) as AppRecord;
  if (typeof app === 'string') throw new Error(app);
  const svc = (port: number, real: number): void => {
    table.upsert({ id: `self/${app.id}/${real}`, vip: '10.0.0.80', port, proto: 'tcp', node: 'self', endpoint: { ip: '192.0.2.1', port: real }, appId: app.id, tags: {}, version: 1 });
  };
  svc(80, 40001);
  svc(81, 40002);
  return { h, app, ingress };
}

const accept = (h: TrapHandler, app: AppRecord, peer: { ip: string; port: number }, listenerPort: number) =>
  h.accept(app, { kind: 'accept', peer, listener: { ip: '192.0.2.1', port: listenerPort } });

describe('external client identities at accept', () => {
  it('accepted from a live gateway member for an exposed service: the program sees the outside client', async () => {
    const { h, app } = setup();
    const r = await accept(h, app, { ip: '192.0.2.9', port: 41000 }, 40001);
    expect(r.result).toBe(0);
    expect(decodeSockaddr(r.addr as Buffer)).toEqual({ ip: '203.0.113.7', port: 5555 });
    expect(h.stats.externalRefused).toBe(0);
  });

  it('refused when the answering member is no gateway (it would pass any client off as external)', async () => {
    const { h, app } = setup();
    const r = await accept(h, app, { ip: '192.0.2.5', port: 41000 }, 40001);
    expect(r.result).toBeLessThan(0);
    expect(h.stats.externalRefused).toBe(1);
  });

  it('refused when the gateway is not alive', async () => {
    const { h, app } = setup({ gateways: [{ node: 'gw', address: '192.0.2.9', alive: false }] });
    expect((await accept(h, app, { ip: '192.0.2.9', port: 41000 }, 40001)).result).toBeLessThan(0);
    expect(h.stats.externalRefused).toBe(1);
  });

  it('refused for a port of the app that is not exposed, even from a live gateway', async () => {
    const { h, app } = setup();
    expect((await accept(h, app, { ip: '192.0.2.9', port: 41000 }, 40002)).result).toBeLessThan(0);
    expect(h.stats.externalRefused).toBe(1);
  });

  it('refused once the exposure is gone (the app record no longer exposes it)', async () => {
    const { h, app, ingress } = setup();
    expect((await accept(h, app, { ip: '192.0.2.9', port: 41000 }, 40001)).result).toBe(0);
    (ingress as unknown as { deps: { directory: AppDirectory } }).deps.directory.remove(app.id);
    expect((await accept(h, app, { ip: '192.0.2.9', port: 41001 }, 40001)).result).toBeLessThan(0);
  });

  it('on this node: a socket no generator made (the relay\'s) is taken for a relayed outside client only when this node is a gateway, and only for an exposed port', async () => {
    for (const selfGateway of [true, false]) {
      const { h, app } = setup({ selfGateway, origin: 'other' });
      const r = await accept(h, app, { ip: '192.0.2.1', port: 33333 }, 40001);
      if (selfGateway) {
        /* the generator must find a preamble that checks, which names the client (native/gen_preamble.c) */
        expect(r.result).toBe(0);
        expect(r.flags).toBe(MsgFlag.RELAYED);
        expect((await accept(h, app, { ip: '192.0.2.1', port: 33334 }, 40002)).result).toBeLessThan(0);
        expect(h.stats.externalRefused).toBe(1);
      } else {
        expect(r.result).toBeLessThan(0);
        expect(h.stats.unidentified).toBe(1);
      }
    }
  });

  it('on this node: a socket a generator made, or one gone without a report, is not taken for a relayed one off a gateway', async () => {
    for (const origin of ['generator', 'gone'] as const) {
      const { h, app } = setup({ selfGateway: false, origin });
      expect((await accept(h, app, { ip: '192.0.2.1', port: 33335 }, 40001)).result).toBeLessThan(0);
    }
    const { h, app } = setup({ selfGateway: true, origin: 'generator' }); /* its report comes, or nobody vouches */
    expect((await accept(h, app, { ip: '192.0.2.1', port: 33336 }, 40001)).result).toBeLessThan(0);
  });

  it('a gateway\'s "relayed" answer through the peer API: the generator is told to check the preamble', async () => {
    const { h, app } = setup({ answer: { ...OUTSIDE, identity: '192.0.2.9', port: 41000, relayed: true } });
    const r = await accept(h, app, { ip: '192.0.2.9', port: 41000 }, 40001);
    expect(r.result).toBe(0);
    expect(r.flags).toBe(MsgFlag.RELAYED);
    const off = await accept(h, app, { ip: '192.0.2.9', port: 41001 }, 40002); /* not exposed: refused all the same */
    expect(off.result).toBeLessThan(0);
  });

  it('an app identity answered by a gateway is not taken for an external one (no external flag: its own identity)', async () => {
    const { h, app } = setup({ answer: { identity: '10.0.0.9', appId: 'x', tags: {} } });
    const r = await accept(h, app, { ip: '192.0.2.5', port: 41000 }, 40002);
    expect(r.result).toBe(0);
    expect(decodeSockaddr(r.addr as Buffer)).toEqual({ ip: '10.0.0.9', port: 41000 });
  });
});

describe('gossip records that carry gateway and exposures', () => {
  const ranges = new VirtualRanges(['10.0.0.0/8']);
  const rec = (o: object): Uint8Array => Buffer.from(JSON.stringify(o));
  const node = { ports: { low: 40000, high: 60000 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53 };

  it('a node record: gateway must be a boolean', () => {
    expect(decodeNodeRecord(rec({ ...node, gateway: true }))).toMatchObject({ ok: true, value: { gateway: true } });
    expect(decodeNodeRecord(rec({ ...node, gateway: 'yes' }))).toMatchObject({ ok: false });
    expect(decodeNodeRecord(rec(node))).toEqual({ ok: true, value: node });
  });

  it('an app record: a malformed expose list or one without its time is refused', () => {
    const app = { id: 'a1', identity: '10.0.0.5', vip: true, tags: {} };
    const ok = decodeRemoteApp('n', `${APP_PREFIX}a1`, rec({ ...app, expose: [{ port: 80, hostPort: 8080 }], exposedAt: 5 }), ranges, () => false);
    expect(ok).toMatchObject({ ok: true, value: { expose: [{ port: 80, hostPort: 8080 }], exposedAt: 5 } });
    for (const bad of [{ expose: [{ port: 80, hostPort: 70000 }], exposedAt: 5 }, { expose: 'x', exposedAt: 5 }, { expose: [{ port: 80, hostPort: 8080 }] }]) {
      expect(decodeRemoteApp('n', `${APP_PREFIX}a1`, rec({ ...app, ...bad }), ranges, () => false)).toMatchObject({ ok: false });
    }
  });
});
