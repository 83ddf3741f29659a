/** gateway/steering.ts, local-ingress.ts and listener-fds.ts with an injected kernel: what is steered, which
 * duplicates are taken and closed, the relay fallback when sk_lookup is unavailable, and the accept-time verdicts on
 * steered connections (the attacks: a port that is not an exposure, a node that is not a gateway, another app). */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { SyscallError } from '../../src/errors.js';
import { LocalIngress } from '../../src/gateway/local-ingress.js';
import { findSocket, type ProcView } from '../../src/gateway/listener-fds.js';
import { type ExposureView, Steering, type SteeringNative } from '../../src/gateway/steering.js';
import { ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';

const log = pino({ level: 'silent' });

class FakeNative implements SteeringNative {
  open = 0;
  next = 100;
  set = new Map<number, number[]>();
  live = new Set<number>();
  closed: number[] = [];
  openError?: SyscallError;
  skLookupOpen(): number {
    if (this.openError) throw this.openError;
    this.open++;
    return 7;
  }
  skLookupSet(_h: number, port: number, fds: number[]): void {
    this.set.set(port, [...fds]);
  }
  skLookupDelete(_h: number, port: number): void {
    if (!this.set.delete(port)) throw new SyscallError('skLookupDelete ENOENT', -2, 'ENOENT', 'skLookupDelete');
  }
  skLookupClose(): void {
    this.set.clear();
    this.open--;
  }
  pidGetFd(pid: number, _fd: number): number {
    if (pid === 999) throw new SyscallError('pidfd_getfd ESRCH', -3, 'ESRCH', 'pidfd_getfd');
    const d = this.next++;
    this.live.add(d);
    return d;
  }
  close(fd: number): void {
    this.live.delete(fd);
    this.closed.push(fd);
  }
}

const app = (id: string): AppRecord => ({ id, identity: '10.0.0.5', launcherPid: 1, uid: 0, startedAt: 0, secret: 'x', tags: {}, cmd: ['x'] });

function setup(view: Partial<ExposureView> = {}): { n: FakeNative; s: Steering; exposed: Map<number, string>; gw: { on: boolean } } {
  const n = new FakeNative();
  const s = new Steering(n, log);
  const exposed = new Map<number, string>([[8080, '10.0.0.5:80']]);
  const gw = { on: true };
  s.view = { isGateway: () => gw.on, serviceAt: (p) => exposed.get(p), ...view };
  return { n, s, exposed, gw };
}

describe('Steering', () => {
  it('publishes for the generators only what steeredClient would accept: a gateway, the exposure\'s own service, its apps', () => {
    const { s, exposed, gw } = setup();
    s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }, { pid: 11, fd: 4, appId: 'a2' }], '10.0.0.5:80');
    s.steer(9090, [{ pid: 10, fd: 5, appId: 'a1' }], '10.0.0.5:90'); /* no exposure holds 9090 */
    expect(s.accepting()).toEqual([
      { hostPort: 8080, appId: 'a1' },
      { hostPort: 8080, appId: 'a2' },
    ]);
    exposed.set(8080, '10.0.0.6:80'); /* the host port went to another service's exposure */
    expect(s.accepting()).toEqual([]);
    exposed.set(8080, '10.0.0.5:80');
    gw.on = false; /* no longer a gateway */
    expect(s.accepting()).toEqual([]);
    s.close();
  });

  it('says when what it steers changes (the decision table republishes)', () => {
    const n = new FakeNative();
    let changes = 0;
    const s = new Steering(n, log, { onChange: () => changes++ });
    s.view = { isGateway: () => true, serviceAt: (p) => `10.0.0.5:${p - 8000}` };
    expect(s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }, { pid: 11, fd: 4, appId: 'a2' }], '10.0.0.5:80')).toBe(true);
    expect(changes).toBe(1);
    expect(s.accepting()).toEqual([
      { hostPort: 8080, appId: 'a1' },
      { hostPort: 8080, appId: 'a2' },
    ]);
    s.unsteer(8080);
    expect(changes).toBe(2);
    s.unsteer(8080); /* nothing steered there: no change */
    expect(changes).toBe(2);
    expect(s.steer(8081, [{ pid: 999, fd: 3, appId: 'a1' }], '10.0.0.5:81')).toBe(false); /* no listener taken */
    expect(changes).toBe(2);
    s.steer(8082, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:82');
    s.close();
    expect(changes).toBe(4);
    expect(s.accepting()).toEqual([]);
  });

  it('steer takes a duplicate of each listener, hands them to the kernel and closes them', () => {
    const { n, s } = setup();
    expect(s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }, { pid: 11, fd: 4, appId: 'a2' }], '10.0.0.5:80')).toBe(true);
    expect(n.set.get(8080)).toEqual([100, 101]);
    expect(n.live.size).toBe(0); /* every duplicate closed: the map holds the kernel's references */
    expect(s.status()).toMatchObject({ available: true, ports: { '8080': '10.0.0.5:80' } });
    s.unsteer(8080);
    expect(n.set.has(8080)).toBe(false);
    s.unsteer(8080); /* twice is fine */
    s.close();
    expect(n.open).toBe(0);
  });

  it('listeners whose process is gone are skipped; none left: not steered (the relay serves)', () => {
    const { n, s } = setup();
    expect(s.steer(8080, [{ pid: 999, fd: 3, appId: 'a1' }, { pid: 10, fd: 3, appId: 'a2' }], '10.0.0.5:80')).toBe(true);
    expect(n.set.get(8080)).toHaveLength(1);
    expect(s.steer(8080, [{ pid: 999, fd: 3, appId: 'a1' }], '10.0.0.5:80')).toBe(false);
    expect(n.set.has(8080)).toBe(false);
    expect(() => s.steer(0, [], 'x')).toThrow(RangeError);
    expect(() => s.steer(65536, [], 'x')).toThrow(RangeError);
  });

  it('no sk_lookup (old kernel) or no capability: steer says false, once and for all, and status says why', () => {
    for (const code of ['EOPNOTSUPP', 'EPERM']) {
      const { n, s } = setup();
      n.openError = new SyscallError(`bpf ${code}`, -1, code, 'bpf');
      expect(s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80')).toBe(false);
      n.openError = undefined;
      expect(s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80')).toBe(false);
      expect(n.open).toBe(0);
      const st = s.status();
      expect(st.available).toBe(false);
      expect(st.reason).toContain(code);
    }
  });

  it('turned off (--no-ingress-steering): nothing is loaded, steer says false, status says why', () => {
    const n = new FakeNative();
    const s = new Steering(n, log, { off: 'turned off (--no-ingress-steering)' });
    expect(s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80')).toBe(false);
    expect(n.open).toBe(0);
    expect(n.live.size).toBe(0);
    expect(s.status()).toMatchObject({ available: false, reason: 'turned off (--no-ingress-steering)' });
  });

  it('accept: a steered connection of an exposure on a gateway is the outside client itself', () => {
    const { s } = setup();
    s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80');
    const v = s.steeredClient(app('a1'), { ip: '198.51.100.10', port: 51000 }, { ip: '192.0.2.1', port: 8080 });
    expect(v).toEqual({ who: { identity: '198.51.100.10', port: 51000, appId: 'external', tags: {} } });
    expect(s.steeredClient(app('a1'), { ip: '::ffff:198.51.100.10', port: 51000 }, { ip: '::ffff:192.0.2.1', port: 8080 })?.who?.identity).toBe('198.51.100.10');
    expect(s.stats.accepted).toBe(2);
  });

  it('accept (attacks): a port that is no longer an exposure of the service, or a node that is not a gateway, is refused', () => {
    const { s, exposed, gw } = setup();
    s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80');
    const peer = { ip: '198.51.100.10', port: 51000 };
    exposed.set(8080, '10.0.0.6:80'); /* the host port now exposes another service */
    expect(s.steeredClient(app('a1'), peer, { ip: '192.0.2.1', port: 8080 })?.refused).toMatch(/not an exposure/);
    exposed.delete(8080); /* withdrawn, not unsteered yet */
    expect(s.steeredClient(app('a1'), peer, { ip: '192.0.2.1', port: 8080 })?.refused).toMatch(/not an exposure/);
    exposed.set(8080, '10.0.0.5:80');
    gw.on = false;
    expect(s.steeredClient(app('a1'), peer, { ip: '192.0.2.1', port: 8080 })?.refused).toMatch(/not a gateway/);
    expect(s.stats.refused).toBe(3);
    expect(s.stats.accepted).toBe(0);
  });

  it('accept (attack): a trapped program of this node connecting to a steered port is refused; unreadable: refused too', () => {
    let origin: 'generator' | 'other' | 'gone' | undefined = 'generator';
    const n = new FakeNative();
    const s = new Steering(n, log, { origin: () => origin });
    s.view = { isGateway: () => true, serviceAt: () => '10.0.0.5:80' };
    s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80');
    const peer = { ip: '198.51.100.2', port: 51000 };
    const local = { ip: '198.51.100.2', port: 8080 };
    expect(s.steeredClient(app('a1'), peer, local)?.refused).toMatch(/trapped program/);
    origin = undefined;
    expect(s.steeredClient(app('a1'), peer, local)?.refused).toMatch(/cannot be read/);
    origin = 'other'; /* a process of this host not under appswitch: an outside client, as through the relay */
    expect(s.steeredClient(app('a1'), peer, local)?.who?.identity).toBe('198.51.100.2');
    origin = 'gone'; /* no client socket on this host: another host's */
    expect(s.steeredClient(app('a1'), peer, local)?.who?.identity).toBe('198.51.100.2');
  });

  it('accept: anything not steered by us is left to the usual identification (which refuses unknown peers)', () => {
    const { s } = setup();
    s.steer(8080, [{ pid: 10, fd: 3, appId: 'a1' }], '10.0.0.5:80');
    const peer = { ip: '198.51.100.10', port: 51000 };
    expect(s.steeredClient(app('a1'), peer, { ip: '192.0.2.1', port: 9999 })).toBeUndefined(); /* steered by hand */
    expect(s.steeredClient(app('a2'), peer, { ip: '192.0.2.1', port: 8080 })).toBeUndefined(); /* another app */
    expect(s.steeredClient(app('a1'), peer, undefined)).toBeUndefined();
    s.unsteer(8080);
    expect(s.steeredClient(app('a1'), peer, { ip: '192.0.2.1', port: 8080 })).toBeUndefined();
  });
});

describe('findSocket', () => {
  const proc: ProcView = {
    fds: (pid) => (pid === 1 ? [0, 1, 3] : pid === 2 ? [0, 5] : []),
    link: (pid, fd) => (pid === 2 && fd === 5 ? 'socket:[4242]' : pid === 1 && fd === 3 ? 'socket:[1]' : '/dev/null'),
    children: (pid) => (pid === 1 ? [2, 2] : pid === 2 ? [1] : []),
  };
  it('finds the descriptor in the program or a descendant; loops and unknown inodes end', () => {
    expect(findSocket(1, '4242', proc)).toEqual({ pid: 2, fd: 5 });
    expect(findSocket(1, '1', proc)).toEqual({ pid: 1, fd: 3 });
    expect(findSocket(1, '77', proc)).toBeUndefined();
  });
  it('a real socket of this process', async () => {
    const net = await import('node:net');
    const { readlinkSync, readdirSync } = await import('node:fs');
    const srv = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    try {
      const fd = (srv as unknown as { _handle: { fd: number } })._handle.fd;
      const inode = /socket:\[(\d+)\]/.exec(readlinkSync(`/proc/self/fd/${fd}`))![1]!;
      expect(readdirSync('/proc/self/fd').length).toBeGreaterThan(0);
      expect(findSocket(process.pid, inode)).toEqual({ pid: process.pid, fd });
    } finally {
      srv.close();
    }
  });
});

describe('LocalIngress', () => {
  it('steers an exposure to the local instances in the table, follows them, and unsteers when none is left', async () => {
    const n = new FakeNative();
    const s = new Steering(n, log);
    const table = new ServiceTable();
    const proc: ProcView = { fds: (pid) => [pid], link: (pid) => `socket:[${pid * 10}]`, children: () => [] };
    const pids: Record<string, number> = { a1: 5, a2: 6 };
    const li = new LocalIngress({ nodeName: 'n1', table, pidOf: (id) => pids[id], steering: s, log, proc });
    const entry = (appId: string, socket: string, node = 'n1') => ({ id: `${node}/${appId}/${socket}`, vip: '10.0.0.5', port: 80, proto: 'tcp' as const, node, endpoint: { ip: '192.0.2.1', port: 40000 }, appId, tags: {}, version: table.nextVersion(), socket });
    expect(li.steerExposure(8080, '10.0.0.5', 80)).toBe(false); /* no instance yet */
    table.upsert(entry('a1', '50'));
    table.upsert(entry('a9', '99', 'n2')); /* another node's: never steered to */
    await new Promise((r) => setTimeout(r, 120));
    expect(n.set.get(8080)).toHaveLength(1);
    table.upsert(entry('a2', '60'));
    await new Promise((r) => setTimeout(r, 120));
    expect(n.set.get(8080)).toHaveLength(2);
    table.removeWhere((e) => e.node === 'n1');
    await new Promise((r) => setTimeout(r, 120));
    expect(n.set.has(8080)).toBe(false);
    li.close();
  });
});
