/** OutsideConnections (src/trap/outside-connections.ts): outside clients' connections kept as the generators' bytes,
 * listed as `get connections` rows, hidden once the sweep finds them closed, the oldest giving way when full. */
import { describe, expect, it } from 'vitest';
import { OutsideConnections } from '../../src/trap/outside-connections.js';
import { AF_INET6, CLAIMED_ENTRY_SIZE, encodeSockaddr, type OutsideClaims } from '../../src/trap/protocol.js';

/** Claims of kind `how` from peers 192.0.2.1:first.. (clients 203.0.113.9:first+10000..). */
function claims(first: number, count: number, how: 1 | 2 = 1): OutsideClaims {
  const b = Buffer.alloc(count * CLAIMED_ENTRY_SIZE);
  for (let i = 0; i < count; i++) {
    const o = i * CLAIMED_ENTRY_SIZE;
    encodeSockaddr({ ip: '192.0.2.1', port: first + i }, AF_INET6).copy(b, o, 8, 24);
    b.writeUInt16BE(first + i, o + 16);
    b[o + 18] = how;
    encodeSockaddr({ ip: '203.0.113.9', port: first + i + 10000 }, AF_INET6).copy(b, o + 20, 8, 24);
    b.writeUInt16BE(first + i + 10000, o + 36);
    b.writeUInt16BE(8080, o + 38);
  }
  return { entries: b, count, steered: how === 1 ? count : 0, relayed: how === 2 ? count : 0 };
}

/** The rows' client ports, minus 10000: the peer ports the claims came from. */
const peers = (o: OutsideConnections): string[] => o.list().map((c) => `192.0.2.1:${Number(c.clientEndpoint.split(':')[1]) - 10000}`);

describe('outside connections', () => {
  it('lists each as an accepted "in" connection of an external client, oldest first', () => {
    const o = new OutsideConnections(16);
    o.add('app1', 'n1', claims(1000, 2), 5_000);
    o.add('app2', 'n1', claims(2000, 1, 2), 6_000);
    const rows = o.list(9_000);
    expect(rows).toHaveLength(3);
    expect(rows[0]).toEqual({
      direction: 'in', path: 'tcp', client: '203.0.113.9', clientApp: 'external', clientEndpoint: '203.0.113.9:11000', service: null, endpoint: '-',
      serverApp: 'app1', serverNode: 'n1', accepted: true, since: new Date(5_000).toISOString(), ageSeconds: 4,
    });
    expect(rows.map((r) => r.serverApp)).toEqual(['app1', 'app1', 'app2']);
    expect(o.size).toBe(3);
  });

  it('when full, the oldest give way (counted), also across the end of the ring and within one batch', () => {
    const o = new OutsideConnections(8);
    o.add('a', 'n', claims(1, 5));
    o.add('a', 'n', claims(100, 6)); /* wraps */
    expect(peers(o)).toEqual(['192.0.2.1:4', '192.0.2.1:5', ...[100, 101, 102, 103, 104, 105].map((p) => `192.0.2.1:${p}`)]);
    expect(o.overwritten).toBe(3);
    o.add('a', 'n', claims(200, 20)); /* more than it holds */
    expect(peers(o)).toEqual([212, 213, 214, 215, 216, 217, 218, 219].map((p) => `192.0.2.1:${p}`));
    expect(o.overwritten).toBe(3 + 20);
  });

  it('the sweep hides the closed ones; reported after its snapshot, still shown; more than half full, the closed go', () => {
    const o = new OutsideConnections(8);
    o.add('a', 'n', claims(1, 3), 1_000);
    o.sweep({ tcpLocal: new Set(), tcpRemote: new Set(['192.0.2.1:2']), takenAt: 2_000 });
    expect(peers(o)).toEqual(['192.0.2.1:2']);
    o.add('a', 'n', claims(10, 2), 3_000);
    expect(peers(o)).toEqual(['192.0.2.1:2', '192.0.2.1:10', '192.0.2.1:11']);
    expect(o.size).toBe(3);
    /* 5 of 8 slots taken: this sweep compacts, and the next batch does not push out the long-lived :2 */
    o.sweep({ tcpLocal: new Set(), tcpRemote: new Set(['192.0.2.1:2', '192.0.2.1:11']), takenAt: 4_000 });
    o.add('a', 'n', claims(20, 6), 5_000);
    expect(peers(o)).toEqual(['192.0.2.1:2', '192.0.2.1:11', ...[20, 21, 22, 23, 24, 25].map((p) => `192.0.2.1:${p}`)]);
    expect(o.overwritten).toBe(0);
  });
});
