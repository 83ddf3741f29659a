/* The decision table end to end inside one process: the daemon's compiler (src/trap/decision-table.ts) publishes into a
 * real memfd through the addon, and the generator's own reader (native/dtab.c, through the addon's dtabDecide hook)
 * decides from it. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/binding.js';
import { defaultPolicy } from '../../src/policy/policy.js';
import { ServiceTable, type ServiceEntry, VSERVICE_NODE } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { compileDecisions, DecisionTable, DT, type DecisionInputs, type IngressPublish, ip16 } from '../../src/trap/decision-table.js';
import { ROOT } from '../helpers/hosts.js';

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

describe('decision table: the ingress section (native/dtab.h struct as_dt_ingress)', () => {
  const GW = '192.0.2.7';
  const KEY0 = Buffer.alloc(16, 0xa1);
  const KEY1 = Buffer.alloc(16, 0xb2);
  const ingress = (over: Partial<IngressPublish> = {}): IngressPublish => ({
    keys: [KEY0, KEY1],
    gateways: ['192.0.2.1', GW, GW],
    steered: [
      { hostPort: 8080, appId: '50000001' },
      { hostPort: 8081, appId: 'deadbeef' }, /* not an app of this publication */
    ],
    local: ['192.0.2.1', '198.51.100.2', 'fe80::1'],
    ...over,
  });

  it('has the layout the C compiler gives struct as_dt_ingress and struct as_dt_steered (DT)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-dtab-'));
    const src = path.join(dir, 'layout.c');
    const lines = [
      ['head', 'sizeof(struct as_dt_head)'],
      ['range', 'sizeof(struct as_dt_range)'],
      ['svc', 'sizeof(struct as_dt_svc)'],
      ['inst', 'sizeof(struct as_dt_inst)'],
      ['app', 'sizeof(struct as_dt_app)'],
      ['ingress', 'sizeof(struct as_dt_ingress)'],
      ['steered', 'sizeof(struct as_dt_steered)'],
      ['offIngress', 'offsetof(struct as_dt_head, off_ingress)'],
      ['ingressKeys', 'AS_DT_INGRESS_KEYS'],
      ['external', 'AS_DT_EXTERNAL'],
      ['alive', 'AS_DT_ALIVE'],
      ['o_n_keys', 'offsetof(struct as_dt_ingress, n_keys)'],
      ['o_n_gateways', 'offsetof(struct as_dt_ingress, n_gateways)'],
      ['o_off_gateways', 'offsetof(struct as_dt_ingress, off_gateways)'],
      ['o_n_steered', 'offsetof(struct as_dt_ingress, n_steered)'],
      ['o_off_steered', 'offsetof(struct as_dt_ingress, off_steered)'],
      ['o_n_local', 'offsetof(struct as_dt_ingress, n_local)'],
      ['o_off_local', 'offsetof(struct as_dt_ingress, off_local)'],
      ['s_app', 'offsetof(struct as_dt_steered, app)'],
    ];
    writeFileSync(
      src,
      `#include <stdio.h>\n#include <stddef.h>\n#include "dtab.h"\nint main(void){\n` +
        lines.map(([k, e]) => `printf("${k} %zu\\n", (size_t)(${e}));`).join('\n') +
        `\nreturn 0;}\n`,
    );
    const exe = path.join(dir, 'layout');
    execFileSync('gcc', ['-I', path.join(ROOT, 'native'), '-o', exe, src]);
    const out = Object.fromEntries(
      execFileSync(exe)
        .toString()
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
    for (const k of ['head', 'range', 'svc', 'inst', 'app', 'ingress', 'steered', 'offIngress', 'ingressKeys', 'external', 'alive'] as const)
      expect(Number(out[k]), k).toBe(DT[k]);
    /* the offsets compileIngress writes */
    expect([out.o_n_keys, out.o_n_gateways, out.o_off_gateways, out.o_n_steered, out.o_off_steered, out.o_n_local, out.o_off_local, out.s_app].map(Number)).toEqual([
      DT.ingressKeys * DT.keyLen, 68, 72, 76, 80, 84, 88, 4,
    ]);
  });

  it('absent, or undefined: no section (off_ingress 0), and the readers answer 0 but for loopback and the node', () => {
    const { inputs, dt } = setup();
    expect(compileDecisions(inputs).readUInt32LE(DT.offIngress)).toBe(0);
    expect(compileDecisions({ ...inputs, ingress: () => undefined }).readUInt32LE(DT.offIngress)).toBe(0);
    const probe = (ip: string) => native.dtabIngressProbe(dt.tableFd, '50000001', ip16(ip), 8080);
    expect(probe(GW)).toEqual({ isGateway: false, steeredHere: false, isLocal: false, keys: [] });
    expect(probe('192.0.2.1').isLocal).toBe(true); /* the node address */
    expect(probe('127.0.0.9').isLocal).toBe(true);
    expect(probe('::1').isLocal).toBe(true);
    dt.close();
  });

  it('encodes keys, gateways (each once), steered ports by app index, local addresses, offsets from the body start', () => {
    const { inputs } = setup();
    const body = compileDecisions({ ...inputs, ingress: () => ingress() });
    const off = body.readUInt32LE(DT.offIngress);
    expect(off % 4).toBe(0);
    expect(off).toBeGreaterThan(DT.head);
    expect(body.subarray(off, off + 16)).toEqual(KEY0);
    expect(body.subarray(off + 16, off + 32)).toEqual(KEY1);
    expect(body.readUInt32LE(off + 64)).toBe(2);
    const [nGw, offGw, nSt, offSt, nLocal, offLocal] = [68, 72, 76, 80, 84, 88].map((o) => body.readUInt32LE(off + o)) as number[];
    expect(nGw).toBe(2); /* GW listed twice: once */
    expect([0, 1].map((i) => body.subarray(offGw! + i * 16, offGw! + i * 16 + 16))).toEqual([ip16('192.0.2.1'), ip16(GW)]);
    /* the steered entry of an app this publication does not list is left out */
    expect(nSt).toBe(1);
    expect(body.readUInt16LE(offSt!)).toBe(8080);
    const offApps = body.readUInt32LE(32);
    const appIdx = body.readInt32LE(offSt! + 4);
    expect(body.toString('latin1', offApps + appIdx * DT.app, offApps + appIdx * DT.app + 8)).toBe('50000001');
    expect(nLocal).toBe(3);
    expect(body.subarray(offLocal! + 32, offLocal! + 48)).toEqual(ip16('fe80::1'));
    expect(offLocal! + nLocal! * 16).toBe(body.length);
  });

  it("the generator's readers (native/dtab.c) answer from the published section", () => {
    const { inputs, dt } = setup();
    (inputs as { ingress?: () => IngressPublish }).ingress = () => ingress();
    dt.publish();
    const probe = (app: string, ip: string, port = 8080) => native.dtabIngressProbe(dt.tableFd, app, ip16(ip), port);
    const r = probe('50000001', GW);
    expect(r).toMatchObject({ isGateway: true, steeredHere: true, isLocal: false });
    expect(r.keys).toEqual([KEY0, KEY1]);
    expect(probe('50000001', '192.0.2.1').isGateway).toBe(true);
    expect(probe('50000001', '203.0.113.9').isGateway).toBe(false);
    expect(probe('50000001', GW, 8081).steeredHere).toBe(false); /* its app was left out */
    expect(probe('50000001', GW, 80).steeredHere).toBe(false);
    expect(probe('c0000001', GW, 8080).steeredHere).toBe(false); /* another app of this host */
    expect(probe('ffffffff', GW, 8080).steeredHere).toBe(false); /* an app the table does not know */
    for (const ip of ['198.51.100.2', 'fe80::1', '192.0.2.1', '127.0.0.1', '::1']) expect(probe('50000001', ip).isLocal, ip).toBe(true);
    for (const ip of ['198.51.100.3', GW, '::2', '::ffff:128.0.0.1']) expect(probe('50000001', ip).isLocal, ip).toBe(false);
    /* the section follows the inputs at the next publication */
    (inputs as { ingress?: () => IngressPublish }).ingress = () => ingress({ steered: [], keys: [], gateways: [] });
    dt.publish();
    expect(probe('50000001', GW)).toEqual({ isGateway: false, steeredHere: false, isLocal: false, keys: [] });
    dt.close();
  });

  it('attack: a malformed section (offsets or counts past the body, misaligned) is read as none, never past the body', () => {
    const { inputs } = setup();
    const good = compileDecisions({ ...inputs, ingress: () => ingress() });
    const off = good.readUInt32LE(DT.offIngress);
    const fd = native.dtabCreate();
    const probe = (body: Buffer, ip = GW) => {
      native.dtabPublish(fd, body);
      return native.dtabIngressProbe(fd, '50000001', ip16(ip), 8080);
    };
    expect(probe(good)).toMatchObject({ isGateway: true, steeredHere: true });
    const bad = (edit: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(good);
      edit(b);
      return b;
    };
    const none = { isGateway: false, steeredHere: false, isLocal: false, keys: [] };
    expect(probe(bad((b) => b.writeUInt32LE(good.length - 8, DT.offIngress)))).toEqual(none); /* the struct runs past the end */
    expect(probe(bad((b) => b.writeUInt32LE(0xfffffff0, DT.offIngress)))).toEqual(none);
    expect(probe(bad((b) => b.writeUInt32LE(off + 2, DT.offIngress)))).toEqual(none); /* misaligned */
    /* each array past the end: its reader answers 0; the others still answer */
    expect(probe(bad((b) => b.writeUInt32LE(0x10000000, off + 68))).isGateway).toBe(false);
    expect(probe(bad((b) => b.writeUInt32LE(good.length, off + 72))).isGateway).toBe(false);
    const st = probe(bad((b) => b.writeUInt32LE(0xffffffff, off + 76)));
    expect(st.steeredHere).toBe(false);
    expect(st.isGateway).toBe(true);
    expect(probe(good, '198.51.100.2').isLocal).toBe(true);
    expect(probe(bad((b) => b.writeUInt32LE(0xfffffffc, off + 88)), '198.51.100.2').isLocal).toBe(false);
    expect(probe(bad((b) => b.writeUInt32LE(0x40000000, off + 84)), '198.51.100.2').isLocal).toBe(false);
    /* more keys than the array holds: at most AS_DT_INGRESS_KEYS, from the array itself */
    expect(probe(bad((b) => b.writeUInt32LE(1000, off + 64))).keys).toHaveLength(DT.ingressKeys);
    native.close(fd);
  });

  it('refuses what does not fit the format: a key of another length, a host port out of range', () => {
    const { inputs } = setup();
    expect(() => compileDecisions({ ...inputs, ingress: () => ingress({ keys: [Buffer.alloc(15)] }) })).toThrow(RangeError);
    expect(() => compileDecisions({ ...inputs, ingress: () => ingress({ steered: [{ hostPort: 70000, appId: '50000001' }] }) })).toThrow(RangeError);
    /* at most AS_DT_INGRESS_KEYS keys are published */
    const body = compileDecisions({ ...inputs, ingress: () => ingress({ keys: Array.from({ length: 6 }, (_, i) => Buffer.alloc(16, i)) }) });
    expect(body.readUInt32LE(body.readUInt32LE(DT.offIngress) + 64)).toBe(DT.ingressKeys);
  });

  it('marks a virtual service backend AS_DT_EXTERNAL, and no other instance', () => {
    const { inputs, table } = setup();
    table.upsert(entry('vs/db/1', VSERVICE_NODE, 'vservice', '10.0.0.7', 5432, '198.51.100.10:5432', {}));
    const body = compileDecisions(inputs);
    const n = body.readUInt32LE(20);
    const offInst = body.readUInt32LE(24);
    const flags = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const o = offInst + i * DT.inst;
      flags.set(`${body.subarray(o + 12, o + 16).join('.')}:${body.readUInt16LE(o + 16)}`, body.readUInt8(o + 19));
    }
    expect(flags.get('198.51.100.10:5432')).toBe(DT.alive | DT.external);
    expect((flags.get('192.0.2.1:40001') ?? 0) & DT.external).toBe(0);
    expect((flags.get('192.0.2.2:40001') ?? 0) & DT.external).toBe(0);
  });

  it('dtabIngressProbe refuses bad arguments', () => {
    const { dt } = setup();
    const p = native.dtabIngressProbe as unknown as (...a: unknown[]) => unknown;
    expect(() => p()).toThrow(TypeError);
    expect(() => p(dt.tableFd, '50000001', Buffer.alloc(15), 80)).toThrow(TypeError);
    expect(() => p(dt.tableFd, '50000001', Buffer.alloc(16), 70000)).toThrow(TypeError);
    expect(() => p(dt.tableFd, 5, Buffer.alloc(16), 80)).toThrow(TypeError);
    expect(() => p('x', '50000001', Buffer.alloc(16), 80)).toThrow(TypeError);
    dt.close();
  });
});
