/** Ingress pieces without a network: `--expose` parsing, the union of exposures keyed by host port (the older keeps
 * it), the daemon's ingress routes and views, the ingress pick, and NodeForwarder on loopback (the next instance on
 * a refusal, the connection heard before the instance accepts it, refusals and listen errors). */
import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeExposeList, effectiveExposures, type ExposureClaim, hostPortProblem, parseExpose, parseVipPort } from '../../src/gateway/exposures.js';
import type { IngressForwarder, IngressRefusal, IngressRoute } from '../../src/gateway/forwarder.js';
import { type GatewayNode, Ingress } from '../../src/gateway/ingress.js';
import { NodeForwarder } from '../../src/gateway/node-forwarder.js';
import { IngressPicker } from '../../src/gateway/pick.js';
import { AppDirectory } from '../../src/table/directory.js';
import { type ServiceEntry, ServiceTable } from '../../src/table/service-table.js';

const log = pino({ level: 'silent' });

function entry(node: string, ip: string, port: number, over: Partial<ServiceEntry> = {}): ServiceEntry {
  return { id: `${node}/a/${ip}:${port}`, vip: '10.0.0.80', port: 80, proto: 'tcp', node, endpoint: { ip, port }, appId: 'a', tags: {}, version: 1, ...over };
}

describe('--expose and VIP:PORT', () => {
  it('parses [HOSTPORT:]PORT and refuses anything else', () => {
    expect(parseExpose('80')).toEqual({ port: 80, hostPort: 80 });
    expect(parseExpose('8080:80')).toEqual({ port: 80, hostPort: 8080 });
    for (const bad of ['', '0', '65536', 'a:80', '1:2:3', '80:', ':80', '-1', '80.5']) expect(() => parseExpose(bad), bad).toThrow(/expected \[HOSTPORT:\]PORT/);
  });

  it('parses VIP:PORT and [v6]:PORT', () => {
    expect(parseVipPort('10.0.0.5:80')).toEqual({ vip: '10.0.0.5', port: 80 });
    expect(parseVipPort('[fd00::5]:443')).toEqual({ vip: 'fd00::5', port: 443 });
    for (const bad of ['10.0.0.5', '10.0.0.5:0', 'fd00::5:80', '10.0.0.5:99999']) expect(() => parseVipPort(bad), bad).toThrow();
  });

  it('decodes an expose list from untrusted JSON', () => {
    expect(decodeExposeList([{ port: 80, hostPort: 8080 }])).toEqual([{ port: 80, hostPort: 8080 }]);
    expect(decodeExposeList({})).toMatch(/array/);
    expect(decodeExposeList([{ port: 0, hostPort: 1 }])).toMatch(/1-65535/);
    expect(decodeExposeList([{ port: '80', hostPort: 8080 }])).toMatch(/1-65535/);
    expect(decodeExposeList([null])).toMatch(/each item/);
    expect(decodeExposeList([{ port: 80, hostPort: 8080 }, { port: 81, hostPort: 8080 }])).toMatch(/host port 8080 given twice/);
    expect(decodeExposeList(Array.from({ length: 33 }, (_, i) => ({ port: 80, hostPort: 1000 + i })))).toMatch(/at most 32/);
  });

  it('a host port may be neither a pool port nor a daemon port', () => {
    const r = { pool: { low: 40000, high: 60000 }, daemon: [7946, 7947, 53] };
    expect(hostPortProblem(45000, r)).toMatch(/inside the port pool/);
    expect(hostPortProblem(7947, r)).toMatch(/port of the appswitch daemon/);
    expect(hostPortProblem(8080, r)).toBeUndefined();
  });
});

describe('effective exposures', () => {
  const claim = (vip: string, port: number, hostPort: number, since: number, source: 'app' | 'api' = 'app'): ExposureClaim => ({ vip, port, hostPort, source, origin: `${vip}:${port}`, since });

  it('merges the claims of one service (instances on several nodes, and the API) into one exposure', () => {
    const e = effectiveExposures([claim('10.0.0.1', 80, 8080, 5), claim('10.0.0.1', 80, 8080, 3), claim('10.0.0.1', 80, 8080, 9, 'api')]);
    expect(e).toEqual([{ vip: '10.0.0.1', port: 80, hostPort: 8080, sources: ['api', 'app'], since: 3, state: 'active' }]);
  });

  it('two services wanting one host port: the older keeps it, the other is a conflict naming the holder', () => {
    const e = effectiveExposures([claim('10.0.0.2', 80, 8080, 1), claim('10.0.0.1', 80, 8080, 2), claim('10.0.0.3', 80, 9090, 7)]);
    expect(e.map((x) => [x.vip, x.hostPort, x.state, x.holder])).toEqual([
      ['10.0.0.2', 8080, 'active', undefined],
      ['10.0.0.1', 8080, 'conflict', '10.0.0.2:80'],
      ['10.0.0.3', 9090, 'active', undefined],
    ]);
  });

  it('a tie in age is decided by the VIP:PORT text, the same on every node whatever the order', () => {
    const a = claim('10.0.0.9', 80, 8080, 1);
    const b = claim('10.0.0.10', 80, 8080, 1);
    expect(effectiveExposures([a, b]).find((x) => x.state === 'active')?.vip).toBe('10.0.0.10');
    expect(effectiveExposures([b, a]).find((x) => x.state === 'active')?.vip).toBe('10.0.0.10');
  });
});

class FakeForwarder implements IngressForwarder {
  routes = new Map<number, IngressRoute>();
  onRefusal: (r: IngressRefusal) => void = () => undefined;
  onListenError: (id: number, code: string) => void = () => undefined;
  key?: Buffer;
  setPreambleKey(key: Buffer): void {
    this.key = key;
  }
  add(r: IngressRoute): void {
    this.routes.set(r.id, r);
  }
  remove(id: number): void {
    this.routes.delete(id);
  }
  stats(): { accepted: number; forwarded: number; refused: number; active: number; bytes: number } {
    return { accepted: 0, forwarded: 0, refused: 0, active: 0, bytes: 0 };
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe('the daemon ingress', () => {
  function setup(gateways: GatewayNode[] = [{ node: 'self', address: '192.0.2.1', alive: true }]) {
    const directory = new AppDirectory();
    const f = new FakeForwarder();
    const ing = new Ingress({
      nodeName: 'self',
      gateway: true,
      listenAddress: '0.0.0.0',
      forwarder: f,
      directory,
      table: new ServiceTable(),
      gateways: () => gateways,
      reserved: () => ({ pool: { low: 40000, high: 60000 }, daemon: [7946, 7947, 53] }),
      log,
    });
    return { directory, f, ing };
  }

  it('listens for an app exposure while the app lives; a conflict and a reserved host port are not listened for', () => {
    const { directory, f, ing } = setup();
    directory.put({ id: 'a1', node: 'n2', identity: '10.0.0.1', vip: true, tags: {}, expose: [{ port: 80, hostPort: 8080 }, { port: 81, hostPort: 45000 }], exposedAt: 1 });
    directory.put({ id: 'a2', node: 'n3', identity: '10.0.0.2', vip: true, tags: {}, expose: [{ port: 80, hostPort: 8080 }], exposedAt: 2 });
    expect([...f.routes.values()].map((r) => [r.address, r.hostPort, r.vip, r.port])).toEqual([['0.0.0.0', 8080, '10.0.0.1', 80]]);
    const rows = ing.list();
    expect(rows.find((r) => r.vip === '10.0.0.2')).toMatchObject({ state: 'conflict', gateways: [], detail: 'host port 8080 is held by 10.0.0.1:80' });
    expect(rows.find((r) => r.hostPort === 45000)).toMatchObject({ state: 'refused' });
    expect(ing.isExposed('10.0.0.1', 80)).toBe(true);
    expect(ing.isExposed('10.0.0.2', 80)).toBe(false);
    directory.remove('a1'); /* the app ended: the younger one gets the host port */
    expect([...f.routes.values()].map((r) => [r.hostPort, r.vip])).toEqual([[8080, '10.0.0.2']]);
    directory.remove('a2');
    expect(f.routes.size).toBe(0);
  });

  it('API exposures join the app ones; a listen error shows in the view', () => {
    const { f, ing } = setup();
    ing.setObjectClaims([{ vip: '10.0.0.7', port: 443, hostPort: 8443, source: 'api', origin: '10.0.0.7:443', since: 1 }]);
    const r = [...f.routes.values()][0] as IngressRoute;
    expect(r).toMatchObject({ hostPort: 8443, vip: '10.0.0.7', port: 443 });
    f.onListenError(r.id, 'EADDRINUSE');
    expect(ing.list()[0]).toMatchObject({ state: 'listen-error', detail: 'on self: EADDRINUSE', source: 'api' });
    expect(ing.holderOf(8443)?.vip).toBe('10.0.0.7');
  });

  it('with no live gateway an exposure says so', () => {
    const { directory, ing } = setup([{ node: 'g', address: '192.0.2.9', alive: false }]);
    directory.put({ id: 'a1', node: 'n2', identity: '10.0.0.1', vip: true, tags: {}, expose: [{ port: 80, hostPort: 8080 }], exposedAt: 1 });
    expect(ing.list()[0]).toMatchObject({ state: 'no-gateway', gateways: [] });
    expect(ing.liveGateways()).toEqual([]);
  });
});

describe('the ingress pick', () => {
  it('skips instances that refused, prefers live nodes, uses every instance otherwise', () => {
    const table = new ServiceTable();
    table.upsert(entry('dead', '192.0.2.3', 40001));
    table.upsert(entry('n1', '192.0.2.1', 40001));
    table.upsert(entry('n2', '192.0.2.2', 40001));
    const p = new IngressPicker({ table, lb: 'round-robin', nodeAlive: (n) => n !== 'dead' });
    const client = { ip: '203.0.113.5', port: 1 };
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(p.pick('10.0.0.80', 80, client, new Set())?.node as string);
    expect([...seen].sort()).toEqual(['n1', 'n2']);
    expect(p.pick('10.0.0.80', 80, client, new Set(['192.0.2.1:40001', '192.0.2.2:40001']))?.node).toBe('dead');
    expect(p.pick('10.0.0.80', 80, client, new Set(['192.0.2.1:40001', '192.0.2.2:40001', '192.0.2.3:40001']))).toBeUndefined();
    expect(p.pick('10.0.0.80', 81, client, new Set())).toBeUndefined();
  });
});

describe('NodeForwarder (loopback)', () => {
  const closers: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) await c();
  });

  const freePort = (): Promise<number> =>
    new Promise((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });

  function fetch(port: number, msg: string): Promise<string> {
    return new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      let got = '';
      c.on('connect', () => c.end(msg));
      c.on('data', (d) => (got += d.toString()));
      c.on('close', () => resolve(got));
      c.on('error', () => undefined);
    });
  }

  it('carries a connection to the next instance when one refuses', async () => {
    const refusing = await freePort();
    const upstream = net.createServer((s) => {
      s.on('data', (d) => s.end(`echo ${d.toString()} from ${s.remoteAddress}:${s.remotePort}`));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    closers.push(() => upstream.close());
    const good = (upstream.address() as net.AddressInfo).port;
    const table = new ServiceTable();
    table.upsert(entry('n1', '127.0.0.1', refusing, { id: 'n1/a/1' }));
    table.upsert(entry('n2', '127.0.0.1', good, { id: 'n2/a/1' }));
    const f = new NodeForwarder(new IngressPicker({ table, lb: 'round-robin', nodeAlive: () => true }));
    closers.push(() => f.close());
    const hostPort = await freePort();
    f.add({ id: 1, address: '127.0.0.1', hostPort, vip: '10.0.0.80', port: 80 });
    await new Promise((r) => setTimeout(r, 100));
    const answers: string[] = [];
    for (let i = 0; i < 2; i++) answers.push(await fetch(hostPort, `hi${i}`));
    for (const [i, a] of answers.entries()) expect(a).toMatch(new RegExp(`^echo hi${i} from 127\\.0\\.0\\.1:\\d+$`));
    await new Promise((r) => setTimeout(r, 50));
    const s = f.stats();
    expect(s.accepted).toBe(2);
    expect(s.forwarded).toBe(2);
    expect(s.refused).toBe(0);
    expect(s.active).toBe(0);
    expect(s.bytes).toBeGreaterThan(0);
  });

  it('refuses when no instance exists or all refuse, and reports a host port it cannot listen on', async () => {
    const refusing = await freePort();
    const table = new ServiceTable();
    table.upsert(entry('n1', '127.0.0.1', refusing));
    const f = new NodeForwarder(new IngressPicker({ table, lb: 'p2c', nodeAlive: () => true }));
    closers.push(() => f.close());
    const refusals: IngressRefusal[] = [];
    f.onRefusal = (r) => refusals.push(r);
    const errors: Array<[number, string]> = [];
    f.onListenError = (id, code) => errors.push([id, code]);
    const p1 = await freePort();
    const p2 = await freePort();
    f.add({ id: 1, address: '127.0.0.1', hostPort: p1, vip: '10.0.0.80', port: 80 });
    f.add({ id: 2, address: '127.0.0.1', hostPort: p2, vip: '10.0.0.99', port: 80 });
    f.add({ id: 3, address: '127.0.0.1', hostPort: p1, vip: '10.0.0.80', port: 80 });
    await new Promise((r) => setTimeout(r, 100));
    expect(errors).toEqual([[3, 'EADDRINUSE']]);
    expect(await fetch(p1, 'x')).toBe('');
    expect(await fetch(p2, 'x')).toBe('');
    expect(refusals.map((r) => [r.route, r.reason])).toEqual([
      [1, 'all-refused'],
      [2, 'no-instance'],
    ]);
    expect(f.stats().refused).toBe(2);
  });
});

describe('ingress metrics', () => {
  it('the forwarder counts and external refusals are exported', async () => {
    const { DaemonMetrics } = await import('../../src/daemon/metrics.js');
    const m = new DaemonMetrics({
      handler: () => ({ denied: 0, refused: 0, tcpConnections: 0, fastpathConnections: 0, daemonPortRefused: 0, limitServices: 0, limitOffers: 0, limitPending: 0 }),
      services: () => ({ local: 0, remote: 0 }),
      apps: () => 0,
      gossip: () => undefined,
      ingress: () => ({ accepted: 3, forwarded: 2, refused: 1, active: 1, bytes: 100, externalRefused: 4 }),
    });
    const text = await m.registry.metrics();
    expect(text).toContain('appswitch_ingress_connections_total{outcome="accepted"} 3');
    expect(text).toContain('appswitch_ingress_connections_total{outcome="forwarded"} 2');
    expect(text).toContain('appswitch_ingress_connections_total{outcome="refused"} 1');
    expect(text).toContain('appswitch_ingress_active_connections 1');
    expect(text).toContain('appswitch_external_refused_total 4');
  });
});

describe('the expose and unexpose control calls', () => {
  async function setup(gateways: GatewayNode[]) {
    const { ClusterObjects } = await import('../../src/table/cluster-objects.js');
    const { ExposureControl, EXPOSURE_KIND, decodeExposureBody, exposureStore, objectClaims } = await import('../../src/gateway/expose-control.js');
    const { VirtualRanges } = await import('../../src/table/addresses.js');
    const objects = new ClusterObjects('self', { validators: { [EXPOSURE_KIND]: (b) => decodeExposureBody(b) } });
    const directory = new AppDirectory();
    const ing = new Ingress({
      nodeName: 'self',
      gateway: false,
      listenAddress: '0.0.0.0',
      directory,
      table: new ServiceTable(),
      gateways: () => gateways,
      reserved: () => ({ pool: { low: 40000, high: 60000 }, daemon: [7946, 7947, 53] }),
      log,
    });
    objects.on('changed', () => ing.setObjectClaims(objectClaims(objects.list(EXPOSURE_KIND))));
    const ctl = new ExposureControl({ ingress: ing, ranges: new VirtualRanges(['10.0.0.0/8']), log, store: exposureStore(objects) });
    return { ctl, ing, objects, directory };
  }
  const code = (f: () => unknown): string | undefined => {
    try {
      f();
    } catch (e) {
      return `${(e as { code?: string }).code}: ${(e as Error).message}`;
    }
    return undefined;
  };

  it('validates every field, refuses held, pool and daemon host ports, and warns without a live gateway', async () => {
    const { ctl, ing, directory } = await setup([]);
    expect(code(() => ctl.handle('expose', { vip: 'nope', port: 80 }))).toMatch(/^ERR_BAD_PARAMS: vip nope is not an IP address/);
    expect(code(() => ctl.handle('expose', { vip: '192.168.1.1', port: 80 }))).toMatch(/^ERR_BAD_PARAMS: .*outside the virtual ranges/);
    expect(code(() => ctl.handle('expose', { vip: '10.0.0.5', port: 0 }))).toMatch(/^ERR_BAD_PARAMS: port must be/);
    expect(code(() => ctl.handle('expose', { vip: '10.0.0.5', port: 80, hostPort: 1.5 }))).toMatch(/^ERR_BAD_PARAMS: hostPort must be/);
    expect(code(() => ctl.handle('expose', { vip: '10.0.0.5', port: 80, hostPort: 45000 }))).toMatch(/^ERR_CONFLICT: host port 45000 is inside the port pool/);
    expect(code(() => ctl.handle('expose', { vip: '10.0.0.5', port: 80, hostPort: 7946 }))).toMatch(/^ERR_CONFLICT: host port 7946 is a port of the appswitch daemon/);
    const r = ctl.handle('expose', { vip: '10.0.0.5', port: 80, hostPort: 8080 });
    expect(r.warning).toBe('no gateway node: reachable once a node runs with --gateway');
    expect(r.exposure).toMatchObject({ vip: '10.0.0.5', port: 80, hostPort: 8080, source: 'api', state: 'no-gateway' });
    expect(code(() => ctl.handle('expose', { vip: '10.0.0.6', port: 80, hostPort: 8080 }))).toMatch(/^ERR_CONFLICT: host port 8080 is held by the exposure of 10.0.0.5:80/);
    expect(ctl.handle('expose', { vip: '10.0.0.5', port: 80, hostPort: 8081 }).exposure?.hostPort).toBe(8081); /* moved */
    expect(ing.holderOf(8080)).toBeUndefined();
    expect(code(() => ctl.handle('unexpose', { vip: '10.0.0.5', port: 80 }))).toBeUndefined();
    expect(ing.list()).toEqual([]);
    expect(code(() => ctl.handle('unexpose', { vip: '10.0.0.5', port: 80 }))).toBe('ERR_NOT_FOUND: 10.0.0.5:80 is not exposed');
    directory.put({ id: 'a1', node: 'n', identity: '10.0.0.7', vip: true, tags: {}, expose: [{ port: 80, hostPort: 9090 }], exposedAt: 1 });
    expect(code(() => ctl.handle('unexpose', { vip: '10.0.0.7', port: 80 }))).toMatch(/^ERR_NOT_FOUND: .*run --expose: it ends with the app/);
  });

  it('no warning while a gateway is alive; a forged object (name not its VIP:PORT) is not served', async () => {
    const { ctl, ing, objects } = await setup([{ node: 'g', address: '192.0.2.9', alive: true }]);
    expect(ctl.handle('expose', { vip: '10.0.0.5', port: 80 }).warning).toBeUndefined();
    expect(ing.list()[0]).toMatchObject({ hostPort: 80, gateways: ['g'], state: 'active' });
    objects.put('exposure', '10.0.0.9:1', { vip: '10.0.0.8', port: 22, hostPort: 2222, since: 1 });
    expect(ing.list().some((e) => e.hostPort === 2222)).toBe(false);
    expect(() => objects.put('exposure', '10.0.0.8:22', { vip: '10.0.0.8', port: 22, hostPort: 2222, since: 1, extra: 1 })).toThrow(/unknown field/);
  });
});
