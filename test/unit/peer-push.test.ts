/** The peer API's push message (daemon/peers.ts): decoded once at the boundary; records whose endpoints do not parse
 * are dropped and counted (the good ones of the same line still go through), a push that is not a list of endpoint
 * triples is a malformed message (dropped, counted, its connection closed), and a forged mac is not believed. */
import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { PeerApi } from '../../src/daemon/peers.js';
import type { PushRecord } from '../../src/gateway/ingress-push.js';
import { waitFor } from '../helpers/hosts.js';

const silent = pino({ level: 'silent' });
const KEY = new Uint8Array(32).fill(7);
const OTHER_KEY = new Uint8Array(32).fill(9);
const open: PeerApi[] = [];
let nextPort = 47000 + (process.pid % 1000);

async function pair(serverKeys: Uint8Array[], clientKeys: Uint8Array[]): Promise<{ server: PeerApi; client: PeerApi; got: PushRecord[]; port: number }> {
  const port = nextPort++;
  const server = new PeerApi(port, serverKeys, async () => undefined, silent, () => true);
  const got: PushRecord[] = [];
  server.onPush = (_peer, r) => void got.push(...r);
  await server.listen('127.0.0.1');
  const client = new PeerApi(port, clientKeys, async () => undefined, silent, () => true);
  open.push(server, client);
  return { server, client, got, port };
}

afterEach(async () => {
  for (const p of open.splice(0)) await p.close();
});

describe('peer API push', () => {
  it('delivers decoded records; records with bad endpoints are dropped and counted', async () => {
    const { server, client, got } = await pair([KEY], [KEY]);
    const good: PushRecord = { from: { ip: '127.0.0.1', port: 41000 }, to: { ip: '192.0.2.2', port: 40001 }, client: { ip: '::ffff:198.51.100.10', port: 5000 } };
    const bad: PushRecord = { from: { ip: 'not-an-ip', port: 41001 }, to: { ip: '192.0.2.2', port: 0 }, client: { ip: '198.51.100.10', port: 5001 } };
    client.push('127.0.0.1', [good, bad]);
    await waitFor(() => got.length === 1, 3000, 20);
    expect(got[0]).toEqual({ ...good, client: { ip: '198.51.100.10', port: 5000 } }); /* canonical addresses */
    expect(server.pushMalformed).toBe(1);
  });

  it('a big batch is split into lines under the line limit', async () => {
    const { server, client, got } = await pair([KEY], [KEY]);
    const many: PushRecord[] = [];
    for (let i = 0; i < 300; i++) many.push({ from: { ip: '127.0.0.1', port: 30000 + i }, to: { ip: 'fd00::1234:5678:9abc', port: 40001 }, client: { ip: '2001:db8::dead:beef:1', port: 1000 + i } });
    client.push('127.0.0.1', many);
    await waitFor(() => got.length === 300, 3000, 20);
    expect(server.drops.malformed).toBe(0);
  });

  it('a forged mac is not believed', async () => {
    const { server, client, got } = await pair([KEY], [OTHER_KEY]);
    client.push('127.0.0.1', [{ from: { ip: '127.0.0.1', port: 1 }, to: { ip: '192.0.2.2', port: 2 }, client: { ip: '198.51.100.1', port: 3 } }]);
    await waitFor(() => server.drops.unauthenticated === 1, 3000, 20);
    expect(got).toHaveLength(0);
  });

  it('a push that is not a list of endpoint triples is malformed: dropped, counted, connection closed', async () => {
    const { server, got, port } = await pair([], []);
    const sock = net.createConnection({ host: '127.0.0.1', port });
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('error', () => {});
    sock.write(`${JSON.stringify({ id: 1, t: Date.now(), push: ['127.0.0.1:1', '192.0.2.2:2'] })}\n`);
    await closed;
    expect(server.drops.malformed).toBe(1);
    expect(got).toHaveLength(0);
  });
});
