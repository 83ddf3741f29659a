/** The host's identity table (native/dtab.h as_ident) for outside clients: the daemon writes an entry for a gateway's
 * relay socket -> an instance; it is found only for a connection from that source address and port to that
 * destination, carries the outside client's address and port, and is used up by the accept that takes it. */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/binding.js';
import { ip16 } from '../../src/trap/decision-table.js';

const shm = native.hostShmCreate();
const GW = ip16('192.0.2.1');
const INST = ip16('192.0.2.2');
const CLIENT = ip16('198.51.100.10');

describe('identity table: outside clients', () => {
  it('an entry names the outside client for the connection from the gateway socket to the instance', () => {
    expect(native.identPutOutside(shm.fd, GW, 41000, INST, 40001, CLIENT, 53111)).toBe(0);
    const e = native.identGet(shm.fd, GW, 41000, INST, 40001, false);
    expect(e?.kind).toBe('outside');
    expect(e?.ip16.equals(CLIENT)).toBe(true);
    expect(e?.port).toBe(53111);
  });

  it('the source address must match: the same port and destination from another host is not that connection', () => {
    expect(native.identPutOutside(shm.fd, GW, 41001, INST, 40001, CLIENT, 53112)).toBe(0);
    expect(native.identGet(shm.fd, ip16('192.0.2.3'), 41001, INST, 40001, true)).toBeNull();
    expect(native.identGet(shm.fd, GW, 41001, INST, 40002, true)).toBeNull(); /* another destination */
    expect(native.identGet(shm.fd, GW, 41002, INST, 40001, true)).toBeNull(); /* another source port */
    expect(native.identGet(shm.fd, GW, 41001, INST, 40001, false)?.port).toBe(53112); /* still there for its own */
  });

  it('an accept uses the entry up', () => {
    expect(native.identPutOutside(shm.fd, GW, 41003, INST, 40001, CLIENT, 53113)).toBe(0);
    expect(native.identGet(shm.fd, GW, 41003, INST, 40001, true)?.port).toBe(53113);
    expect(native.identGet(shm.fd, GW, 41003, INST, 40001, true)).toBeNull();
  });

  it('a new connection from the same socket replaces the entry (one entry per key)', () => {
    expect(native.identPutOutside(shm.fd, GW, 41004, INST, 40001, CLIENT, 1)).toBe(0);
    expect(native.identPutOutside(shm.fd, GW, 41004, INST, 40001, ip16('198.51.100.11'), 2)).toBe(0);
    const e = native.identGet(shm.fd, GW, 41004, INST, 40001, true);
    expect(e?.port).toBe(2);
    expect(e?.ip16.equals(ip16('198.51.100.11'))).toBe(true);
    expect(native.identGet(shm.fd, GW, 41004, INST, 40001, true)).toBeNull();
  });

  it('an entry of another source address and the same key does not hide this one', () => {
    expect(native.identPutOutside(shm.fd, GW, 41005, INST, 40001, CLIENT, 7)).toBe(0);
    expect(native.identPutOutside(shm.fd, ip16('192.0.2.9'), 41005, INST, 40001, CLIENT, 8)).toBe(0);
    expect(native.identGet(shm.fd, GW, 41005, INST, 40001, true)?.port).toBe(7);
    expect(native.identGet(shm.fd, ip16('192.0.2.9'), 41005, INST, 40001, true)?.port).toBe(8);
  });
});
