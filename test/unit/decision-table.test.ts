/* The decision table end to end inside one process: the daemon's compiler (src/trap/decision-table.ts) publishes into a
 * real memfd through the addon, and the generator's own reader (native/dtab.c, through the addon's dtabDecide hook)
 * decides from it. */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/binding.js';
import { defaultPolicy } from '../../src/policy/policy.js';
import { ServiceTable, type ServiceEntry } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { compileDecisions, DecisionTable, type DecisionInputs, ip16 } from '../../src/trap/decision-table.js';

const PICKED = 1;
const DENIED = 3;
const ALL_TRIED = 4;
const ASK = 0;


function app(id: string, identity: string, tags: Record<string, string>, extra: Partial<AppRecord> = {}): AppRecord {
  return { id, identity, tags, cmd: [], launcherPid: 1, uid: 0, startedAt: 0, secret: '', ...extra };
}

function entry(id: string, node: string, appId: string, vip: string, port: number, ep: string, tags: Record<string, string>, extra: Partial<ServiceEntry> = {}): ServiceEntry {
  const [ip, p] = ep.split(':') as [string, string];
  return { id, node, appId, vip, port, proto: 'tcp', endpoint: { ip, port: Number(p) }, tags, version: 1, ...extra };
}

function setup(alive: Set<string> = new Set(['a', 'b'])) {
  const table = new ServiceTable();
  const apps = new Map<string, AppRecord>();
  apps.set('c0000001', app('c0000001', '169.254.1.1', { grp: '1' }));
  apps.set('c0000002', app('c0000002', '169.254.1.2', { grp: '2' }));
  apps.set('50000001', app('50000001', '10.0.0.5', { grp: '1' }, { offers: 'appswitch-gen-0123456789abcdef0123456789abcdef' }));
  table.upsert(entry('a/50000001/1', 'a', '50000001', '10.0.0.5', 80, '192.0.2.1:40001', { grp: '1' }, { family: 4 }));
  table.upsert(entry('b/9/1', 'b', '90000009', '10.0.0.5', 80, '192.0.2.2:40001', { grp: '1' }, { family: 4 }));
  const inputs: DecisionInputs = {
    nodeName: 'a',
    nodeAddress: '192.0.2.1',
    vipCidrs: ['10.0.0.0/16'],
    table,
    apps: () => apps.values(),
    policy: defaultPolicy(),
    nodeAlive: (n) => alive.has(n),
    fastpath: true,
    lb: 'round-robin',
  };
  const errors: unknown[] = [];
  const dt = new DecisionTable(native, inputs, (_w, e) => errors.push(e));
  const decide = (appId: string, ip: string, port: number, tried: string[] = []) => {
    const tb = Buffer.concat(
      tried.map((t) => {
        const [i, p] = t.split(':') as [string, string];
        const b = Buffer.alloc(18);
        ip16(i).copy(b);
        b.writeUInt16BE(Number(p), 16);
        return b;
      }),
    );
    return native.dtabDecide(dt.tableFd, dt.shmFd, appId, ip16(ip), port, tb);
  };
  return { table, apps, dt, decide, errors, inputs };
}

const epOf = (r: { ip16?: Buffer; port?: number }): string => `${(r.ip16 as Buffer).subarray(12).join('.')}:${r.port}`;

describe('decision table', () => {
  it('decides a vip connect by service, policy, health and round-robin, as the daemon would', () => {
    const { decide, errors, dt } = setup();
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = decide('c0000001', '10.0.0.5', 80);
      expect(r.verdict).toBe(PICKED);
      expect(r.alternatives).toBe(true);
      seen.add(epOf(r));
    }
    expect([...seen].sort()).toEqual(['192.0.2.1:40001', '192.0.2.2:40001']); /* round-robin visits both */
    expect(decide('c0000002', '10.0.0.5', 80).verdict).toBe(DENIED); /* no shared tag */
    /* a service the table does not list may be newer than the table: the daemon decides (and refuses) */
    expect(decide('c0000001', '10.0.0.5', 81).verdict).toBe(ASK);
    expect(decide('c0000001', '10.0.9.9', 80).verdict).toBe(ASK);
    expect(decide('c0000001', '192.0.2.50', 80).verdict).toBe(ASK); /* not virtual: egress is the daemon's */
    expect(decide('ffffffff', '10.0.0.5', 80).verdict).toBe(ASK); /* an app the table does not know yet */
    expect(errors).toEqual([]);
    dt.close();
  });

  it('offers the fast path for a same-host instance only, naming the server generator', () => {
    const { decide, dt } = setup();
    for (let i = 0; i < 4; i++) {
      const r = decide('c0000001', '10.0.0.5', 80);
      if (epOf(r) === '192.0.2.1:40001') {
        expect(r.fast).toBe(true);
        expect(r.serverSock).toBe('appswitch-gen-0123456789abcdef0123456789abcdef');
      } else {
        expect(r.fast).toBe(false);
      }
    }
    dt.close();
  });

  it('skips instances that refused, and says so when all did', () => {
    const { decide, dt } = setup();
    const r = decide('c0000001', '10.0.0.5', 80, ['192.0.2.1:40001']);
    expect(epOf(r)).toBe('192.0.2.2:40001');
    expect(r.alternatives).toBe(false);
    expect(decide('c0000001', '10.0.0.5', 80, ['192.0.2.1:40001', '192.0.2.2:40001']).verdict).toBe(ALL_TRIED);
    dt.close();
  });

  it('prefers live nodes, and a loopback destination is the app\'s own vip', () => {
    const { decide, dt, apps, table } = setup(new Set(['a']));
    for (let i = 0; i < 4; i++) expect(epOf(decide('c0000001', '10.0.0.5', 80))).toBe('192.0.2.1:40001');
    apps.set('c0000003', app('c0000003', '10.0.0.5', { grp: '1' }));
    table.upsert(entry('a/50000001/2', 'a', '50000001', '10.0.0.5', 8080, '192.0.2.1:40002', { grp: '1' }));
    dt.publish();
    expect(epOf(decide('c0000003', '127.0.0.1', 8080))).toBe('192.0.2.1:40002');
    dt.close();
  });

  it('republishes on a table change within one turn of the event loop', async () => {
    const { decide, dt, table } = setup();
    expect(decide('c0000001', '10.0.0.5', 80).verdict).toBe(PICKED);
    table.remove('a/50000001/1');
    table.remove('b/9/1');
    await new Promise((r) => setImmediate(r));
    expect(decide('c0000001', '10.0.0.5', 80).verdict).toBe(ASK);
    expect(dt.publishes).toBeGreaterThanOrEqual(2);
    dt.close();
  });

  it('compiles the policy bit for every (app, instance) pair', () => {
    const { inputs } = setup();
    const body = compileDecisions(inputs);
    const nApps = body.readUInt32LE(28);
    const offApps = body.readUInt32LE(32);
    expect(nApps).toBe(3);
    const bitsOf = (i: number) => body.readUInt8(body.readUInt32LE(offApps + i * 104 + 52));
    expect(bitsOf(0)).toBe(0b11); /* grp=1 reaches both */
    expect(bitsOf(1)).toBe(0b00); /* grp=2 reaches neither */
  });
});

describe('AS_DECIDED records (native/proto.h struct as_decided)', () => {
  it('decode into typed records; unknown kinds and a torn tail are counted, not trusted', async () => {
    const { decodeDecided, DECIDED_RECORD } = await import('../../src/trap/decided-wire.js');
    const rec = (kind: number, lport: number) => {
      const b = Buffer.alloc(DECIDED_RECORD);
      b.writeUInt8(kind, 0);
      b.writeUInt8(2, 1);
      b.writeUInt16LE(lport, 2);
      b.writeUInt16LE(40001, 4);
      b.writeUInt16LE(80, 6);
      ip16('192.0.2.1').copy(b, 8);
      ip16('192.0.2.1').copy(b, 24);
      ip16('fd00::5').copy(b, 40);
      b.writeUInt32LE(1234, 56);
      b.writeBigUInt64LE(99n, 64);
      b.write('50000001', 72, 'latin1');
      return b;
    };
    const d = decodeDecided(Buffer.concat([rec(2, 5555), rec(9, 1), rec(1, 6666), Buffer.alloc(7)]));
    expect(d.bad).toBe(2);
    expect(d.records).toEqual([
      { kind: 'fastpath', retried: 2, local: { ip: '192.0.2.1', port: 5555 }, real: { ip: '192.0.2.1', port: 40001 }, virt: { ip: 'fd00::5', port: 80 }, pid: 1234, inode: '99', serverApp: '50000001' },
      { kind: 'tcp', retried: 2, local: { ip: '192.0.2.1', port: 6666 }, real: { ip: '192.0.2.1', port: 40001 }, virt: { ip: 'fd00::5', port: 80 }, pid: 1234, inode: '99', serverApp: '50000001' },
    ]);
  });
});
