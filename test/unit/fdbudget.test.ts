/** Running out of the daemon's own descriptors (FdBudget) and what the trap handler does meanwhile: fake descriptors,
 * a fake clock, no sockets. */
import pino from 'pino';
import { handlerConfig } from '../helpers/handler-config.js';
import { describe, expect, it } from 'vitest';
import { Errno } from '../../src/errors.js';
import { ServiceTable } from '../../src/table/service-table.js';
import { FdBudget, type FdOps, isFdExhaustion } from '../../src/trap/fdbudget.js';
import { TrapHandler } from '../../src/trap/handler.js';
import { encodeSockaddr, MsgFlag, MsgType, SOCK_STREAM } from '../../src/trap/protocol.js';
import { request } from '../helpers/trap-request.js';

/** A process with `room` free descriptors. */
function fakeFds(room: number): FdOps & { room: number; open: () => number } {
  let next = 100;
  const f = {
    room,
    open(): number {
      if (f.room <= 0) throw Object.assign(new Error('EMFILE'), { code: 'EMFILE' });
      f.room--;
      return next++;
    },
    close(): void {
      f.room++;
    },
  };
  return f;
}

function logger(): { log: pino.Logger; lines: Array<{ msg: string; level: number; [k: string]: unknown }> } {
  const lines: Array<{ msg: string; level: number }> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as { msg: string; level: number }) });
  return { log, lines };
}

describe('FdBudget', () => {
  it('logs one line when descriptors run out, at most one per interval after, and one when they are back', () => {
    let now = 0;
    const fds = fakeFds(1);
    const { log, lines } = logger();
    const b = new FdBudget(log, { ops: fds, now: () => now, logEveryMs: 10_000, probeMs: 1e9 });
    expect(fds.room).toBe(0); // the spare took the last one
    expect(b.exhausted).toBe(false);
    for (let i = 0; i < 50; i++) b.fail('accepting a program on the trap socket', 'EMFILE');
    expect(b.exhausted).toBe(true);
    expect(lines.filter((l) => l.msg.includes('out of file descriptors'))).toHaveLength(1);
    expect(lines[0]).toMatchObject({ what: 'accepting a program on the trap socket', code: 'EMFILE' });
    now = 10_001;
    b.fail('reading /proc/net for the sweep', 'EMFILE');
    expect(lines.filter((l) => l.msg.includes('out of file descriptors'))).toHaveLength(2);
    expect(lines[1]).toMatchObject({ msg: 'daemon still out of file descriptors', failures: 51, suppressed: 49 });
    expect(b.probe()).toBe(false); // still none
    expect(b.exhausted).toBe(true);
    fds.room = 4; // the probe needs 4
    now = 12_000;
    expect(b.probe()).toBe(true);
    expect(b.exhausted).toBe(false);
    expect(lines.at(-1)).toMatchObject({ msg: 'file descriptors available again: fast path and new programs back', afterMs: 12_000, failures: 51 });
    expect(fds.room).toBe(4); // probed descriptors closed again, the spare still held
    b.close();
    expect(fds.room).toBe(5);
  });

  it('gives its spare for one accept and takes it back only when there is room', () => {
    const fds = fakeFds(1);
    const b = new FdBudget(pino({ level: 'silent' }), { ops: fds, probeMs: 1e9 });
    expect(b.releaseSpare()).toBe(true);
    expect(b.releaseSpare()).toBe(false); // one spare, once
    fds.open(); // the accept took the freed slot
    expect(b.restoreSpare()).toBe(false);
    fds.close(0); // refused and closed
    expect(b.restoreSpare()).toBe(true);
    b.close();
  });

  it('calls back on recovery (the trap socket resumes accepting)', () => {
    const fds = fakeFds(0);
    const b = new FdBudget(pino({ level: 'silent' }), { ops: fds, probeMs: 1e9 });
    let resumed = 0;
    b.onRecover(() => resumed++);
    b.fail('x', 'ENFILE');
    expect(b.probe()).toBe(false);
    fds.room = 5; // four for the probe and the spare
    expect(b.probe()).toBe(true);
    expect(resumed).toBe(1);
    expect(b.probe()).toBe(true); // nothing to recover from
    expect(resumed).toBe(1);
    b.close();
  });

  it('tells descriptor exhaustion from other errors', () => {
    expect(isFdExhaustion('EMFILE')).toBe(true);
    expect(isFdExhaustion('ENFILE')).toBe(true);
    expect(isFdExhaustion('EAGAIN')).toBe(false);
    expect(isFdExhaustion(undefined)).toBe(false);
  });
});

describe('TrapHandler while the daemon is out of descriptors', () => {
  function setup(exhausted: { v: boolean }): { h: TrapHandler; app: ReturnType<TrapHandler['hello']>; closed: number[] } {
    const table = new ServiceTable();
    const closed: number[] = [];
    const h = new TrapHandler(handlerConfig(table, { fdsExhausted: () => exhausted.v, closeFds: (fds) => closed.push(...fds), identityWaitMs: 5_000 }));
    const server = h.hello({ tags: {}, cmd: ['srv'] }, 1, 0);
    if (typeof server === 'string') throw new Error(server);
    table.upsert({ id: 'self/s/1', vip: '10.0.0.5', port: 80, proto: 'tcp', node: 'self', endpoint: { ip: '192.0.2.1', port: 40001 }, appId: server.id, tags: {}, version: 1 });
    return { h, app: h.hello({ tags: {}, cmd: ['client'] }, 2, 0), closed };
  }
  const connectMsg = request('connect', { type: MsgType.CONNECT, seq: 1, arg: SOCK_STREAM, addr: encodeSockaddr({ ip: '10.0.0.5', port: 80 }) });
  const local = encodeSockaddr({ ip: '192.0.2.1', port: 50000 });
  const listener = encodeSockaddr({ ip: '192.0.2.1', port: 40001 });

  it('offers no fast path while out of descriptors (TCP needs none of the daemon), and again once they are back', () => {
    const ex = { v: true };
    const { h, app } = setup(ex);
    if (typeof app === 'string') throw new Error(app);
    const r = h.connect(app, connectMsg);
    expect(r.result).toBe(0);
    expect((r.flags ?? 0) & MsgFlag.FASTPATH).toBe(0);
    expect(h.stats.fastpathDeferred).toBe(1);
    ex.v = false;
    expect((h.connect(app, connectMsg).flags ?? 0) & MsgFlag.FASTPATH).toBe(MsgFlag.FASTPATH);
  });

  it("refuses the server's accept of a lost fast-path connection at once, whether the accept came first or second", async () => {
    const { h, app } = setup({ v: false });
    if (typeof app === 'string') throw new Error(app);
    const srv = [...h.apps.values()].find((a) => a.cmd[0] === 'srv')!;
    const report = request('connected', { type: MsgType.CONNECTED, flags: MsgFlag.FASTPATH, addr: local, addr2: listener });
    const accept = request('accept', { type: MsgType.ACCEPT, seq: 7, addr: local, addr2: listener });
    // report first, then the accept: no wait for a report that will never come (identityWaitMs is 5 s here)
    h.connectedLost(app, report);
    let answer: number | undefined;
    void h.accept(srv, accept).then((r) => (answer = r.result));
    await new Promise((r) => setImmediate(r)); // long before the 5 s wait could end
    expect(answer).toBe(-Errno.ECONNREFUSED);
    // the accept waiting first: the lost report answers it
    const waiting = h.accept(srv, accept);
    h.connectedLost(app, report);
    expect((await waiting).result).toBe(-Errno.ECONNREFUSED);
    expect(h.stats.fastpathLost).toBe(2);
    expect(h.stats.unidentified).toBe(0);
    // a later connection from the same endpoint is served normally
    h.connected(app, report, [10, 11]);
    const ok = await h.accept(srv, accept);
    expect(ok.result).toBe(0);
    expect(ok.fds).toEqual([10]);
  });
});
