/** Virtual services without a network: the body's checks, backend text, the service-table entries they become, the
 * decision table's flags for them, and that their connections keep no client report. */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { defaultPolicy } from '../../src/policy/policy.js';
import { VirtualRanges } from '../../src/table/addresses.js';
import { ClusterObjects } from '../../src/table/cluster-objects.js';
import { ServiceTable } from '../../src/table/service-table.js';
import { compileDecisions, DT } from '../../src/trap/decision-table.js';
import { ClientIdentities } from '../../src/trap/client-identities.js';
import { ClientReports } from '../../src/trap/client-reports.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { badVserviceName, formatBackend, parseBackend, VSERVICE_KIND, VSERVICE_NODE, vserviceValidator } from '../../src/vservice/body.js';
import { VserviceSync } from '../../src/vservice/table-sync.js';

const ranges = new VirtualRanges(['10.0.0.0/8']);
const log = pino({ level: 'silent' });
const body = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  vip: '10.0.0.50',
  port: 80,
  proto: 'tcp',
  backends: [
    { ip: '198.51.100.10', port: 8080 },
    { ip: '2001:db8::1', port: 5432 },
  ],
  tags: { grp: 'db' },
  ...over,
});

describe('vservice body', () => {
  const check = vserviceValidator(ranges);

  it('parses backends as ADDR:PORT and [IPV6]:PORT, canonical', () => {
    expect(parseBackend('198.51.100.10:8080')).toEqual({ ip: '198.51.100.10', port: 8080 });
    expect(parseBackend('[2001:DB8:0::1]:443')).toEqual({ ip: '2001:db8::1', port: 443 });
    expect(formatBackend({ ip: '2001:db8::1', port: 443 })).toBe('[2001:db8::1]:443');
    for (const bad of ['2001:db8::1:443', '[198.51.100.1]:80', '198.51.100.1', 'host:80', '1.2.3:80', '198.51.100.1:70000', '198.51.100.1:0', '[::1]:', ':80', '01.2.3.4:80']) {
      expect(typeof parseBackend(bad), bad).toBe('string');
    }
  });

  it('accepts a good body and refuses every bad field (a copy from gossip or the file)', () => {
    expect(check(body())).toEqual(body());
    expect(check(body({ vip: '::ffff:10.0.0.50' }))).toMatchObject({ vip: '10.0.0.50' });
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [body({ vip: '192.0.2.1' }), /outside the virtual ranges/],
      [body({ vip: '10.255.255.255' }), /broadcast address/],
      [body({ vip: 'x' }), /vip is not an IP address/],
      [body({ port: 0 }), /bad port/],
      [body({ proto: 'udp' }), /proto must be tcp/],
      [body({ backends: [] }), /1-64 backends/],
      [body({ backends: Array.from({ length: 65 }, (_, i) => ({ ip: '198.51.100.10', port: i + 1 })) }), /1-64 backends/],
      [body({ backends: [{ ip: '127.0.0.1', port: 80 }] }), /loopback/],
      [body({ backends: [{ ip: '::ffff:198.51.100.1', port: 80 }] }), /IPv4-mapped/],
      [body({ backends: [{ ip: '10.9.9.9', port: 80 }] }), /virtual address/],
      [body({ backends: [{ ip: '169.254.0.53', port: 53 }] }), /link-local/],
      [body({ backends: [{ ip: 'ff02::1', port: 80 }] }), /multicast/],
      [body({ backends: [{ ip: '198.51.100.1', port: 80 }, { ip: '198.51.100.1', port: 80 }] }), /listed twice/],
      [body({ backends: [{ ip: '198.51.100.1' }] }), /bad backend/],
      [body({ lb: 'fastest' }), /lb must be one of/],
      [body({ tags: { 'a b': '1' } }), /bad tag/],
      [body({ tags: { a: 1 } }), /bad tag/],
      [body({ tags: [] }), /tags must be an object/],
      [body({ extra: 1 }), /unknown field extra/],
    ];
    for (const [b, msg] of bad) expect(check(b), JSON.stringify(b)).toMatch(msg);
    expect(check('x')).toMatch(/not an object/);
    expect(badVserviceName('db')).toBeUndefined();
    expect(badVserviceName('DB')).toMatch(/not a valid DNS name/);
    expect(badVserviceName('a'.repeat(201))).toMatch(/not a valid DNS name/);
  });
});

describe('vservice entries in the service table', () => {
  function setup(door?: (ep: { ip: string; port: number }) => string | undefined, appHolds?: (ip: string) => boolean) {
    const objects = new ClusterObjects('n1', { validators: { [VSERVICE_KIND]: vserviceValidator(ranges) } });
    const table = new ServiceTable();
    const sync = new VserviceSync({ objects, table, log, ...(door ? { door } : {}), ...(appHolds ? { appHolds } : {}) });
    return { objects, table, sync };
  }

  it('one entry per backend, node @vservice, app vservice:NAME; replaced and removed with the object', () => {
    const { objects, table, sync } = setup();
    objects.put(VSERVICE_KIND, 'db', body({ lb: 'round-robin' }));
    const es = table.lookup({ vip: '10.0.0.50', port: 80, proto: 'tcp' });
    expect(es.map((e) => [e.id, e.node, e.appId, e.name, e.endpoint, e.tags, e.lb])).toEqual([
      ['vservice/db/0', VSERVICE_NODE, 'vservice:db', 'db', { ip: '198.51.100.10', port: 8080 }, { grp: 'db' }, 'round-robin'],
      ['vservice/db/1', VSERVICE_NODE, 'vservice:db', 'db', { ip: '2001:db8::1', port: 5432 }, { grp: 'db' }, 'round-robin'],
    ]);
    expect(sync.vipsOf('db')).toEqual(['10.0.0.50']);
    expect(sync.nameOf('10.0.0.50')).toBe('db');
    expect(sync.isBackend({ ip: '2001:db8::1', port: 5432 })).toBe(true);
    expect(sync.isBackend({ ip: '198.51.100.10', port: 8081 })).toBe(false);
    objects.put(VSERVICE_KIND, 'db', body({ vip: '10.0.0.60', backends: [{ ip: '198.51.100.11', port: 80 }] }));
    expect(table.size).toBe(1);
    expect(table.lookup({ vip: '10.0.0.60', port: 80, proto: 'tcp' })[0]?.id).toBe('vservice/db/0');
    objects.delete(VSERVICE_KIND, 'db');
    expect(table.size).toBe(0);
    expect(sync.vipsOf('db')).toEqual([]);
    expect(sync.isBackend({ ip: '198.51.100.11', port: 80 })).toBe(false);
  });

  it("leaves out a backend that is a member's door, and takes it back when it no longer is", () => {
    let closed = true;
    const { objects, table, sync } = setup((ep) => (closed && ep.ip === '198.51.100.10' ? 'pool' : undefined));
    objects.put(VSERVICE_KIND, 'db', body());
    expect(table.all().map((e) => e.endpoint.ip)).toEqual(['2001:db8::1']);
    /* a member's door is never taken for a backend (its connections keep their client reports: the server's accept
     * needs them), even when a gossiped vservice names it */
    expect(sync.isBackend({ ip: '198.51.100.10', port: 8080 })).toBe(false);
    closed = false;
    sync.refresh();
    expect(table.all().map((e) => e.endpoint.ip).sort()).toEqual(['198.51.100.10', '2001:db8::1']);
    expect(sync.isBackend({ ip: '198.51.100.10', port: 8080 })).toBe(true);
  });

  it("a copy from gossip whose vip an app holds is not served (it would take part of the app's traffic)", () => {
    const held = new Set(['10.0.0.50']);
    const { objects, table, sync } = setup(undefined, (ip) => held.has(ip));
    table.upsert({ id: 'n2/a1/1', vip: '10.0.0.50', port: 80, proto: 'tcp', node: 'n2', endpoint: { ip: '192.0.2.2', port: 40001 }, appId: 'a1', tags: {}, version: 1 });
    expect(objects.merge({ kind: VSERVICE_KIND, name: 'evil', version: 10, origin: 'n3', body: body() })).toBe(true);
    expect(table.lookup({ vip: '10.0.0.50', port: 80, proto: 'tcp' }).map((e) => e.id)).toEqual(['n2/a1/1']);
    expect(sync.list().map((v) => v.name)).toEqual(['evil']); /* listed, so an operator sees it */
    held.clear();
    sync.refresh();
    expect(table.lookup({ vip: '10.0.0.50', port: 80, proto: 'tcp' }).length).toBe(3);
  });

  it('the decision table compiles them ALIVE, never LOCAL or FAST, even at this node\'s own address', () => {
    const { objects, table } = setup();
    objects.put(VSERVICE_KIND, 'db', body({ backends: [{ ip: '192.0.2.1', port: 40001 }] }));
    const app: AppRecord = { id: 'c0000001', identity: '169.254.1.1', tags: { grp: 'db' }, cmd: [], launcherPid: 1, uid: 0, startedAt: 0, secret: '' };
    const b = compileDecisions({
      nodeName: 'n1',
      nodeAddress: '192.0.2.1',
      vipCidrs: ['10.0.0.0/8'],
      table,
      apps: () => [app],
      policy: defaultPolicy(),
      nodeAlive: () => false,
      fastpath: true,
      lb: 'p2c',
    });
    expect(b.readUInt32LE(20)).toBe(1);
    const inst = b.readUInt32LE(24);
    expect(b.readUInt8(inst + 19)).toBe(DT.alive | DT.external); /* a backend outside appswitch: no preamble */
    expect(b.readInt32LE(inst + 20)).toBe(-1);
  });
});

describe('connections to a backend keep no client report', () => {
  it('reported connects to a backend are tracked but leave no report; others do', () => {
    const reports = new ClientReports(10);
    const stats = { unidentified: 0, tcpConnections: 0, fastpathConnections: 0, fastpathLost: 0, udpUnidentified: 0, externalRefused: 0 };
    const backend = { ip: '198.51.100.10', port: 8080 };
    const ci = new ClientIdentities({
      nodeName: 'n1',
      nodeAddress: '192.0.2.1',
      log,
      limitLog: { warn: () => undefined } as never,
      stats,
      pendingPerApp: 4,
      identityWaitMs: 10,
      reports,
      udp: {} as never,
      offers: { hold: () => undefined, claimByAccept: () => undefined } as never,
      closeFds: () => undefined,
      unclaimed: (dst) => dst.ip === backend.ip && dst.port === backend.port,
    });
    const app = { id: 'c0000001', identity: '169.254.1.1', tags: {} } as AppRecord;
    for (let i = 0; i < 10; i++) {
      ci.connected(app, { kind: 'connected', local: { ip: '198.51.100.2', port: 30000 + i }, dst: backend, fast: false, decided: false, retried: 0 });
      ci.reportDecided(app, { ip: '198.51.100.2', port: 31000 + i }, backend);
    }
    expect(stats.tcpConnections).toBe(10);
    expect(reports.count(app.id)).toBe(0);
    ci.connected(app, { kind: 'connected', local: { ip: '192.0.2.1', port: 32000 }, dst: { ip: '192.0.2.2', port: 40001 }, fast: false, decided: false, retried: 0 });
    expect(reports.count(app.id)).toBe(1);
  });
});
