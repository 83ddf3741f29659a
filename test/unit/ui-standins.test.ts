/** The live view's stand-ins until H13's handler and H14's sources are merged: the read-only API (lists, edges,
 * the event stream with its one subscription per request, released when the client goes, and backpressure) and the
 * edges sampled from the connection tracker. */
import { createServer, request, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { AppswitchEvent, EventSource, SubscribeOptions, Subscription } from '../../src/events/types.js';
import type { ConnectionView } from '../../src/trap/connections.js';
import { createApiHandler } from '../../src/ui/api-standin.js';
import { ConnectionSampledEdges, silentEvents } from '../../src/ui/edges-standin.js';

/** An EventSource whose subscriptions the test feeds and watches. */
class FakeEvents implements EventSource {
  readonly subs: Array<{ opts: SubscribeOptions | undefined; queue: AppswitchEvent[]; closed: boolean; wake?: () => void }> = [];
  subscribe(opts?: SubscribeOptions): Subscription {
    const s: (typeof this.subs)[number] = { opts, queue: [], closed: false };
    this.subs.push(s);
    return {
      next: async (): Promise<AppswitchEvent[]> => {
        while (!s.queue.length) {
          if (s.closed) throw new Error('closed');
          await new Promise<void>((r) => (s.wake = r));
        }
        return s.queue.splice(0);
      },
      close: (): void => {
        s.closed = true;
        s.wake?.();
      },
    };
  }
  push(e: AppswitchEvent): void {
    for (const s of this.subs) {
      s.queue.push(e);
      s.wake?.();
    }
  }
}

const ev = (seq: number): AppswitchEvent => ({ seq, time: new Date().toISOString(), node: 'n1', type: 'connect.allowed' });

let server: Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

async function serve(events: EventSource, control: (m: string) => unknown = (m) => ({ method: m })): Promise<number> {
  const api = createApiHandler(
    { control: (m) => control(m), events, edges: { edges: (scope) => Promise.resolve({ scope, node: 'n1', edges: [], missing: [], truncated: [] }) } },
    { readOnly: true, auth: 'none' },
  );
  server = createServer((q, r) => api(q, r));
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}

describe('api stand-in', () => {
  it('answers the lists from the control calls, edges by scope, and errors as IFACE15 says', async () => {
    const port = await serve(silentEvents);
    expect(JSON.parse((await get(port, '/v1/apps')).body)).toEqual({ method: 'apps' });
    expect(JSON.parse((await get(port, '/v1/members')).body)).toEqual({ method: 'members' });
    expect(JSON.parse((await get(port, '/v1/edges')).body).scope).toBe('cluster');
    expect(JSON.parse((await get(port, '/v1/edges?scope=node')).body).scope).toBe('node');
    const bad = await get(port, '/v1/edges?scope=world');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error.code).toBe('ERR_BAD_PARAMS');
    expect((await get(port, '/v1/nothing')).status).toBe(404);
    expect((await get(port, '/v1/vservices', 'POST')).status).toBe(405);
    expect((await get(port, '/v1/events?type=nope')).status).toBe(400);
  });

  it('answers 500 ERR_INTERNAL when a control call throws, and keeps serving', async () => {
    const port = await serve(silentEvents, (m) => {
      if (m === 'status') throw new Error('boom');
      return [];
    });
    const r = await get(port, '/v1/status');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).error.code).toBe('ERR_INTERNAL');
    expect((await get(port, '/v1/apps')).status).toBe(200);
  });

  it('refuses a handler that is not read-only without auth', () => {
    const src = { control: () => null, events: silentEvents, edges: { edges: () => Promise.reject(new Error('x')) } };
    expect(() => createApiHandler(src, { readOnly: false, auth: 'none' })).toThrow();
  });

  it('streams events as SSE with one subscription per request, filtered, released when the client goes', async () => {
    const events = new FakeEvents();
    const port = await serve(events);
    const chunks: string[] = [];
    const req = request({ host: '127.0.0.1', port, path: '/v1/events?app=web&type=connect.allowed,connect.denied', headers: { accept: 'text/event-stream' } });
    const res = await new Promise<import('node:http').IncomingMessage>((r) => req.on('response', r).end());
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    res.on('data', (d: Buffer) => chunks.push(d.toString()));
    await expect.poll(() => events.subs.length).toBe(1);
    expect(events.subs[0]?.opts).toEqual({ maxBuffered: 1000, app: 'web', types: ['connect.allowed', 'connect.denied'] });
    events.push(ev(1));
    events.push(ev(2));
    await expect.poll(() => chunks.join('')).toContain('id: 2\nevent: connect.allowed\ndata: {"seq":2');
    req.destroy();
    await expect.poll(() => events.subs[0]?.closed).toBe(true);
  });

  it('streams NDJSON without Accept: text/event-stream', async () => {
    const events = new FakeEvents();
    const port = await serve(events);
    const chunks: string[] = [];
    const req = request({ host: '127.0.0.1', port, path: '/v1/events' });
    const res = await new Promise<import('node:http').IncomingMessage>((r) => req.on('response', r).end());
    expect(res.headers['content-type']).toBe('application/x-ndjson');
    res.on('data', (d: Buffer) => chunks.push(d.toString()));
    await expect.poll(() => events.subs.length).toBe(1);
    events.push(ev(7));
    await expect.poll(() => chunks.join('')).toMatch(/^\{"seq":7,.*\}\n$/);
    req.destroy();
    await expect.poll(() => events.subs[0]?.closed).toBe(true);
  });

  it('does not read further events while a client does not read what it was sent (the queue stays bounded)', async () => {
    const events = new FakeEvents();
    const port = await serve(events);
    const req = request({ host: '127.0.0.1', port, path: '/v1/events' });
    const res = await new Promise<import('node:http').IncomingMessage>((r) => req.on('response', r).end());
    res.pause(); /* a reader that stops reading */
    await expect.poll(() => events.subs.length).toBe(1);
    const big = { ...ev(1), detail: 'x'.repeat(64 * 1024) };
    for (let i = 0; i < 200; i++) {
      events.push(big);
      await new Promise((r) => setImmediate(r));
    }
    /* the server stopped taking batches from the subscription once the socket was full: events pile up in the
     * subscription (which H14 bounds at maxBuffered), not in the server's memory */
    await expect.poll(() => (events.subs[0]?.queue.length ?? 0) > 0).toBe(true);
    req.destroy();
    await expect.poll(() => events.subs[0]?.closed).toBe(true);
  });
});

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
