/** The daemon's side of the socket guard (src/daemon/sockguard.ts) with injected kernel answers, and the native
 * sock_diag lookup's argument checks and answers on real sockets of this process. */
import net from 'node:net';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { socketOrigin } from '../../src/daemon/sockguard.js';
import { native, type TcpSocketInfo } from '../../src/native/binding.js';
import { SyscallError } from '../../src/errors.js';

const log = pino({ level: 'silent' });
const client = { ip: '192.0.2.1', port: 40001 };
const server = { ip: '192.0.2.1', port: 41000 };

function origin(info: TcpSocketInfo | null | Error, gen: bigint | Error, now = (): number => 0): ReturnType<typeof socketOrigin> {
  return socketOrigin(log, {
    tcpSocketCgroup: () => {
      if (info instanceof Error) throw info;
      return info;
    },
    generatorsCgroupId: () => {
      if (gen instanceof Error) throw gen;
      return gen;
    },
    now,
  });
}

const enoent = Object.assign(new Error('stat ENOENT'), { code: 'ENOENT' });

describe('socketOrigin', () => {
  it('a full socket of the generators cgroup is a generator\'s, any other cgroup is not', () => {
    expect(origin({ state: 1, cgroup: 101n, inode: 1 }, 101n)(client, server)).toBe('generator');
    expect(origin({ state: 1, cgroup: 1n, inode: 1 }, 101n)(client, server)).toBe('other');
  });

  it('no socket, or a time-wait one, is gone', () => {
    expect(origin(null, 101n)(client, server)).toBe('gone');
    expect(origin({ state: 6, cgroup: null, inode: 1 }, 101n)(client, server)).toBe('gone');
  });

  it('no generators cgroup yet: no socket can be a generator\'s', () => {
    expect(origin({ state: 1, cgroup: 5n, inode: 1 }, enoent)(client, server)).toBe('other');
  });

  it('what cannot be read is never taken as proof: undefined (the caller waits as before)', () => {
    expect(origin(new Error('sock_diag EMFILE'), 101n)(client, server)).toBeUndefined();
    expect(origin({ state: 1, cgroup: 5n, inode: 1 }, new Error('stat EACCES'))(client, server)).toBeUndefined();
    expect(origin({ state: 3, cgroup: null, inode: 1 }, 101n)(client, server)).toBeUndefined();
  });

  it('reads the generators id again (at most once a second) when a socket does not match: the cgroup may be new', () => {
    let gen = 101n;
    let t = 0;
    const o = socketOrigin(log, { tcpSocketCgroup: () => ({ state: 1, cgroup: 202n, inode: 1 }), generatorsCgroupId: () => gen, now: () => t });
    expect(o(client, server)).toBe('other');
    gen = 202n;
    expect(o(client, server)).toBe('other'); /* read less than a second ago */
    t = 1500;
    expect(o(client, server)).toBe('generator');
  });
});

describe('native.tcpSocketCgroup', () => {
  it('refuses bad arguments with EINVAL', () => {
    for (const [a, b, c, d] of [
      ['x', 1, '127.0.0.1', 1],
      ['127.0.0.1', -1, '127.0.0.1', 1],
      ['127.0.0.1', 1, '127.0.0.1', 70000],
      ['127.0.0.1', 1, '::1', 1],
    ] as const) {
      expect(() => native.tcpSocketCgroup(a, b, c, d)).toThrow(SyscallError);
    }
  });

  it('finds a connection of this process by its exact 4-tuple, not a listener on the same port', async () => {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const c = net.connect(port, '127.0.0.1');
    await new Promise((r) => c.on('connect', r));
    const info = native.tcpSocketCgroup('127.0.0.1', c.localPort as number, '127.0.0.1', port);
    expect(info?.state).toBe(1);
    expect(typeof info?.cgroup).toBe('bigint');
    expect(native.tcpSocketCgroup('127.0.0.1', port, '127.0.0.1', 9)).toBeNull(); /* the listener does not count */
    expect(native.tcpSocketCgroup('127.0.0.1', 1, '127.0.0.1', 2)).toBeNull();
    c.destroy();
    srv.close();
  });
});
