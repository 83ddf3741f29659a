/** Edges across the cluster: the peer API's `edges` request (daemon/peers.ts) carries a node's edges in signed lines
 * under the line limit; the answer is decoded once at the boundary (src/events/edge-wire.ts): an element that is not
 * a valid edge of the answering node is dropped and counted, an answer that is not one is dropped, and never more
 * than MAX_EDGES_PER_ANSWER edges are taken from a node. ClusterEdges lists nodes that did not answer as missing. */
import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { PeerApi } from '../../src/daemon/peers.js';
import { ClusterEdges } from '../../src/events/edge-cluster.js';
import { chunkEdges, decodeEdge, EdgeAnswer, encodeEdge, MAX_EDGES_PER_ANSWER } from '../../src/events/edge-wire.js';
import type { EdgeView } from '../../src/events/types.js';

const silent = pino({ level: 'silent' });
const KEY = new Uint8Array(32).fill(7);
const open: Array<PeerApi | net.Server> = [];
/** Connections of the fake peers (closed before their servers). */
const socketsOf = new Map<net.Server, net.Socket[]>();

function fakePeer(onConn: (sock: net.Socket) => void): net.Server {
  const srv = net.createServer((sock) => {
    socketsOf.get(srv)?.push(sock);
    sock.on('error', () => undefined);
    onConn(sock);
  });
  socketsOf.set(srv, []);
  open.push(srv);
  return srv;
}
let nextPort = 46000 + (process.pid % 1000);

function edge(i: number, node = 'n2'): EdgeView {
  return {
    client: { app: `app${i}`, name: i % 2 ? `web${i}` : null, identity: `10.0.${i >> 8}.${i & 255}`, node },
    service: { vip: 'fd00::5', port: 8080, name: 'api.shop' },
    connections: i + 3,
    active: 1,
    ratePerSecond: 0.5,
    refused: 2,
    denied: 1,
    fastpath: 1,
    tcp: i + 2,
    lastSeen: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
  };
}

async function pair(keys: Uint8Array[]): Promise<{ server: PeerApi; client: PeerApi }> {
  const port = nextPort++;
  const server = new PeerApi(port, keys, async () => undefined, silent, () => true);
  await server.listen('127.0.0.1');
  const client = new PeerApi(port, keys, async () => undefined, silent, () => true);
  open.push(server, client);
  return { server, client };
}

afterEach(async () => {
  const all = open.splice(0);
  for (const p of all) if (p instanceof PeerApi) await p.close();
  for (const p of all) {
    if (p instanceof PeerApi) continue;
    for (const sock of socketsOf.get(p) ?? []) sock.destroy();
    await new Promise<void>((r) => p.close(() => r()));
  }
});

describe('edge wire format', () => {
  it('round-trips an edge', () => {
    const e = edge(7);
    expect(decodeEdge(JSON.parse(JSON.stringify(encodeEdge(e))), 'n2')).toEqual(e);
  });

  it('refuses elements that are not edges of the answering node', () => {
    const good = encodeEdge(edge(1)) as unknown[];
    const bad: unknown[] = [
      null,
      'x',
      {},
      good.slice(0, 14),
      [...good, 1],
      Object.assign([...good], { 3: 'n3' }) /* another node's client */,
      Object.assign([...good], { 0: '' }),
      Object.assign([...good], { 0: 'a'.repeat(65) }),
      Object.assign([...good], { 1: 5 }),
      Object.assign([...good], { 5: 70000 }),
      Object.assign([...good], { 5: 1.5 }),
      Object.assign([...good], { 7: -1 }),
      Object.assign([...good], { 8: 2 ** 60 }),
      Object.assign([...good], { 9: Number.NaN }),
      Object.assign([...good], { 9: -0.5 }),
      Object.assign([...good], { 14: 'yesterday' }),
      Object.assign([...good], { 14: 1e20 }),
    ];
    for (const v of bad) expect(decodeEdge(v, 'n2'), JSON.stringify(v)).toBeUndefined();
    expect(decodeEdge(good, 'n2')).toBeDefined();
  });

  it('an answer keeps at most MAX_EDGES_PER_ANSWER edges and counts malformed ones', () => {
    const a = new EdgeAnswer('n2');
    expect(a.add('not a list')).toBe(false);
    expect(a.add([encodeEdge(edge(1)), 42, encodeEdge(edge(2, 'n9'))])).toBe(true);
    expect(a.edges).toHaveLength(1);
    expect(a.malformed).toBe(2);
    const many = Array.from({ length: MAX_EDGES_PER_ANSWER + 10 }, (_, i) => encodeEdge(edge(i)));
    a.add(many);
    expect(a.edges).toHaveLength(MAX_EDGES_PER_ANSWER);
    expect(a.truncated).toBe(true);
  });

  it('chunks stay under the budget', () => {
    const chunks = chunkEdges(Array.from({ length: 300 }, (_, i) => encodeEdge(edge(i))), 3600);
    expect(chunks.length).toBeGreaterThan(5);
    for (const c of chunks) expect(JSON.stringify(c).length).toBeLessThanOrEqual(3600 + 2);
    expect(chunks.flat()).toHaveLength(300);
  });
});

describe('peer API edges request', () => {
  it("answers with the node's edges, over several signed lines", async () => {
    const { server, client } = await pair([KEY]);
    const mine = Array.from({ length: 400 }, (_, i) => edge(i));
    server.onEdges = () => ({ edges: mine, truncated: false });
    const a = await client.edges('127.0.0.1', 'n2');
    expect(a?.edges).toEqual(mine);
    expect(a?.truncated).toBe(false);
    expect(server.drops.malformed).toBe(0);
  });

  it('takes at most MAX_EDGES_PER_ANSWER edges from a node (truncated), and says so', async () => {
    const { server, client } = await pair([KEY]);
    const mine = Array.from({ length: MAX_EDGES_PER_ANSWER + 50 }, (_, i) => edge(i));
    server.onEdges = () => ({ edges: mine, truncated: false });
    const a = await client.edges('127.0.0.1', 'n2', 5000);
    expect(a?.edges).toHaveLength(MAX_EDGES_PER_ANSWER);
    expect(a?.truncated).toBe(true);
  });

  it("drops and counts edges that are not the answering node's, or not edges", async () => {
    const { server, client } = await pair([KEY]);
    const wrong = { ...edge(2), connections: -5 };
    server.onEdges = () => ({ edges: [edge(1), edge(3, 'someone-else'), wrong], truncated: false });
    const a = await client.edges('127.0.0.1', 'n2');
    expect(a?.edges).toEqual([edge(1)]);
    expect(client.edgesMalformed).toBe(2);
  });

  it('a peer that answers garbage, or nothing, gives no answer (and the asker keeps working)', async () => {
    const port = nextPort++;
    const lines = ['{"id":1,"t":0,"edges":"lots"}', 'not json at all'];
    const fake = fakePeer((sock) => sock.once('data', () => sock.write(lines.map((l) => l.replace('"t":0', `"t":${Date.now()}`)).join('\n') + '\n')));
    await new Promise<void>((r) => fake.listen(port, '127.0.0.1', () => r()));
    const client = new PeerApi(port, [], async () => undefined, silent, () => true);
    open.push(client);
    expect(await client.edges('127.0.0.1', 'n2', 1000)).toBeUndefined();
    expect(client.edgesMalformed).toBe(1);
    const silentPort = nextPort++;
    const mute = fakePeer(() => undefined);
    await new Promise<void>((r) => mute.listen(silentPort, '127.0.0.1', () => r()));
    const client2 = new PeerApi(silentPort, [], async () => undefined, silent, () => true);
    open.push(client2);
    expect(await client2.edges('127.0.0.1', 'n3', 300)).toBeUndefined();
  });
});

describe('ClusterEdges', () => {
  it('node scope: this node only; cluster scope: every live member, missing and truncated listed', async () => {
    const asked: string[] = [];
    const answers: Record<string, EdgeAnswer | undefined> = {};
    const b = new EdgeAnswer('b');
    b.add([encodeEdge(edge(1, 'b'))]);
    const c = new EdgeAnswer('c');
    c.add([encodeEdge(edge(2, 'c'))]);
    c.truncated = true;
    answers.b = b;
    answers.c = c;
    const ce = new ClusterEdges({
      node: 'a',
      local: () => ({ edges: [edge(0, 'a')], truncated: false }),
      members: () => [
        { name: 'a', address: '192.0.2.1' },
        { name: 'b', address: '192.0.2.2' },
        { name: 'c', address: '192.0.2.3' },
        { name: 'd', address: '192.0.2.4' },
        { name: 'e', address: '192.0.2.5' },
      ],
      ask: (address, node) => {
        asked.push(`${node}@${address}`);
        if (node === 'e') return Promise.reject(new Error('boom'));
        return Promise.resolve(answers[node]);
      },
    });
    const node = await ce.edges('node');
    expect(node).toEqual({ scope: 'node', node: 'a', edges: [edge(0, 'a')], missing: [], truncated: [] });
    expect(asked).toEqual([]);
    const cluster = await ce.edges('cluster');
    expect(asked.sort()).toEqual(['b@192.0.2.2', 'c@192.0.2.3', 'd@192.0.2.4', 'e@192.0.2.5']);
    expect(cluster.scope).toBe('cluster');
    expect(cluster.edges.map((e) => e.client.node)).toEqual(['a', 'b', 'c']);
    expect(cluster.missing).toEqual(['d', 'e']);
    expect(cluster.truncated).toEqual(['c']);
  });
});
