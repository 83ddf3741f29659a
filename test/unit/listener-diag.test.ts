/** socketHeld: before a sweep withdraws a binding it did not see in /proc, the kernel is asked for that very socket. */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { socketHeld } from '../../src/daemon/listener-diag.js';

const log = pino({ level: 'silent' });
const real = { ip: '192.0.2.1', port: 40001 };

describe('socketHeld', () => {
  it('UDP: held only when the socket at the endpoint has the binding inode (IPv4, then v4-mapped)', () => {
    const asked: string[] = [];
    const udp = (ip: string, port: number): number | null => {
      asked.push(`${ip}:${port}`);
      return ip.startsWith('::ffff:') ? 77 : null;
    };
    const held = socketHeld(log, () => null, udp);
    expect(held('77', 'udp', real)).toBe(true);
    expect(asked).toEqual(['192.0.2.1:40001', '::ffff:192.0.2.1:40001']);
    expect(held('78', 'udp', real)).toBe(false); /* another socket on the port is not this binding's */
  });

  it('TCP: held only for a listener with the binding inode', () => {
    let state = 10;
    const held = socketHeld(log, () => ({ state, inode: 5 }), () => null);
    expect(held('5', 'tcp', real)).toBe(true);
    expect(held('6', 'tcp', real)).toBe(false);
    state = 1; /* a connection, not the listener */
    expect(held('5', 'tcp', real)).toBe(false);
  });

  it('a lookup that fails says held: a socket we cannot see is not a closed one', () => {
    const fail = (): never => {
      throw Object.assign(new Error('sock_diag: EMFILE'), { code: 'EMFILE' });
    };
    const held = socketHeld(log, fail, fail);
    expect(held('1', 'udp', real)).toBe(true);
    expect(held('1', 'tcp', real)).toBe(true);
  });
});
