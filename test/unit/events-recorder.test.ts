/** The recorder (src/events/recorder.ts) between the decisions and the bus/edges, as the trap side drives it: the
 * router's refusals and denials, the generator-decided batches (applyDecided), the connection tracker's connections,
 * an unidentified accept, apps, services, members and exposures — with both identities and names. Also the per-edge
 * metrics (bounded labels) and the text form of `appswitch events`. */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { eventLine, parseTypes } from '../../src/cli/events.js';
import { DaemonMetrics, type HandlerCounters } from '../../src/daemon/metrics.js';
import { EventBus } from '../../src/events/bus.js';
import { EdgeStore } from '../../src/events/edges.js';
import { SeriesTable } from '../../src/events/edge-series.js';
import { type AppInfo, DecisionRecorder } from '../../src/events/recorder.js';
import type { AppswitchEvent } from '../../src/events/types.js';
import { ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { ConnectionTracker } from '../../src/trap/connections.js';
import { applyDecided } from '../../src/trap/decided.js';
import { RateLimitedLog } from '../../src/trap/limits.js';
import type { DecidedRecord } from '../../src/trap/decided-wire.js';
import type { HandlerStats } from '../../src/trap/handler.js';

const silent = pino({ level: 'silent' });

const web: AppRecord = { id: 'a1', identity: '10.0.0.7', ip: '10.0.0.7', name: 'web', tags: { zone: 'x' }, cmd: [], launcherPid: 1, uid: 0, startedAt: 0, secret: '' };
const lone: AppRecord = { id: 'a2', identity: '169.254.3.4', tags: { zone: 'y' }, cmd: [], launcherPid: 2, uid: 0, startedAt: 0, secret: '' };
const directory: Record<string, AppInfo> = {
  a1: { id: 'a1', node: 'n1', identity: '10.0.0.7', name: 'web' },
  a2: { id: 'a2', node: 'n1', identity: '169.254.3.4' },
};

function setUp(maxSeries = 200): { bus: EventBus; edges: EdgeStore; rec: DecisionRecorder } {
  const bus = new EventBus('n1');
  const serviceName = (vip: string): string | null => (vip === '10.0.0.5' ? 'api.shop' : null);
  const edges = new EdgeStore({
    client: (id) => {
      const a = directory[id];
      return a ? { app: a.id, name: a.name ?? null, identity: a.identity, node: a.node } : undefined;
    },
    serviceName,
    series: new SeriesTable(maxSeries),
  });
  const rec = new DecisionRecorder({ node: 'n1', bus, edges, app: (id) => directory[id], serviceName });
  return { bus, edges, rec };
}

async function drain(sub: { next(): Promise<AppswitchEvent[]> }): Promise<AppswitchEvent[]> {
  return sub.next();
}

describe('DecisionRecorder', () => {
  it('connects: allowed (from the tracker), refused and denied (from a generator batch), with identities and names', async () => {
    const { bus, edges, rec } = setUp();
    const sub = bus.subscribe();
    const tracker = new ConnectionTracker(() => ({ service: '10.0.0.5:8080', app: 's1', node: 'n1', vip: '10.0.0.5', port: 8080 }));
    tracker.observer = rec;
    tracker.connected({ identity: web.identity, appId: web.id }, { ip: '192.0.2.1', port: 50000 }, { ip: '192.0.2.1', port: 40001 }, 'fastpath', '9');
    const stats = { connects: 0, retried: 0, refused: 0, denied: 0, fastpathConnections: 0, tcpConnections: 0 } as unknown as HandlerStats;
    const table = new ServiceTable();
    const records: DecidedRecord[] = [
      { kind: 'tcp', retried: 0, local: { ip: '192.0.2.1', port: 50001 }, real: { ip: '192.0.2.1', port: 40001 }, virt: { ip: '10.0.0.5', port: 8080 }, pid: 5, inode: undefined, serverApp: undefined },
      { kind: 'no-service', retried: 0, local: { ip: '0.0.0.0', port: 0 }, real: { ip: '0.0.0.0', port: 0 }, virt: { ip: '10.0.0.5', port: 9999 }, pid: 5, inode: undefined, serverApp: undefined },
      { kind: 'denied', retried: 0, local: { ip: '0.0.0.0', port: 0 }, real: { ip: '0.0.0.0', port: 0 }, virt: { ip: '10.0.0.5', port: 8080 }, pid: 5, inode: undefined, serverApp: undefined },
    ];
    applyDecided({ stats, report: () => undefined, connections: tracker, log: silent, limitLog: new RateLimitedLog(silent), table, observer: rec }, lone, records);
    const got = await drain(sub);
    expect(got.map((e) => [e.type, e.client?.name ?? e.client?.identity, e.service?.name, `${e.service?.vip}:${e.service?.port}`, e.path ?? e.detail])).toEqual([
      ['connect.allowed', 'web', 'api.shop', '10.0.0.5:8080', 'fastpath'],
      ['connect.allowed', '169.254.3.4', 'api.shop', '10.0.0.5:8080', 'tcp'],
      ['connect.refused', '169.254.3.4', 'api.shop', '10.0.0.5:9999', 'no such service'],
      ['connect.denied', '169.254.3.4', 'api.shop', '10.0.0.5:8080', 'policy'],
    ]);
    expect(got[0]).toMatchObject({ client: { app: 'a1', name: 'web', identity: '10.0.0.7', node: 'n1' }, endpoint: '192.0.2.1:40001', node: 'n1' });
    const e = new Map(edges.views().edges.map((x) => [`${x.client.app}>${x.service.port}`, x]));
    expect(e.get('a1>8080')).toMatchObject({ connections: 1, fastpath: 1 });
    expect(e.get('a2>8080')).toMatchObject({ connections: 1, tcp: 1, denied: 1 });
    expect(e.get('a2>9999')).toMatchObject({ connections: 0, refused: 1 });
    sub.close();
  });

  it('counts edges with nobody subscribed, and builds no event', () => {
    const { bus, edges, rec } = setUp();
    rec.allowed('a1', '10.0.0.7', '10.0.0.5', 8080, 'tcp', '192.0.2.1:40001');
    rec.denied(web, '10.0.0.5', 8080);
    rec.refused(web, '10.0.0.5', 8080, 'all-refused');
    rec.unidentified(web, { ip: '192.0.2.9', port: 1234 }, undefined);
    expect(bus.emitted).toBe(0);
    expect(edges.views().edges[0]).toMatchObject({ connections: 1, denied: 1, refused: 1 });
  });

  it('accept.unidentified names the server side and the peer', async () => {
    const { bus, rec } = setUp();
    const sub = bus.subscribe({ app: 'web' });
    rec.unidentified(web, { ip: '192.0.2.9', port: 1234 }, { ip: '192.0.2.1', port: 40001 });
    const [e] = await drain(sub);
    expect(e).toMatchObject({ type: 'accept.unidentified', peer: '192.0.2.9:1234', service: { vip: '10.0.0.7', port: 0, name: 'web' } });
    expect(e?.client).toBeUndefined();
    sub.close();
    /* with the table's answer for the listener: the service it serves */
    const { bus: bus2, edges } = setUp();
    const rec2 = new DecisionRecorder({ node: 'n1', bus: bus2, edges, app: (id) => directory[id], serviceName: () => 'api.shop', serviceAt: (ep) => (ep === '192.0.2.1:40001' ? { vip: '10.0.0.5', port: 8080 } : undefined) });
    const sub2 = bus2.subscribe();
    rec2.unidentified(web, { ip: '192.0.2.9', port: 1234 }, { ip: '::ffff:192.0.2.1', port: 40001 });
    expect((await drain(sub2))[0]?.service).toEqual({ vip: '10.0.0.5', port: 8080, name: 'api.shop' });
    sub2.close();
  });

  it('apps, services and members', async () => {
    const { bus, rec } = setUp();
    const sub = bus.subscribe();
    rec.appStarted(directory.a1 as AppInfo);
    rec.serviceUp({ vip: '10.0.0.5', port: 8080, proto: 'tcp', name: 'api.shop', node: 'n2', appId: 's1', endpoint: { ip: '192.0.2.2', port: 40001 } });
    rec.serviceDown({ vip: '10.0.0.5', port: 8080, proto: 'tcp', node: 'n2', appId: 's1', endpoint: { ip: '192.0.2.2', port: 40001 } });
    rec.memberState({ name: 'n2', address: '192.0.2.2:7946', state: 'suspect', previous: 'alive' });
    rec.appEnded(directory.a2 as AppInfo);
    const got = await drain(sub);
    expect(got.map((e) => e.type)).toEqual(['app.started', 'service.up', 'service.down', 'member.state', 'app.ended']);
    expect(got[0]?.client).toEqual({ app: 'a1', name: 'web', identity: '10.0.0.7', node: 'n1' });
    expect(got[1]).toMatchObject({ service: { vip: '10.0.0.5', port: 8080, name: 'api.shop' }, detail: 'tcp instance 192.0.2.2:40001 on node n2 (app s1)' });
    expect(got[2]?.service?.name).toBeNull();
    expect(got[3]).toMatchObject({ member: { name: 'n2', address: '192.0.2.2:7946', state: 'suspect' }, detail: 'previously alive' });
    expect(got[4]?.client).toEqual({ app: 'a2', name: null, identity: '169.254.3.4', node: 'n1' });
    sub.close();
  });

  it('exposures: one event per exposure that appears, changes state or goes', async () => {
    const { bus, rec } = setUp();
    rec.exposures([{ vip: '10.0.0.5', port: 8080, hostPort: 8080, state: 'no-gateway' }]); /* before anyone listens: remembered */
    const sub = bus.subscribe();
    rec.exposures([{ vip: '10.0.0.5', port: 8080, hostPort: 8080, state: 'no-gateway' }]); /* no change */
    rec.exposures([
      { vip: '10.0.0.5', port: 8080, hostPort: 8080, state: 'active' },
      { vip: '10.0.0.6', port: 80, hostPort: 8081, state: 'conflict', detail: 'held by 10.0.0.5:8080' },
    ]);
    rec.exposures([{ vip: '10.0.0.6', port: 80, hostPort: 8081, state: 'conflict', detail: 'held by 10.0.0.5:8080' }]);
    const got = await drain(sub);
    expect(got.map((e) => `${e.service?.vip}:${e.service?.port} ${e.detail}`)).toEqual([
      '10.0.0.5:8080 host port 8080: active (was no-gateway)',
      '10.0.0.6:80 host port 8081: conflict: held by 10.0.0.5:8080',
      '10.0.0.5:8080 host port 8080: removed',
    ]);
    expect(got.every((e) => e.type === 'exposure.changed')).toBe(true);
    sub.close();
  });
});

describe('per-edge metrics', () => {
  const handler: HandlerCounters = { denied: 0, refused: 0, tcpConnections: 0, fastpathConnections: 0, daemonPortRefused: 0, limitServices: 0, limitOffers: 0, limitPending: 0 };

  it('labels by names (else identity, else vip:port), at most --metrics-max-series pairs, the rest under other', async () => {
    const { edges, rec } = setUp(2);
    const m = new DaemonMetrics({ handler: () => handler, services: () => ({ local: 0, remote: 0 }), apps: () => 0, gossip: () => undefined, openFds: () => 0, edges: () => edges.series() });
    rec.allowed('a1', '10.0.0.7', '10.0.0.5', 8080, 'tcp', 'x');
    rec.allowed('a1', '10.0.0.7', '10.0.0.5', 8080, 'fastpath', 'x');
    rec.refused(lone, '10.0.0.9', 81, 'no-service');
    rec.denied(lone, '10.0.0.9', 82); /* a third pair: other */
    rec.allowed('a2', '169.254.3.4', '10.0.0.9', 83, 'tcp', 'x'); /* a fourth: other */
    edges.setActive((visit) => visit('a1', '10.0.0.5:8080'));
    const text = await m.text();
    const lines = text.split('\n').filter((l) => l.startsWith('appswitch_edge_'));
    expect(lines).toEqual(
      expect.arrayContaining([
        'appswitch_edge_connections_total{client_app="web",service="api.shop"} 2',
        'appswitch_edge_connections_total{client_app="169.254.3.4",service="10.0.0.9:81"} 0',
        'appswitch_edge_connections_total{client_app="other",service="other"} 1',
        'appswitch_edge_refused_total{client_app="169.254.3.4",service="10.0.0.9:81"} 1',
        'appswitch_edge_denied_total{client_app="other",service="other"} 1',
        'appswitch_edge_active{client_app="web",service="api.shop"} 1',
      ]),
    );
    /* 3 series (2 + other) per metric, whatever comes later */
    for (let p = 100; p < 400; p++) rec.allowed('a1', '10.0.0.7', '10.0.1.1', p, 'tcp', 'x');
    const again = (await m.text()).split('\n').filter((l) => l.startsWith('appswitch_edge_connections_total'));
    expect(again).toHaveLength(3);
    expect(again).toContain('appswitch_edge_connections_total{client_app="other",service="other"} 301');
  });
});

describe('appswitch events text', () => {
  const base = { seq: 1, time: new Date(2026, 0, 1, 12, 0, 1, 234).toISOString(), node: 'n1' };
  it('one line per event, as in docs/events.md', () => {
    expect(
      eventLine({ ...base, type: 'connect.denied', client: { app: 'a1', name: 'web', identity: '10.0.0.7', node: 'n1' }, service: { vip: '10.0.0.5', port: 8080, name: 'api.shop' }, detail: 'policy' }),
    ).toBe('12:00:01.234 connect.denied  client web (10.0.0.7) -> api.shop 10.0.0.5:8080  policy');
    expect(
      eventLine({ ...base, type: 'connect.allowed', client: { app: 'a2', name: null, identity: '169.254.3.4', node: 'n1' }, service: { vip: 'fd00::5', port: 80, name: null }, path: 'tcp', endpoint: '[fd00::1]:40001' }),
    ).toBe('12:00:01.234 connect.allowed client 169.254.3.4 -> [fd00::5]:80  tcp [fd00::1]:40001');
    expect(eventLine({ ...base, type: 'events.lost', lost: 12 })).toBe('12:00:01.234 events.lost     12 event(s) lost: this reader was too slow');
    expect(eventLine({ ...base, type: 'member.state', member: { name: 'n2\nx', address: '192.0.2.2:7946', state: 'dead' }, detail: 'previously suspect' })).toBe(
      '12:00:01.234 member.state    member n2 x 192.0.2.2:7946 dead  previously suspect',
    );
  });

  it('--type takes known types, repeated or comma-separated', () => {
    expect(parseTypes(['connect.denied,connect.refused', 'app.started'])).toEqual(['connect.denied', 'connect.refused', 'app.started']);
    expect(() => parseTypes(['connect.maybe'])).toThrow(/not an event type/);
  });
});
