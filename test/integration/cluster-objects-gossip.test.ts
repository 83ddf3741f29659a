/** Cluster objects over real gossip on loopback (two Cluster instances in this process, UDP on 127.0.0.1): a copy
 * published by one node is merged by the other, a tombstone deletes there, and a copy that fails its kind's
 * validation — or claims a far-future version — is refused, counted and logged, and never applied. */
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../../src/daemon/cluster.js';
import { VirtualRanges } from '../../src/table/addresses.js';
import { ClusterObjects } from '../../src/table/cluster-objects.js';
import { AppDirectory } from '../../src/table/directory.js';
import { ServiceTable } from '../../src/table/service-table.js';
import { VSERVICE_KIND, vserviceValidator } from '../../src/vservice/body.js';
import { waitFor } from '../helpers/hosts.js';

const ranges = new VirtualRanges(['10.0.0.0/8']);
const key = randomBytes(32);
let a: { c: Cluster; objects: ClusterObjects; lines: string[] };
let b: { c: Cluster; objects: ClusterObjects; lines: string[] };

async function node(name: string, port: number, joins: string[]): Promise<{ c: Cluster; objects: ClusterObjects; lines: string[] }> {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const objects = new ClusterObjects(name, { validators: { [VSERVICE_KIND]: vserviceValidator(ranges) } });
  const c = await Cluster.start({
    nodeName: name,
    nodeAddress: '127.0.0.1',
    gossipPort: port,
    joins,
    keys: [key],
    profile: 'local',
    table: new ServiceTable(),
    directory: new AppDirectory(),
    ranges,
    node: { ports: { low: 40000, high: 40100 }, gossipPort: port, peerPort: 7947, dnsPort: 53 },
    log,
    objects,
  });
  return { c, objects, lines };
}

const body = { vip: '10.0.0.50', port: 80, proto: 'tcp', backends: [{ ip: '198.51.100.10', port: 8080 }], tags: {} };

beforeAll(async () => {
  const base = 20000 + (process.pid % 20000);
  a = await node('oa', base, []);
  b = await node('ob', base + 1, [`127.0.0.1:${base}`]);
  await waitFor(() => a.c.members().filter((m) => m.state === 'alive').length === 2, 10_000);
});

afterAll(async () => {
  await Promise.all([a?.c.stop(), b?.c.stop()]);
});

describe('cluster objects over gossip', () => {
  it('a put on one node is merged by the other; a delete there reaches back', async () => {
    a.objects.put(VSERVICE_KIND, 'db', body);
    await waitFor(() => b.objects.get(VSERVICE_KIND, 'db'), 5000);
    expect(b.objects.get(VSERVICE_KIND, 'db')).toMatchObject({ origin: 'oa', body });
    b.objects.delete(VSERVICE_KIND, 'db');
    await waitFor(() => a.objects.get(VSERVICE_KIND, 'db') === undefined, 5000);
    expect(a.objects.all().find((o) => o.name === 'db')).toMatchObject({ deleted: true, origin: 'ob' });
  });

  it('refuses a copy with an invalid body, a key that does not match, or a far-future version: counted, logged, not applied', async () => {
    const before = a.c.rejected;
    const bad = (name: string, o: unknown): void => b.c.ml.setLocal(`@obj/${VSERVICE_KIND}/${name}`, JSON.stringify(o));
    bad('loop', { kind: VSERVICE_KIND, name: 'loop', version: Date.now(), origin: 'ob', body: { ...body, backends: [{ ip: '127.0.0.1', port: 80 }] } });
    bad('other', { kind: VSERVICE_KIND, name: 'not-other', version: Date.now(), origin: 'ob', body });
    bad('future', { kind: VSERVICE_KIND, name: 'future', version: Number.MAX_SAFE_INTEGER, origin: 'ob', body });
    bad('junk', 'not an object');
    await waitFor(() => a.c.rejected - before >= 4, 5000);
    expect(a.objects.all().map((o) => o.name)).toEqual(['db']); /* only the tombstone from before */
    const refused = a.lines.filter((l) => l.includes('record from gossip refused')).join('\n');
    expect(refused).toContain('loopback');
    expect(refused).toContain('do not match the key');
    expect(refused).toContain('too far in the future');
    expect(refused).toContain('not a JSON object');
  });
});
