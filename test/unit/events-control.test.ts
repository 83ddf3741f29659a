/** The control socket's `events` stream and `edges` answer (src/daemon/control.ts ControlStream and Promise results,
 * src/events/stream.ts): the stream starts with a result line and carries one event per line; a reader that stops
 * reading costs the daemon at most its subscription's ring (and one batch in the socket), the oldest events being
 * reported lost; a reader that goes releases its subscription; bad parameters get ERR_BAD_PARAMS and the server keeps
 * serving. */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, ControlStream } from '../../src/daemon/control.js';
import { ControlCallError, type ControlRequest } from '../../src/daemon/control-protocol.js';
import { EventBus } from '../../src/events/bus.js';
import { pipeEvents, subscribeOptions } from '../../src/events/stream.js';
import type { AppswitchEvent } from '../../src/events/types.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'as-events-'));
const sockPath = path.join(dir, 'control.sock');
const bus = new EventBus('n1');
let server: ControlServer;
let lastSub: { buffered: number } | undefined;
let lastSock: net.Socket | undefined;

function handle(req: ControlRequest): unknown {
  if (req.method === 'edges') return Promise.resolve({ scope: req.params?.scope ?? 'cluster', node: 'n1', edges: [], missing: [], truncated: [] });
  if (req.method === 'events') {
    const o = subscribeOptions(req.params ?? {});
    if (typeof o === 'string') throw new ControlCallError('ERR_BAD_PARAMS', `events: ${o}`);
    return new ControlStream('events', (sock) => {
      const sub = bus.subscribe(o);
      lastSub = sub as unknown as { buffered: number };
      lastSock = sock;
      pipeEvents(sub, sock, 200);
    });
  }
  if (req.method === 'status') return { ok: true };
  return undefined;
}

function emit(n: number): void {
  for (let i = 0; i < n; i++) bus.emit({ type: 'connect.allowed', client: { app: 'a1', name: 'web', identity: '10.0.0.7', node: 'n1' }, service: { vip: '10.0.0.5', port: 8080, name: 'api' }, path: 'tcp', endpoint: '192.0.2.1:40001', detail: 'x'.repeat(200) });
}

/** Opens a connection, sends one request line, collects lines. */
function open(req: object): { sock: net.Socket; lines: string[]; ready: Promise<void> } {
  const sock = net.createConnection(sockPath);
  const lines: string[] = [];
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  const ready = new Promise<void>((resolve) => sock.on('connect', () => resolve()));
  sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
  return { sock, lines, ready };
}

async function until(f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  server = new ControlServer(handle, pino({ level: 'silent' }));
  await server.listen(sockPath, () => undefined);
});

afterAll(async () => {
  bus.closeAll();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('control socket: edges and events', () => {
  it('answers a Promise result (edges)', async () => {
    const c = open({ id: 4, method: 'edges', params: { scope: 'node' } });
    await until(() => c.lines.length === 1);
    expect(JSON.parse(c.lines[0] as string)).toEqual({ id: 4, result: { scope: 'node', node: 'n1', edges: [], missing: [], truncated: [] } });
    c.sock.destroy();
  });

  it('streams events after a result line; keep-alive lines in between; closing releases the subscription', async () => {
    const c = open({ id: 1, method: 'events', params: { types: ['connect.allowed'] } });
    await until(() => c.lines.length >= 1);
    expect(JSON.parse(c.lines[0] as string)).toEqual({ id: 1, result: { stream: 'events' } });
    expect(bus.subscribers).toBe(1);
    emit(3);
    bus.emit({ type: 'app.started', client: { app: 'a9', name: null, identity: '169.254.0.1', node: 'n1' } }); /* filtered out */
    await until(() => c.lines.filter(Boolean).length >= 4);
    const events = c.lines.slice(1).filter(Boolean).map((l) => JSON.parse(l) as AppswitchEvent);
    expect(events.map((e) => e.type)).toEqual(['connect.allowed', 'connect.allowed', 'connect.allowed']);
    await until(() => c.lines.slice(1).some((l) => l === ''), 2000); /* keep-alive (every 200 ms here) */
    /* further input on a stream connection is not read as requests */
    c.sock.write(JSON.stringify({ id: 2, method: 'status' }) + '\n');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.lines.some((l) => l.includes('"ok"'))).toBe(false);
    c.sock.destroy();
    await until(() => bus.subscribers === 0);
  });

  it('a reader that never reads: the daemon holds at most the ring, and reports what was lost once it reads', async () => {
    const c = open({ id: 1, method: 'events', params: { maxBuffered: 100 } });
    await until(() => c.lines.length >= 1);
    c.sock.pause(); /* stop reading: the kernel buffers fill, then the daemon's socket stops taking writes */
    for (let i = 0; i < 200; i++) {
      emit(100);
      await new Promise((r) => setImmediate(r));
    }
    expect(lastSub?.buffered).toBeLessThanOrEqual(100);
    /* the daemon's side of the socket: at most one batch beyond its high-water mark waits in it */
    expect(lastSock?.writableLength ?? 0).toBeLessThan(256 * 1024);
    c.sock.resume();
    await until(() => c.lines.some((l) => l.includes('"events.lost"')), 5000);
    const lost = c.lines.filter((l) => l.includes('"events.lost"')).map((l) => (JSON.parse(l) as AppswitchEvent).lost ?? 0);
    expect(lost.reduce((a, b) => a + b, 0)).toBeGreaterThan(10_000);
    c.sock.destroy();
    await until(() => bus.subscribers === 0);
  });

  it('bad parameters: ERR_BAD_PARAMS, and the connection keeps serving requests', async () => {
    const c = open({ id: 1, method: 'events', params: { types: ['connect.maybe'] } });
    await until(() => c.lines.length >= 1);
    expect(JSON.parse(c.lines[0] as string)).toMatchObject({ id: 1, error: { code: 'ERR_BAD_PARAMS', message: 'events: unknown event type "connect.maybe"' } });
    c.sock.write(JSON.stringify({ id: 2, method: 'events', params: { maxBuffered: 'lots' } }) + '\n');
    c.sock.write(JSON.stringify({ id: 3, method: 'events', params: { app: 7 } }) + '\n');
    c.sock.write(JSON.stringify({ id: 4, method: 'status' }) + '\n');
    await until(() => c.lines.length >= 4);
    expect(c.lines.slice(1).map((l) => JSON.parse(l) as { id: number; error?: { code: string } })).toEqual([
      { id: 2, error: expect.objectContaining({ code: 'ERR_BAD_PARAMS' }) },
      { id: 3, error: expect.objectContaining({ code: 'ERR_BAD_PARAMS' }) },
      { id: 4, result: { ok: true } },
    ]);
    expect(bus.subscribers).toBe(0);
    c.sock.destroy();
  });

  it('a subscription ended on the daemon side (it stops) ends its stream', async () => {
    const c = open({ id: 1, method: 'events' });
    await until(() => c.lines.length >= 1);
    let ended = false;
    c.sock.on('end', () => (ended = true));
    bus.closeAll();
    await until(() => ended);
    c.sock.destroy();
  });

  it('subscribeOptions checks what the JSON types cannot', () => {
    expect(subscribeOptions({ app: 'web', types: ['app.started'], maxBuffered: 10 })).toEqual({ app: 'web', types: ['app.started'], maxBuffered: 10 });
    expect(subscribeOptions({ maxBuffered: 0 })).toMatch(/positive integer/);
    expect(subscribeOptions({ app: 'x'.repeat(300) })).toMatch(/253/);
    expect(subscribeOptions({ types: 'app.started' })).toMatch(/list/);
  });
});
