/** The event stream's writer (src/api/stream.ts) on a fake response with fake timers: the encodings, a keep-alive
 * every 15 s (and none while output waits), the subscription closed when the client goes or the source ends. */
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { encodeEvent, KEEPALIVE_MS, MAX_BUFFERED, streamEvents } from '../../src/api/stream.js';
import type { AppswitchEvent, EventSource, SubscribeOptions, Subscription } from '../../src/events/types.js';

/** The parts of a ServerResponse the stream uses; `full` makes write() report a full buffer. */
class FakeRes extends EventEmitter {
  written: string[] = [];
  status = 0;
  headers: Record<string, string> = {};
  writableEnded = false;
  writableNeedDrain = false;
  full = false;
  writeHead(status: number, headers: Record<string, string>): this {
    this.status = status;
    this.headers = headers;
    return this;
  }
  flushHeaders(): void {}
  write(s: string): boolean {
    this.written.push(s);
    if (this.full) this.writableNeedDrain = true;
    return !this.full;
  }
  end(): void {
    this.writableEnded = true;
  }
}

/** One subscription the test drives: resolve a pending next() with events, or end it. */
function source(): { src: EventSource; opts: () => SubscribeOptions | undefined; give: (e: AppswitchEvent[]) => void; fail: () => void; closed: () => boolean } {
  let opts: SubscribeOptions | undefined;
  let pending: { resolve: (e: AppswitchEvent[]) => void; reject: (e: Error) => void } | undefined;
  let closed = false;
  const sub: Subscription = {
    next: () => new Promise((resolve, reject) => (pending = { resolve, reject })),
    close: () => {
      closed = true;
      pending?.reject(new Error('closed'));
    },
  };
  return {
    src: { subscribe: (o) => ((opts = o), sub) },
    opts: () => opts,
    give: (e) => pending?.resolve(e),
    fail: () => pending?.reject(new Error('source ended')),
    closed: () => closed,
  };
}

const ev: AppswitchEvent = { seq: 3, time: '2026-12-03T14:00:00.000Z', node: 'n1', type: 'connect.denied', detail: 'policy' };
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('streamEvents (server side)', () => {
  it('encodes SSE and NDJSON', () => {
    expect(encodeEvent(ev, 'sse')).toBe(`id: 3\nevent: connect.denied\ndata: ${JSON.stringify(ev)}\n\n`);
    expect(encodeEvent(ev, 'ndjson')).toBe(`${JSON.stringify(ev)}\n`);
  });

  it('SSE: headers, an opening comment, events, a `: ping` every 15 s; the client going closes the subscription', async () => {
    const s = source();
    const res = new FakeRes();
    const closedWhy: string[] = [];
    const done = streamEvents(res as unknown as ServerResponse, s.src, { format: 'sse', app: 'web', types: ['connect.denied'] }, { closed: (w) => closedWhy.push(w) });
    expect(s.opts()).toEqual({ maxBuffered: MAX_BUFFERED, app: 'web', types: ['connect.denied'] });
    expect(res.status).toBe(200);
    expect(res.headers['Content-Type']).toBe('text/event-stream; charset=utf-8');
    expect(res.written).toEqual([': appswitch events\n\n']);
    s.give([ev]);
    await tick();
    expect(res.written[1]).toBe(encodeEvent(ev, 'sse'));
    vi.advanceTimersByTime(KEEPALIVE_MS);
    expect(res.written.at(-1)).toBe(': ping\n\n');
    expect(KEEPALIVE_MS).toBe(15_000);
    res.emit('close');
    await done;
    expect(s.closed()).toBe(true);
    expect(closedWhy).toEqual(['the client went away']);
    const after = res.written.length;
    vi.advanceTimersByTime(KEEPALIVE_MS * 3);
    expect(res.written.length).toBe(after); /* no ping after the end: the timer is gone */
  });

  it('NDJSON: an empty line as keep-alive, none while output waits; a full buffer waits for drain before taking more', async () => {
    const s = source();
    const res = new FakeRes();
    const done = streamEvents(res as unknown as ServerResponse, s.src, { format: 'ndjson' });
    expect(res.headers['Content-Type']).toBe('application/x-ndjson');
    vi.advanceTimersByTime(KEEPALIVE_MS);
    expect(res.written).toEqual(['\n']);
    res.full = true;
    s.give([ev, ev]);
    await tick();
    expect(res.written.at(-1)).toBe(encodeEvent(ev, 'ndjson').repeat(2));
    const n = res.written.length;
    vi.advanceTimersByTime(KEEPALIVE_MS * 2);
    expect(res.written.length).toBe(n); /* no keep-alive into a full buffer */
    s.give([ev]); /* no next() is pending while it waits: nothing is taken */
    await tick();
    expect(res.written.length).toBe(n);
    res.full = false;
    res.writableNeedDrain = false;
    res.emit('drain');
    await tick();
    s.give([ev]);
    await tick();
    expect(res.written.at(-1)).toBe(encodeEvent(ev, 'ndjson'));
    s.fail(); /* the source ends the subscription: the stream ends the response */
    await done;
    expect(res.writableEnded).toBe(true);
  });
});
