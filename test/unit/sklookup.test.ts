/** sk_lookup steering (native/sklookup.c through the addon) on real sockets in a network namespace this test
 * creates: a steered port reaches another port's listener (the accepted socket keeps the address the client asked
 * for and sees the real client), several listeners share a port, delete and close give the port back to the normal
 * lookup, and every bad argument is refused. Also pidfd_getfd (native/taskfd.c), which takes the listeners. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyscallError } from '../../src/errors.js';
import { native } from '../../src/native/binding.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const helpers = path.join(here, '../helpers');
const ns = `skl-${process.pid}`;
const servers: ChildProcess[] = [];

/** Starts whoami-server.py in the namespace; resolves with its pid and its listening socket's fd number. */
function server(port: number, tag: string, bind = '0.0.0.0'): Promise<{ pid: number; fd: number }> {
  const p = spawn('ip', ['netns', 'exec', ns, 'python3', path.join(helpers, 'whoami-server.py'), String(port), tag, bind], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(p);
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: p.stdout! });
    rl.once('line', (line) => {
      const m = /^listening (\d+) (\d+)$/.exec(line);
      if (m) resolve({ fd: Number(m[1]), pid: Number(m[2]) });
      else reject(new Error(`server said: ${line}`));
    });
    p.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
}

interface Answer {
  reply?: string;
  local?: string;
  error?: string;
}
function connectN(ip: string, port: number, n: number): Answer[] {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'python3', path.join(helpers, 'whoami-client.py'), ip, String(port), String(n)], { encoding: 'utf8' });
  return out.trim().split('\n').map((l) => JSON.parse(l) as Answer);
}
function connect(ip: string, port: number): Answer {
  return connectN(ip, port, 1)[0]!;
}

function errnoOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SyscallError);
    return (e as SyscallError).code;
  }
  throw new Error('expected a SyscallError');
}

let a: { pid: number; fd: number };
let b: { pid: number; fd: number };

beforeAll(async () => {
  execFileSync('ip', ['netns', 'add', ns]);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  execFileSync('ip', ['-n', ns, 'addr', 'add', '192.0.2.9/32', 'dev', 'lo']);
  a = await server(7001, 'A');
  b = await server(7003, 'B');
});

afterAll(() => {
  for (const p of servers) p.kill('SIGKILL');
  execFileSync('ip', ['netns', 'del', ns]);
});

describe('sk_lookup steering', () => {
  it('a steered port reaches the listener on another port: the accepted socket shows the port asked for and the real client', () => {
    expect(connect('127.0.0.1', 7002).error).toBe('ECONNREFUSED'); /* nothing listens on 7002 */
    const h = native.skLookupOpen(`/run/netns/${ns}`);
    try {
      const dupA = native.pidGetFd(a.pid, a.fd);
      native.skLookupSet(h, 7002, dupA);
      native.close(dupA); /* the map holds its own reference */
      for (const ip of ['127.0.0.1', '192.0.2.9']) {
        const r = connect(ip, 7002);
        expect(r.error).toBeUndefined();
        /* getsockname on A's accepted socket: the address and port the client connected to; getpeername: the client */
        expect(r.reply).toBe(`A local=${ip}:7002 peer=${r.local}`);
      }
      /* other ports keep the normal lookup */
      expect(connect('127.0.0.1', 7003).reply).toMatch(/^B local=127\.0\.0\.1:7003 /);
      expect(connect('127.0.0.1', 7001).reply).toMatch(/^A local=127\.0\.0\.1:7001 /);
      expect(connect('127.0.0.1', 7004).error).toBe('ECONNREFUSED');

      native.skLookupDelete(h, 7002);
      expect(connect('127.0.0.1', 7002).error).toBe('ECONNREFUSED');
      expect(errnoOf(() => native.skLookupDelete(h, 7002))).toBe('ENOENT');
    } finally {
      native.skLookupClose(h);
    }
  });

  it('several listeners on one port: each connection goes to one of them, all of them get some', () => {
    const h = native.skLookupOpen(`/run/netns/${ns}`);
    try {
      const fds = [native.pidGetFd(a.pid, a.fd), native.pidGetFd(b.pid, b.fd)];
      native.skLookupSet(h, 7002, fds);
      for (const fd of fds) native.close(fd);
      const seen = new Map<string, number>();
      for (const r of connectN('127.0.0.1', 7002, 40)) {
        const tag = (r.reply ?? r.error ?? '?').split(' ')[0];
        seen.set(tag, (seen.get(tag) ?? 0) + 1);
      }
      /* a fair coin 40 times: both sides are missed with probability 2^-39 */
      expect([...seen.keys()].sort()).toEqual(['A', 'B']);
      /* replacing the set with one listener: only that one from now on */
      const fb = native.pidGetFd(b.pid, b.fd);
      native.skLookupSet(h, 7002, [fb]);
      native.close(fb);
      for (const r of connectN('127.0.0.1', 7002, 10)) expect(r.reply).toMatch(/^B local=127\.0\.0\.1:7002 /);
    } finally {
      native.skLookupClose(h);
    }
  });

  it('a listener bound to one address takes connections to any local address of the steered port', async () => {
    const c = await server(7005, 'C', '127.0.0.1');
    const h = native.skLookupOpen(`/run/netns/${ns}`);
    try {
      const fd = native.pidGetFd(c.pid, c.fd);
      native.skLookupSet(h, 7006, fd);
      native.close(fd);
      const r = connect('192.0.2.9', 7006);
      expect(r.reply).toBe(`C local=192.0.2.9:7006 peer=${r.local}`);
      expect(connect('192.0.2.9', 7005).error).toBe('ECONNREFUSED'); /* its own port: only on its own address */
    } finally {
      native.skLookupClose(h);
    }
  });

  it('close detaches the program: a port still steered goes back to the normal lookup', () => {
    const h = native.skLookupOpen(`/run/netns/${ns}`);
    const fd = native.pidGetFd(a.pid, a.fd);
    native.skLookupSet(h, 7002, fd);
    native.close(fd);
    expect(connect('127.0.0.1', 7002).reply).toMatch(/^A /);
    native.skLookupClose(h);
    expect(connect('127.0.0.1', 7002).error).toBe('ECONNREFUSED');
    expect(errnoOf(() => native.skLookupClose(h))).toBe('EBADF');
    expect(errnoOf(() => native.skLookupSet(h, 7002, 0))).toBe('EBADF');
    expect(errnoOf(() => native.skLookupDelete(h, 7002))).toBe('EBADF');
  });

  it('refuses bad arguments: ports, fd lists, sockets that are not TCP listeners', () => {
    const h = native.skLookupOpen(`/run/netns/${ns}`);
    const fd = native.pidGetFd(a.pid, a.fd);
    try {
      for (const port of [0, -1, 65536, 1.5e9, Number.NaN]) {
        expect(() => native.skLookupSet(h, port, fd)).toThrow(TypeError);
        expect(() => native.skLookupDelete(h, port)).toThrow(TypeError);
      }
      expect(() => native.skLookupSet(h, 7002, [])).toThrow(TypeError);
      expect(() => native.skLookupSet(h, 7002, Array(9).fill(fd) as number[])).toThrow(TypeError);
      expect(() => native.skLookupSet(h, 7002, [-1])).toThrow(TypeError);
      expect(() => native.skLookupSet(h, 7002, 'x' as unknown as number)).toThrow(TypeError);
      /* fd 0 (not a socket) and a Unix socket: not TCP listeners */
      expect(errnoOf(() => native.skLookupSet(h, 7002, 0))).toMatch(/ENOTSOCK|EOPNOTSUPP/);
      const udp = udpFd();
      try {
        expect(errnoOf(() => native.skLookupSet(h, 7002, udp))).toBe('EOPNOTSUPP');
      } finally {
        native.close(udp);
      }
      expect(errnoOf(() => native.skLookupSet(h, 7002, 99999))).toBe('EBADF');
      expect(connect('127.0.0.1', 7002).error).toBe('ECONNREFUSED'); /* nothing was half-set */
      expect(() => native.skLookupOpen(42 as unknown as string)).toThrow(TypeError);
      expect(errnoOf(() => native.skLookupOpen('/nonexistent/netns'))).toBe('ENOENT');
      expect(errnoOf(() => native.skLookupOpen('/etc/hostname'))).toMatch(/EINVAL|EBADF|EOPNOTSUPP/);
    } finally {
      native.close(fd);
      native.skLookupClose(h);
    }
  });

  it('pidGetFd: the errors of pidfd_getfd', () => {
    expect(errnoOf(() => native.pidGetFd(a.pid, 9999))).toBe('EBADF');
    expect(errnoOf(() => native.pidGetFd(0x3fffffff, 0))).toBe('ESRCH');
    expect(() => native.pidGetFd(0, 0)).toThrow(TypeError);
    expect(() => native.pidGetFd(1, -1)).toThrow(TypeError);
  });

  it('without CAP_BPF/CAP_NET_ADMIN open fails with EPERM (the caller falls back to the relay)', () => {
    const addon = path.resolve(here, '../../build/Release/appswitch.node');
    const js = `try { require(${JSON.stringify(addon)}).skLookupOpen(); console.log('opened') } catch (e) { console.log(e.code) }`;
    const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', process.execPath, '-e', js], { encoding: 'utf8' });
    expect(out.trim()).toBe('EPERM');
  });
});

/** A listening Unix socket of this process (its fd number): a listener, but not TCP. */
function udpFd(): number {
  const s = native.seqpacketListen(`/tmp/skl-${process.pid}.sock`, 0o600); 
  return s;
}
