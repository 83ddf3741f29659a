/** The live view's stand-in for H13's API handler (src/ui/api-standin.ts; deleted with it at merge): the read-only
 * lists, edges, and the event stream with its one subscription per request, released when the client goes, and
 * backpressure. */
import { createServer, request, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { AppswitchEvent, EventSource, SubscribeOptions, Subscription } from '../../src/events/types.js';
import { createApiHandler } from '../../src/ui/api-standin.js';
import { silentEvents } from '../../src/ui/edges-standin.js';

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
