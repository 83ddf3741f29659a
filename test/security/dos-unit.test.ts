/** Attacks 1(a) and 5 of issue 10, on the pure pieces behind them (no sockets): the closed daemon doors, offers that
 * expire with their descriptors, the per-app limits, a sweep that cannot read the socket tables, and saved states
 * that cannot be restored in full (1,100 services; a file damaged in the middle). */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { handlerConfig } from '../helpers/handler-config.js';
import { SnapshotError, tcpSnapshot } from '../../src/daemon/listeners.js';
import { encodeState, loadState } from '../../src/daemon/state.js';
import { Errno } from '../../src/errors.js';
import { DaemonPortGuard, type DaemonPorts, nodeDoors } from '../../src/policy/daemon-ports.js';
import { AppDirectory } from '../../src/table/directory.js';
import { PortPool } from '../../src/table/port-pool.js';
import { type ServiceEntry, ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { type Binding, type HandlerSnapshot, TrapHandler } from '../../src/trap/handler.js';
import { encodeSockaddr, MsgFlag, MsgType, SOCK_DGRAM, SOCK_STREAM } from '../../src/trap/protocol.js';
import { request } from '../helpers/trap-request.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const PORTS: DaemonPorts = { gossip: 7946, peer: 7947, dns: 53, metrics: 9464, pool: { low: 40000, high: 60000 } };

describe('daemon doors (1a)', () => {
  it("closes every daemon port and the pool on members; this node's DNS stays open", () => {
    const g = new DaemonPortGuard();
    g.set([...nodeDoors('192.0.2.1', PORTS, true), ...nodeDoors('192.0.2.2', PORTS, false), ...nodeDoors('2001:db8::2', PORTS, false)]);
    expect(g.check('192.0.2.1', 7946, 'udp')).toBe('gossip');
    expect(g.check('192.0.2.1', 7946, 'tcp')).toBe('gossip');
    expect(g.check('192.0.2.1', 7947, 'tcp')).toBe('peer');
    expect(g.check('192.0.2.1', 9464, 'tcp')).toBe('metrics');
    expect(g.check('192.0.2.1', 53, 'udp')).toBeUndefined(); // the resolver path
    expect(g.check('192.0.2.1', 53, 'tcp')).toBeUndefined();
    expect(g.check('192.0.2.2', 53, 'udp')).toBe('dns');
    expect(g.check('192.0.2.2', 40000, 'tcp')).toBe('pool');
    expect(g.check('192.0.2.2', 60000, 'udp')).toBe('pool');
    expect(g.check('192.0.2.2', 60001, 'udp')).toBeUndefined();
    expect(g.check('2001:db8::2', 7946, 'udp')).toBe('gossip');
    expect(g.check('198.51.100.1', 7946, 'udp')).toBeUndefined(); // not a member: ordinary egress
  });

  it('the handler refuses them: ECONNREFUSED for TCP, EPERM for datagrams; counted', () => {
    const g = new DaemonPortGuard();
    g.set(nodeDoors('192.0.2.1', PORTS, true));
    const h = new TrapHandler(handlerConfig(new ServiceTable(), { forbidden: (ip, port, proto) => g.check(ip, port, proto) }));
    const app = h.hello({ tags: {}, cmd: ['x'] }, 1, 0) as AppRecord;
    const send = (port: number, type: number): number =>
      h.connect(app, request('connect', { type: MsgType.CONNECT, seq: 1, arg: type, addr: encodeSockaddr({ ip: '192.0.2.1', port }) })).result;
    expect(send(7947, SOCK_STREAM)).toBe(-Errno.ECONNREFUSED);
    expect(send(7946, SOCK_DGRAM)).toBe(-Errno.EPERM);
    expect(send(22, SOCK_STREAM)).toBe(0);
    expect(h.stats.daemonPortRefused).toBe(2);
  });
});

/** A handler with a server app listening at 192.0.2.1:40001 (vip 10.0.0.5:80) and its apps. */
function fastpathSetup(limits = { servicesPerApp: 256, pendingPerApp: 1024 }): { h: TrapHandler; closed: number[]; server: AppRecord; client: () => AppRecord } {
  const table = new ServiceTable();
  const closed: number[] = [];
  const h = new TrapHandler(handlerConfig(table, { closeFds: (fds) => closed.push(...fds), limits }));
  const server = h.hello({ ip: '10.0.0.5', tags: {}, cmd: ['srv'] }, 1, 0) as AppRecord;
  const e: ServiceEntry = { id: `self/${server.id}/1`, vip: '10.0.0.5', port: 80, proto: 'tcp', node: 'self', endpoint: { ip: '192.0.2.1', port: 40001 }, appId: server.id, tags: {}, version: 1 };
  table.upsert(e);
  let n = 1;
  return { h, closed, server, client: () => h.hello({ tags: {}, cmd: [`c${++n}`] }, n, 0) as AppRecord };
}

let nextFd = 100;
let nextPort = 50000;
/** A connect to 10.0.0.5:80 carrying a speculative offer (two fds); pushes it as the trap server would. */
function offer(h: TrapHandler, app: AppRecord): { result: number; fast: boolean; fds: number[] } {
  const fds = [nextFd++, nextFd++];
  const m = request('connect', { type: MsgType.CONNECT, seq: 1, flags: MsgFlag.OFFER, arg: SOCK_STREAM, addr: encodeSockaddr({ ip: '10.0.0.5', port: 80 }), addr2: encodeSockaddr({ ip: '192.0.2.1', port: nextPort++ }) });
  const r = h.connect(app, m, fds);
  r.push?.sent(true);
  return { result: r.result, fast: ((r.flags ?? 0) & MsgFlag.OFFER) !== 0, fds };
}

describe('fast-path offers (5a)', () => {
  it('a pushed offer never accepted has its placeholder closed when it expires (it leaked before)', () => {
    const { h, closed, client } = fastpathSetup();
    const o = offer(h, client());
    expect(o.fast).toBe(true);
    expect(h.pendingOffers).toBe(1);
    h.expireOffers(Date.now() + 61_000);
    expect(closed).toContain(o.fds[1]); // the placeholder (the server's end went to the server's generator)
    expect(h.pendingOffers).toBe(0);
  });

  it('per-app limits: a client past --max-pending-per-app is refused; a server past it gets TCP for others', () => {
    const { h, closed, client } = fastpathSetup({ servicesPerApp: 256, pendingPerApp: 2 });
    const a = client();
    expect(offer(h, a).fast).toBe(true);
    expect(offer(h, a).fast).toBe(true);
    const third = offer(h, a);
    expect(third.result).toBe(-Errno.ECONNREFUSED);
    expect(closed).toEqual(expect.arrayContaining(third.fds)); // its descriptors are not kept
    expect(h.stats.limitPending).toBe(1);
    // another client to the same server: the server holds 2 offers, so this one goes over TCP (no descriptors kept)
    const b = offer(h, client());
    expect(b.result).toBe(0);
    expect(b.fast).toBe(false);
    expect(closed).toEqual(expect.arrayContaining(b.fds));
    expect(h.stats.limitOffers).toBe(1);
    expect(h.pendingOffers).toBe(2);
  });

  it('reports too old to be claimed stop counting against the limit', () => {
    const { h, client } = fastpathSetup({ servicesPerApp: 256, pendingPerApp: 2 });
    const a = client();
    offer(h, a);
    offer(h, a);
    expect(offer(h, a).result).toBe(-Errno.ECONNREFUSED);
    h.expireOffers(Date.now() + 61_000);
    expect(offer(h, a).result).toBe(0);
  });

  it('binds past --max-services-per-app get ENOBUFS; other apps are unaffected', () => {
    const { h, client } = fastpathSetup({ servicesPerApp: 3, pendingPerApp: 1024 });
    const a = client();
    const bind = (app: AppRecord, seq: number): number =>
      h.bind(app, request('bind', { type: MsgType.BIND, seq, arg: SOCK_DGRAM, addr: encodeSockaddr({ ip: '0.0.0.0', port: 0 }) })).result;
    expect([1, 2, 3, 4].map((s) => bind(a, s))).toEqual([0, 0, 0, -Errno.ENOBUFS]);
    expect(bind(client(), 1)).toBe(0);
    expect(h.stats.limitServices).toBe(1);
  });

  it('a registration whose directory listener throws leaves nothing behind (the trap server refuses it)', () => {
    const dir = new AppDirectory();
    dir.on('added', () => {
      throw new Error('ERR_GOSSIP_TOO_MANY_KEYS');
    });
    const h = new TrapHandler(handlerConfig(new ServiceTable(), { directory: dir }));
    expect(() => h.hello({ tags: {}, cmd: ['x'] }, 1, 0)).toThrow();
    expect(h.apps.size).toBe(0);
  });
});

const TCP_HEAD = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const ROW = '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n';
const UDP_HEAD = '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n';

function reader(files: Record<string, string | NodeJS.ErrnoException>): (f: string) => Promise<string> {
  return async (f) => {
    const v = files[f];
    if (v === undefined) throw Object.assign(new Error(`ENOENT ${f}`), { code: 'ENOENT' });
    if (typeof v !== 'string') throw v;
    return v;
  };
}
const err = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

describe('socket tables (5b)', () => {
  it('a whole read lists the listeners; a missing IPv6 table is empty', async () => {
    const s = await tcpSnapshot(reader({ '/proc/net/tcp': TCP_HEAD + ROW, '/proc/net/udp': UDP_HEAD }), null); /* null: the /proc text path */
    expect([...s.listening]).toEqual(['4242']);
  });

  it.each([
    ['EMFILE', { '/proc/net/tcp': err('EMFILE'), '/proc/net/udp': UDP_HEAD }],
    ['ENFILE', { '/proc/net/tcp': TCP_HEAD + ROW, '/proc/net/tcp6': err('ENFILE'), '/proc/net/udp': UDP_HEAD }],
    ['EACCES', { '/proc/net/tcp': TCP_HEAD + ROW, '/proc/net/udp': err('EACCES') }],
    ['ENOENT', { '/proc/net/udp': UDP_HEAD }], // the IPv4 table is never absent
    ['EPARTIAL', { '/proc/net/tcp': TCP_HEAD + ROW.slice(0, 40), '/proc/net/udp': UDP_HEAD }], // cut in a row
    ['EPARTIAL', { '/proc/net/tcp': '', '/proc/net/udp': UDP_HEAD }], // nothing read, not even the header
  ] as const)('any failure (%s) is an error, never "nothing is listening"', async (code, files) => {
    const p = tcpSnapshot(reader(files as Record<string, string | NodeJS.ErrnoException>), null);
    await expect(p).rejects.toBeInstanceOf(SnapshotError);
    await expect(p).rejects.toMatchObject({ code });
  });
});

function app(id: string): AppRecord {
  return { id, identity: '10.0.0.9', ip: '10.0.0.9', secret: 'ab'.repeat(16), uid: 0, launcherPid: 1, startedAt: 1, tags: {}, cmd: ['x'] };
}

function bigSnapshot(n: number): HandlerSnapshot {
  const a = app('0000000a');
  const bindings: Array<[string, Binding]> = [];
  const services: ServiceEntry[] = [];
  for (let i = 0; i < n; i++) {
    const ino = String(1000 + i);
    const id = `self/${a.id}/${ino}`;
    bindings.push([ino, { appId: a.id, proto: 'udp', virt: { ip: '0.0.0.0', port: 40000 + i }, real: { ip: '192.0.2.1', port: 40000 + i }, serviceId: id, boundAt: 1 }]);
    services.push({ id, vip: a.identity, port: 40000 + i, proto: 'udp', node: 'self', endpoint: { ip: '192.0.2.1', port: 40000 + i }, appId: a.id, tags: {}, version: 1, socket: ino });
  }
  return { apps: [a], bindings, services };
}

function stateDir(text: string): string {
  const d = mkdtempSync(path.join(tmpdir(), 'appswitch-dos-'));
  dirs.push(d);
  writeFileSync(path.join(d, 'state.json'), text);
  return d;
}

describe('saved state (5c)', () => {
  const log = pino({ level: 'silent' });

  it('1,100 services: all sockets keep their ports, services come back up to the per-app limit', () => {
    const d = stateDir(encodeState('self', bigSnapshot(1100)));
    const snap = loadState(d, 'self', log)!;
    expect(snap.services.length).toBe(1100);
    const table = new ServiceTable();
    const pool = new PortPool(40000, 60000);
    const h = new TrapHandler(handlerConfig(table, { pool }));
    expect(h.restore(snap, 5000)).toBe(1);
    expect(table.size).toBe(256);
    expect(h.bindingCount()).toBe(1100);
    expect(pool.allocate()).toBe(41100); // the ports still bound in the kernel are not handed out again
  });

  it('a file damaged in the middle: the damaged records are skipped, the rest restored', () => {
    const lines = encodeState('self', bigSnapshot(10)).split('\n');
    lines[5] = lines[5]!.slice(0, 17) + '\u0000garbage'; // a binding line
    lines[16] = '{"service": {"id": 3}}'; // another service's line: valid JSON, an invalid record
    const d = stateDir(lines.join('\n'));
    const snap = loadState(d, 'self', log)!;
    expect(snap.apps.length).toBe(1);
    expect(snap.bindings.length).toBe(9);
    expect(snap.services.length).toBe(9);
    const table = new ServiceTable();
    const h = new TrapHandler(handlerConfig(table, { pool: new PortPool(40000, 60000) }));
    h.restore(snap, 5000);
    expect(table.size).toBe(8); // one service lost its binding, one its own line
  });

  it('a header that cannot be read is moved aside: the daemon starts empty, never in a loop', () => {
    const d = stateDir('\u0000\u0001 not json\n{"app": 1}\n');
    expect(loadState(d, 'self', log)).toBeUndefined();
    expect(readFileSync(path.join(d, 'state.json.bad'), 'utf8')).toContain('not json');
    expect(loadState(d, 'self', log)).toBeUndefined(); // nothing left to trip over
  });
});
