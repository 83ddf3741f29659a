/* The connection tracker's bookkeeping of connections decided in generators: the client's AS_DECIDED batch and the
 * server's AS_CLAIMED batch come from two generators and reach the daemon in either order. */
import { describe, expect, it } from 'vitest';
import { ConnectionTracker } from '../../src/trap/connections.js';

const service = () => ({ service: '10.0.0.5:80', app: 'srv', node: 'a' });

describe('ConnectionTracker', () => {
  it('marks a connection accepted whichever of the two reports comes first', () => {
    const t = new ConnectionTracker(service);
    const client = { identity: '169.254.1.1', appId: 'cli' };
    /* client first, then the server's claim */
    t.connected(client, { ip: '192.0.2.1', port: 5001 }, { ip: '192.0.2.1', port: 40000 }, 'fastpath', '77');
    t.markAccepted({ ip: '192.0.2.1', port: 5001 }, 'srv', 'a');
    /* the server's claim first, then the client's record */
    t.markAccepted({ ip: '192.0.2.1', port: 5002 }, 'srv', 'a');
    t.connected(client, { ip: '192.0.2.1', port: 5002 }, { ip: '192.0.2.1', port: 40000 }, 'tcp');
    /* a claim for a connection nobody reports stays out of the list */
    t.markAccepted({ ip: '192.0.2.1', port: 5003 }, 'srv', 'a');
    const list = t.list();
    expect(list.map((c) => [c.clientEndpoint, c.path, c.accepted, c.serverApp])).toEqual([
      ['192.0.2.1:5001', 'fastpath', true, 'srv'],
      ['192.0.2.1:5002', 'tcp', true, 'srv'],
    ]);
  });
});
