/* The C relay (native/relay_*.c) through RelayForwarder (src/gateway/relay-process.ts), on loopback in the test
 * process's own namespace: a decision table published from a ServiceTable whose instances listen on 127.0.0.1, the
 * real appswitch-relay spawned with it, routes added, real TCP clients. */
import { createHash, randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { cpus } from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeRelay, encodeListen } from '../../src/gateway/relay-wire.js';
import type { IngressRefusal } from '../../src/gateway/forwarder.js';
import { RelayForwarder } from '../../src/gateway/relay-process.js';
import { native } from '../../src/native/binding.js';
import { defaultPolicy } from '../../src/policy/policy.js';
import { ServiceTable, type ServiceEntry } from '../../src/table/service-table.js';
import { DecisionTable, type DecisionInputs } from '../../src/trap/decision-table.js';

const VIP = '10.0.0.5';

function entry(id: string, vip: string, port: number, realPort: number): ServiceEntry {
  return { id, node: 'a', appId: '50000001', vip, port, proto: 'tcp', endpoint: { ip: '127.0.0.1', port: realPort }, tags: {}, version: 1, family: 4 };
}

const table = new ServiceTable();
const inputs: DecisionInputs = {
  nodeName: 'a',
  nodeAddress: '127.0.0.1',
  vipCidrs: ['10.0.0.0/16'],
  table,
  apps: () => [],
  policy: defaultPolicy(),
  nodeAlive: () => true,
  fastpath: false,
  lb: 'round-robin',
};
let dt: DecisionTable;
const servers: net.Server[] = [];
const forwarders: RelayForwarder[] = [];

/** A TCP server on 127.0.0.1 at a free port; returns the port. */
async function serve(onConn: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer({ allowHalfOpen: true }, onConn);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return (srv.address() as net.AddressInfo).port;
}

/** A port where nothing listens (it refuses). */
async function deadPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return p;
}

const silent: ChildProcess[] = [];

/** A port that does not answer: a listener (python, backlog 0) that never accepts, its queue filled by one connection
 * of its own, so the kernel drops every further SYN (an instance whose host is cut off, as the relay sees it). */
async function silentPort(): Promise<number> {
  const py = [
    'import socket, sys, time',
    's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)',
    'c = socket.create_connection(s.getsockname())',
    'print(s.getsockname()[1], flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  const p = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] });
  silent.push(p);
  const line = await new Promise<string>((resolve, reject) => {
    p.stdout!.once('data', (d: Buffer) => resolve(d.toString()));
    p.once('exit', (code) => reject(new Error(`silent listener exited ${code}`)));
  });
  return Number(line.trim());
}

const echo = (s: net.Socket): void => {
  s.pipe(s);
  s.on('error', () => {});
};

let routeId = 0;
/** A relay with one route to vip:port, listening; returns it, the host port and what it reported. */
async function relayFor(port: number) {
  const f = new RelayForwarder({ tables: dt, backoffMs: { min: 50, max: 200 } });
  forwarders.push(f);
  const refusals: IngressRefusal[] = [];
  f.onRefusal = (r) => refusals.push(r);
  const hostPort = await deadPort();
  const id = ++routeId;
  const listening = new Promise<void>((resolve, reject) => {
    f.onListening = (i) => i === id && resolve();
    f.onListenError = (i, code) => i === id && reject(new Error(code));
  });
  f.add({ id, address: '127.0.0.1', hostPort, vip: VIP, port });
  await listening;
  return { f, hostPort, id, refusals };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything the socket receives until its end (or close). */
function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('error', () => {});
    let done = false;
    const fin = (): void => {
      if (!done) resolve(Buffer.concat(parts));
      done = true;
    };
    s.on('end', fin);
    s.on('close', fin);
  });
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

beforeAll(() => {
  dt = new DecisionTable(native, inputs, () => {});
});

afterEach(async () => {
  for (const f of forwarders.splice(0)) await f.close();
  for (const s of servers.splice(0)) s.close();
  for (const p of silent.splice(0)) p.kill();
  for (const e of table.all()) table.remove(e.id);
  dt.publish();
});

afterAll(() => dt.close());

describe('appswitch-relay', () => {
  it('carries 20 MB both ways intact, then reports it in its stats', async () => {
    table.upsert(entry('e1', VIP, 80, await serve(echo)));
    dt.publish();
    const { f, hostPort } = await relayFor(80);
    const data = randomBytes(20 << 20);
    const c = await connect(hostPort);
    const got = readAll(c);
    c.end(data);
    const back = await got;
    expect(back.length).toBe(data.length);
    expect(sha(back)).toBe(sha(data));
    await until(() => f.stats().bytes >= 2 * data.length && f.stats().active === 0, 4000);
    expect(f.stats()).toMatchObject({ accepted: 1, forwarded: 1, refused: 0, active: 0 });
    expect(f.relayStats()).toMatchObject({ paused: 0, dropped: 0 });
    expect(f.relayStats()?.maxConns).toBeGreaterThan(0);
  });

  it('half close: the client\'s FIN reaches the instance, which can still answer', async () => {
    const port = await serve((s) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => s.end(`got ${Buffer.concat(parts).toString()} then your FIN`));
    });
    table.upsert(entry('e1', VIP, 80, port));
    dt.publish();
    const { hostPort } = await relayFor(80);
    const c = await connect(hostPort);
    const got = readAll(c);
    c.end('hello');
    expect((await got).toString()).toBe('got hello then your FIN');
  });

  it('skips an instance that refuses', async () => {
    const dead = await deadPort();
    table.upsert(entry('e1', VIP, 80, dead));
    table.upsert(entry('e2', VIP, 80, await serve(echo)));
    dt.publish();
    const { f, hostPort, refusals } = await relayFor(80);
    for (let i = 0; i < 4; i++) {
      const c = await connect(hostPort);
      const got = readAll(c);
      c.end(`ping ${i}`);
      expect((await got).toString()).toBe(`ping ${i}`);
    }
    await until(() => f.stats().forwarded === 4);
    expect(refusals).toEqual([]);
  });

  it('an instance that does not answer (its SYNs dropped) is given up after a SYN retry; the same client is served by the next', async () => {
    const mute = await silentPort();
    table.upsert(entry('e1', VIP, 82, mute));
    table.upsert(entry('e2', VIP, 82, await serve(echo)));
    dt.publish();
    const { f, hostPort, refusals } = await relayFor(82);
    const waited: number[] = [];
    for (let i = 0; i < 2; i++) { /* round-robin: one of the two tries the mute instance first */
      const t0 = Date.now();
      const c = await connect(hostPort);
      const got = readAll(c);
      c.end(`ping ${i}`);
      expect((await got).toString()).toBe(`ping ${i}`);
      waited.push(Date.now() - t0);
    }
    /* one connection waited for the SYN retry (about 2–3 s, tcp(7) TCP_SYNCNT 1), not the kernel's 2 minutes */
    expect(Math.max(...waited)).toBeGreaterThan(900);
    expect(Math.max(...waited)).toBeLessThan(10_000);
    await until(() => f.stats().forwarded === 2);
    expect(refusals).toEqual([]);
  }, 30_000);

  it('when every instance refuses: REFUSED all-refused and the client is closed', async () => {
    table.upsert(entry('e1', VIP, 80, await deadPort()));
    table.upsert(entry('e2', VIP, 80, await deadPort()));
    dt.publish();
    const { hostPort, id, refusals } = await relayFor(80);
    const c = await connect(hostPort);
    const got = await readAll(c);
    expect(got.length).toBe(0);
    await until(() => refusals.length === 1);
    expect(refusals[0]).toEqual({ route: id, client: { ip: '127.0.0.1', port: c.localPort }, reason: 'all-refused' });
  });

  it('a service with no instance: REFUSED no-instance', async () => {
    const { hostPort, refusals } = await relayFor(81);
    const c = await connect(hostPort);
    expect((await readAll(c)).length).toBe(0);
    await until(() => refusals.length === 1);
    expect(refusals[0]?.reason).toBe('no-instance');
  });

  it('worker threads: one per two CPUs by default (at least one), --workers N gives N', async () => {
    const threads = (pid: number): number => readdirSync(`/proc/${pid}/task`).length;
    const { f } = await relayFor(83);
    expect(threads(f.pid as number)).toBe(Math.max(1, Math.min(8, Math.floor(cpus().length / 2)))); /* sysconf(_SC_NPROCESSORS_ONLN) */
    const g = new RelayForwarder({ tables: dt, backoffMs: { min: 50, max: 200 }, args: ['--workers', '3'] });
    forwarders.push(g);
    await until(() => g.pid !== undefined && threads(g.pid) === 3);
    expect(threads(g.pid as number)).toBe(3);
  });

  it('LISTEN on a taken port: onListenError EADDRINUSE', async () => {
    const taken = await serve(echo);
    const f = new RelayForwarder({ tables: dt });
    forwarders.push(f);
    const err = new Promise<[number, string]>((r) => (f.onListenError = (id, code) => r([id, code])));
    f.add({ id: 77, address: '127.0.0.1', hostPort: taken, vip: VIP, port: 80 });
    expect(await err).toEqual([77, 'EADDRINUSE']);
  });

  it('remove() stops listening', async () => {
    table.upsert(entry('e1', VIP, 80, await serve(echo)));
    dt.publish();
    const { f, hostPort, id } = await relayFor(80);
    (await connect(hostPort)).destroy();
    f.remove(id);
    /* the UNLISTEN is asynchronous: the port refuses within a moment */
    const end = Date.now() + 5000;
    for (;;) {
      const s = await connect(hostPort).catch((e: NodeJS.ErrnoException) => e);
      if (!(s instanceof net.Socket)) break;
      s.destroy();
      if (Date.now() > end) throw new Error("the route still accepts connections 5 s after remove()");
      await new Promise((r) => setTimeout(r, 20));
    }
    await expect(connect(hostPort)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('close() ends the process; a killed relay is restarted and listens again', async () => {
    table.upsert(entry('e1', VIP, 80, await serve(echo)));
    dt.publish();
    const { f, hostPort, id } = await relayFor(80);
    const first = f.pid as number;
    let again = false;
    f.onListening = (i) => (again ||= i === id);
    process.kill(first, 'SIGKILL');
    await until(() => again && f.pid !== undefined && f.pid !== first);
    expect(f.restarts).toBe(1);
    const c = await connect(hostPort);
    const got = readAll(c);
    c.end('after restart');
    expect((await got).toString()).toBe('after restart');
    const second = f.pid as number;
    await f.close();
    expect(() => process.kill(second, 0)).toThrow(/ESRCH/);
    expect(f.pid).toBeUndefined();
  });

  it('a flood of connections beyond its cap: REFUSED limit, those clients closed, the others served', async () => {
    /* 200 descriptors: the relay sizes its cap to the 16-connection minimum */
    const held: net.Socket[] = [];
    table.upsert(entry('e1', VIP, 80, await serve((s) => {
      held.push(s);
      s.on('error', () => {});
    })));
    dt.publish();
    const f = new RelayForwarder({ tables: dt, prefix: ['prlimit', '--nofile=200:200', '--'], args: ['--workers', '1'] });
    forwarders.push(f);
    const refusals: IngressRefusal[] = [];
    f.onRefusal = (r) => refusals.push(r);
    const hostPort = await deadPort();
    const up = new Promise<void>((r) => (f.onListening = () => r()));
    f.add({ id: 5, address: '127.0.0.1', hostPort, vip: VIP, port: 80 });
    await up;
    const clients = await Promise.all(Array.from({ length: 40 }, () => connect(hostPort)));
    const closed = new Set<number>();
    clients.forEach((c) => {
      c.on('error', () => {});
      c.on('end', () => closed.add(c.localPort as number)); /* half-open sockets: the relay's FIN is the end */
      c.resume();
    });
    await until(() => refusals.length === 24 && closed.size === 24 && held.length === 16).catch((e) => {
      throw new Error(`${String(e)}: ${refusals.length} refused, ${closed.size} closed, ${held.length} held, stats ${JSON.stringify(f.relayStats())}`);
    });
    expect(refusals.every((r) => r.reason === 'limit' && r.route === 5)).toBe(true);
    expect(new Set(refusals.map((r) => r.client.port))).toEqual(closed);
    await until(() => f.relayStats()?.active === 16, 3000);
    expect(f.relayStats()?.maxConns).toBe(16);
    for (const c of clients) c.destroy();
    for (const s of held) s.destroy();
  });

  it('refuses a malformed route before anything reaches the relay', () => {
    const f = new RelayForwarder({ tables: dt });
    forwarders.push(f);
    const good = { id: 1, address: '127.0.0.1', hostPort: 8080, vip: VIP, port: 80 };
    for (const bad of [{ id: -1 }, { id: 1.5 }, { address: 'localhost' }, { vip: '10.0.0' }, { hostPort: 0 }, { port: 65536 }, { hostPort: 80.5 }]) {
      expect(() => f.add({ ...good, ...bad })).toThrow(expect.objectContaining({ code: 'ERR_BAD_ARGUMENT' }));
    }
  });

  it('a missing binary throws at construction, with a clear error', () => {
    forwarders.push(new RelayForwarder({ tables: dt })); /* the built one is found */
    try {
      new RelayForwarder({ tables: { fdsForHello: () => [] }, binary: '' });
      throw new Error('did not throw');
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_NATIVE_LOAD' });
      expect(String((e as Error).message)).toMatch(/appswitch-relay not found/);
    }
  });
});

describe('relay records (native/relay_proto.h)', () => {
  it('decode into typed events; unknown types, bad reasons and a torn tail are counted, not trusted', () => {
    const rec = (type: number, fill: (b: Buffer) => void): Buffer => {
      const b = Buffer.alloc(64);
      b.writeUInt32LE(type, 0);
      fill(b);
      return b;
    };
    const refused = (reason: number) => rec(17, (b) => {
      b.writeUInt32LE(3, 4);
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 198, 51, 100, 10]).copy(b, 8);
      b.writeUInt16LE(5555, 24);
      b.writeUInt8(reason, 26);
    });
    /* 16: the CONN record of earlier relays, no longer sent, is no event either */
    const d = decodeRelay(Buffer.concat([refused(2), refused(9), rec(99, () => {}), rec(16, () => {}), rec(18, (b) => b.writeInt32LE(98, 8)), Buffer.alloc(10)]));
    expect(d.bad).toBe(4);
    expect(d.events).toEqual([
      { type: 'refused', route: 3, client: { ip: '198.51.100.10', port: 5555 }, reason: 'all-refused' },
      { type: 'listen-error', id: 0, errno: 98, code: 'EADDRINUSE' },
    ]);
    expect(encodeListen({ id: 1, address: '::', hostPort: 8080, vip: VIP, port: 80 }).length).toBe(64);
  });
});
