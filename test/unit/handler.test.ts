/** The trap handler's decisions, on a fake table (no sockets): health, retries, loopback, egress, denials. */
import { handlerConfig } from '../helpers/handler-config.js';
import { describe, expect, it } from 'vitest';
import { Errno } from '../../src/errors.js';
import { type ServiceEntry, ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { ALTERNATIVES, TrapHandler } from '../../src/trap/handler.js';
import { decodeSockaddr, encodeSockaddr, MsgFlag, MsgType, SOCK_STREAM } from '../../src/trap/protocol.js';
import { request } from '../helpers/trap-request.js';

function setup(alive: (n: string) => boolean = () => true): { h: TrapHandler; table: ServiceTable; app: AppRecord } {
  const table = new ServiceTable();
  const h = new TrapHandler(handlerConfig(table, { nodeAlive: alive }));
  const app = h.hello({ tags: {}, cmd: ['x'] }, 1, 0);
  if (typeof app === 'string') throw new Error(app);
  return { h, table, app };
}

function entry(node: string, port: number): ServiceEntry {
  return { id: `${node}/a/${port}`, vip: '10.0.0.5', port: 80, proto: 'tcp', node, endpoint: { ip: `192.0.2.${node === 'bad' ? 9 : 8}`, port }, appId: 'a', tags: {}, version: 1 };
}

function connect(h: TrapHandler, app: AppRecord, ip: string, port: number, seq = 1, failed?: { ip: string; port: number }) {
  const m = request('connect', { type: MsgType.CONNECT, seq, arg: SOCK_STREAM, addr: encodeSockaddr({ ip, port }), ...(failed ? { flags: MsgFlag.RETRY, addr2: encodeSockaddr(failed) } : {}) });
  const r = h.connect(app, m);
  return { ...r, to: r.addr ? decodeSockaddr(r.addr) : undefined };
}

describe('TrapHandler.connect', () => {
  it('refuses vips without a service, reaches other addresses directly', () => {
    const { h, app } = setup();
    expect(connect(h, app, '10.1.1.1', 80).result).toBe(-Errno.ECONNREFUSED);
    expect(connect(h, app, '169.254.169.254', 80).result).toBe(-Errno.ECONNREFUSED);
    expect(connect(h, app, '127.0.0.1', 80).result).toBe(-Errno.ECONNREFUSED);
    expect(connect(h, app, '198.51.100.7', 443).to).toEqual({ ip: '198.51.100.7', port: 443 });
  });

  it('skips instances on nodes that are not alive while others exist, and uses them when none is', () => {
    const { h, table, app } = setup((n) => n !== 'bad');
    table.upsert(entry('bad', 1));
    table.upsert(entry('good', 2));
    for (let i = 0; i < 10; i++) expect(connect(h, app, '10.0.0.5', 80, i + 1).to?.port).toBe(2);
    table.remove('good/a/2');
    expect(connect(h, app, '10.0.0.5', 80, 99).to?.port).toBe(1);
  });

  it('a retry after a refusal picks another instance, and refuses when all have refused', () => {
    const { h, table, app } = setup();
    table.upsert(entry('n1', 1));
    table.upsert(entry('n2', 2));
    const first = connect(h, app, '10.0.0.5', 80, 7);
    expect(first.flags).toBe(ALTERNATIVES);
    const second = connect(h, app, '10.0.0.5', 80, 7, first.to);
    expect(second.to?.port).not.toBe(first.to?.port);
    expect(connect(h, app, '10.0.0.5', 80, 7, second.to).result).toBe(-Errno.ECONNREFUSED);
    expect(h.stats.retried).toBe(2);
  });

  it('denies by policy and counts it', () => {
    const { h, table, app } = setup();
    table.upsert({ ...entry('n1', 1), tags: { grp: '1' } });
    expect(connect(h, app, '10.0.0.5', 80).result).toBe(-Errno.ECONNREFUSED);
    expect(h.stats.denied).toBe(1);
  });

  it('refuses --ip outside the vip ranges and binds to addresses that are not the app\'s', () => {
    const { h, app } = setup();
    expect(h.hello({ ip: '192.0.2.50', tags: {}, cmd: [] }, 2, 0)).toMatch(/outside the virtual ranges/);
    const m = request('bind', { type: MsgType.BIND, seq: 3, arg: SOCK_STREAM, addr: encodeSockaddr({ ip: '10.9.9.9', port: 80 }) });
    expect(h.bind(app, m).result).toBe(-Errno.EADDRNOTAVAIL);
  });
});
