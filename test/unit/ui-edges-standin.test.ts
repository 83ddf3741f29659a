/** The live view's stand-in for H14's edges (src/ui/edges-standin.ts; deleted with it at merge): edges sampled from
 * the connection tracker's open connections. */
import { describe, expect, it } from 'vitest';
import type { ConnectionView } from '../../src/trap/connections.js';
import { ConnectionSampledEdges } from '../../src/ui/edges-standin.js';

describe('ConnectionSampledEdges (stand-in)', () => {
  const conn = (endpoint: string, since: string, service: string | null, path: 'tcp' | 'fastpath' = 'tcp'): ConnectionView => ({
    direction: 'out', path, client: '10.0.0.9', clientApp: 'c1', clientEndpoint: endpoint, service, endpoint: '192.0.2.2:40000',
    serverApp: 's1', serverNode: 'n2', accepted: true, since, ageSeconds: 0,
  });

  it('counts each connection once per appearance, active ones, the path, and a rate over 10 s', async () => {
    let open: ConnectionView[] = [];
    const edges = new ConnectionSampledEdges({ node: 'n1', connections: () => open, app: () => ({ name: 'client', identity: '10.0.0.9' }), serviceName: () => 'web' });
    const t0 = Date.now();
    open = [conn('192.0.2.1:1000', 'a', '10.0.0.5:80'), conn('192.0.2.1:1001', 'a', '10.0.0.5:80', 'fastpath'), conn('192.0.2.1:1002', 'a', null)];
    edges.sample(t0);
    edges.sample(t0 + 200); /* the same connections: not counted again */
    open = [conn('192.0.2.1:1000', 'b', '10.0.0.5:80')]; /* the port reused by a new connection */
    edges.sample(t0 + 400);
    const v = await edges.edges('node');
    expect(v.edges).toHaveLength(1);
    const e = v.edges[0];
    expect(e?.client).toEqual({ app: 'c1', name: 'client', identity: '10.0.0.9', node: 'n1' });
    expect(e?.service).toEqual({ vip: '10.0.0.5', port: 80, name: 'web' });
    expect(e).toMatchObject({ connections: 3, fastpath: 1, tcp: 2, active: 1, refused: 0, denied: 0 });
    expect(e?.ratePerSecond).toBe(0.3);
    open = [];
    edges.sample(t0 + 600);
    expect((await edges.edges('cluster')).edges[0]).toMatchObject({ active: 0, connections: 3 });
  });
});
