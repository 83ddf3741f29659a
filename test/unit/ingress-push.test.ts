/** gateway/ingress-push.ts: what the instance's daemon believes of a gateway's push, and the gateway's batching. */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { IngressPusher, PushedClients, type PushRecord } from '../../src/gateway/ingress-push.js';
import type { Endpoint } from '../../src/table/endpoint.js';

const GW = '192.0.2.1';
const OTHER = '192.0.2.3';
const INST: Endpoint = { ip: '192.0.2.2', port: 40001 };
const CLOSED: Endpoint = { ip: '192.0.2.2', port: 40002 };

function judge(): { p: PushedClients; put: PushRecord[]; taken: Array<[Endpoint, Endpoint]> } {
  const put: PushRecord[] = [];
  const taken: Array<[Endpoint, Endpoint]> = [];
  const p = new PushedClients({
    liveGateway: (ip) => ip === GW,
    exposedHere: (to) => to.ip === INST.ip && to.port === INST.port,
    putEntry: (r) => (put.push(r), true),
    takeEntry: (from, to) => void taken.push([from, to]),
    log: pino({ level: 'silent' }),
  });
  return { p, put, taken };
}

const rec = (fromIp: string, fromPort: number, to: Endpoint, clientPort = 5000): PushRecord => ({ from: { ip: fromIp, port: fromPort }, to, client: { ip: '198.51.100.10', port: clientPort } });

describe('PushedClients', () => {
  it('believes a live gateway about its own sockets to an exposed endpoint: the table entry, and the daemon\'s answer', async () => {
    const { p, put, taken } = judge();
    p.receive(GW, [rec(GW, 41000, INST)]);
    expect(put).toHaveLength(1);
    expect(p.accepted).toBe(1);
    const who = await p.claim({ ip: GW, port: 41000 }, INST);
    expect(who).toMatchObject({ identity: '198.51.100.10', port: 5000, external: true, appId: 'external' });
    expect(taken).toEqual([[{ ip: GW, port: 41000 }, INST]]); /* the table's entry is used up with it */
  });

  it('refuses a member that is not a live gateway, another host\'s socket, and a port that is not exposed', () => {
    const { p, put } = judge();
    p.receive(OTHER, [rec(OTHER, 41000, INST)]);
    p.receive(GW, [rec(OTHER, 41001, INST), rec(GW, 41002, CLOSED)]);
    expect(put).toHaveLength(0);
    expect(p.accepted).toBe(0);
    expect(p.refused).toMatchObject({ 'not-a-gateway': 1, 'not-its-socket': 1, 'not-exposed': 1 });
  });

  it('an accept of a gateway that never pushed is asked of the gateway at once', async () => {
    const { p } = judge();
    const t0 = Date.now();
    expect(await p.claim({ ip: GW, port: 41000 }, INST)).toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(20);
  });

  it('a push that comes after its accept was answered without it is dropped (no entry outlives its connection)', async () => {
    const { p, put } = judge();
    p.receive(GW, [rec(GW, 41000, INST)]); /* the gateway pushes */
    await p.claim({ ip: GW, port: 41000 }, INST);
    expect(await p.claim({ ip: GW, port: 41003 }, INST)).toBeUndefined(); /* waited, then asked the gateway */
    p.receive(GW, [rec(GW, 41003, INST)]);
    expect(put).toHaveLength(1);
  });

  it('the generator\'s claim (AS_CLAIMED) takes the record for the connection tracker', () => {
    const { p } = judge();
    p.receive(GW, [rec(GW, 41000, INST, 6000)]);
    const x = p.claimed({ ip: GW, port: 41000 });
    expect(x?.who).toMatchObject({ identity: '198.51.100.10', port: 6000, external: true });
    expect(x?.to).toEqual(INST);
    expect(p.claimed({ ip: GW, port: 41000 })).toBeUndefined();
  });
});

describe('IngressPusher', () => {
  it('sends the records of one turn to each remote node in one batch, nothing for this node', async () => {
    const sent: Array<[string, number]> = [];
    const pusher = new IngressPusher({ isRemoteMember: (ip) => ip !== '192.0.2.1', send: (ip, r) => void sent.push([ip, r.length]) });
    pusher.add({ ip: GW, port: 1 }, { ip: '198.51.100.10', port: 2 }, INST);
    pusher.add({ ip: GW, port: 3 }, { ip: '198.51.100.10', port: 4 }, INST);
    pusher.add({ ip: GW, port: 5 }, { ip: '198.51.100.10', port: 6 }, { ip: '192.0.2.4', port: 40001 });
    pusher.add({ ip: GW, port: 7 }, { ip: '198.51.100.10', port: 8 }, { ip: '192.0.2.1', port: 40001 });
    expect(sent).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(sent).toEqual([['192.0.2.2', 2], ['192.0.2.4', 1]]);
    expect(pusher.pushed).toBe(3);
  });
});
