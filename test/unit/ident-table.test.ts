/** The host's identity table (native/dtab.h as_ident): a same-host client's generator writes an entry for its
 * connection src -> dst right after connect(); the server's generator finds it at accept only for a connection from
 * that source address and port to that destination, and the accept that takes it uses it up. */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/binding.js';
import { ip16 } from '../../src/trap/decision-table.js';

const shm = native.hostShmCreate();
const NODE = ip16('192.0.2.1');
const SERVER = ip16('192.0.2.1');
const VIP = ip16('10.0.0.7');

describe('identity table', () => {
  it('an entry names the client app for the connection from its socket to the server', () => {
    expect(native.identPut(shm.fd, NODE, 41000, SERVER, 40001, VIP, 'app-1')).toBe(0);
    const e = native.identGet(shm.fd, NODE, 41000, SERVER, 40001, false);
    expect(e?.ip16.equals(VIP)).toBe(true);
    expect(e?.app).toBe('app-1');
  });

  it('the source address must match: the same port and destination from another host is not that connection', () => {
    expect(native.identPut(shm.fd, NODE, 41001, SERVER, 40001, VIP, 'app-2')).toBe(0);
    expect(native.identGet(shm.fd, ip16('192.0.2.3'), 41001, SERVER, 40001, true)).toBeNull();
    expect(native.identGet(shm.fd, NODE, 41001, SERVER, 40002, true)).toBeNull(); /* another destination */
    expect(native.identGet(shm.fd, NODE, 41002, SERVER, 40001, true)).toBeNull(); /* another source port */
    expect(native.identGet(shm.fd, NODE, 41001, SERVER, 40001, false)?.app).toBe('app-2'); /* still there for its own */
  });

  it('an accept uses the entry up', () => {
    expect(native.identPut(shm.fd, NODE, 41003, SERVER, 40001, VIP, 'app-3')).toBe(0);
    expect(native.identGet(shm.fd, NODE, 41003, SERVER, 40001, true)?.app).toBe('app-3');
    expect(native.identGet(shm.fd, NODE, 41003, SERVER, 40001, true)).toBeNull();
  });

  it('a new connection from the same socket replaces the entry (one entry per key)', () => {
    expect(native.identPut(shm.fd, NODE, 41004, SERVER, 40001, VIP, 'app-4')).toBe(0);
    expect(native.identPut(shm.fd, NODE, 41004, SERVER, 40001, ip16('10.0.0.8'), 'app-5')).toBe(0);
    const e = native.identGet(shm.fd, NODE, 41004, SERVER, 40001, true);
    expect(e?.app).toBe('app-5');
    expect(e?.ip16.equals(ip16('10.0.0.8'))).toBe(true);
    expect(native.identGet(shm.fd, NODE, 41004, SERVER, 40001, true)).toBeNull();
  });

  it('an entry of another source address and the same key does not hide this one', () => {
    expect(native.identPut(shm.fd, NODE, 41005, SERVER, 40001, VIP, 'app-6')).toBe(0);
    expect(native.identPut(shm.fd, ip16('192.0.2.9'), 41005, SERVER, 40001, VIP, 'app-7')).toBe(0);
    expect(native.identGet(shm.fd, NODE, 41005, SERVER, 40001, true)?.app).toBe('app-6');
    expect(native.identGet(shm.fd, ip16('192.0.2.9'), 41005, SERVER, 40001, true)?.app).toBe('app-7');
  });

  it('refuses an identity that is not 16 bytes', () => {
    expect(() => native.identPut(shm.fd, NODE, 41006, SERVER, 40001, Buffer.alloc(4), 'app-8')).toThrow();
  });
});
